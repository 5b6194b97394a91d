"""Control planes of a mesh spread over several clusters (``cluster.zones[].cluster``).

Where the mesh's multi-cluster model has a control plane per cluster, each is a full
:class:`~.mesh.MeshControlPlane` of its own (docs/mesh-semantics.md §15):

======================  =================================================================
Istio multi-primary     an istiod per cluster: its own debounce, throttle, CA, CPU and
                        memory; it pushes to its own cluster's proxies only, and watches
                        every cluster's API server (a remote one across the clusters)
Istio primary-remote    one istiod, in the first cluster, serving every proxy: a remote
                        cluster's change crosses to it, and every push to a remote proxy
                        crosses back (``send_extra_s``)
Linkerd                 a destination controller (and identity) per cluster; a linked
                        cluster's endpoints reach it through the service mirror
                        (pod-to-pod: the mirror's watch, the crossing, then the mirror
                        EndpointSlice's informer) or, in gateway mode, through the
                        linked cluster's gateway, which discovers them locally
======================  =================================================================

:class:`ClusterControlPlanes` is what the engine sees as ``sim.control_plane``: it routes a
proxy, a pod, a certificate or a policy check to the control plane of its cluster, and turns
each endpoint change into one informer event per control plane, carrying only the changed
cluster's endpoints, delivered after that path's parts (each a timer: the informer delays
are the model file's ``kube_event_delay_ms``, the crossing the network's
``cross_cluster_us``). What follows (debounce, pushes, streams) is each control plane's own
simulation, so the time from a change to the last proxy of each cluster that applies it is
measured, not summed: :meth:`ClusterControlPlanes.convergence` breaks it down per path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean
from typing import TYPE_CHECKING, Any

from meshsim.sim.app import CONNECT_FAILURE, Client, Pod
from meshsim.sim.controlplane.base import ControlPlane
from meshsim.sim.controlplane.mesh import MeshControlPlane, percentiles

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.policy.authz import Decision
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

CHANGES_SHOWN = 20
"""Changes listed one by one in the summary (all of them are in the per-path figures)."""


@dataclass
class Change:
    """One endpoint change in one cluster and when it reached each control plane and proxy."""

    service: str
    cluster: str
    at_s: float
    stages: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Per control plane (by its cluster): (part, time it ended), in path order."""
    sent: dict[str, float] = field(default_factory=dict)
    """Per proxies' cluster: when the updates that reached the last of them were sent."""
    applied: dict[str, float] = field(default_factory=dict)
    """Per proxies' cluster: when the last proxy there applied the change."""


