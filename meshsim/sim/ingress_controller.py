"""Linkerd's ingress: an NGINX ingress controller meshed by a linkerd-proxy sidecar.

Linkerd ships no gateway; its documentation puts an ingress controller in front and meshes
it by injecting the proxy (docs/mesh-semantics.md §17). meshsim models the documented NGINX
setup: ingress-nginx with ``nginx.ingress.kubernetes.io/service-upstream: "true"``, so that
NGINX sends each request to the Service's cluster IP and the pod's linkerd-proxy, not NGINX,
picks the endpoint (P2C over Peak-EWMA), applies Linkerd's routes, retries and timeouts, and
speaks mTLS to the destination's sidecar. Without the annotation NGINX balances over the
pods itself and the proxy honours its choice (no Linkerd balancing); that variant is not
modelled. A Gateway API ``Gateway`` on a Linkerd run is assumed to be implemented the same
way (an NGINX-based implementation meshed by the proxy); a scenario may name another cost
model for the controller (``gateways[].ingress_model``, kind ``ingress-nginx``).

Each replica is one pod on a node, two containers whose CPU runs on that node's cores:

- the controller: NGINX (``models/ingress-nginx.yaml``: its workers, each holding the
  connections it accepted, as Envoy's; the controller's Lua; the Go controller's memory);
- the linkerd-proxy sidecar (the Linkerd run's proxy model and workers).

A request: client -> (network) -> a replica picked round-robin per workload -> the sidecar's
inbound side, which passes the clients' connection to NGINX as opaque TCP (Linkerd's docs:
TLS terminated by the ingress is "an opaque TCP stream" to the proxy; charged as the proxy's
socket I/O and copying, no HTTP work) -> NGINX: TLS termination with handshakes from the
client population's churn (as the Istio gateway's, :mod:`meshsim.sim.gateways`), its request
path -> localhost -> the sidecar's outbound request path (a keep-alive connection from NGINX,
accepted by the sidecar) -> Linkerd's outbound chain and the mTLS attempt to the
destination's sidecar -> the sidecar's response path -> localhost -> NGINX's response path,
then its log phase (metrics and access log) on the worker -> the sidecar's inbound TCP pass
-> the network back to the client.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.models.parameters import KIB
from meshsim.scenario.resources import INGRESS_NGINX_RESOURCES
from meshsim.sim.app import CONNECT_FAILURE, RESET
from meshsim.sim.dataplanes.mesh import cost_model
from meshsim.sim.dataplanes.proxy import Proxy
from meshsim.sim.gateways import (
    Config,
    GatewayProxy,
    GatewayRuntime,
    Gateways,
    config_of,
    spec_request_m,
)

if TYPE_CHECKING:
    from meshsim.scenario.edges import Gateway
    from meshsim.sim.app import Client, Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Worker
    from meshsim.sim.dataplanes.sidecar import LinkerdSidecars
    from meshsim.sim.engine import Simulation

CONTROLLER_MODEL = "ingress-nginx"

PROXY_CPU_REQUEST_M = 100.0
"""The sidecar's CPU request an HPA divides by when the scenario gives none: an HPA on CPU
needs a request on every container of the pod, and Linkerd sets none by default
(config.linkerd.io/proxy-cpu-request; 100m is ``linkerd install --ha``'s value)."""


class IngressController(Proxy):
    """NGINX in an ingress pod. Its configuration is its own: one upstream per backend
    Service, holding one endpoint (the Service's cluster IP, with service-upstream)."""

    __slots__ = ("config",)

    def __init__(self, *args: Any, config: Config, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.config = config

    def memory_mb(self, clusters: int, endpoints: int) -> float:
        return super().memory_mb(*self.config())


class LinkerdIngress(Gateways):
    """The scenario's gateways for one Linkerd run: ingress-nginx pods with a linkerd-proxy."""

    implementation = "ingress-nginx + linkerd-proxy (service-upstream: Linkerd balances, mTLS)"

    def __init__(self, sim: Simulation, dp: LinkerdSidecars) -> None:
        self.linkerd = dp
        self.sidecars: dict[str, list[GatewayProxy]] = {}
        """Per gateway, the linkerd-proxy of each replica (same index as its NGINX)."""
        self._upstream: dict[tuple[str, str], list[Worker]] = {}
        """NGINX's idle keep-alive connections to its pod's proxy, by proxy and Service."""
        super().__init__(sim, dp)

    # ----------------------------------------------------------------- building

    def build(self, spec: Gateway) -> GatewayRuntime:
        dp = self.linkerd
        values = self.sim.model_values
        nginx_model = cost_model(spec.ingress_model or CONTROLLER_MODEL, "ingress-nginx", values)
        routed = sorted({r.service for r in spec.routes})
        upstreams = len(routed)
        count = self.replica_count(spec, [nginx_model, dp.model], self.pod_request_m(spec))
        controllers: list[Proxy] = []
        sidecars: list[GatewayProxy] = []
        parts: list[tuple[str, Proxy]] = []
        for i in range(count):
            node = self.place(spec)
            pod = f"ingress/{spec.name}-{i}"
            nginx = IngressController(
                self.env, f"{pod}/controller", "gateway", nginx_model, node,
                nginx_model.worker_threads, stealing=False, pick=dp._accept,
                cpu_factor=dp.cpu_factor(nginx_model), drift=dp.cpu_drift(nginx_model),
                config=lambda: (upstreams, upstreams),
                resources=spec.resources or INGRESS_NGINX_RESOURCES,
            )  # fmt: skip
            dp.proxies.append(nginx)
            sidecar = self.mesh_proxy(
                f"{pod}/linkerd-proxy", dp.model, node, dp.threads, stealing=dp.stealing,
                config=partial(self.routed_config, routed),
                resources=self.sim.scenario.mesh_options.linkerd.proxy_resources,
            )  # fmt: skip
            nginx.pod_name = sidecar.pod_name = pod
            controllers.append(nginx)
            sidecars.append(sidecar)
            parts += [("controller", nginx), ("linkerd-proxy", sidecar)]
        self.sidecars[spec.name] = sidecars
        handshake_s = nginx_model.handshake_cpu_us("server", mutual=False) * 1e-6
        return GatewayRuntime(spec, controllers, handshake_s, parts=parts, timed=sidecars)

    def pod_request_m(self, spec: Gateway) -> float:
        """The pod's CPU request for an HPA: the controller's and the sidecar's."""
        if spec.autoscale is None:
            return 0.0
        sidecar = self.sim.scenario.mesh_options.linkerd.proxy_resources.cpu_request_m
        if sidecar is None:
            sidecar = PROXY_CPU_REQUEST_M
            note = (
                f"gateways: '{spec.name}' autoscales on CPU, which needs a CPU request on the "
                f"linkerd-proxy too: {PROXY_CPU_REQUEST_M:g}m assumed "
                "(mesh_options.linkerd.proxy_resources)"
            )
            if note not in self.dp.warnings:
                self.dp.warnings.append(note)
        return spec_request_m(spec) + sidecar

    def routed_config(self, routed: list[str]) -> tuple[int, int]:
        """The sidecar resolves only the Services NGINX sends to (Linkerd's destination
        lookups are on demand): a cluster per Service and per subset a split names."""
        policies = self.linkerd.resilience.policies
        return config_of(policies, (self.sim.services[name] for name in routed))

    # ----------------------------------------------------------------- a request

    def call(
        self, client: Client, service: ServiceRuntime, req: Request
    ) -> Generator[simpy.Event, Any, int]:
        """One request through NGINX and the pod's linkerd-proxy (or straight in)."""
        gw = self.routes.get(client.name)
        if gw is None:
            status: int = yield from self.dp.call(client, service, req, None)
            return status
        env = self.env
        net = self.sim.network
        i = gw.replica(client.name)
        if i is None:
            return CONNECT_FAILURE  # every replica down: the load balancer has no backend
        nginx = gw.proxies[i]
        sidecar = self.sidecars[gw.spec.name][i]
        nbytes = req.request_bytes
        resp = service.spec.response_bytes
        epochs = gw.epochs(i)
        yield env.timeout(net.delay(None, nginx.node, nbytes))
        if gw.epochs(i) != epochs:
            return RESET  # killed while the request was on its way
        arrived = env.now
        worker, open_s, counting = self.enter(gw, i, client.name, nginx, req)
        opaque = self.opaque_s(sidecar, nbytes, resp)
        inbound = sidecar.accept()  # tokio's pool: any thread takes the next task
        yield from sidecar.work(inbound, opaque[0])
        yield env.timeout(sidecar.hop_s)
        # One draw for NGINX's three parts; its one TLS leg only when it terminates TLS.
        costs = nginx.costs(nbytes, resp, gw.per_connection > 0)
        yield from nginx.work(worker, costs[0] + open_s)
        worker.requests += 1
        sw, accept_s, connect_s = self.upstream(nginx, sidecar, service.name)
        if connect_s:
            yield from nginx.work(worker, connect_s)
        yield env.timeout(nginx.hop_s)  # localhost to the proxy's outbound port
        yield from sidecar.work(sw, sidecar.costs(nbytes, 0, self.mtls)[0] + accept_s)
        sw.requests += 1
        if counting:
            gw.in_pod_s += env.now - arrived
        status = yield from sidecar.outbound(self._attempt, service, req, sw, nbytes)
        if gw.epochs(i) != epochs:
            return RESET  # a container of the replica was OOM-killed with the request in it
        self.upstream_done(nginx, sidecar, service.name, sw)
        back = env.now
        yield env.timeout(nginx.hop_s)
        yield from nginx.work_then_linger(worker, costs[1], costs[2])
        yield env.timeout(sidecar.hop_s)
        yield from sidecar.work(inbound, opaque[1])
        if counting:
            gw.in_pod_s += env.now - back
        self.release(gw, i, client.name, worker)
        yield env.timeout(net.delay(nginx.node, None, resp))
        return status

    @staticmethod
    def opaque_s(sidecar: Proxy, request_bytes: int, response_bytes: int) -> tuple[float, float]:
        """The sidecar's CPU to pass one exchange of the clients' connection through as
        opaque TCP: its socket I/O and copying, half each way (no HTTP, no TLS of its own)."""
        v = sidecar.model.value
        half, per_kib = v("socket_io_us") / 2.0, v("payload_cpu_us_per_kib")
        return (
            (half + per_kib * request_bytes / KIB) * 1e-6,
            (half + per_kib * response_bytes / KIB) * 1e-6,
        )

    def client_connection(self, gw: GatewayRuntime, i: int, *, opened: bool) -> None:
        """The sidecar holds each client connection twice: accepted from the client, and
        its own to NGINX."""
        sidecar = self.sidecars[gw.spec.name][i]
        for _ in range(2):
            if opened:
                sidecar.opened(False)
            else:
                sidecar.closed(False)

    def upstream(
        self, nginx: Proxy, sidecar: GatewayProxy, service: str
    ) -> tuple[Worker, float, float]:
        """NGINX's keep-alive connection to the Service, intercepted by the pod's proxy:
        the proxy's worker for it, and the CPU to open it at the proxy and at NGINX (0.0
        when an idle one is reused; ingress-nginx keeps upstream connections alive)."""
        idle = self._upstream.get((sidecar.name, service))
        if idle:
            return idle.pop(), 0.0, 0.0
        nginx.opened(False)
        sidecar.opened(False)
        return sidecar.accept(), sidecar.tcp_open_s, nginx.tcp_open_s

    def forget_upstream(self, proxy: Proxy) -> None:
        """NGINX's keep-alive connections to its pod's linkerd-proxy end with either."""
        gw = self.runtime_of(proxy)
        sidecar = self.sidecars[gw.spec.name][gw.replica_of[proxy]]
        for key in [k for k in self._upstream if k[0] == sidecar.name]:
            del self._upstream[key]

    def upstream_done(self, nginx: Proxy, sidecar: GatewayProxy, service: str, w: Worker) -> None:
        if not self.dp.keep_alive:
            nginx.closed(False)
            sidecar.closed(False)
            return
        self._upstream.setdefault((sidecar.name, service), []).append(w)
