"""istiod: debounce, push throttle and per-proxy xDS pushes; its CA; its CPU and memory.

Flow of a change (docs/mesh-semantics.md §9.1):

1. An endpoint change (a pod killed, terminating or ready) or a config change reaches istiod
   after the informer delay and enters the :class:`~.debounce.Debouncer` (100 ms quiet,
   10 s max; endpoint changes too unless ``eds_debounce`` is off).
2. The debounced request builds a PushContext (``push_context_*``; endpoint-only pushes skip
   the per-service part). Only one runs at a time.
3. Every connected proxy that depends on a changed service is queued for a push (all of them
   without Sidecar scoping, since every proxy holds every service); a proxy already queued
   and not yet started is merged (it will get the newer state), one being pushed is queued
   again. ``min(15 + 5 x cores, 100)`` pushes run at once (the push throttle). A push costs
   ``full_push_base + full_push_cluster x clusters + push_endpoint x endpoints`` in the
   proxy's view for a full push, ``eds_push_base + push_endpoint x endpoints of the changed
   clusters`` for an endpoint-only one. The pushes share the replica's cores left over by the
   upkeep of its connected proxies: with ``n`` pushes at once on ``c`` free cores each takes
   ``cpu x max(1, n / c)`` (processor sharing with every slot busy, as in a large push).
4. The proxy applies the update ``send_latency_ms`` later.

Who connects (:meth:`Istiod.attach`): every Envoy sidecar; under ``istio-ambient`` the
ztunnels (one per node) and the waypoints instead, through the same debounce, throttle and
per-proxy pushes (docs/mesh-semantics.md §11: ztunnel gets workloads over xDS from istiod, waypoints
are Envoys configured by istiod). What each holds decides its push cost and memory here:

- a sidecar: the whole mesh, or what it calls with ``sidecar_scoping``;
- a ztunnel: every workload and service of the mesh (WDS ``Address`` resources; ztunnel
  resolves any destination and checks any peer itself, and on-demand WDS is off by default),
  so it is charged like an unscoped sidecar: ``clusters`` = services, ``endpoints`` = all pods.
  The Sidecar resource does not apply to it. The Envoy-fitted per-cluster constants are reused
  for its (smaller) WDS entries: an upper bound on its cost;
- a waypoint: the services it is the waypoint for (its config is built for them only).

So under ambient istiod serves ``nodes + waypoints`` connections instead of one per pod, and
its CPU (pushes, upkeep) and memory (per-proxy state) follow from that count, with no
ambient-specific constant. istiod's knobs (cores, replicas, model, ``eds_debounce``) are read
from ``mesh_options.istio`` for both Istio data planes; ambient is always mTLS.

Replicas each watch the cluster and debounce alike; each serves the proxies connected to it
(assigned in turn as they connect) with its own throttle and cores, and holds the whole
registry. A new proxy gets a certificate from the CA (on the istiod cores) and then a full
push before its pod is ready. When istiod is down no push or certificate is made; when it
comes back every proxy reconnects and gets a full push, a replica admitting new xDS streams at
its request limit (``PILOT_MAX_REQUESTS_PER_SECOND``, the push throttle's formula), so a large
mesh takes seconds to be configured again (docs/mesh-semantics.md §9.1). A new pod's proxy
goes through the same limiter.

With several clusters (:mod:`.clusters`) an istiod serves its own cluster's proxies
(multi-primary) or every proxy, a remote cluster's pushes arriving one crossing later
(primary-remote); east-west gateways hold an xDS stream like any Envoy, with the whole mesh
in view (they route every service's SNI).

:func:`steady_state` is the closed form the model file's constants were fitted with.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshsim.models import ProxyCostModel
from meshsim.policy.authz import (
    Decision,
    IstioAuthz,
    IstioOperation,
    IstioPolicy,
    IstioRule,
    IstioSource,
    RequestInfo,
)
from meshsim.sim.controlplane.debounce import Debouncer, PushRequest
from meshsim.sim.controlplane.fifo import FifoServers
from meshsim.sim.controlplane.mesh import MeshControlPlane, control_plane_model
from meshsim.sim.controlplane.views import Pending, ProxyView

if TYPE_CHECKING:
    from meshsim.scenario.security import IstioAuthorizationPolicy
    from meshsim.sim.app import Pod
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

ALL = "*"
KB_PER_MB = 1024.0


def push_throttle(model: ProxyCostModel, cores: int) -> int:
    """PILOT_PUSH_THROTTLE's automatic value: min(15 + 5 x cores, 100)."""
    v = model.value
    return int(
        min(v("push_throttle_base") + v("push_throttle_per_core") * cores, v("push_throttle_max"))
    )


