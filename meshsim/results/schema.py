"""``summary.json``, version 1, as types: what :func:`meshsim.results.summary.build_summary`
writes and what reports, benchmarks and notebooks read (docs/DESIGN.md, "Results contract").

Blocks carry the contract's fields and every field the code writes besides; fields that
only some meshes or versions write are ``NotRequired``. The contract may gain fields,
never rename them: add them here, ``NotRequired`` when older runs lack them.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class LatencyMs(TypedDict):
    """Latency in milliseconds of the requests sent in the window (None: no request)."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None


class LatencyCi95Ms(TypedDict):
    """95 % confidence intervals [low, high] over replications (None: too few requests)."""

    mean: list[float] | None
    p50: list[float] | None
    p90: list[float] | None
    p99: list[float] | None
    p999: list[float] | None


class Signals(TypedDict):
    """Golden signals of a service (server view, retries included) or an edge (caller view),
    per replication where a count."""

    requests: int
    rps: float
    success_rate: float | None
    errors: int
    latency_ms: LatencyMs
    latency_ci95_ms: LatencyCi95Ms | None
    """None with one replication."""
    statuses: dict[str, int]
    latency_ci_method: NotRequired[str]
    """How the CI was made: "batch means (N batches)" for workloads (client view),
    "replications (N)" otherwise."""
    latency_band_ms: NotRequired[dict[str, list[float] | None]]
    """The model band per percentile (``--model-samples``; :mod:`meshsim.results.bands`)."""


class WorkloadSignals(Signals):
    """A workload's signals, measured at the client."""

    requested_rps: float | None
    """None for closed-loop workloads."""
    achieved_rps: float
    """Requests that finished in the window, per second (a load generator's rate)."""
    requests_per_release: NotRequired[float]
    """With ``release_tick_ms``: requests the load generator sent per release (clump size)."""
    added_latency_ci95_ms: NotRequired[dict[str, list[float] | None]]
    """A mesh's run (not `none`'s): the 95 % CI of ``added_latency_ms`` at p50, p90 and p99
    from the simulation's noise, by paired batch means against the `none` run
    (:func:`meshsim.results.run.paired_difference_ci`); absent with too few batches."""
    difference_ci95_ms: NotRequired[dict[str, dict[str, list[float] | None]]]
    """By each mesh after this one in the summary's order (`none` aside): the 95 % CI of
    this mesh's latency minus that mesh's at p50, p90 and p99, paired as
    ``added_latency_ci95_ms``."""


class ProxyKindBlock(TypedDict):
    count: int
    memory_mb_total: float
    cpu_s_total: float
    """CPU seconds over the whole run, drain included."""
    requests: int
    wakeups: int
    """Bursts that found their worker asleep."""
    wakeup_cpu_s: float
    """CPU seconds those wake-ups were charged (``wakeup_cpu_us``, before the node's speed)."""
    preemptions: int
    """Times a worker's thread gave its core up with a burst ready (FCFS cores)."""
    preemption_cpu_s: float
    """CPU seconds its resumptions were charged (``preemption_cpu_us``)."""
    memory_mb_per_proxy: float


class ProxiesBlock(TypedDict):
    """Every sidecar, ztunnel and waypoint of the mesh, summed or averaged."""

    count: int
    cpu_vcpu_total: float
    cpu_vcpu_per_1000rps: float
    memory_mb_per_proxy: float
    memory_mb_total: float
    handshakes: int
    band: NotRequired[dict[str, list[float] | None]]
    """The model band of each metric above (``--model-samples``)."""
    handshakes_full: NotRequired[int]
    handshakes_resumed: NotRequired[int]
    connections_opened: NotRequired[int]
    connections_open: NotRequired[int]
    worker_requests_max_share: NotRequired[float]
    by_kind: NotRequired[dict[str, ProxyKindBlock]]
    max_worker_utilisation: NotRequired[float]
    kernel_cpu_vcpu: NotRequired[float]
    """CPU the kernel runs for the data plane (Cilium's eBPF and encryption), which container
    metrics do not count: apart from ``cpu_vcpu_total``."""


class Convergence(TypedDict):
    """Seconds from a change in the cluster to the last proxy configured for it."""

    p50: float
    p90: float
    p99: float
    max: float
    count: int


