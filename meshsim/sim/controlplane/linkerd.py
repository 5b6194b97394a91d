"""Linkerd's control plane: the destination controller's streams and the identity controller.

Flow of a change (docs/mesh-semantics.md §9.2): the endpoint change reaches the destination
controller after the informer delay; there is no debounce. Every proxy that watches the
service (its pod calls it) has a stream; the translator puts one update on each stream's
queue and a goroutine sends it. Sending costs ``update_cpu_us + update_endpoint_us x
endpoints changed`` on the controller's cores (a FIFO over ``destination_cores``). A stream
holding ``stream_queue_capacity`` (100) unsent updates is closed when one more arrives: its
queued updates are dropped and the proxy re-resolves ``reresolve_delay_ms`` later, receiving
a snapshot (``snapshot_endpoint_us`` per endpoint). Dropped updates keep the CPU slot they
were given (a simplification: overflow needs a burst far beyond what scenarios make).

Identity: the identity controller signs CSRs on its own core. A new pod is ready once it
holds a certificate; its streams then open (a snapshot each; discovery is lazy in the proxy,
and a first request waits for it, so the new proxy starts with the current endpoints).
When the control plane is down updates are lost; when it comes back every stream
re-resolves (a snapshot each).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshsim.policy.authz import (
    Decision,
    LinkerdAuthz,
    LinkerdMeshTLS,
    LinkerdPolicy,
    LinkerdServer,
    RequestInfo,
)
from meshsim.sim.controlplane.fifo import FifoServers
from meshsim.sim.controlplane.mesh import MeshControlPlane, control_plane_model
from meshsim.sim.controlplane.views import Pending, StreamView

if TYPE_CHECKING:
    from meshsim.scenario.security import LinkerdSecurity
    from meshsim.sim.app import Pod
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

KB_PER_MB = 1024.0


@dataclass(eq=False)
class Watcher:
    proxy: Proxy
    view: StreamView
    deps: set[str]


class LinkerdControlPlane(MeshControlPlane):
    name = "linkerd-destination"
    kind = "linkerd-control-plane"

    def __init__(self, sim: Simulation, cluster: str | None = None) -> None:
        opts = sim.scenario.mesh_options.linkerd
        model = control_plane_model(
            opts.control_plane_model, "linkerd-control-plane", sim.model_values
        )
        super().__init__(sim, model, 1, cluster=cluster)
        v = model.value
        self.cores = opts.destination_cores
        self.queue = FifoServers(self.cores)
        self.capacity = int(v("stream_queue_capacity"))
        self.update_s = v("update_cpu_us") * 1e-6
        self.update_ep_s = v("update_endpoint_us") * 1e-6
        self.snapshot_ep_s = v("snapshot_endpoint_us") * 1e-6
        self.reresolve_s = v("reresolve_delay_ms") * 1e-3
        self.watchers: dict[str, Watcher] = {}
        self.by_service: dict[str, dict[str, Watcher]] = {}
        self.updates = 0
        self.resets = 0
        self.snapshots = 0
        dp_model = getattr(sim.data_plane, "model", None)
        self.rbac_s = dp_model.value("rbac_us") * 1e-6 if dp_model is not None else 0.0
        self.authz = _authz(sim.scenario.security.linkerd)

    # ----------------------------------------------------------------- proxies

    def attach(self, proxy: Proxy) -> None:
        if proxy.kind not in ("sidecar", "linkerd-gateway"):
            return
        view = StreamView(self.env, self.history, self.version)
        proxy.endpoint_view = view  # type: ignore[attr-defined]
        # A multicluster gateway resolves every exported service (here: all of them).
        deps = set(self.sim.services) if proxy.kind == "linkerd-gateway" else None
        w = Watcher(proxy, view, deps if deps is not None else self.dependencies(proxy))
        self.watchers[proxy.name] = w
        for s in w.deps:
            self.by_service.setdefault(s, {})[proxy.name] = w

    def detach(self, proxy: Proxy) -> None:
        w = self.watchers.pop(proxy.name, None)
        if w is not None:
            for s in w.deps:
                self.by_service.get(s, {}).pop(proxy.name, None)

    def configure_new_proxy(self, pod: Pod) -> None:
        proxy = getattr(self.sim.data_plane, "sidecars", {}).get(pod)
        w = None if proxy is None else self.watchers.get(proxy.name)
        if w is not None:
            w.view.base = self.version
            for s in w.deps:
                cpu = (self.update_s + self.snapshot_ep_s * len(self.known[s])) * self.slow_factor
                self.queue.assign(self.env.now, cpu)
                self.account(self.env.now, cpu)
                self.snapshots += 1
        self.sim.mark_ready(pod)

    # ----------------------------------------------------------------- changes

    def endpoints_changed(self, service: str, changed_at: float) -> None:
        if self.down:
            return
        before = self.history[service].latest
        after = self.known[service]
        delta = max(1, len(set(before).symmetric_difference(after)))
        version = self.snapshot({service})
        self._send(service, version, changed_at, (self.update_s + self.update_ep_s * delta))

    def on_config(self, target: str) -> None:
        # A route or policy change: the policy controller streams one update per watcher.
        changed_at = self.env.now

        def informed() -> None:
            if self.down:
                return
            services = list(self.sim.services) if target == "*" else [target]
            for s in services:
                version = self.snapshot({s})
                self._send(s, version, changed_at, self.update_s)

        self.later(self.kube_delay_s, informed)

    def _send(self, service: str, version: int, changed_at: float, cpu: float) -> None:
        now = self.env.now
        latest = now
        cpu *= self.slow_factor
        trace = self.trace
        applied: dict[str, float] = {}
        for w in list(self.by_service.get(service, {}).values()):
            queue = w.view.pending.setdefault(service, deque())
            unsent = 0
            for p in reversed(queue):
                if p.start <= now:
                    break
                unsent += 1
            if unsent >= self.capacity:
                self._reset(w, service, queue, unsent)
                continue
            start, end = self.queue.assign(now, cpu)
            self.account(now, cpu)
            self.updates += 1
            p = Pending(start, end + self.send_s, version)
            queue.append(p)
            latest = max(latest, p.at)
            if trace is not None:
                c = trace.cluster_of(w.proxy)
                applied[c] = max(applied.get(c, p.at), p.at)
        self.convergence.append(latest - changed_at)
        if trace is not None:
            trace.converged(self, changed_at, now, applied)

    def _reset(self, w: Watcher, service: str, queue: deque[Pending], unsent: int) -> None:
        """Queue overflow: the stream is closed; the proxy re-resolves after a while."""
        self.resets += 1
        for _ in range(unsent):
            queue.pop()

        def reresolve() -> None:
            if self.down or w.proxy.name not in self.watchers:
                return
            self._resolve(w, service)

        self.later(self.reresolve_s, reresolve)

    def _resolve(self, w: Watcher, service: str) -> None:
        now = self.env.now
        cpu = (self.update_s + self.snapshot_ep_s * len(self.known[service])) * self.slow_factor
        start, end = self.queue.assign(now, cpu)
        self.account(now, cpu)
        self.snapshots += 1
        w.view.pending.setdefault(service, deque()).append(
            Pending(start, end + self.send_s, self.history[service].versions[-1])
        )

    def set_down(self, down: bool) -> None:
        if down == self.down:
            return
        self.down = down
        if down:
            return
        for name, svc in self.sim.services.items():
            self.known[name] = list(svc.endpoints)
        self.snapshot(set(self.sim.services))
        for w in list(self.watchers.values()):
            for s in w.deps:
                self._resolve(w, s)

    # ----------------------------------------------------------------- authorization

    def authz_enforced(self, service: str, namespace: str) -> bool:
        return self.authz.enforced(service, namespace)

    def authz_evaluate(self, service: str, namespace: str, info: RequestInfo) -> Decision:
        return self.authz.evaluate(service, namespace, info)

    # ----------------------------------------------------------------- results

    def memory_mb(self) -> float:
        v = self.model.value
        watches = sum(len(w.deps) for w in self.watchers.values())
        eps = sum(len(e) for e in self.known.values())
        kb = (
            v("proxy_kb") * len(self.watchers)
            + v("watch_kb") * watches
            + v("service_kb") * len(self.known)
            + v("registry_endpoint_kb") * eps
        )
        return v("base_memory_mb") + kb / KB_PER_MB

    def summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        out = self.base_summary(warmup_s, end_s)
        window = end_s - warmup_s
        watches = sum(len(w.deps) for w in self.watchers.values())
        upkeep = self.model.value("watch_cpu_us_per_s") * 1e-6 * watches
        out.update(
            {
                "cpu_vcpu": out["cpu_s_work"] / window + upkeep if window > 0 else upkeep,
                "cpu_vcpu_upkeep": upkeep,
                "memory_mb": self.memory_mb(),
                "destination_cores": self.cores,
                "connected_proxies": len(self.watchers),
                "watches": watches,
                "updates": self.updates,
                "snapshots": self.snapshots,
                "stream_resets": self.resets,
            }
        )
        return out


def _authz(sec: LinkerdSecurity) -> LinkerdAuthz:
    return LinkerdAuthz(
        default_policy=sec.default_policy,
        servers=[
            LinkerdServer(s.name, s.service, s.namespace, s.access_policy) for s in sec.servers
        ],
        authentications=[
            LinkerdMeshTLS(
                a.name,
                a.namespace,
                tuple(a.identities),
                tuple((sa.name, sa.namespace) for sa in a.service_accounts),
            )
            for a in sec.mesh_tls_authentications
        ],
        policies=[
            LinkerdPolicy(
                p.name,
                p.server,
                p.namespace,
                tuple(p.authentications),
                None if p.paths is None else tuple(p.paths),
            )
            for p in sec.authorization_policies
        ],
    )
