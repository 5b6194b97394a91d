"""Memory limits: a proxy whose modelled memory passes its limit is OOM-killed.

Under either ``cluster.scheduler``, every second of
simulated time each sidecar's, ztunnel's and waypoint's resident memory from its cost model
(connections held, configuration in view: :meth:`~meshsim.sim.dataplanes.proxy.Proxy.memory_mb`)
is compared with its memory limit (:func:`~meshsim.sim.cpu.cgroups.resources_of`). Past it,
the kernel's OOM killer ends the container, and the kubelet restarts it after
CrashLoopBackOff's delay: 10 s, doubled on every restart, at most 300 s (Kubernetes docs,
"Pod Lifecycle", container restarts).

- A sidecar: the pod's requests in flight fail (reset), it leaves the endpoints, and the
  restarted container is modelled as a replacement pod of the same version, which gets its
  proxy's configuration and certificate anew, as a restarted sidecar does.
- A ztunnel (a DaemonSet pod of its own, one per node) or a waypoint (a Deployment's pod):
  the same process is down until its restart
  (:meth:`~meshsim.sim.dataplanes.ambient.AmbientDataPlane.proxy_down`). The pods of a
  ztunnel's node stay ready and in the endpoints, but none of them can reach or be reached
  through the mesh meanwhile: connections through it are refused and those it carried reset.
- A gateway replica's container (Istio's Envoy; Linkerd's ingress controller or its
  linkerd-proxy): the replica leaves the load balancer in front until the restart, the
  requests inside it are reset (:meth:`~meshsim.sim.gateways.Gateways.proxy_down`).

The apps' memory is not modelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol, cast

import simpy

from meshsim.sim.cpu.cgroups import resources_of

if TYPE_CHECKING:
    from meshsim.sim.app import Pod
    from meshsim.sim.dataplanes.ambient import AmbientDataPlane
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

CHECK_EVERY_S = 1.0
FIRST_BACKOFF_S = 10.0
MAX_BACKOFF_S = 300.0


def backoff_s(restarts: int) -> float:
    """CrashLoopBackOff's delay before the ``restarts``-th restart (1-based)."""
    return min(FIRST_BACKOFF_S * 2.0 ** (restarts - 1), MAX_BACKOFF_S)


OWN_PODS = ("ztunnel", "waypoint")
"""Proxies that are a pod of their own (no app beside them): killed and restarted in place."""


def limit_mib(proxy: Proxy, sim: Simulation) -> float | None:
    """The proxy's memory limit in MiB (the cost model's unit), None without one."""
    sidecar = proxy.kind == "sidecar" and proxy.pod is not None
    gateway = proxy.kind == "gateway" and proxy.resources is not None
    if not (sidecar or gateway) and proxy.kind not in OWN_PODS:
        return None
    _, res = resources_of(proxy, sim.scenario, sim.mesh)
    mb = res.limits.memory_mb
    return None if mb is None else mb * 1e6 / 2**20


def watch_memory(sim: Simulation) -> None:
    """Start the OOM watch when the run has containers' resources and a memory limit."""
    from meshsim.sim.dataplanes.mesh import ProxiedDataPlane

    if not isinstance(sim.data_plane, ProxiedDataPlane):
        return
    sim.env.process(_Watch(sim).run())


class _Watch:
    """The OOM kills of one run. A restarted container keeps its first incarnation's
    cgroup name and node for counting, and its own restart count for the backoff."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.first: dict[Pod, Proxy] = {}
        """Each pod's first incarnation's sidecar (itself, if never restarted)."""
        self.restarts: dict[str, int] = {}
        self.limits: dict[Proxy, float | None] = {}

    def run(self) -> Generator[simpy.Event, Any, None]:
        sim = self.sim
        dp: Any = sim.data_plane
        # An unscoped sidecar holds the whole mesh's configuration: the same for every
        # sidecar, so it is counted once per check (thousands of sidecars times thousands
        # of services otherwise).
        shared = not getattr(dp, "scoped", True)
        while True:
            yield sim.env.timeout(CHECK_EVERY_S)
            view: tuple[int, int] | None = None
            for proxy in list(dp.live_proxies()):
                limit = self.limits.get(proxy, -1.0)
                if limit == -1.0:
                    limit = self.limits[proxy] = limit_mib(proxy, sim)
                if limit is None:
                    continue
                if view is None or not shared:
                    view = dp.config_in_view(proxy)
                if proxy.memory_mb(*view) > limit:
                    self.kill(proxy)

    def kill(self, proxy: Proxy) -> None:
        if proxy.kind in OWN_PODS or proxy.kind == "gateway":
            self.kill_own(proxy)
            return
        sim = self.sim
        pod: Pod = proxy.pod
        first = self.first.pop(pod, proxy)
        if sim.warmup_s <= sim.env.now < sim.end_s:
            counts = first.node.oom_kills
            counts[first.name] = counts.get(first.name, 0) + 1
        sim.timeline.log.append((sim.env.now, f"OOM kill of {proxy.name} (memory limit)"))
        sim.kill(pod)
        n = self.restarts[first.name] = self.restarts.get(first.name, 0) + 1
        ev = sim.env.timeout(backoff_s(n))
        assert ev.callbacks is not None
        ev.callbacks.append(lambda _e: self.restart(pod, first))

    def restart(self, pod: Pod, first: Proxy) -> None:
        self.first[self.sim.start_pod(pod.version)] = first

    def kill_own(self, proxy: Proxy) -> None:
        """A ztunnel, a waypoint or a gateway's container: down now, the same one back after
        the backoff."""
        sim = self.sim
        if sim.warmup_s <= sim.env.now < sim.end_s:
            counts = proxy.node.oom_kills
            counts[proxy.name] = counts.get(proxy.name, 0) + 1
        sim.timeline.log.append((sim.env.now, f"OOM kill of {proxy.name} (memory limit)"))
        _owner(sim, proxy).proxy_down(proxy)
        n = self.restarts[proxy.name] = self.restarts.get(proxy.name, 0) + 1
        ev = sim.env.timeout(backoff_s(n))
        assert ev.callbacks is not None
        ev.callbacks.append(lambda _e: self.restart_own(proxy))

    def restart_own(self, proxy: Proxy) -> None:
        sim = self.sim
        _owner(sim, proxy).proxy_up(proxy)
        sim.timeline.log.append((sim.env.now, f"{proxy.name} restarted (after an OOM kill)"))


class _PodOwner(Protocol):
    """What takes a proxy that is a pod of its own down and back up."""

    def proxy_down(self, proxy: Proxy) -> None: ...

    def proxy_up(self, proxy: Proxy) -> None: ...


def _owner(sim: Simulation, proxy: Proxy) -> _PodOwner:
    """A gateway's container: the run's gateways; a ztunnel or a waypoint: the data plane,
    ambient's (the only one with them)."""
    if proxy.kind == "gateway":
        assert sim.gateways is not None
        return sim.gateways
    return cast("AmbientDataPlane", sim.data_plane)