class ControlPlaneBlock(TypedDict):
    mesh_control_plane: str
    cpu_vcpu: float
    memory_mb: float
    convergence_s: Convergence | None
    """None when nothing changed, or with kube-proxy only (0 by construction)."""
    stale_endpoint_attempts: int
    terminating_endpoint_attempts: int
    certificate_failures: int
    authz_denied: int
    authz_checks: int
    band: NotRequired[dict[str, list[float] | None]]
    """The model band of ``cpu_vcpu`` and ``memory_mb`` (``--model-samples``)."""
    # Both meshes' control planes
    certificates_issued: NotRequired[int]
    csr_unanswered: NotRequired[int]
    cpu_s_work: NotRequired[float]
    cpu_vcpu_upkeep: NotRequired[float]
    connected_proxies: NotRequired[int]
    # istiod
    memory_mb_per_replica: NotRequired[list[float]]
    replicas: NotRequired[int]
    cores_per_replica: NotRequired[int]
    push_throttle: NotRequired[int]
    request_limit_per_s: NotRequired[float]
    """New xDS streams a replica admits per second (PILOT_MAX_REQUESTS_PER_SECOND)."""
    rejected_streams: NotRequired[int]
    """Streams refused by that limit (the proxy reconnects after Envoy's back-off)."""
    connected_by_kind: NotRequired[dict[str, int]]
    sidecar_scoping: NotRequired[bool]
    pushes: NotRequired[int]
    full_pushes: NotRequired[int]
    proxy_pushes: NotRequired[int]
    merged_pushes: NotRequired[int]
    proxy_pushes_by_cluster: NotRequired[dict[str, int]]
    """Several clusters: pushes by the cluster of the proxy pushed to."""
    # Several clusters (meshsim.sim.controlplane.clusters): the fields above summed over the
    # control planes, and each one's own block
    control_planes: NotRequired[int]
    multicluster_mode: NotRequired[str]
    by_cluster: NotRequired[dict[str, dict[str, Any]]]
    """Each cluster's control plane (the cluster it runs in), with the fields above."""
    # Linkerd's destination controller
    destination_cores: NotRequired[int]
    watches: NotRequired[int]
    updates: NotRequired[int]
    snapshots: NotRequired[int]
    stream_resets: NotRequired[int]


class CostModelRef(TypedDict):
    """The model file a proxy kind or control plane used, and what it describes."""

    kind: str
    file: str
    describes: str


class NodeBlock(TypedDict):
    utilisation: float


class CGroupBlock(TypedDict):
    """``runs.<mesh>.cgroups.<name>``: one container's cgroup under ``cluster.scheduler:
    cfs`` (``<pod>/app``, ``<pod>/sidecar``, ``node-0/ztunnel``, ...), means over
    replications of what the kernel's cpu.stat counts in the window."""

    node: str
    cpu_weight: int
    """cgroup v2 cpu.weight from the CPU request."""
    cpu_limit_m: float | None
    """The CPU limit behind cpu.max (millicores); None without one."""
    threads: int | None
    """How many cores it can use at once: a proxy's worker threads (an Istio sidecar's or
    waypoint's follow its CPU limit, rounded up), an app's concurrency; None: a client's."""
    pod: str | None
    """The pod whose cgroup it nests in (cluster.cgroup_hierarchy kubernetes); None outside
    the pods or without the tree."""
    qos_class: str | None
    """That pod's QoS class: Guaranteed, Burstable or BestEffort (kubelet's GetPodQOS)."""
    cpu_vcpu: float
    nr_periods: float
    """Bandwidth periods in which it drew runtime (0 without a limit)."""
    nr_throttled: float
    """Periods in which it spent its quota and waited for the next."""
    throttled_share: float
    """nr_throttled / nr_periods (0 without periods)."""
    throttled_s: float
    """Time spent throttled."""
    oom_kills: float
    """Times the container passed its memory limit and was killed."""


class ResilienceBlock(TypedDict):
    """Resilience events towards one service, the mean over replications (rounded)."""

    requests: int
    attempts: int
    retries: int
    retry_overflows: int
    retries_exhausted: int
    budget_exhausted: int
    timeouts: int
    per_try_timeouts: int
    overflows: int
    ejections: int
    failfasts: int
    load_shed: int
    """Linkerd: requests shed by a full balancer queue (503, never retried)."""
    no_healthy: int
    connect_failures: int
    fault_delays: int
    fault_aborts: int
    mirrored: int
    by_endpoint: dict[str, int]
    amplification: float | None
    """Attempts per request through the callers' proxies; None without requests."""