@dataclass(eq=False)
class Connected:
    """A proxy connected to an istiod replica."""

    proxy: Proxy
    view: ProxyView
    replica: Replica
    deps: set[str] | None
    """Services in its view besides its own (None: all of them, no Sidecar scoping)."""
    send_s: float = 0.0
    """From the end of its push to the proxy applying it (primary-remote: plus the crossing
    to a remote cluster's proxy)."""
    sched: Pending | None = None
    ready_pod: Pod | None = None
    """Set while a new pod waits for its first push to become ready."""


@dataclass(eq=False)
class Replica:
    index: int
    queue: FifoServers
    proxies: dict[str, Connected] = field(default_factory=dict)
    next_admit: float = 0.0
    """When its xDS request limiter next has a token (burst 1)."""


XDS_LIMIT_WAIT_S = 1.0
"""istiod waits at most this long for a request-limit token (``WaitForRequestLimit``);
a stream whose token would come later fails at once with ResourceExhausted."""
XDS_RETRY_BASE_S = 0.5
XDS_RETRY_MAX_S = 30.0
"""Envoy's xDS reconnect back-off (``SubscriptionFactory::RetryInitialDelayMs`` and
``RetryMaxDelayMs``, a JitteredExponentialBackOffStrategy: uniform below min(base x 2^k,
max))."""


