"""What istiod and Linkerd's controllers share: endpoint snapshots, proxy views, the CA,
outages, CPU accounting, convergence samples and the per-request checks.

- Endpoint changes reach the control plane ``kube_event_delay_ms`` after they happen (the
  EndpointSlice controller and the informer), as does a pod becoming ready.
- A new pod's proxy first gets a certificate (:mod:`.identity`), then its configuration;
  only then is the pod ready (``sim.mark_ready``), which is itself an endpoint change.
- Convergence of a change: from the change in the cluster to the moment the last proxy
  that needs it has applied it (istiod's ``pilot_proxy_convergence_time`` measures from the
  push; this includes the informer delay and the debounce).
- CPU: the work of pushes, updates and signing (in the measurement window), plus the
  upkeep of connected proxies or watches. Memory: from the state held at the end.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from meshsim.errors import MeshsimError
from meshsim.models import ProxyCostModel, default_model, load_model
from meshsim.models.samples import apply_values
from meshsim.policy.authz import DENIED_STATUS, Decision, Peer, RequestInfo
from meshsim.sim.app import CONNECT_FAILURE, Client, Pod
from meshsim.sim.controlplane.base import ControlPlane
from meshsim.sim.controlplane.identity import CertificateAuthority
from meshsim.sim.controlplane.views import EndpointHistory

if TYPE_CHECKING:
    from meshsim.models import Kind
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

__all__ = ["DENIED_STATUS", "MeshControlPlane", "control_plane_model", "percentiles"]


def control_plane_model(
    path: str | None, kind: Kind, values: Mapping[str, float] | None = None
) -> ProxyCostModel:
    """As :func:`meshsim.sim.dataplanes.mesh.cost_model`, for a control plane."""
    model = load_model(path) if path else default_model(kind)
    if model.kind != kind:
        raise MeshsimError(f"model file {path} describes a {model.kind}, not a {kind}")
    return apply_values(model, values)


def percentiles(samples: list[float]) -> dict[str, float] | None:
    """p50/p90/p99 (nearest rank) and max of ``samples``; None if there are none."""
    if not samples:
        return None
    s = sorted(samples)
    n = len(s)

    def rank(q: float) -> float:
        return s[min(n - 1, max(0, int(q * n + 0.999999999) - 1))]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": s[-1], "count": n}


class Trace(Protocol):
    """Who watches where changes go (:class:`~.clusters.ClusterControlPlanes`)."""

    def cluster_of(self, proxy: Proxy) -> str: ...

    def converged(
        self, plane: MeshControlPlane, changed_at: float, sent_at: float,
        applied: dict[str, float],
    ) -> None:  # fmt: skip
        """Updates carrying a change made at ``changed_at`` were sent at ``sent_at`` (after
        any debounce) and the last proxy of each cluster applies them at ``applied``."""


class MeshControlPlane(ControlPlane, ABC):
    kind: Kind

    def __init__(
        self,
        sim: Simulation,
        model: ProxyCostModel,
        ca_cores: int,
        cert_holder: Callable[[Pod], Hashable] | None = None,
        cluster: str | None = None,
    ) -> None:
        super().__init__(sim)
        self.model = model
        self.cluster = cluster
        """The cluster it runs in and serves (None: every cluster, as with one cluster)."""
        self.trace: Trace | None = None
        """Set by :class:`~.clusters.ClusterControlPlanes`: told when each change reached
        the proxies of each cluster."""
        self.send_extra_s: Callable[[Proxy], float] = lambda _proxy: 0.0
        """Latency added to what is sent to a proxy (primary-remote: a remote cluster's)."""
        v = model.value
        self.kube_delay_s = v("kube_event_delay_ms") * 1e-3
        self.send_s = v("send_latency_ms") * 1e-3
        self.down = False
        self.slow_factor = 1.0
        self.version = 0
        self.history: dict[str, EndpointHistory] = {
            name: EndpointHistory(svc.endpoints) for name, svc in sim.services.items()
        }
        self.known: dict[str, list[Pod]] = {
            name: list(svc.endpoints) for name, svc in sim.services.items()
        }
        """Endpoints as the control plane knows them (after the informer delay)."""
        self.convergence: list[float] = []
        self._cpu_in_window = 0.0
        certs = sim.scenario.security.certificates
        horizon = sim.end_s
        self.ca = CertificateAuthority(
            sim.env,
            cores=ca_cores,
            sign_s=v("csr_sign_us") * 1e-6,
            lifetime_s=certs.lifetime_s or v("cert_lifetime_s"),
            renew_fraction=certs.renew_fraction or v("cert_renew_fraction"),
            retry_s=v("csr_retry_s") or None,
            horizon_s=horizon,
            is_down=lambda: self.down,
            slow=lambda: self.slow_factor,
            account=self.account,
            holder=cert_holder,
            min_refresh_s=v("cert_min_refresh_s"),
            max_refresh_s=v("cert_max_refresh_s") or math.inf,
        )
        topology = sim.topology
        for svc in sim.services.values():
            for pod in svc.pods:
                loc = topology.of(pod.node)
                if cluster is None or loc is None or loc.cluster == cluster:
                    self.ca.install(pod)  # each cluster's CA signs its own pods
        self.mtls = True

    # ----------------------------------------------------------------- helpers

    def account(self, at: float, cpu_s: float) -> None:
        """CPU work done at ``at`` (counted if inside the measurement window)."""
        if self.sim.warmup_s <= at < self.sim.end_s:
            self._cpu_in_window += cpu_s

    def cost_models(self) -> list[ProxyCostModel]:
        return [self.model]

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(delay, 0.0))
        assert ev.callbacks is not None
        ev.callbacks.append(lambda _e: fn())

    def dependencies(self, proxy: Proxy) -> set[str]:
        """Services a proxy sends to: its pod's calls, or a meshed client's target."""
        if proxy.pod is not None:
            return {c.service for group in proxy.pod.call_plan for c in group}
        return {
            w.target
            for w in self.sim.scenario.workloads
            if proxy.name == f"client/{w.name}/sidecar"
        }

    def snapshot(self, services: set[str]) -> int:
        """A new version holding the known endpoints of ``services``."""
        self.version += 1
        for name in services:
            self.history[name].record(self.version, self.known[name])
        return self.version

    # ----------------------------------------------------------------- cluster changes

    def on_endpoints(self, service: ServiceRuntime) -> None:
        changed_at = self.env.now
        self.later(self.kube_delay_s, lambda: self._informed(service, changed_at))

    def _informed(self, service: ServiceRuntime, changed_at: float) -> None:
        self.informed(service.name, list(service.endpoints), changed_at)

    def informed(self, service: str, endpoints: list[Pod], changed_at: float) -> None:
        """The informer hands over ``endpoints`` of ``service``, a change made at
        ``changed_at`` (several clusters' informers call this with their own delays)."""
        self.known[service] = endpoints
        self.endpoints_changed(service, changed_at)

    @abstractmethod
    def endpoints_changed(self, service: str, changed_at: float) -> None: ...

    def on_pod_started(self, pod: Pod) -> bool:
        pod.ready = False
        self.ca.request(pod, self.configure_new_proxy)
        return False

    @abstractmethod
    def configure_new_proxy(self, pod: Pod) -> None:
        """The pod's proxy holds a certificate: give it its configuration, then it is ready."""

    def set_slow(self, factor: float) -> None:
        self.slow_factor = factor

    # ----------------------------------------------------------------- requests

    def gate(self, src: Pod | None, dst: Pod, mtls: bool) -> int | None:
        status = super().gate(src, dst, mtls)
        if status is not None or not mtls:
            return status
        ca = self.ca
        if not ca.has_valid(dst) or (src is not None and not ca.has_valid(src)):
            self.certificate_failures += 1
            return CONNECT_FAILURE
        return None

    def authorize(
        self, src: Pod | Client | None, dst: Pod, req: Request
    ) -> tuple[Decision, float] | None:
        svc = dst.service
        ns = svc.spec.namespace
        if not self.authz_enforced(svc.name, ns):
            return None
        if isinstance(src, Pod):
            peer = Peer(src.service.name, src.service.spec.namespace)
        elif isinstance(src, Client) and self.sim.scenario.mesh_options.meshed_clients:
            peer = Peer(src.name, "default")
        else:
            peer = Peer(None, None, in_cluster=False)
        info = RequestInfo(peer, req.path, req.headers.get(":method", "GET"))
        decision = self.authz_evaluate(svc.name, ns, info)
        self.authz_checks += 1
        if not decision.allowed:
            self.denied += 1
        return decision, self.rbac_s

    rbac_s = 0.0

    def authz_enforced(self, service: str, namespace: str) -> bool:
        return False

    @abstractmethod
    def authz_evaluate(self, service: str, namespace: str, info: RequestInfo) -> Decision: ...

    # ----------------------------------------------------------------- results

    def base_summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        out = super().summary(warmup_s, end_s)
        out["convergence_s"] = percentiles(self.convergence)
        out["certificates_issued"] = self.ca.issued
        out["csr_unanswered"] = self.ca.failed_requests
        out["cpu_s_work"] = self._cpu_in_window
        return out
