"""Ingress gateways: the workloads' clients enter the mesh through them (``workloads[].via``).

An Istio ingress gateway is an Envoy Deployment of its own (``istio-ingressgateway``, or a
Gateway API ``Gateway`` that istiod deploys): ``replicas`` pods, each one Envoy with its
workers on a node's cores, programmed by istiod like any proxy and applying the
destination's traffic policies (it is the client side of the mesh for what it forwards, with
mTLS to the destination's sidecar). Its cost model is ``models/istio-ingressgateway.yaml``.
In ambient mode the same Envoy sends HBONE to the destination's node ztunnel (Istio's
ingress gateway skips a service's waypoint unless the service opts in with
``istio.io/ingress-use-waypoint``, docs/mesh-semantics.md §17); the upstream leg's HBONE
framing is charged as half of ``models/waypoint.yaml``'s ``hbone_frame_us`` (a waypoint
frames two HBONE legs, the gateway one).

A request: client -> (network from outside) -> a replica, picked round-robin per workload
(a cloud load balancer in front) -> TLS termination: a full server-side handshake on every
``requests_per_connection``-th request of the workload's connections to that replica (the
client population's connection churn) -> the request path on the connection's worker -> the
mesh's outbound chain and the attempt to the destination -> the response path -> the network
back to the client.

Linkerd has no gateway of its own: its documentation puts an ingress controller in front,
meshed by a Linkerd sidecar; :mod:`meshsim.sim.ingress_controller` models that pair (NGINX and
linkerd-proxy in one pod). Cilium's ingress (its per-node Envoy) and the ``none`` baseline
are not modelled: their runs send ``via`` traffic straight to the destination, and their
warnings say so.

What a run reports per gateway (``topology.gateways`` in summary.json): its replicas, rate
and TLS handshakes, the CPU of every proxy in its pods over the window, their memory at the
end, and the added latency: the mean time a user's request spends inside a gateway pod
(queueing, CPU and in-pod hops, on the way in and on the way back; the network to and from
the pod is not in it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.scenario.resources import ISTIO_GATEWAY_RESOURCES, envoy_concurrency
from meshsim.sim.app import CONNECT_FAILURE, RESET, source_name
from meshsim.sim.dataplanes.mesh import cost_model
from meshsim.sim.dataplanes.routing import L7Proxy

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.scenario.edges import Gateway
    from meshsim.scenario.resources import Resources
    from meshsim.sim.app import Client, Request, ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.dataplanes.mesh import ProxiedDataPlane
    from meshsim.sim.dataplanes.proxy import Proxy, Worker
    from meshsim.sim.dataplanes.routing import Attempt
    from meshsim.sim.engine import Simulation

GATEWAY_MODEL = "istio-ingressgateway"

Config = Callable[[], tuple[int, int]]
"""(clusters, endpoints) a gateway proxy holds, read when its memory is measured."""


class GatewayProxy(L7Proxy):
    """The mesh's proxy in a gateway pod (Istio's gateway Envoy, or the linkerd-proxy beside
    an ingress controller). It holds its own configuration, not the data plane's view of a
    workload's calls, and it adds up the time its response path takes (waiting for its
    worker and a core, its CPU, its hop) inside the mesh's attempt, for the added latency."""

    __slots__ = ("config", "response_s", "window")

    def __init__(self, *args: Any, config: Config, window: tuple[float, float], **kw: Any):
        super().__init__(*args, **kw)
        self.config = config
        self.window = window
        self.response_s = 0.0
        """Time on the response path (and the hops both ways) of the tries started in it."""

    def work_then_linger(
        self, worker: Worker, cpu_s: float, after_s: float
    ) -> Generator[simpy.Event, Any, None]:
        started = self.env.now
        yield from super().work_then_linger(worker, cpu_s, after_s)
        if self.window[0] <= started < self.window[1]:
            # The try's two hops through this proxy are inside the attempt's network waits.
            self.response_s += self.env.now - started + 2.0 * self.hop_s

    def memory_mb(self, clusters: int, endpoints: int) -> float:
        return super().memory_mb(*self.config())