class Istiod(MeshControlPlane):
    name = "istiod"
    kind = "istiod"

    def __init__(self, sim: Simulation, cluster: str | None = None) -> None:
        opts = sim.scenario.mesh_options.istio
        model = control_plane_model(opts.istiod_model, "istiod", sim.model_values)
        self.cores = opts.istiod_cores or sim.scenario.cluster.cores_per_node
        ambient = sim.mesh == "istio-ambient"
        # Under ambient a node's ztunnel holds one certificate per identity on its node.
        holder = _ztunnel_identity if ambient else None
        super().__init__(sim, model, self.cores, holder, cluster)
        v = model.value
        self.scoped = opts.sidecar_scoping
        self.eds_debounce = opts.eds_debounce
        self.mtls = ambient or opts.mtls != "DISABLE"
        self.throttle = push_throttle(model, self.cores)
        # PILOT_MAX_REQUESTS_PER_SECOND's automatic value is the push throttle's formula
        # (tuning.go since 1.21): new xDS streams per second per replica.
        self.request_limit = float(self.throttle)
        self.rejected_streams = 0
        self._reconnect_rng = sim.streams("istiod/xds_reconnect")
        self.replicas = [
            Replica(i, FifoServers(self.throttle)) for i in range(opts.istiod_replicas)
        ]
        self._next_replica = 0
        self.debouncer = Debouncer(v("debounce_after_ms") * 1e-3, v("debounce_max_ms") * 1e-3)
        self._timer_token = 0
        self.upkeep_s = v("connected_proxy_cpu_us_per_s") * 1e-6
        self.pushes = 0
        self.full_pushes = 0
        self.proxy_pushes = 0
        self.merged = 0
        self.pushes_by_cluster: dict[str, int] = {}
        """Per-proxy pushes by the cluster of the proxy (with several clusters)."""
        self.push_log: list[tuple[float, bool, int]] = []
        """(time the push was triggered, full, proxies queued) per push."""
        self._waiting: list[Connected] = []
        dp_model = getattr(sim.data_plane, "model", None)
        self.rbac_s = dp_model.value("rbac_us") * 1e-6 if dp_model is not None else 0.0
        self.authz = IstioAuthz(
            [_policy(p) for p in sim.scenario.security.istio.authorization_policies]
        )

    # ----------------------------------------------------------------- proxies

    CONNECTS = ("sidecar", "ztunnel", "waypoint", "east-west-gateway")
    """Proxy kinds that hold an xDS stream to istiod."""

    def attach(self, proxy: Proxy) -> None:
        if proxy.kind not in self.CONNECTS:
            return
        replica = self.replicas[self._next_replica % len(self.replicas)]
        self._next_replica += 1
        view = ProxyView(self.env, self.history, self.version)
        proxy.endpoint_view = view  # type: ignore[attr-defined]
        replica.proxies[proxy.name] = Connected(
            proxy, view, replica, self._view_deps(proxy), self.send_s + self.send_extra_s(proxy)
        )

    def _view_deps(self, proxy: Proxy) -> set[str] | None:
        """The services in a proxy's configuration (None: all of them)."""
        if proxy.kind in ("ztunnel", "east-west-gateway"):
            # ztunnel: every workload of the mesh (WDS). An east-west gateway routes any
            # service's SNI (AUTO_PASSTHROUGH). The Sidecar resource applies to neither.
            return None
        if proxy.kind == "waypoint":
            return {proxy.name.removesuffix("/waypoint")}
        return self.dependencies(proxy) if self.scoped else None

    def detach(self, proxy: Proxy) -> None:
        for r in self.replicas:
            r.proxies.pop(proxy.name, None)

    def configure_new_proxy(self, pod: Pod) -> None:
        proxy = getattr(self.sim.data_plane, "sidecars", {}).get(pod)
        entry = None if proxy is None else self._entry(proxy.name)
        if entry is None:
            self.sim.mark_ready(pod)
            return
        entry.ready_pod = pod
        if self.down:
            self._waiting.append(entry)
            return
        self._initial_push(entry)

    def _entry(self, name: str) -> Connected | None:
        for r in self.replicas:
            e = r.proxies.get(name)
            if e is not None:
                return e
        return None

    def _initial_push(self, entry: Connected) -> None:
        now = self.env.now
        end = self._push_one(entry, True, set(), self.version, now, admitted=self._admit(entry))
        self.later(end - now, lambda: self._became_ready(entry))

    def _admit(self, e: Connected) -> float:
        """When a stream that ``e``'s proxy opens now gets past its replica's limiter."""
        return self._admit_together([e])[0]

    def _admit_together(self, entries: list[Connected]) -> list[float]:
        """When the streams these proxies open now get past their replicas' request
        limiters (discovery.go ``WaitForRequestLimit``: a token bucket of
        ``request_limit`` per second, burst 1), in time order. A token more than a second
        away fails the stream at once, and the proxy reconnects after Envoy's back-off; so
        after an outage the mesh reconnects at most ``request_limit`` proxies a second per
        replica, and later still for the proxies that back off past their turn."""
        now = self.env.now
        rng = self._reconnect_rng
        admitted = [now] * len(entries)
        tries = [(now, i, 0) for i in range(len(entries))]
        heapq.heapify(tries)
        while tries:
            t, i, k = heapq.heappop(tries)
            r = entries[i].replica
            slot = max(t, r.next_admit)
            if slot - t <= XDS_LIMIT_WAIT_S:
                r.next_admit = slot + 1.0 / self.request_limit
                admitted[i] = slot
                continue
            self.rejected_streams += 1
            cap = min(XDS_RETRY_BASE_S * 2.0**k, XDS_RETRY_MAX_S)
            heapq.heappush(tries, (t + float(rng.uniform(0.0, cap)), i, k + 1))
        return admitted

    def _became_ready(self, entry: Connected) -> None:
        pod = entry.ready_pod
        entry.ready_pod = None
        if pod is not None and pod.alive:
            self.sim.mark_ready(pod)

    # ----------------------------------------------------------------- changes

    def endpoints_changed(self, service: str, changed_at: float) -> None:
        if self.down:
            return
        if self.eds_debounce:
            self._event(False, {service}, changed_at)
        else:
            req = PushRequest()
            req.merge(False, {service}, changed_at)
            self._push(req, independent=True)

    def on_config(self, target: str) -> None:
        changed_at = self.env.now
        self.later(
            self.kube_delay_s,
            lambda: None if self.down else self._event(True, {target}, changed_at),
        )

    def _event(self, full: bool, services: set[str], changed_at: float) -> None:
        d = self.debouncer
        d.event(self.env.now, full, services, changed_at)
        self._arm()

    def _arm(self) -> None:
        at = self.debouncer.timer_at
        if at is None:
            return
        self._timer_token += 1
        token = self._timer_token

        def fire() -> None:
            if token == self._timer_token and not self.down:
                req = self.debouncer.timer(self.env.now)
                if req is not None:
                    self._push(req)
                else:
                    self._arm()

        self.later(at - self.env.now, fire)

    def set_down(self, down: bool) -> None:
        if down == self.down:
            return
        self.down = down
        now = self.env.now
        if down:
            # The process is gone: what it had debounced is lost; a restart resyncs.
            self.debouncer = Debouncer(self.debouncer.after, self.debouncer.max)
            self._timer_token += 1
            return
        for name, svc in self.sim.services.items():
            self.known[name] = list(svc.endpoints)
        version = self.snapshot(set(self.sim.services))
        # Every proxy reconnects (through the request limiter) and is sent its whole
        # configuration. They are taken as reconnecting at the restart, in connection
        # order; really each arrives at the end of its own back-off.
        latest = now
        entries = [e for r in self.replicas for e in r.proxies.values()]
        # Queued in the order the limiter admits them (the push queue is FIFO).
        admitted = sorted(
            zip(self._admit_together(entries), range(len(entries)), entries, strict=True)
        )
        for at, _, e in admitted:
            latest = max(latest, self._push_one(e, True, set(), version, now, admitted=at))
        self.pushes += 1
        self.full_pushes += 1
        waiting, self._waiting = self._waiting, []
        for e in waiting:
            self._initial_push(e)

    # ----------------------------------------------------------------- pushes

    def _push(self, req: PushRequest, independent: bool = False) -> None:
        now = self.env.now
        v = self.model.value
        pc_cpu = v("push_context_base_us") * 1e-6
        if req.full:
            pc_cpu += v("push_context_service_us") * 1e-6 * len(self.sim.services)
        pc_cpu *= self.slow_factor
        for _ in self.replicas:
            self.account(now, pc_cpu)
        changed = {s for s in req.services if s != ALL}
        version = self.snapshot(changed)
        self.pushes += 1
        if req.full:
            self.full_pushes += 1
        self.later(pc_cpu, lambda: self._enqueue(req, version, independent, now))

    def _enqueue(self, req: PushRequest, version: int, independent: bool, pushed_at: float) -> None:
        now = self.env.now
        trace = self.trace
        applied: dict[str, float] = {}
        everything = ALL in req.services
        services = req.services
        known = self.known
        eds_all = sum(len(known[s]) for s in services if s != ALL)
        latest = now
        queued = 0
        for r in self.replicas:
            for e in r.proxies.values():
                if e.ready_pod is not None:
                    continue  # its first push will carry the newest state
                if e.deps is not None and not everything and e.deps.isdisjoint(services):
                    continue  # Sidecar scoping: the proxy does not depend on the change
                end = self._push_one(e, req.full, services, version, now, eds_all)
                queued += 1
                latest = max(latest, end)
                if trace is not None:
                    c = trace.cluster_of(e.proxy)
                    applied[c] = max(applied.get(c, end), end)
        self.push_log.append((now, req.full, queued))
        for t in req.changes:
            self.convergence.append(latest - t)
            if trace is not None:
                trace.converged(self, t, pushed_at, applied)
        if not independent:
            nxt = self.debouncer.push_done(now)
            if nxt is not None:
                self._push(nxt)
            else:
                self._arm()

    def _cost_s(self, e: Connected, full: bool, services: set[str], eds_all: int) -> float:
        v = self.model.value
        known = self.known
        if full:
            if e.deps is None:
                clusters = len(known)
                endpoints = self._total_endpoints()
            else:
                clusters = len(e.deps) + 1
                endpoints = sum(len(known[s]) for s in e.deps) + 1
            us = (
                v("full_push_base_us")
                + v("full_push_cluster_us") * clusters
                + v("push_endpoint_us") * endpoints
            )
        else:
            if e.deps is None or ALL in services:
                n = eds_all
            else:
                n = sum(len(known[s]) for s in services if s in e.deps)
            us = v("eds_push_base_us") + v("push_endpoint_us") * n
        return us * 1e-6

    def _total_endpoints(self) -> int:
        return sum(len(eps) for eps in self.known.values())

    def _push_one(
        self,
        e: Connected,
        full: bool,
        services: set[str],
        version: int,
        now: float,
        eds_all: int = 0,
        admitted: float | None = None,
    ) -> float:
        """Queue one proxy's push; return when the proxy will have applied ``version``.
        ``admitted``: when a (re)connecting proxy's stream got past the request limiter."""
        sched = e.sched
        if sched is not None and sched.start > now and admitted is None:
            # Still queued: PushQueue merges the requests; it goes out with the newest state.
            sched.version = max(sched.version, version)
            self.merged += 1
            return sched.at
        ready = now if admitted is None else max(now, admitted)
        if sched is not None and sched.at - e.send_s > now:
            ready = sched.at - e.send_s  # being pushed: queued again when it is done
        cpu = self._cost_s(e, full, services, eds_all) * self.slow_factor
        r = e.replica
        free_cores = max(self.cores - self.upkeep_s * len(r.proxies), 0.1 * self.cores)
        stretch = max(1.0, self.throttle / free_cores)
        start, end = r.queue.assign(ready, cpu * stretch)
        self.account(now if admitted is None else ready, cpu)
        self.proxy_pushes += 1
        if self.trace is not None:
            c = self.trace.cluster_of(e.proxy)
            self.pushes_by_cluster[c] = self.pushes_by_cluster.get(c, 0) + 1
        p = Pending(start, end + e.send_s, version)
        e.view.pending.append(p)
        e.sched = p
        return p.at

    # ----------------------------------------------------------------- authorization

    def authz_enforced(self, service: str, namespace: str) -> bool:
        return self.authz.enforced(service, namespace)

    def authz_evaluate(self, service: str, namespace: str, info: RequestInfo) -> Decision:
        return self.authz.evaluate(service, namespace, info)

    # ----------------------------------------------------------------- results

    def memory_mb_per_replica(self) -> list[float]:
        v = self.model.value
        known = self.known
        services = len(known)
        total_eps = self._total_endpoints()
        registry = v("service_kb") * services + v("registry_endpoint_kb") * total_eps
        out = []
        for r in self.replicas:
            kb = registry
            for e in r.proxies.values():
                if e.deps is None:
                    clusters, eps = services, total_eps
                else:
                    clusters = len(e.deps) + 1
                    eps = sum(len(known[s]) for s in e.deps) + 1
                kb += (
                    v("proxy_kb") + v("proxy_cluster_kb") * clusters + v("proxy_endpoint_kb") * eps
                )
            out.append(v("base_memory_mb") + kb / KB_PER_MB)
        return out

    def summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        out = self.base_summary(warmup_s, end_s)
        window = end_s - warmup_s
        proxies = sum(len(r.proxies) for r in self.replicas)
        by_kind: dict[str, int] = {}
        for r in self.replicas:
            for e in r.proxies.values():
                by_kind[e.proxy.kind] = by_kind.get(e.proxy.kind, 0) + 1
        upkeep = self.upkeep_s * proxies
        per_replica = self.memory_mb_per_replica()
        out.update(
            {
                "cpu_vcpu": out["cpu_s_work"] / window + upkeep if window > 0 else upkeep,
                "cpu_vcpu_upkeep": upkeep,
                "memory_mb": sum(per_replica),
                "memory_mb_per_replica": per_replica,
                "replicas": len(self.replicas),
                "cores_per_replica": self.cores,
                "push_throttle": self.throttle,
                "request_limit_per_s": self.request_limit,
                "rejected_streams": self.rejected_streams,
                "connected_proxies": proxies,
                "connected_by_kind": by_kind,
                "sidecar_scoping": self.scoped,
                "pushes": self.pushes,
                "full_pushes": self.full_pushes,
                "proxy_pushes": self.proxy_pushes,
                "merged_pushes": self.merged,
            }
        )
        if self.trace is not None:
            out["proxy_pushes_by_cluster"] = dict(sorted(self.pushes_by_cluster.items()))
        return out


