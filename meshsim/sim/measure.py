"""What one simulation measured, as typed data: the engine's only output.

:meth:`meshsim.sim.engine.Simulation.measure` returns a :class:`Measurement` once the run
is over. Everything in it is a raw quantity of the model (seconds, core-seconds, counts,
histograms) taken over the measurement window ``[warm-up, end)`` where the engine counts a
window, or over the whole run where it says so. Turning these into the ``summary.json``
blocks of the results contract (vCPU, utilisation, per-1000-rps costs, means over
replications) is the job of :mod:`meshsim.results`, never of the simulator.

The classes are frozen, but a :class:`SubjectMeasure` shares its histogram with the
recorder (copying every histogram of every run would cost more than the rest of this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.results.histogram import LogHistogram
    from meshsim.sim.recorder import RequestRecord


@dataclass(frozen=True)
class SeriesMeasure:
    """Per-second counts over the whole run, warm-up included (index = second sent)."""

    requests: tuple[int, ...]
    errors: tuple[int, ...]
    latency_sum_s: tuple[float, ...]
    latency_max_s: tuple[float, ...]


@dataclass(frozen=True)
class SubjectMeasure:
    """Golden signals of one workload (client view), service (server view) or edge
    (caller view): requests *sent* in the window, and those that *finished* in it."""

    histogram: LogHistogram
    """Latency in seconds of the requests sent in the window."""
    requests: int
    errors: int
    statuses: Mapping[int, int]
    completed: int
    series: SeriesMeasure
    batches: tuple[LogHistogram, ...] = ()
    """The window's latency in equal batches by send time (workloads only; see
    :data:`meshsim.sim.recorder.BATCHES`)."""


@dataclass(frozen=True)
class NodeMeasure:
    name: str
    cores: int
    busy_s: float
    """Core-seconds the node's cores ran in the window."""


@dataclass(frozen=True)
class PodMeasure:
    """One application pod (alive or not at the end)."""

    name: str
    service: str
    cpu_s: float
    """Application CPU seconds run in the window."""
    slot_busy_s: float
    """Worker-slot seconds held in the window (``concurrency`` slots per pod)."""
    concurrency: int
    version: str = ""
    requests: int = 0
    """Requests that reached it in the window (tries, as a service's ``requests``)."""
    whole_window: bool = False
    """In its service's endpoints at the window's start and at its end (not started, killed
    or rolled out in between): its share of the calls is its balancers' doing."""


@dataclass(frozen=True)
class AppMeasure:
    """One service's pods, in creation order (a service may have none left running)."""

    service: str
    pods: tuple[PodMeasure, ...]


@dataclass(frozen=True)
class WorkerMeasure:
    """One worker thread of a proxy (or its work-stealing pool)."""

    name: str
    """``<proxy>/worker-<index>``."""
    threads: int
    busy_s: float
    """CPU seconds the worker ran in the window."""
    requests: int
    """Request bursts handled over the whole run."""
    wakeups: int
    """Wake-ups over the whole run."""
    wake_cpu_s: float = 0.0
    """CPU seconds those wake-ups were charged (before the node's speed)."""
    preemptions: int = 0
    """Times its thread gave its core up with a burst ready, over the whole run."""
    preempt_cpu_s: float = 0.0
    """CPU seconds its resumptions after them were charged (before the node's speed)."""


@dataclass(frozen=True)
class ProxyMeasure:
    """One proxy of the data plane: a sidecar, a ztunnel or a waypoint."""

    name: str
    kind: str
    live: bool
    """False once its pod has died (it then counts for CPU in the window, not memory)."""
    cpu_s: float
    """CPU seconds run in the window."""
    cpu_s_run: float
    """CPU seconds run over the whole run, drain included."""
    memory_mb: float | None
    """From the cost model and the configuration in view at the end; None when not live."""
    connections: int
    """Connections open at the end."""
    workers: tuple[WorkerMeasure, ...]


@dataclass(frozen=True)
class CGroupMeasure:
    """One container's cgroup under ``cluster.scheduler: cfs`` (an app, a proxy, a client),
    counted in the window as the kernel's ``cpu.stat`` counts them."""

    name: str
    """``<pod>/app``, the proxy's name (``<pod>/sidecar``, ``node-0/ztunnel``) or
    ``client/<name>``."""
    node: str
    cpu_weight: int
    """cgroup v2 ``cpu.weight`` (1..10000) from the CPU request."""
    cpu_limit_m: float | None
    """The CPU limit (millicores) behind ``cpu.max``; None without one."""
    cpu_s: float
    nr_periods: int
    """Bandwidth periods in which the cgroup drew runtime (0 without a limit)."""
    nr_throttled: int
    """Periods in which it spent its quota and was throttled."""
    throttled_s: float
    """Time it spent throttled."""
    oom_kills: int = 0
    threads: int | None = None
    """How many cores it can use at once: a proxy's worker threads, an app's concurrency
    (None: a client's load generator, or a container killed before it ever ran)."""
    pod: str | None = None
    """The pod whose cgroup it nests in (``cluster.cgroup_hierarchy: kubernetes`` under
    ``cfs``; None: outside the pods, or no tree)."""
    qos_class: str | None = None
    """That pod's QoS class (Guaranteed, Burstable, BestEffort), which places it in the tree."""