class TimelineEntry(TypedDict):
    at_s: float
    event: str


class MeshModelSamples(TypedDict):
    """``runs.<mesh>.model_samples``: the drawn sets and this mesh's metrics under each."""

    parameters: list[str]
    """Dotted names, ``<model>.<parameter>``."""
    sets: list[list[float | None]]
    metrics: dict[str, list[float | None]]
    """Dotted metric name (``proxies.cpu_vcpu_per_1000rps``) -> value per set."""


class SampledParameter(TypedDict):
    name: str
    value: float
    range: list[float]
    unit: str
    scale: str
    """``linear`` or ``log``: how the Latin hypercube spreads the range."""
    source: str


class ModelSamplesBlock(TypedDict):
    """``model_samples`` at the top: how many parameter sets, drawn how, over what."""

    n: int
    method: str
    parameters: list[SampledParameter]
    sets: list[list[float]]


class PodBlock(TypedDict):
    """``runs.<mesh>.pods.<pod>``: one app pod in the window (means over replications)."""

    service: str
    version: str
    requests: float
    """Requests (tries) that reached it: how its service's balancers spread them."""
    app_cpu_vcpu: float
    whole_window: bool
    """In its service's endpoints from the window's start to its end in every replication
    (not started, killed or rolled out in between)."""


class MeshRun(TypedDict):
    """``runs.<mesh>``: one mesh over all replications."""

    replications: int
    services: dict[str, Signals]
    workloads: dict[str, WorkloadSignals]
    edges: dict[str, Signals]
    """By ``caller->callee``."""
    proxies: ProxiesBlock
    control_plane: ControlPlaneBlock
    cost_models: list[CostModelRef]
    nodes: dict[str, NodeBlock]
    app_cpu_vcpu: dict[str, float]
    pods: NotRequired[dict[str, PodBlock]]
    """Per app pod, every pod the run had in creation order (summaries written before it
    lack it)."""
    resilience: dict[str, ResilienceBlock]
    saturated: bool
    warnings: list[str]
    timeline: list[TimelineEntry]
    model_samples: NotRequired[MeshModelSamples]
    """Per parameter set: the metrics that carry a band (``--model-samples``)."""
    observability: NotRequired[dict[str, Any]]
    """What metrics, tracing, access logs and Wasm filters cost, with each feature's share of
    the proxies' CPU and memory (``mesh_options.observability``, meshsim.sim.observability)."""
    cgroups: NotRequired[dict[str, CGroupBlock]]
    """Containers' cgroups, present under ``cluster.scheduler: cfs``."""
    topology: NotRequired[dict[str, Any]]
    """Zones, cross-zone tries per service and zone failures (``cluster.zones``,
    meshsim.sim.zones); the first replication's."""


class AddedLatencyMs(TypedDict):
    """Latency a mesh adds over the `none` run at each percentile (may be negative: noise)."""

    p50: float
    p90: float
    p99: float


class Summary(TypedDict):
    """``summary.json``."""

    schema: int
    meshsim_version: str
    scenario: str
    scenario_sha256: str
    seed: int
    runs: dict[str, MeshRun]
    added_latency_ms: dict[str, dict[str, AddedLatencyMs]]
    """By mesh, then workload; empty without a `none` run."""
    slo_breaches: NotRequired[list[str]]
    """The scenario's objectives each mesh missed (absent in runs saved before it was
    saved; ``meshsim run --json`` printed it)."""
    model_samples: NotRequired[ModelSamplesBlock]
    """Present when the run drew cost-model parameter sets (``--model-samples N``)."""


__all__ = [
    "AddedLatencyMs",
    "CGroupBlock",
    "ControlPlaneBlock",
    "Convergence",
    "CostModelRef",
    "LatencyCi95Ms",
    "LatencyMs",
    "MeshModelSamples",
    "MeshRun",
    "ModelSamplesBlock",
    "NodeBlock",
    "ProxiesBlock",
    "ProxyKindBlock",
    "ResilienceBlock",
    "SampledParameter",
    "Signals",
    "Summary",
    "TimelineEntry",
    "WorkloadSignals",
]