class ClusterControlPlanes(ControlPlane):
    """The control planes of a multi-cluster mesh, seen by the engine as one."""

    def __init__(
        self, sim: Simulation, make: Callable[[str | None], MeshControlPlane], mode: str
    ) -> None:
        super().__init__(sim)
        topo = sim.topology
        self.topology = topo
        self.clusters: list[str] = list(topo.clusters)
        self.primary = self.clusters[0]
        self.mode = mode
        net = sim.scenario.cluster.network
        cross_us = net.cross_cluster_us if net.cross_cluster_us is not None else net.cross_zone_us
        self.cross_s = cross_us * 1e-6
        if mode == "primary-remote":
            one = make(None)
            self.planes: list[MeshControlPlane] = [one]
            self.home: dict[str, MeshControlPlane] = dict.fromkeys(self.clusters, one)
            one.send_extra_s = self._push_crossing_s
        else:
            self.planes = [make(c) for c in self.clusters]
            self.home = dict(zip(self.clusters, self.planes, strict=True))
        first = self.planes[0]
        self.name = first.name
        self.model = first.model
        self.kube_s = first.kube_delay_s
        for plane in self.planes:
            plane.trace = self
        self._truth: dict[str, dict[str, list[Pod]]] = {}
        self._held: dict[tuple[int, str], dict[str, list[Pod]]] = {}
        for name, svc in sim.services.items():
            split = self._split(svc.endpoints)
            self._truth[name] = split
            for i in range(len(self.planes)):
                self._held[(i, name)] = {c: list(p) for c, p in split.items()}
        self.changes: list[Change] = []

    # ----------------------------------------------------------------- where things are

    def cluster_of(self, proxy: Proxy) -> str:
        loc = self.topology.of(proxy.node)
        return self.primary if loc is None else loc.cluster

    def _pod_cluster(self, pod: Pod) -> str:
        loc = self.topology.of(pod.node)
        return self.primary if loc is None else loc.cluster

    def plane_of(self, pod: Pod) -> MeshControlPlane:
        return self.home[self._pod_cluster(pod)]

    def located(self, plane: MeshControlPlane) -> str:
        """The cluster a control plane runs in."""
        return plane.cluster if plane.cluster is not None else self.primary

    def _split(self, endpoints: list[Pod]) -> dict[str, list[Pod]]:
        out: dict[str, list[Pod]] = {}
        for pod in endpoints:
            out.setdefault(self._pod_cluster(pod), []).append(pod)
        return out

    def _push_crossing_s(self, proxy: Proxy) -> float:
        return 0.0 if self.cluster_of(proxy) == self.primary else self.cross_s

    def path(self, changed: str, plane_at: str) -> list[tuple[str, float]]:
        """The parts of the path from a change in cluster ``changed`` to the control plane
        in cluster ``plane_at`` (docs/mesh-semantics.md §15)."""
        kube, cross = self.kube_s, self.cross_s
        if changed == plane_at:
            return [("informer_s", kube)]
        if self.mode == "pod-to-pod":
            return [("service_mirror_watch_s", kube), ("watch_crossing_s", cross),
                    ("mirror_endpointslice_informer_s", kube)]  # fmt: skip
        if self.mode == "gateway":
            # The linked cluster's gateway resolves the service with its own cluster's
            # destination controller: a local informer event, nothing crosses.
            return [("remote_gateway_informer_s", kube)]
        return [("remote_api_watch_s", kube), ("watch_crossing_s", cross)]

    # ----------------------------------------------------------------- cluster changes

    def attach(self, proxy: Proxy) -> None:
        self.home[self.cluster_of(proxy)].attach(proxy)

    def detach(self, proxy: Proxy) -> None:
        for plane in self.planes:
            plane.detach(proxy)

    def on_pod_started(self, pod: Pod) -> bool:
        return self.plane_of(pod).on_pod_started(pod)

    def on_endpoints(self, service: ServiceRuntime) -> None:
        now = self.env.now
        split = self._split(service.endpoints)
        before = self._truth[service.name]
        self._truth[service.name] = split
        for cluster in self.clusters:
            pods = split.get(cluster, [])
            if pods == before.get(cluster, []):
                continue  # no EndpointSlice of this cluster changed
            last = self.changes[-1] if self.changes else None
            if last is None or (last.service, last.cluster, last.at_s) != (
                service.name, cluster, now,
            ):  # fmt: skip
                last = Change(service.name, cluster, now)
                self.changes.append(last)
            for i, plane in enumerate(self.planes):
                self._deliver(i, plane, service.name, cluster, list(pods), last)

    def _deliver(
        self, index: int, plane: MeshControlPlane, service: str, cluster: str,
        pods: list[Pod], change: Change,
    ) -> None:  # fmt: skip
        at = self.located(plane)
        parts = self.path(cluster, at)
        ended: list[tuple[str, float]] = []
        change.stages[at] = ended

        def step(i: int) -> None:
            if i == len(parts):
                held = self._held[(index, service)]
                held[cluster] = pods
                merged = [p for c in self.clusters for p in held.get(c, ())]
                plane.informed(service, merged, change.at_s)
                return
            name, seconds = parts[i]

            def done() -> None:
                ended.append((name, self.env.now))
                step(i + 1)

            plane.later(seconds, done)

        step(0)

    def on_config(self, target: str) -> None:
        for plane in self.planes:
            plane.on_config(target)

    def set_down(self, down: bool) -> None:
        for i, plane in enumerate(self.planes):
            plane.set_down(down)
            if not down:
                # Back up, each lists every cluster's endpoints again.
                for name, split in self._truth.items():
                    self._held[(i, name)] = {c: list(p) for c, p in split.items()}

    def set_slow(self, factor: float) -> None:
        for plane in self.planes:
            plane.set_slow(factor)

    # ----------------------------------------------------------------- traced updates

    def converged(
        self, plane: MeshControlPlane, changed_at: float, sent_at: float,
        applied: dict[str, float],
    ) -> None:  # fmt: skip
        for change in reversed(self.changes):
            if change.at_s < changed_at:
                break
            if change.at_s != changed_at:
                continue
            for cluster, t in applied.items():
                if t >= change.applied.get(cluster, -1.0):
                    change.applied[cluster] = t
                    change.sent[cluster] = sent_at

    # ----------------------------------------------------------------- requests

    def gate(self, src: Pod | None, dst: Pod, mtls: bool) -> int | None:
        status = ControlPlane.gate(self, src, dst, mtls)
        if status is not None or not mtls:
            return status
        # Each side's certificate comes from its own cluster's CA (one shared root).
        if not self.plane_of(dst).ca.has_valid(dst) or (
            src is not None and not self.plane_of(src).ca.has_valid(src)
        ):
            self.certificate_failures += 1
            return CONNECT_FAILURE
        return None

    def authorize(
        self, src: Pod | Client | None, dst: Pod, req: Request
    ) -> tuple[Decision, float] | None:
        return self.plane_of(dst).authorize(src, dst, req)

    # ----------------------------------------------------------------- results

    def cost_models(self) -> list[ProxyCostModel]:
        return self.planes[0].cost_models()

    def convergence(self) -> dict[str, Any]:
        """Per path ``proxies' cluster<-changed cluster``: how many changes reached those
        proxies and the mean of each measured part (the path's timers, then ``debounce_s``
        (istiod), ``push_s`` or ``stream_send_s`` to the last proxy, and for a primary-remote
        remote cluster ``push_crossing_s``), with the mean and largest total; and the first
        changes one by one."""
        rows: dict[str, list[dict[str, float]]] = {}
        shown: list[dict[str, Any]] = []
        for change in self.changes:
            reached: dict[str, Any] = {}
            for cluster, applied in sorted(change.applied.items()):
                parts = self._parts(change, cluster, applied)
                rows.setdefault(f"{cluster}<-{change.cluster}", []).append(parts)
                reached[cluster] = parts
            if reached and len(shown) < CHANGES_SHOWN:
                shown.append({"service": change.service, "cluster": change.cluster,
                              "at_s": change.at_s, "reached": reached})  # fmt: skip
        by_path: dict[str, Any] = {}
        for key, items in sorted(rows.items()):
            names = list(items[0])
            by_path[key] = {
                "changes": len(items),
                "parts_s": {
                    n: fmean(i.get(n, 0.0) for i in items) for n in names if n != "total_s"
                },
                "total_s": {
                    "mean": fmean(i["total_s"] for i in items),
                    "max": max(i["total_s"] for i in items),
                },
            }
        return {"by_path": by_path, "changes": shown, "changes_total": len(self.changes)}

    def _parts(self, change: Change, cluster: str, applied: float) -> dict[str, float]:
        plane = self.home[cluster]
        stages = change.stages.get(self.located(plane), [])
        out: dict[str, float] = {}
        t = change.at_s
        for name, ended in stages:
            out[name] = ended - t
            t = ended
        sent = change.sent[cluster]
        remote = self.mode == "primary-remote" and cluster != self.primary
        crossing = self.cross_s if remote else 0.0
        if plane.kind == "istiod":
            out["debounce_s"] = sent - t
            out["push_s"] = applied - sent - crossing
            if crossing:
                out["push_crossing_s"] = crossing
        else:
            out["stream_send_s"] = applied - t
        out["total_s"] = applied - change.at_s
        return out

    def summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        subs = {self.located(p): p.summary(warmup_s, end_s) for p in self.planes}
        first = next(iter(subs.values()))
        per_replica = ("cores_per_replica", "push_throttle", "destination_cores")
        out: dict[str, Any] = {}
        for key, value in first.items():
            if key in per_replica or isinstance(value, bool):
                out[key] = value
            elif isinstance(value, int | float):
                out[key] = sum(s.get(key, 0) for s in subs.values())
            elif isinstance(value, list) and key == "memory_mb_per_replica":
                out[key] = [mb for s in subs.values() for mb in s.get(key, [])]
            elif isinstance(value, dict) and key in ("connected_by_kind",
                                                     "proxy_pushes_by_cluster"):  # fmt: skip
                merged: dict[str, int] = {}
                for s in subs.values():
                    for k, n in s.get(key, {}).items():
                        merged[k] = merged.get(k, 0) + n
                out[key] = dict(sorted(merged.items()))
            else:
                out[key] = value
        out["convergence_s"] = percentiles([x for p in self.planes for x in p.convergence])
        for key, mine in (("stale_endpoint_attempts", self.stale_attempts),
                          ("terminating_endpoint_attempts", self.terminating_attempts),
                          ("certificate_failures", self.certificate_failures)):  # fmt: skip
            out[key] = out.get(key, 0) + mine
        out["control_planes"] = len(self.planes)
        out["multicluster_mode"] = self.mode
        out["by_cluster"] = subs
        return out
