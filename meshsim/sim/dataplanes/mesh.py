"""What every proxied data plane shares: its proxies, app-side connections, results.

- App-side connections: an app (or a workload's client) keeps connections to its local
  proxy per destination service, one request at a time each (HTTP/1.1). A new one is
  accepted on a worker by :meth:`Proxy.accept` and keeps it: with Envoy, few connections
  leave workers idle (docs/mesh-semantics.md §10.1). With keep-alive off they are closed after
  each request.
- Clients outside the mesh (the default) enter at the first proxy of the destination;
  with ``mesh_options.meshed_clients`` a workload's clients run in a meshed pod, like the
  load generator of Istio's benchmark, on the node with the fewest pods.
- Results: the engine reads each proxy's CPU, workers and connections, its memory from
  the cost model (base + connections + configuration in view, :meth:`config_in_view`) and
  the handshakes (:meth:`meshsim.sim.engine.Simulation.measure`); :mod:`meshsim.results.run`
  turns them into the ``proxies`` block.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.models import ProxyCostModel, default_model, load_model
from meshsim.models.samples import apply_values
from meshsim.sim.app import Pod
from meshsim.sim.cpu.drift import CpuDrift, standard_normal
from meshsim.sim.dataplanes.base import DataPlane
from meshsim.sim.dataplanes.connections import Pools
from meshsim.sim.dataplanes.l4_balancing import ConnectionBalancer
from meshsim.sim.dataplanes.proxy import Proxy, Worker
from meshsim.sim.sampling import Sampler, Uniforms, gamma_factor

if TYPE_CHECKING:
    from meshsim.models import Kind
    from meshsim.sim.app import ServiceRuntime
    from meshsim.sim.engine import Simulation


def cost_model(
    path: str | None, kind: Kind, values: Mapping[str, float] | None = None
) -> ProxyCostModel:
    """The model file a scenario names for a mesh, else the shipped one for ``kind``, with
    the values of a drawn parameter set (``--model-samples``) that name it applied."""
    model = load_model(path) if path else default_model(kind)
    if model.kind != kind:
        from meshsim.errors import MeshsimError

        raise MeshsimError(f"model file {path} describes a {model.kind}, not a {kind}")
    return apply_values(model, values)


class ProxiedDataPlane(DataPlane):
    """Base of the sidecar and ambient data planes."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        options = sim.scenario.mesh_options
        self.keep_alive = options.keep_alive
        self.meshed_clients = options.meshed_clients
        self.net = sim.network
        self.proxies: list[Proxy] = []
        self.pools = Pools(self.env, keep_alive=self.keep_alive)
        self._uniform = Uniforms(sim.streams("balancers"))
        self.l4_balancer = ConnectionBalancer(
            self._uniform, sim.streams, self.keep_alive, lambda: self.env.now
        )
        """Where a call goes on a path with no L7 proxy (ztunnel alone, Cilium's kernel)."""
        self._accept = Uniforms(sim.streams("dataplane/accept"))
        self._cpu_rng = sim.streams("proxy_cpu")
        self._cpu_factors: dict[float, Sampler | None] = {}
        self._drift_normal: Sampler | None = None
        self._app_idle: dict[tuple[str, str], list[Worker]] = {}

    def cpu_factor(self, model: ProxyCostModel) -> Sampler | None:
        """The per-request CPU multipliers for proxies of ``model`` (None: fixed costs).

        One batched sampler per cv, shared by every proxy of the data plane, all drawing
        from the run's ``proxy_cpu`` stream (not drawn from at all when every cv is 0).
        """
        cv = model.request_cpu_cv
        if cv not in self._cpu_factors:
            self._cpu_factors[cv] = gamma_factor(cv, self._cpu_rng)
        return self._cpu_factors[cv]

    def cpu_drift(self, model: ProxyCostModel) -> CpuDrift | None:
        """A new proxy's own drift of its CPU cost, if ``model`` has one (None otherwise).

        Each proxy drifts independently; their draws come from the run's ``cpu_drift``
        stream, in the order the simulation asks for them.
        """
        spec = model.cpu_drift
        if spec is None:
            return None
        if self._drift_normal is None:
            self._drift_normal = standard_normal(self.sim.streams("cpu_drift"))
        return CpuDrift(*spec, self._drift_normal, self.env.now)

    # ----------------------------------------------------------------- placement

    def pick_any(self, service: ServiceRuntime) -> Pod | None:
        """kube-proxy's choice for traffic from outside the mesh: uniform per call."""
        endpoints = service.endpoints
        if not endpoints:
            return None
        return endpoints[int(self._uniform() * len(endpoints))]

    # ----------------------------------------------------------------- app connections

    def app_conn(self, proxy: Proxy, service: str) -> tuple[Worker, float]:
        """An app-side connection to ``proxy`` for calls to ``service``: its worker, and the
        proxy's CPU seconds to accept it (0.0 when an idle one is reused)."""
        idle = self._app_idle.get((proxy.name, service))
        if idle:
            return idle.pop(), 0.0
        proxy.opened(False)
        return proxy.accept(), proxy.tcp_open_s

    def app_conn_done(self, proxy: Proxy, service: str, worker: Worker) -> None:
        if not self.keep_alive:
            proxy.closed(False)
            return
        key = (proxy.name, service)
        idle = self._app_idle.get(key)
        if idle is None:
            idle = self._app_idle[key] = []
        idle.append(worker)

    # ----------------------------------------------------------------- results

    def config_in_view(self, proxy: Proxy) -> tuple[int, int]:
        """(clusters, endpoints) that ``proxy`` holds in its configuration."""
        return (0, 0)

    def live_proxies(self) -> list[Proxy]:
        """The proxies running now: not a dead pod's sidecar, nor a ztunnel or waypoint down
        after an OOM kill."""
        return [p for p in self.proxies if p.alive and (p.pod is None or p.pod.alive)]

    def cost_models(self) -> list[ProxyCostModel]:
        models: list[ProxyCostModel] = []
        for proxy in self.proxies:
            if all(proxy.model is not m for m in models):
                models.append(proxy.model)
        return models


def run_inbound(
    env: simpy.Environment,
    sim: Simulation,
    server: Proxy,
    worker: Worker,
    pod: Pod,
    req: Any,
    costs: tuple[float, float, float],
    connect_s: float = 0.0,
) -> Generator[simpy.Event, Any, int]:
    """The server-side proxy and the app: request path, the app, response path (+ after).

    ``connect_s``: the proxy's CPU to open its connection to the app for this request
    (keep-alive off; a pooled connection to the app costs nothing per request).
    """
    yield from server.work(worker, costs[0] + connect_s)
    worker.requests += 1
    hop = server.hop_s
    yield env.timeout(hop)
    status: int = yield from sim.serve(pod, req)
    yield env.timeout(hop)
    yield from server.work_then_linger(worker, costs[1], costs[2])
    return status