def _ztunnel_identity(pod: Pod) -> tuple[int, str]:
    """The certificate a ztunnel holds for ``pod``: (its node, its identity)."""
    return pod.node.index, pod.service.name


def _policy(p: IstioAuthorizationPolicy) -> IstioPolicy:
    def tup(x: list[str] | None) -> tuple[str, ...] | None:
        return None if x is None else tuple(x)

    rules = tuple(
        IstioRule(
            tuple(
                IstioSource(
                    tup(s.principals),
                    tup(s.not_principals),
                    tup(s.namespaces),
                    tup(s.not_namespaces),
                )
                for s in r.from_
            ),
            tuple(
                IstioOperation(tup(o.paths), tup(o.not_paths), tup(o.methods), tup(o.not_methods))
                for o in r.to
            ),
        )
        for r in p.rules
    )
    return IstioPolicy(p.name, p.namespace, p.selector, p.action, rules, p.custom_allows)


def steady_state(
    model: ProxyCostModel,
    *,
    services: int,
    proxies: int,
    endpoints: int,
    view_services: int,
    view_endpoints: int,
    eds_pushes_per_s: float = 0.0,
    eds_endpoints: int = 0,
    full_pushes_per_s: float = 0.0,
    new_proxies_per_s: float = 0.0,
) -> dict[str, float]:
    """istiod's vCPU and memory (MB) in a steady state, in closed form (one replica).

    ``eds_pushes_per_s`` endpoint-only pushes reach every proxy with ``eds_endpoints``
    endpoints each; ``full_pushes_per_s`` full pushes reach every proxy; new proxies get one
    full push each. Each proxy holds ``view_services`` clusters and ``view_endpoints``
    endpoints. This is the arithmetic of the fits in ``models/istiod.yaml``.
    """
    v = model.value
    full_us = (
        v("full_push_base_us")
        + v("full_push_cluster_us") * view_services
        + v("push_endpoint_us") * view_endpoints
    )
    eds_us = v("eds_push_base_us") + v("push_endpoint_us") * eds_endpoints
    cpu_us_per_s = (
        proxies * v("connected_proxy_cpu_us_per_s")
        + eds_pushes_per_s * (proxies * eds_us + v("push_context_base_us"))
        + full_pushes_per_s
        * (proxies * full_us + v("push_context_base_us") + v("push_context_service_us") * services)
        + new_proxies_per_s * full_us
    )
    kb = (
        proxies
        * (
            v("proxy_kb")
            + v("proxy_cluster_kb") * view_services
            + v("proxy_endpoint_kb") * view_endpoints
        )
        + v("service_kb") * services
        + v("registry_endpoint_kb") * endpoints
    )
    return {"cpu_vcpu": cpu_us_per_s * 1e-6, "memory_mb": v("base_memory_mb") + kb / KB_PER_MB}
