"""Containers' cgroups: CPU weights from requests, quotas from limits, memory limits.

Kubernetes turns a container's CPU request into ``cpu.shares`` (``MilliCPUToShares`` in
kubelet's ``pkg/kubelet/cm/helpers_linux.go``: millicores x 1024 / 1000, at least 2, at most
262144), and on cgroup v2 the shares into ``cpu.weight`` with runc's and kubelet's linear
map (``ConvertCPUSharesToCgroupV2Value``; kubelet ``CpuSharesToCPUWeight``):
``1 + ((shares - 2) x 9999) / 262142``, integer division. The kernel then runs the cgroup
at load weight ``cpu.weight x 1024 / 100`` (``cpu_weight_write_u64``, rounded). A container
with no CPU request gets shares 2, weight 1 (a BestEffort container), and a CPU limit
becomes ``cpu.max`` = quota per period: limit x period (``MilliCPUToQuota``).

Which resources apply (docs/mesh-semantics.md §10): a pod's app container takes its
service's ``resources``; a sidecar its service's ``proxy_resources`` (the pod annotations),
else ``mesh_options.istio.proxy_resources`` (Istio's global.proxy.resources by default) or
``mesh_options.linkerd.proxy_resources`` (none by default); a node's ztunnel (one container
per node) ``mesh_options.istio-ambient.ztunnel_resources`` (default the chart's requests,
200m / 512Mi, no limits: manifests/charts/ztunnel/values.yaml); a waypoint
``mesh_options.istio-ambient.waypoint_resources`` (default Istio's global.waypoint.resources,
not the sidecars'); Cilium's node Envoy ``mesh_options.cilium.envoy_resources`` (none, the
chart's); a meshed client's own load generator has none; Cilium's datapath work in the
kernel is a kernel thread's (nice 0), not a container's.
"""

from __future__ import annotations

from typing import Any

from meshsim.scenario.model import Scenario
from meshsim.scenario.resources import NO_RESOURCES, Resources

MIN_SHARES = 2
MAX_SHARES = 262_144


def cpu_shares(millicores: float | None) -> int:
    """``cpu.shares`` for a CPU request, as kubelet's ``MilliCPUToShares`` computes it."""
    if millicores is None or millicores <= 0:
        return MIN_SHARES
    return min(max(int(millicores * 1024 // 1000), MIN_SHARES), MAX_SHARES)


def cpu_weight(shares: int) -> int:
    """cgroup v2 ``cpu.weight`` (1..10000) for ``cpu.shares`` (runc's linear map)."""
    return 1 + ((shares - 2) * 9999) // 262_142


def load_weight(weight: int) -> float:
    """The kernel's load weight for a ``cpu.weight`` (nice-0 = weight 100 = 1024)."""
    return float((weight * 1024 + 50) // 100)


def quota_s(limit_millicores: float | None, period_s: float) -> float | None:
    """Runtime per period for a CPU limit (None: no limit), as ``MilliCPUToQuota``."""
    if limit_millicores is None:
        return None
    return limit_millicores / 1000.0 * period_s


def resources_of(account: Any, scenario: Scenario, mesh: str) -> tuple[str, Resources]:
    """The cgroup name and resources of whatever runs CPU on a node."""
    from meshsim.sim.app import Pod
    from meshsim.sim.dataplanes.proxy import Proxy

    if isinstance(account, Pod):
        return f"{account.name}/app", account.service.spec.resources
    if isinstance(account, Proxy):
        if account.resources is not None:
            return account.name, account.resources
        opts = scenario.mesh_options
        ambient = opts.istio_ambient
        if account.kind == "ztunnel":
            return account.name, ambient.ztunnel_resources
        if account.kind == "waypoint":
            return account.name, ambient.waypoint_resources
        pod = account.pod
        override = None if pod is None else pod.service.spec.proxy_resources
        return account.name, opts.sidecar_resources(mesh, override)
    name = getattr(account, "name", "unknown")
    if getattr(account, "kernel_thread", False):
        return name, NO_RESOURCES
    return f"client/{name}", NO_RESOURCES


UNBOUNDED = 1 << 30
"""A client's threads: its load generator is not a container with a thread count."""


def threads_of(account: Any) -> int:
    """How many cores ``account`` can use at once: a proxy's worker threads, an app's
    concurrency (a client's: :data:`UNBOUNDED`)."""
    from meshsim.sim.app import Pod
    from meshsim.sim.dataplanes.proxy import Proxy

    if isinstance(account, Proxy):
        return sum(int(w.res.capacity) for w in account.workers)
    if isinstance(account, Pod):
        return account.service.spec.concurrency
    return UNBOUNDED


def bounded_threads(account: Any) -> int | None:
    """:func:`threads_of`, None where unbounded (what a cgroup reports as its threads)."""
    n = threads_of(account)
    return None if n >= UNBOUNDED else n


def weight_of_m(request_m: float | None) -> float:
    """The load weight of a cgroup whose ``cpu.shares`` come from ``request_m`` millicores
    (a container's request, or a pod's or a QoS class's sum of them)."""
    return load_weight(cpu_weight(cpu_shares(request_m)))


def weight_of(resources: Resources) -> float:
    return weight_of_m(resources.cpu_request_m)


KERNEL_THREAD_WEIGHT = 1024.0
"""The load weight of a nice-0 thread: a kernel thread's on the node's run queue (ksoftirqd,
where the datapath's softirq work goes when it is deferred; raised at an interrupt's exit it
runs before any task, which the model does not give it)."""


def account_weight(account: Any, resources: Resources) -> float:
    """The load weight ``account``'s cgroup runs at: its CPU request's, or a kernel thread's."""
    if getattr(account, "kernel_thread", False):
        return KERNEL_THREAD_WEIGHT
    return weight_of(resources)