@dataclass(frozen=True)
class HandshakeMeasure:
    """TLS handshakes and connections the proxies opened to each other (whole run)."""

    total: int
    full: int
    resumed: int
    connections_opened: int


@dataclass(frozen=True)
class WorkloadMeasure:
    name: str
    requested_rps: float | None
    """Mean open-loop rate asked for over the window; None for closed loops."""
    sent_in_window: int
    releases_in_window: int | None = None
    """With ``release_tick_ms``: the load generator's releases (wake-ups that sent requests)
    in the window; None otherwise."""


@dataclass(frozen=True)
class ResilienceMeasure:
    """Resilience events towards one destination service, counted in the window."""

    counts: Mapping[str, int]
    """Retries, timeouts, overflows, ejections, ... in the data plane's order."""
    by_endpoint: Mapping[str, int]
    """Tries sent to each endpoint (pod name)."""


@dataclass(frozen=True)
class ControlPlaneMeasure:
    """What the control plane reports: the contract's fields typed, the rest as it gave
    them (each control plane has its own, in its own order)."""

    name: str
    cpu_vcpu: float
    memory_mb: float
    convergence_s: Mapping[str, float] | None
    stale_endpoint_attempts: int
    terminating_endpoint_attempts: int
    certificate_failures: int
    authz_denied: int
    authz_checks: int
    details: Mapping[str, Any]

    TYPED = (
        "mesh_control_plane", "cpu_vcpu", "memory_mb", "convergence_s",
        "stale_endpoint_attempts", "terminating_endpoint_attempts", "certificate_failures",
        "authz_denied", "authz_checks",
    )  # fmt: skip
    """The keys of a control plane's report held in typed fields, in the report's order."""

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> ControlPlaneMeasure:
        # Values as the control plane gave them: an int stays an int in summary.json.
        return cls(
            name=report["mesh_control_plane"],
            cpu_vcpu=report["cpu_vcpu"],
            memory_mb=report["memory_mb"],
            convergence_s=report["convergence_s"],
            stale_endpoint_attempts=report["stale_endpoint_attempts"],
            terminating_endpoint_attempts=report["terminating_endpoint_attempts"],
            certificate_failures=report["certificate_failures"],
            authz_denied=report["authz_denied"],
            authz_checks=report["authz_checks"],
            details={k: v for k, v in report.items() if k not in cls.TYPED},
        )


@dataclass(frozen=True)
class Measurement:
    """Everything one run of one mesh measured."""

    mesh: str
    warmup_s: float
    end_s: float
    drained_s: float
    """How long after the window ended the run went on to finish requests in flight."""
    workloads: Mapping[str, SubjectMeasure]
    services: Mapping[str, SubjectMeasure]
    edges: Mapping[tuple[str, str], SubjectMeasure]
    """By (caller, callee)."""
    clients: tuple[WorkloadMeasure, ...]
    nodes: tuple[NodeMeasure, ...]
    apps: tuple[AppMeasure, ...]
    proxies: tuple[ProxyMeasure, ...]
    """Every proxy the data plane ran, in creation order (none for the `none` mesh)."""
    handshakes: HandshakeMeasure | None
    """None when the data plane has no proxies to shake hands (the `none` mesh)."""
    resilience: Mapping[str, ResilienceMeasure]
    """By destination service, sorted; empty when the data plane applies no policies."""
    control_plane: ControlPlaneMeasure
    cost_models: tuple[ProxyCostModel, ...]
    """The data plane's cost models, then the control plane's."""
    in_flight: int
    """Requests still unanswered when the run stopped draining."""
    timeline: tuple[tuple[float, str], ...]
    warnings: tuple[str, ...]
    """The data plane's notes (unmapped traffic rules, emulated features)."""
    records: Sequence[RequestRecord] | None
    """Per-request records, when the run kept them."""
    cgroups: tuple[CGroupMeasure, ...] = ()
    """Containers' cgroups, node by node (under ``cluster.scheduler: fcfs`` only those whose
    CPU limit can bind)."""
    observability: Mapping[str, Any] | None = None
    """What metrics, tracing, access logs and Wasm cost (:mod:`meshsim.sim.observability`);
    None unless the scenario has ``mesh_options.observability``."""
    kernel_cpu_s: float = 0.0
    """CPU seconds run in the kernel on the data plane's behalf in the window (Cilium's eBPF
    datapath and encryption): on the nodes' cores, in no proxy's account."""
    topology: Mapping[str, Any] | None = None
    """Zones, cross-zone tries and zone failures (:mod:`meshsim.sim.zones`); None without
    ``cluster.zones``."""

    @property
    def window_s(self) -> float:
        return self.end_s - self.warmup_s


__all__ = [
    "AppMeasure",
    "CGroupMeasure",
    "ControlPlaneMeasure",
    "HandshakeMeasure",
    "Measurement",
    "NodeMeasure",
    "PodMeasure",
    "ProxyMeasure",
    "ResilienceMeasure",
    "SeriesMeasure",
    "SubjectMeasure",
    "WorkerMeasure",
    "WorkloadMeasure",
]
