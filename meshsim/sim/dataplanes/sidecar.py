"""Sidecar data planes: Istio (Envoy) and Linkerd (linkerd2-proxy), one proxy per pod.

A call from a meshed pod goes: app -> its sidecar (outbound: request path on the worker of
the app's connection, endpoint pick, connection from the pool) -> network -> the
destination's sidecar (inbound, on the worker the connection is pinned to) -> app, and back
the same way, each proxy adding its ``hop_latency_us`` per direction and its response-path
CPU, then its after-response telemetry, which holds the worker without delaying the reply.

The two meshes differ only in what the mechanisms are given (docs/mesh-semantics.md §8, §10):

=================  =====================================  ==================================
                   Istio sidecar (Envoy)                  Linkerd (linkerd2-proxy)
=================  =====================================  ==================================
workers            the CPU limit in whole cores (2 for    1 by default; more = tokio's
                   2000m), each connection pinned to      work-stealing pool
                   one worker (no work stealing)
balancer           LEAST_REQUEST (P2C)                    P2C over Peak-EWMA
between proxies    HTTP/1.1 pools per worker per host     HTTP/2, one multiplexed
                   (h2UpgradePolicy DO_NOT_UPGRADE);      connection per endpoint
                   HTTP/2 for http2/grpc services
mTLS               PERMISSIVE (default)/STRICT: mTLS      always on between meshed pods
                   between sidecars (auto mTLS);
                   DISABLE: none
configuration      the whole mesh, unless                 only the services it calls
                   ``sidecar_scoping``                    (resolved on demand)
=================  =====================================  ==================================

Traffic from clients outside the mesh reaches the destination's sidecar in plaintext. Istio's
PeerAuthentication decides whether the sidecar takes it (docs/mesh-semantics.md §8.1):
PERMISSIVE, Istio's default, accepts it, and costs what STRICT does, as sidecars still talk mTLS
to each other; STRICT refuses it: the inbound listener has no plaintext filter chain and closes
the connection on the request's first bytes, which the client sees as a reset (istio.io's
"Mutual TLS Migration" task: once STRICT, a client without a sidecar gets no response, "000
command terminated with exit code 56", curl's failure to receive). Linkerd's default policy,
``all-unauthenticated``, accepts it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.policy.authz import DENIED_STATUS
from meshsim.scenario.resources import envoy_concurrency
from meshsim.sim.app import CONNECT_FAILURE, RESET, Client, Pod
from meshsim.sim.dataplanes.mesh import ProxiedDataPlane, cost_model, run_inbound
from meshsim.sim.dataplanes.proxy import Worker
from meshsim.sim.dataplanes.resilience_state import Resilience
from meshsim.sim.dataplanes.routing import L7Proxy
from meshsim.sim.prefetched import prefetched

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation


class SidecarDataPlane(ProxiedDataPlane):
    """A proxy beside every pod (and every meshed client); subclasses set the knobs."""

    model: ProxyCostModel
    threads: int = 1
    stealing: bool = False
    mtls: bool = True
    refuses_plaintext: bool = False
    """Istio's STRICT: a client outside the mesh that reaches a sidecar is refused."""
    upgrade_h2: bool = False
    per_worker_pools: bool = False
    scoped: bool = True
    """True: a proxy holds only the services it calls; False: the whole mesh."""
    telemetry: bool = True
    wasm_filters: int = 0

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self._lb_rng = prefetched(sim.streams("balancers/sidecar"))
        self.resilience = Resilience(sim, self.name, self.warnings, h2=self.h2, mtls=self.mtls)
        self.sidecars: dict[Pod, L7Proxy] = {}
        self.client_sidecars: dict[str, L7Proxy] = {}
        self._attempt_fn = self._attempt

    # ----------------------------------------------------------------- proxies

    def threads_for(self, pod: Pod | None) -> int:
        """Worker threads of the sidecar of ``pod`` (None: a meshed client's)."""
        return self.threads

    def _new_proxy(self, name: str, node: Any, pod: Pod | None) -> L7Proxy:
        proxy = L7Proxy(
            self.env,
            name,
            "sidecar",
            self.model,
            node,
            self.threads_for(pod),
            stealing=self.stealing,
            pick=self._accept,
            pod=pod,
            telemetry=self.telemetry,
            wasm_filters=self.wasm_filters,
            rng=self._lb_rng,
            resilience=self.resilience,
            cpu_factor=self.cpu_factor(self.model),
            drift=self.cpu_drift(self.model),
        )
        self.proxies.append(proxy)
        return proxy

    def install(self) -> None:
        for svc in self.sim.services.values():
            for pod in svc.pods:
                self.on_pod_started(pod)

    def on_pod_started(self, pod: Pod) -> None:
        self.sidecars[pod] = self._new_proxy(f"{pod.name}/sidecar", pod.node, pod)

    def client_host(self, client: Client) -> Node | None:
        """The node of the client's sidecar (its pod), None without ``meshed_clients``."""
        proxy = self._outbound_proxy(client)
        return proxy.node if proxy is not None else None

    def _outbound_proxy(self, src: Pod | Client) -> L7Proxy | None:
        if isinstance(src, Pod):
            return self.sidecars[src]
        if not self.meshed_clients:
            return None
        proxy = self.client_sidecars.get(src.name)
        if proxy is None:
            proxy = self._new_proxy(f"client/{src.name}/sidecar", self.client_node(), None)
            proxy.net_node = None
            proxy.pod_name = src.pod_name  # with the load generator
            self.client_sidecars[src.name] = proxy
        return proxy

    def h2(self, service: ServiceRuntime) -> bool:
        return self.upgrade_h2 or service.spec.speaks_http2

    def upstream_cluster(self, pod: Pod) -> Hashable:
        """The client's cluster for a connection to ``pod``, whose TLS context holds the
        session tickets it offers (Envoy: a context per cluster): the service's, or the
        subset of the pod's version where the service's catch-all route splits by version
        (:meth:`_clusters`)."""
        name = pod.service.name
        if self.resilience.policies.has_subsets(name):
            return (name, pod.version.name)
        return name

    def pool_key(self, proxy: Proxy, worker: Worker, pod: Pod) -> Hashable:
        if self.per_worker_pools:
            return (proxy.name, worker.index, pod.name)
        return (proxy.name, pod.name)

    # ----------------------------------------------------------------- a call

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        # Not a generator itself: it hands over the path's generator, so that the events
        # of the call do not pass through one more frame each.
        nbytes = call.request_bytes if call is not None else req.request_bytes
        proxy = self._outbound_proxy(src)
        if proxy is None:
            return self._from_outside(src, service, req, nbytes)
        return self._from_sidecar(proxy, service, req, nbytes, call)

    def _from_sidecar(
        self, proxy: L7Proxy, service: ServiceRuntime, req: Request, nbytes: int, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        """The caller's sidecar: the request path on its app connection's worker, then the
        outbound chain."""
        name = service.name
        worker, accept_s = self.app_conn(proxy, name)
        yield from proxy.work(worker, proxy.costs(nbytes, 0, self.mtls)[0] + accept_s)
        worker.requests += 1
        status: int = yield from proxy.outbound(
            self._attempt_fn, service, req, worker, nbytes, call
        )
        self.app_conn_done(proxy, name, worker)
        return status

    def _attempt(
        self,
        proxy: L7Proxy,
        worker: Worker,
        pod: Pod,
        req: Request,
        nbytes: int,
        connected: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """One try from ``proxy`` to ``pod`` through the pod's sidecar, and the reply
        (``connected``: see :class:`~meshsim.sim.dataplanes.routing.Attempt`)."""
        env = self.env
        server = self.sidecars[pod]
        tls = self.mtls
        h2 = self.h2(pod.service)
        delay = self.net.delay
        src_node = proxy.net_node
        cp = self.sim.control_plane
        refused = cp.gate(proxy.pod, pod, tls)  # a dead pod, or no valid certificate
        if refused is not None:
            yield env.timeout(2.0 * (proxy.hop_s + delay(src_node, pod.node, 0)))
            return refused
        key = self.pool_key(proxy, worker, pod)
        conn = self.pools.reuse(key, h2)
        if conn is None:
            conn = yield from self.pools.acquire(
                key, proxy, worker, server, tls, h2, delay(src_node, pod.node, 0),
                self.upstream_cluster(pod),
            )  # fmt: skip
        if connected is not None:
            connected()
        yield env.timeout(proxy.hop_s + delay(src_node, pod.node, nbytes))
        check = cp.authorize(proxy.pod or Client(proxy.name.split("/")[1]), pod, req)
        if check is not None:
            yield from server.work(conn.server_worker, check[1])
            if not check[0].allowed:
                yield env.timeout(delay(pod.node, src_node, 0) + proxy.hop_s)
                self.pools.release(conn, h2)
                return DENIED_STATUS
        resp_bytes = pod.response_bytes
        status: int = yield from run_inbound(
            env,
            self.sim,
            server,
            conn.server_worker,
            pod,
            req,
            server.costs(nbytes, resp_bytes, tls),
            self._to_app_s(server),
        )
        yield env.timeout(delay(pod.node, src_node, resp_bytes) + proxy.hop_s)
        costs = proxy.costs(nbytes, resp_bytes, tls)
        yield from proxy.work_then_linger(worker, costs[1], costs[2])
        self.pools.release(conn, h2)
        return status

    def _from_outside(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, nbytes: int
    ) -> Generator[simpy.Event, Any, int]:
        """A client outside the mesh: plaintext straight to the chosen pod's sidecar."""
        pod = self.pick_any(service)
        if pod is None:
            return CONNECT_FAILURE
        env = self.env
        server = self.sidecars[pod]
        delay = self.net.delay
        if self.refuses_plaintext:
            # STRICT: the TCP handshake completes, the request's first bytes find no filter
            # chain, and the sidecar closes the connection (the module's docstring).
            yield env.timeout(2.0 * delay(None, pod.node, 0) + delay(None, pod.node, nbytes))
            if server.tcp_open_s:
                yield from server.work(server.accept(), server.tcp_open_s)
            yield env.timeout(delay(pod.node, None, 0))
            return RESET
        key = ("outside", src.name if isinstance(src, Client) else "", pod.name)
        conn = self.pools.reuse(key, False)
        if conn is None:
            conn = yield from self.pools.acquire(
                key, None, None, server, False, False, delay(None, pod.node, 0)
            )
        yield env.timeout(delay(None, pod.node, nbytes))
        check = self.sim.control_plane.authorize(None, pod, req)
        if check is not None:
            yield from server.work(conn.server_worker, check[1])
            if not check[0].allowed:
                yield env.timeout(delay(pod.node, None, 0))
                self.pools.release(conn, False)
                return DENIED_STATUS
        status: int = yield from run_inbound(
            env,
            self.sim,
            server,
            conn.server_worker,
            pod,
            req,
            server.costs(nbytes, pod.response_bytes, False),
            self._to_app_s(server),
        )
        yield env.timeout(delay(pod.node, None, pod.response_bytes))
        self.pools.release(conn, False)
        return status

    def _to_app_s(self, server: Proxy) -> float:
        """The inbound sidecar's CPU to connect to its app for one request: with keep-alive
        off every request opens one; a kept-alive pool to the app costs nothing per request."""
        return 0.0 if self.keep_alive else server.tcp_open_s

    # ----------------------------------------------------------------- configuration

    def config_in_view(self, proxy: Proxy) -> tuple[int, int]:
        services = self.sim.services
        if not self.scoped:
            clusters = sum(self._clusters(s) for s in services.values())
            endpoints = sum(len(s.endpoints) for s in services.values())
            return clusters, endpoints
        if proxy.pod is not None:
            own = proxy.pod.service
            called = {c.service for group in proxy.pod.call_plan for c in group}
            inbound = 1
        else:
            own = None
            called = {
                w.target
                for w in self.sim.scenario.workloads
                if proxy.name == f"client/{w.name}/sidecar"
            }
            inbound = 0
        clusters = inbound + sum(self._clusters(services[s]) for s in called)
        endpoints = sum(len(services[s].endpoints) for s in called)
        if own is not None:
            endpoints += 1
        return clusters, endpoints

    def _clusters(self, service: ServiceRuntime) -> int:
        """Envoy clusters for a service: one, plus one per subset when a split names them."""
        split = self.resilience.policies.has_subsets(service.name)
        return 1 + (len(service.versions) if split else 0)


class IstioSidecars(SidecarDataPlane):
    """Istio with Envoy sidecars (mesh_options.istio)."""

    name = "istio"

    def __init__(self, sim: Simulation) -> None:
        opts = sim.scenario.mesh_options.istio
        self.model = cost_model(opts.model, "envoy-sidecar", sim.model_values)
        self.concurrency = opts.workers
        """ProxyConfig concurrency, if the scenario gives one (None: from CPU limits)."""
        self.stealing = False
        self.mtls = opts.mtls != "DISABLE"
        self.refuses_plaintext = opts.mtls == "STRICT"
        self.upgrade_h2 = opts.h2_upgrade
        self.per_worker_pools = True
        self.scoped = opts.sidecar_scoping
        self.telemetry = opts.telemetry
        self.wasm_filters = opts.wasm_filters
        super().__init__(sim)
        refused = self.refused_workloads()
        if refused:
            self.warnings.append(
                "mTLS STRICT: the sidecars refuse plaintext, so every request of "
                f"{', '.join(refused)} (outside the mesh: no meshed_clients, no gateway) "
                "fails as a reset; PERMISSIVE, Istio's default, accepts them"
            )

    def refused_workloads(self) -> list[str]:
        """The workloads whose requests STRICT refuses: clients outside the mesh that reach
        their target's sidecars directly (not meshed, through no gateway, to a service in
        the cluster)."""
        if not self.refuses_plaintext or self.meshed_clients:
            return []
        scenario = self.sim.scenario
        external = {s.name for s in scenario.services if s.external is not None}
        return [w.name for w in scenario.workloads if w.via is None and w.target not in external]

    def threads_for(self, pod: Pod | None) -> int:
        """``mesh_options.istio.workers`` when given; else pilot-agent's count from the
        sidecar's CPU limit (its pod's ``proxy_resources``, else the mesh's)."""
        if self.concurrency is not None:
            return self.concurrency
        scenario = self.sim.scenario
        override = None if pod is None else pod.service.spec.proxy_resources
        resources = scenario.mesh_options.sidecar_resources(self.name, override)
        return envoy_concurrency(resources, scenario.cluster.allocatable_cpu_m)


class LinkerdSidecars(SidecarDataPlane):
    """Linkerd with linkerd2-proxy sidecars (mesh_options.linkerd)."""

    name = "linkerd"

    def __init__(self, sim: Simulation) -> None:
        opts = sim.scenario.mesh_options.linkerd
        self.model = cost_model(opts.model, "linkerd-proxy", sim.model_values)
        self.threads = opts.workers
        self.stealing = True
        self.mtls = True
        self.upgrade_h2 = opts.protocol_upgrade
        self.per_worker_pools = False
        self.scoped = True
        super().__init__(sim)