class GatewayRuntime:
    """One gateway's replicas and counters."""

    def __init__(
        self,
        spec: Gateway,
        proxies: list[Proxy],
        handshake_s: float,
        *,
        parts: list[tuple[str, Proxy]] | None = None,
        timed: list[GatewayProxy] | None = None,
    ) -> None:
        self.spec = spec
        self.proxies = proxies
        """The proxy that accepts the clients' connections, one per replica."""
        self.parts = parts if parts is not None else [("istio-proxy", p) for p in proxies]
        """Every proxy in the gateway's pods with its container's name, for CPU and memory
        (each holds its own configuration: its ``memory_mb`` ignores the data plane's)."""
        self.timed = timed if timed is not None else []
        """The proxies whose response path runs inside the mesh's attempt (timed there)."""
        self.handshake_s = handshake_s
        self.per_connection = spec.tls.requests_per_connection if spec.tls else 0
        self._next: dict[str, int] = {}
        self._served: dict[tuple[str, int], int] = {}
        self._conns: dict[tuple[str, int], list[Worker]] = {}
        self.requests = 0
        self.handshakes = 0
        self.in_pod_s = 0.0
        """Time the counted requests spent in the pods outside the mesh's attempts."""
        per_pod = max(1, len(self.parts) // max(1, len(proxies)))
        self.replica_of = {p: i // per_pod for i, (_, p) in enumerate(self.parts)}
        """Each container's replica (the parts list a replica's containers together)."""
        self.containers: list[list[Proxy]] = [[] for _ in proxies]
        for p, i in self.replica_of.items():
            self.containers[i].append(p)
        self.down: set[int] = set()
        """Replicas with a container OOM-killed and not yet restarted: the load balancer in
        front sends them nothing (its health check fails) until they are back."""

    def replica(self, workload: str) -> int | None:
        """The workload's next replica, round-robin over those up (None: all are down)."""
        n = len(self.proxies)
        i = self._next.get(workload, 0)
        for _ in range(n):
            nxt = (i + 1) % n
            if i not in self.down:
                self._next[workload] = nxt
                return i
            i = nxt
        return None

    def epochs(self, i: int) -> tuple[int, ...]:
        """Replica ``i``'s containers' kill counts: a request that sees them change while it
        is inside the pod was lost with the container (a reset)."""
        return tuple(p.epoch for p in self.containers[i])


class Gateways:
    """The scenario's gateways for one run of Istio (sidecar or ambient mode)."""

    implementation = "istio-ingressgateway (Envoy, mTLS to the destination's sidecar)"

    def __init__(self, sim: Simulation, dp: ProxiedDataPlane) -> None:
        self.sim = sim
        self.dp = dp
        self.env = sim.env
        self.window = (sim.warmup_s, sim.end_s)
        self.by_name: dict[str, GatewayRuntime] = {}
        self.routes: dict[str, GatewayRuntime] = {}
        self._attempt: Attempt = dp._attempt_fn  # type: ignore[attr-defined]
        self._placed: dict[Node, int] = {}
        self.extra_request_s = 0.0
        """CPU per request on the gateway's request path beyond its model (ambient: HBONE)."""
        self.mtls: bool = getattr(dp, "mtls", True)
        for spec in sim.scenario.gateways:
            self.by_name[spec.name] = self.build(spec)
        for wl in sim.scenario.workloads:
            if wl.via is not None:
                self.routes[wl.name] = self.by_name[wl.via]

    # ----------------------------------------------------------------- building

    def build(self, spec: Gateway) -> GatewayRuntime:
        model = cost_model(spec.model or GATEWAY_MODEL, "envoy-sidecar", self.sim.model_values)
        resources = spec.resources or ISTIO_GATEWAY_RESOURCES
        # pilot-agent sizes a gateway's Envoy from its CPU limit, as a sidecar's.
        workers = envoy_concurrency(resources, self.sim.scenario.cluster.allocatable_cpu_m)
        proxies: list[GatewayProxy] = []
        for i in range(self.replica_count(spec, [model], spec_request_m(spec))):
            proxies.append(self.mesh_proxy(
                f"gateway/{spec.name}-{i}", model, self.place(spec), workers,
                stealing=False, config=self.mesh_config, resources=resources,
            ))  # fmt: skip
        handshake_s = model.handshake_cpu_us("server", mutual=False) * 1e-6
        return GatewayRuntime(spec, list(proxies), handshake_s, timed=proxies)

    def runtime_of(self, proxy: Proxy) -> GatewayRuntime:
        """The gateway whose pods ``proxy`` is a container of."""
        return next(gw for gw in self.by_name.values() if proxy in gw.replica_of)

    def proxy_down(self, proxy: Proxy) -> None:
        """A container of a gateway replica is OOM-killed (:mod:`meshsim.sim.cpu.oom`): the
        replica leaves the load balancer until :meth:`proxy_up`; the requests inside it are
        lost (a reset where they next look), its clients' connections and its upstream ones
        are gone."""
        gw = self.runtime_of(proxy)
        i = gw.replica_of[proxy]
        gw.down.add(i)
        proxy.killed()
        for container in gw.containers[i]:
            # The clients' connections end at the replica, and its containers' connections
            # to each other went with the one killed.
            container.connections = container.tls_connections = 0
        for key in [k for k in gw._conns if k[1] == i]:
            del gw._conns[key]
        self.forget_upstream(proxy)
        pools = getattr(self.dp, "pools", None)
        if pools is not None:
            name = proxy.name
            pools.sever(lambda key: isinstance(key, tuple) and name in key)

    def forget_upstream(self, proxy: Proxy) -> None:
        """Drop what the gateway keeps of a killed container's own upstream connections
        (Istio's gateway pools its upstream connections in the data plane's pools)."""

    def proxy_up(self, proxy: Proxy) -> None:
        """The killed container restarts after its backoff; the replica is back in the load
        balancer once all its containers are up."""
        gw = self.runtime_of(proxy)
        proxy.restarted()
        i = gw.replica_of[proxy]
        if all(p.alive for p in gw.containers[i]):
            gw.down.discard(i)

    def replica_count(self, spec: Gateway, models: list[ProxyCostModel], request_m: float) -> int:
        if spec.autoscale is None:
            return spec.replicas
        return hpa_replicas(self.sim, spec, models, request_m)

    def place(self, spec: Gateway) -> Node:
        """A replica's node: fewest pods and gateway replicas, then lowest index (replicas
        are not in the nodes' pod lists, so they are counted here to spread them)."""
        nodes = self.sim.topology.nodes_for(
            self.sim.nodes, [spec.zone] if spec.zone is not None else None
        )
        node: Node = min(nodes, key=lambda n: (len(n.pods) + self._placed.get(n, 0), n.index))
        self._placed[node] = self._placed.get(node, 0) + 1
        return node

    def mesh_proxy(
        self,
        name: str,
        model: ProxyCostModel,
        node: Node,
        threads: int,
        *,
        stealing: bool,
        config: Config,
        resources: Resources,
    ) -> GatewayProxy:
        dp = self.dp
        proxy = GatewayProxy(
            self.env, name, "gateway", model, node, threads, stealing=stealing,
            pick=dp._accept, pod=None, telemetry=getattr(dp, "telemetry", True),
            rng=dp._lb_rng, resilience=dp.resilience,  # type: ignore[attr-defined]
            cpu_factor=dp.cpu_factor(model), drift=dp.cpu_drift(model), config=config,
            window=self.window, resources=resources,
        )  # fmt: skip
        dp.proxies.append(proxy)
        return proxy

    def mesh_config(self) -> tuple[int, int]:
        """An Istio gateway holds every service of the mesh (no Sidecar scoping applies to
        gateways): a cluster per service and per subset a split names, every endpoint."""
        policies = self.dp.resilience.policies  # type: ignore[attr-defined]
        return config_of(policies, self.sim.services.values())

    # ----------------------------------------------------------------- a request

    def call(
        self, client: Client, service: ServiceRuntime, req: Request
    ) -> Generator[simpy.Event, Any, int]:
        """One request of a workload through its gateway (or straight in, without one)."""
        gw = self.routes.get(client.name)
        if gw is None:
            status: int = yield from self.dp.call(client, service, req, None)
            return status
        env = self.env
        net = self.sim.network
        i = gw.replica(client.name)
        if i is None:
            return CONNECT_FAILURE  # every replica down: the load balancer has no backend
        proxy = gw.proxies[i]
        assert isinstance(proxy, L7Proxy)
        nbytes = req.request_bytes
        epochs = gw.epochs(i)
        yield env.timeout(net.delay(None, proxy.node, nbytes))
        if gw.epochs(i) != epochs:
            return RESET  # killed while the request was on its way
        arrived = env.now
        worker, open_s, counting = self.enter(gw, i, client.name, proxy, req)
        cpu = proxy.costs(nbytes, 0, self.mtls)[0] + open_s + self.extra_request_s
        yield from proxy.work(worker, cpu)
        worker.requests += 1
        if counting:
            gw.in_pod_s += env.now - arrived
        status = yield from proxy.outbound(self._attempt, service, req, worker, nbytes,
                                           source=source_name(client))  # fmt: skip
        if gw.epochs(i) != epochs:
            return RESET  # the replica's container was OOM-killed with the request in it
        self.release(gw, i, client.name, worker)
        yield env.timeout(net.delay(proxy.node, None, service.spec.response_bytes))
        return status

    def counting(self, req: Request) -> bool:
        return self.sim.warmup_s <= req.sent_at < self.sim.end_s

    def enter(
        self, gw: GatewayRuntime, i: int, workload: str, proxy: Proxy, req: Request
    ) -> tuple[Worker, float, bool]:
        """A request reaching replica ``i``'s front proxy: the worker of its client
        connection, the CPU to open that connection (0 when reused), and whether the request
        counts (by send time, as the recorder counts the workload's requests), with the
        gateway's request and handshake counts."""
        worker, open_s = self.connection(gw, i, workload, proxy)
        counting = self.counting(req)
        if counting:
            gw.requests += 1
            if open_s > 0 and gw.per_connection > 0:
                gw.handshakes += 1
        return worker, open_s, counting

    def connection(
        self, gw: GatewayRuntime, i: int, workload: str, proxy: Proxy
    ) -> tuple[Worker, float]:
        """The worker of a client connection to replica ``i``, and the CPU to open it: TCP
        accept, plus a full TLS handshake when the gateway terminates TLS. A connection
        carries ``requests_per_connection`` requests, then the client opens a new one."""
        key = (workload, i)
        idle = gw._conns.setdefault(key, [])
        served = gw._served.get(key, 0)
        gw._served[key] = served + 1
        if idle and (gw.per_connection == 0 or served % gw.per_connection):
            return idle.pop(), 0.0
        if idle:
            idle.pop()  # the client closed it after its last request
            proxy.closed(gw.per_connection > 0)
            self.client_connection(gw, i, opened=False)
        proxy.opened(gw.per_connection > 0)
        self.client_connection(gw, i, opened=True)
        if gw.per_connection:
            proxy.handshakes += 1
        return proxy.accept(), proxy.tcp_open_s + (gw.handshake_s if gw.per_connection else 0.0)

    def client_connection(self, gw: GatewayRuntime, i: int, *, opened: bool) -> None:
        """A client connection to replica ``i`` opened or closed (for what else in the pod
        holds it: nothing in Istio's gateway, whose Envoy is the pod)."""

    def release(self, gw: GatewayRuntime, i: int, workload: str, worker: Worker) -> None:
        gw._conns[(workload, i)].append(worker)

    # ----------------------------------------------------------------- results

    def summary(self) -> dict[str, Any]:
        window = self.sim.end_s - self.sim.warmup_s
        warm = self.sim.snapshots.get("warmup")
        end = self.sim.snapshots.get("end")
        out: dict[str, Any] = {}
        for name, gw in self.by_name.items():
            cpu: dict[str, float] = {}
            memory: dict[str, float] = {}
            for part, p in gw.parts:
                used = 0.0
                if warm is not None and end is not None:
                    used = end.proxy_cpu.get(p.name, 0.0) - warm.proxy_cpu.get(p.name, 0.0)
                cpu[part] = cpu.get(part, 0.0) + used / window
                memory[part] = memory.get(part, 0.0) + p.memory_mb(0, 0)
            in_pod = gw.in_pod_s + sum(p.response_s for p in gw.timed)
            rps = gw.requests / window
            vcpu = sum(cpu.values())
            out[name] = {
                "implementation": self.implementation,
                "replicas": len(gw.proxies),
                "autoscaled": gw.spec.autoscale is not None,
                "requests": gw.requests,
                "rps": rps,
                "tls_handshakes": gw.handshakes,
                "handshakes_per_s": gw.handshakes / window,
                "cpu_vcpu": vcpu,
                "cpu_vcpu_per_1000rps": vcpu / (rps / 1000.0) if rps > 0 else 0.0,
                "memory_mb": sum(memory.values()),
                "added_latency_ms": 1e3 * in_pod / gw.requests if gw.requests else 0.0,
                "by_container": {
                    part: {"cpu_vcpu": cpu[part], "memory_mb": memory[part]} for part in cpu
                },
            }
        return out


def config_of(policies: Any, services: Iterable[ServiceRuntime]) -> tuple[int, int]:
    """The clusters and endpoints a gateway's proxy holds for ``services``: a cluster per
    service and per subset that a traffic split names (``policies.has_subsets``)."""
    services = list(services)
    clusters = sum(1 + (len(s.versions) if policies.has_subsets(s.name) else 0) for s in services)
    return clusters, sum(len(s.endpoints) for s in services)


def spec_request_m(spec: Gateway) -> float:
    """The CPU request an HPA divides by: the gateway container's (its resources', else
    autoscale.cpu_request_m); 0 without an HPA."""
    return spec.cpu_request_m if spec.autoscale is not None else 0.0


def hpa_replicas(
    sim: Simulation, spec: Gateway, models: list[ProxyCostModel], request_m: float
) -> int:
    """The replica count an HPA on CPU settles at for the peak rate of the workloads that
    enter by ``spec``: ceil(CPU needed / (target x the pod's CPU request)), within its
    bounds. The CPU per request is the sum of the pod's proxies' models (the gateway Envoy;
    or NGINX and its linkerd-proxy), each with its anchor's wake-ups per request. For
    Linkerd's pod that leaves out the sidecar's opaque pass of the clients' connection and
    the extra wake-ups of its second pair of bursts: on the benchmark shape the pod runs
    0.288 vCPU per 1000 rps against the 0.242 counted here (16 % under)."""
    hpa = spec.autoscale
    assert hpa is not None
    cores = 0.0
    for wl in sim.scenario.workloads:
        if wl.via != spec.name:
            continue
        peak = max([wl.rate_rps or 0.0, *(p.rate_rps for p in wl.phases or [])])
        target = sim.scenario.service(wl.target)
        for model in models:
            wakeups = model.anchor.wakeups_per_request if model.anchor is not None else 0.0
            per_1000 = model.vcpu_per_1000rps(
                wl.request_bytes, target.response_bytes, mtls=True, wakeups_per_request=wakeups
            )
            cores += peak * per_1000 / 1000.0
    per_replica = hpa.target_cpu_percent / 100.0 * request_m / 1000.0
    wanted = math.ceil(cores / per_replica - 1e-9) if cores > 0 else 0
    return min(hpa.max_replicas, max(hpa.min_replicas, wanted))


def gateways_for(sim: Simulation) -> Gateways | None:
    """The run's gateways, or None (no gateways, or a mesh whose ingress is not modelled)."""
    if not sim.scenario.gateways:
        return None
    from meshsim.sim.dataplanes.ambient import AmbientDataPlane
    from meshsim.sim.dataplanes.sidecar import IstioSidecars, LinkerdSidecars

    dp = sim.data_plane
    if isinstance(dp, IstioSidecars):
        return Gateways(sim, dp)
    if isinstance(dp, AmbientDataPlane):
        return AmbientGateways(sim, dp)
    if isinstance(dp, LinkerdSidecars):
        from meshsim.sim.ingress_controller import LinkerdIngress

        return LinkerdIngress(sim, dp)
    note = (
        f"gateways: the {sim.mesh} ingress is not modelled (Cilium: its per-node Envoy; "
        "none: an unmeshed ingress controller); 'via' traffic enters at the destination"
    )
    if note not in dp.warnings:
        dp.warnings.append(note)
    return None


class AmbientGateways(Gateways):
    """Istio ambient: the gateway Envoy sends HBONE to the destination's node ztunnel."""

    implementation = "istio-ingressgateway (Envoy, HBONE to the destination's ztunnel)"

    def __init__(self, sim: Simulation, dp: ProxiedDataPlane) -> None:
        super().__init__(sim, dp)
        waypoint = getattr(dp, "wp_model", None)
        if waypoint is not None:
            # One HBONE leg of the waypoint's two (models/waypoint.yaml: hbone_frame_us).
            self.extra_request_s = waypoint.value("hbone_frame_us") / 2.0 * 1e-6
