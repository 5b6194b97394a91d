"""The typed scenario model, format version 1 (DESIGN.md, "Scenario format").

Every key of the format is a field here, with its unit in its name and its default
documented, so that ``meshsim schema`` gives editors a complete JSON Schema. The
models validate one value at a time; checks that span the document (references
between services, call cycles) live in :mod:`meshsim.scenario.references`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshsim.scenario.security import Security

MESH_NAMES: tuple[str, ...] = ("none", "istio", "linkerd", "istio-ambient")
"""Meshes a scenario may ask for; each maps to a data plane in :mod:`meshsim.sim`."""

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="A Kubernetes-style name (RFC 1123 label): lower case, digits and '-'.",
    ),
]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100)]
Probability = Annotated[float, Field(ge=0, le=1)]


class Spec(BaseModel):
    """Base of every scenario block: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- distributions


class Distribution(Spec):
    """A random quantity, with its mean in the unit of the key that holds it.

    ``constant`` and ``exponential`` need ``mean``; ``lognormal`` and ``gamma`` need
    ``mean`` and ``cv`` (coefficient of variation, standard deviation / mean);
    ``empirical`` draws uniformly from ``values``.
    """

    dist: Literal["constant", "exponential", "lognormal", "gamma", "empirical"]
    mean: PositiveFloat | None = None
    cv: NonNegativeFloat | None = None
    values: list[NonNegativeFloat] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _parameters_fit_the_family(self) -> Distribution:
        needs_mean = self.dist != "empirical"
        if needs_mean and self.mean is None:
            raise ValueError(f"a {self.dist} distribution needs 'mean'")
        if self.dist in ("lognormal", "gamma") and self.cv is None:
            raise ValueError(f"a {self.dist} distribution needs 'cv' (standard deviation / mean)")
        if self.dist == "empirical" and self.values is None:
            raise ValueError("an empirical distribution needs 'values' (a list of samples)")
        if self.dist != "empirical" and self.values is not None:
            raise ValueError(f"'values' belongs to empirical distributions, not {self.dist}")
        if self.dist in ("constant", "exponential") and self.cv is not None:
            raise ValueError(f"a {self.dist} distribution takes no 'cv'")
        return self

    @property
    def expected(self) -> float:
        """The distribution's mean, in the unit of its key."""
        if self.dist == "empirical":
            assert self.values is not None
            return sum(self.values) / len(self.values)
        assert self.mean is not None
        return self.mean


def _number_is_constant(value: Any) -> Any:
    # `cpu_ms: 2` is shorthand for `cpu_ms: {dist: constant, mean: 2}`.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"dist": "constant", "mean": value}
    return value


# --------------------------------------------------------------------------- cluster


class Network(Spec):
    """One-way network latency between pods, by placement, plus a per-byte cost."""

    same_node_us: NonNegativeFloat = Field(25.0, description="One-way latency within a node (µs).")
    cross_node_us: NonNegativeFloat = Field(150.0, description="One-way latency across nodes (µs).")
    client_us: NonNegativeFloat | None = Field(
        None,
        description="One-way latency from a workload's clients to the cluster (µs); "
        "defaults to cross_node_us.",
    )
    bandwidth_gbps: PositiveFloat = Field(
        10.0, description="Link bandwidth; each message also takes bytes x 8 / bandwidth."
    )


class Cluster(Spec):
    nodes: Annotated[int, Field(ge=1)] = Field(1, description="Number of nodes.")
    cores_per_node: Annotated[int, Field(ge=1)] = Field(
        4, description="Cores per node; apps and proxies on a node share them."
    )
    memory_gb_per_node: PositiveFloat = Field(16.0, description="Memory per node (GB).")
    network: Network = Field(default_factory=Network)


# --------------------------------------------------------------------------- services


class Call(Spec):
    """A downstream call made while serving a request."""

    service: Name
    parallel: bool = Field(
        False,
        description="Consecutive calls marked parallel are made at once; others in order.",
    )
    probability: Probability = Field(1.0, description="Chance that a request makes this call.")
    request_bytes: Annotated[int, Field(ge=0)] = Field(512, description="Request body size.")
    required: bool = Field(
        True, description="If true, a failed call fails the caller's request (status 502)."
    )
    path: str = Field("/", description="HTTP path, for route matching.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers sent.")


class Version(Spec):
    """A subset of a service's replicas (a Deployment per version, as in Istio's samples)."""

    name: Name
    replicas: Annotated[int, Field(ge=0)] = 1
    cpu_ms: Distribution | None = Field(None, description="Overrides the service's cpu_ms.")
    calls: list[Call] | None = Field(None, description="Overrides the service's calls.")
    response_bytes: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cpu_ms" in data:
            data = {**data, "cpu_ms": _number_is_constant(data["cpu_ms"])}
        return data


DEFAULT_CPU_MS = Distribution(dist="lognormal", mean=1.0, cv=0.5)


class Service(Spec):
    name: Name
    namespace: Name = "default"
    replicas: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Replicas, when the service has no versions (default 1)."
    )
    versions: list[Version] | None = Field(
        None, min_length=1, description="Subsets for traffic splitting, each with its replicas."
    )
    cpu_ms: Distribution = Field(
        DEFAULT_CPU_MS, description="App CPU per request (ms); default lognormal mean 1, cv 0.5."
    )
    concurrency: Annotated[int, Field(ge=1)] = Field(
        64, description="App worker limit per replica; further requests wait in a FIFO queue."
    )
    response_bytes: Annotated[int, Field(ge=0)] = 1024
    protocol: Literal["http1", "http2", "grpc"] = Field(
        "http1", description="What the app speaks; meshes may upgrade between proxies."
    )
    calls: list[Call] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cpu_ms" in data:
            data = {**data, "cpu_ms": _number_is_constant(data["cpu_ms"])}
        return data

    @model_validator(mode="after")
    def _replicas_or_versions(self) -> Service:
        if self.versions is not None and self.replicas is not None:
            raise ValueError("give either 'replicas' or 'versions' (each with replicas), not both")
        if self.versions is not None:
            names = [v.name for v in self.versions]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"version names must be unique (repeated: {', '.join(dupes)})")
        return self

    def subsets(self) -> list[Version]:
        """The service's versions; a service without versions has one, named ``v1``."""
        if self.versions is not None:
            return list(self.versions)
        return [Version(name="v1", replicas=1 if self.replicas is None else self.replicas)]

    @property
    def total_replicas(self) -> int:
        return sum(v.replicas for v in self.subsets())


# --------------------------------------------------------------------------- workloads


class Phase(Spec):
    at_s: NonNegativeFloat
    rate_rps: NonNegativeFloat


class Workload(Spec):
    """Clients that send requests to a service from outside the mesh."""

    name: Name
    target: Name
    arrival: Literal["poisson", "constant", "closed"] = "poisson"
    rate_rps: PositiveFloat | None = Field(None, description="Open-loop rate (requests/s).")
    phases: list[Phase] | None = Field(
        None, min_length=1, description="Piecewise-constant rate: [{at_s, rate_rps}, ...]."
    )
    clients: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Closed loop: clients that each send, wait, think, repeat."
    )
    think_time_ms: Distribution | None = Field(
        None, description="Closed loop: pause between a response and the next request."
    )
    request_bytes: Annotated[int, Field(ge=0)] = 1024
    connections: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Client connections (HTTP/1.1: at most this many requests in flight; "
        "the rest wait at the client and the wait counts). Unlimited if omitted.",
    )
    path: str = "/"
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "think_time_ms" in data:
            data = {**data, "think_time_ms": _number_is_constant(data["think_time_ms"])}
        return data

    @model_validator(mode="after")
    def _load_is_defined(self) -> Workload:
        if self.arrival == "closed":
            if self.clients is None:
                raise ValueError("a closed workload needs 'clients'")
            if self.rate_rps is not None or self.phases is not None:
                raise ValueError("a closed workload takes 'clients', not 'rate_rps' or 'phases'")
        else:
            if self.clients is not None or self.think_time_ms is not None:
                raise ValueError(
                    f"'clients' and 'think_time_ms' belong to closed workloads, not {self.arrival}"
                )
            if (self.rate_rps is None) == (self.phases is None):
                raise ValueError(f"a {self.arrival} workload needs 'rate_rps' or 'phases' (one)")
            if self.phases is not None:
                starts = [p.at_s for p in self.phases]
                if starts != sorted(starts) or len(set(starts)) != len(starts):
                    raise ValueError("phases must be in increasing order of at_s")
        return self

    def rate_at(self, t_s: float) -> float:
        """The open-loop rate in force at time ``t_s`` (0 before the first phase)."""
        if self.rate_rps is not None:
            return self.rate_rps
        rate = 0.0
        for phase in self.phases or []:
            if phase.at_s <= t_s:
                rate = phase.rate_rps
        return rate


# --------------------------------------------------------------------------- traffic


class Retries(Spec):
    attempts: Annotated[int, Field(ge=0)] = Field(2, description="Retries after the first try.")
    per_try_timeout_ms: PositiveFloat | None = None
    retry_on: list[str] | None = Field(
        None, description="Envoy retry_on conditions, e.g. [connect-failure, 5xx]."
    )
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    backoff_base_ms: PositiveFloat | None = None


class CircuitBreaker(Spec):
    max_connections: Annotated[int, Field(ge=1)] | None = None
    max_pending_requests: Annotated[int, Field(ge=1)] | None = None
    max_requests: Annotated[int, Field(ge=1)] | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None


class OutlierDetection(Spec):
    consecutive_5xx: Annotated[int, Field(ge=1)] | None = None
    consecutive_gateway_errors: Annotated[int, Field(ge=1)] | None = None
    interval_s: PositiveFloat | None = None
    base_ejection_s: PositiveFloat | None = None
    max_ejection_percent: Percent | None = None


class FaultDelay(Spec):
    percent: Percent
    fixed_ms: NonNegativeFloat


class FaultAbort(Spec):
    percent: Percent
    status: Annotated[int, Field(ge=100, le=599)]


class Fault(Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class Mirror(Spec):
    service: Name
    subset: Name | None = None
    percent: Percent = 100.0


class Match(Spec):
    path_prefix: str | None = None
    path_exact: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class TrafficRule(Spec):
    """Mesh-neutral traffic intent for one service, in Istio's vocabulary."""

    service: Name
    match: Match | None = None
    split: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="Weights by version name, e.g. {v1: 90, v2: 10}."
    )
    timeout_ms: PositiveFloat | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    load_balancer: (
        Literal["round_robin", "least_request", "random", "ring_hash", "maglev", "peak_ewma"] | None
    ) = None
    fault: Fault | None = None
    mirror: Mirror | None = None

    @model_validator(mode="after")
    def _split_has_weight(self) -> TrafficRule:
        if self.split is not None and sum(self.split.values()) <= 0:
            raise ValueError("split weights must add up to more than 0")
        return self


# --------------------------------------------------------------------------- events


class _Event(Spec):
    at_s: NonNegativeFloat
    target: str = Field(description="A service ('ratings') or one version ('reviews-v2').")


class KillEvent(_Event):
    """Replicas die at once; requests they hold fail, as after SIGKILL.

    With ``graceful: true`` the kill is announced: the pods leave the endpoints at once
    (Terminating), keep serving for ``prestop_s`` (a preStop delay) while the control plane
    tells the proxies, and only then die.
    """

    action: Literal["kill"]
    count: Annotated[int, Field(ge=1)] = 1
    graceful: bool = Field(False, description="Announce the kill (pod deletion with preStop).")
    prestop_s: NonNegativeFloat = Field(
        5.0, description="graceful only: how long a terminating pod keeps serving."
    )


class SlowEvent(_Event):
    """Replicas' CPU per request is multiplied by ``factor`` for ``duration_s``."""

    action: Literal["slow"]
    factor: PositiveFloat
    count: Annotated[int, Field(ge=1)] | None = Field(None, description="Replicas (default all).")
    duration_s: PositiveFloat | None = None


class ErrorsEvent(_Event):
    """Replicas answer 500 with probability ``rate`` for ``duration_s``."""

    action: Literal["errors"]
    rate: Probability
    count: Annotated[int, Field(ge=1)] | None = Field(None, description="Replicas (default all).")
    duration_s: PositiveFloat | None = None
    status: Annotated[int, Field(ge=400, le=599)] = 500


class ScaleEvent(_Event):
    """The target's replica count becomes ``replicas``."""

    action: Literal["scale"]
    replicas: Annotated[int, Field(ge=0)]
    prestop_s: NonNegativeFloat | None = Field(
        None,
        description="Scale-down: removed pods leave the endpoints at once and die after this "
        "long; default: they finish what they hold and never die (the run is too short).",
    )


class RolloutEvent(_Event):
    """A Deployment rolling update: ``max_surge`` new pods at a time; once they are ready, as
    many old ones are deleted (gracefully, with ``prestop_s``, unless ``graceful`` is false)."""

    action: Literal["rollout"]
    max_surge: Annotated[int, Field(ge=1)] = 1
    graceful: bool = True
    prestop_s: NonNegativeFloat = 5.0


class ChurnEvent(_Event):
    """Pods replaced at a steady rate (one at a time, chosen at random, in the same version):
    the old pod is deleted (gracefully unless ``graceful`` is false) and a new one started.
    ``target: '*'`` draws from every service."""

    action: Literal["churn"]
    pods_per_minute: PositiveFloat
    duration_s: PositiveFloat | None = Field(None, description="Default: until the end.")
    graceful: bool = False
    prestop_s: NonNegativeFloat = 5.0


class ConfigEvent(_Event):
    """A configuration change (a VirtualService, DestinationRule, ...) about ``target``, or
    about the whole mesh with ``target: '*'``: istiod makes a full push to the proxies that
    depend on it; Linkerd's policy controller streams one update to each watcher."""

    action: Literal["config"]
    count: Annotated[int, Field(ge=1)] = Field(1, description="Changes, spaced by interval_s.")
    interval_s: NonNegativeFloat = 0.0


class ControlPlaneDownEvent(_Event):
    """The control plane (istiod with its CA; Linkerd's destination and identity) stops: no
    pushes, no certificates. Proxies keep the configuration and certificates they have."""

    action: Literal["control-plane-down"]
    target: str = Field("control-plane", description="Always 'control-plane'.")
    duration_s: PositiveFloat | None = Field(None, description="Default: until the end.")


class ControlPlaneSlowEvent(_Event):
    """The control plane's CPU work takes ``factor`` times as long for ``duration_s``."""

    action: Literal["control-plane-slow"]
    target: str = Field("control-plane", description="Always 'control-plane'.")
    factor: Annotated[float, Field(ge=1)]
    duration_s: PositiveFloat | None = None


Event = Annotated[
    KillEvent
    | SlowEvent
    | ErrorsEvent
    | ScaleEvent
    | RolloutEvent
    | ChurnEvent
    | ConfigEvent
    | ControlPlaneDownEvent
    | ControlPlaneSlowEvent,
    Field(discriminator="action"),
]

CONTROL_PLANE_TARGET = "control-plane"
"""The target of control-plane events."""
ANY_SERVICE = "*"
"""The target of churn and config events that concern every service."""


# --------------------------------------------------------------------------- SLOs


class Slo(Spec):
    """Objectives checked after the run; a breach makes ``meshsim run`` exit with status 1."""

    service: Name | None = None
    workload: Name | None = None
    mesh: str | None = Field(None, description="Check only this mesh's run (default: all).")
    mean_ms: PositiveFloat | None = None
    p50_ms: PositiveFloat | None = None
    p90_ms: PositiveFloat | None = None
    p99_ms: PositiveFloat | None = None
    p999_ms: PositiveFloat | None = None
    success_rate: Probability | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Slo:
        if (self.service is None) == (self.workload is None):
            raise ValueError("an SLO names either a 'service' or a 'workload'")
        objectives = (self.mean_ms, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms)
        if all(v is None for v in objectives) and self.success_rate is None:
            raise ValueError("an SLO needs at least one objective (p99_ms, success_rate, ...)")
        return self


# --------------------------------------------------------------------------- mesh options


class IstioOptions(Spec):
    workers: Annotated[int, Field(ge=1)] = Field(2, description="Envoy worker threads.")
    mtls: Literal["STRICT", "PERMISSIVE", "DISABLE"] = "STRICT"
    sidecar_scoping: bool = Field(
        False, description="A Sidecar resource limits each proxy's config to what it calls."
    )
    telemetry: bool = Field(True, description="Telemetry v2 stats filter.")
    wasm_filters: Annotated[int, Field(ge=0)] = 0
    h2_upgrade: bool = Field(
        False,
        description="Upgrade HTTP/1.1 to HTTP/2 between sidecars (Istio's default is "
        "DO_NOT_UPGRADE; http2/grpc services use HTTP/2 regardless).",
    )
    model: str | None = Field(None, description="Cost-model file (default models/istio-sidecar).")
    istiod_replicas: Annotated[int, Field(ge=1)] = Field(
        1, description="istiod replicas; they share the proxies (each connects to one)."
    )
    istiod_cores: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Cores per istiod replica (GOMAXPROCS); default cores_per_node."
    )
    istiod_model: str | None = Field(None, description="Cost-model file (default models/istiod).")
    eds_debounce: bool = Field(
        True, description="PILOT_ENABLE_EDS_DEBOUNCE: endpoint-only changes are debounced too."
    )


class LinkerdOptions(Spec):
    workers: Annotated[int, Field(ge=1)] = Field(1, description="Proxy runtime workers.")
    protocol_upgrade: bool = Field(True, description="Upgrade HTTP/1 to HTTP/2 between proxies.")
    retry_budget: bool = Field(
        False, description="Use ServiceProfile retries under the retry budget."
    )
    retry_ratio: Annotated[float, Field(ge=0)] = 0.2
    min_retries_per_second: Annotated[float, Field(ge=0)] = 10.0
    retry_ttl_s: PositiveFloat = 10.0
    failure_accrual: Literal["consecutive", "unified"] | None = Field(
        None,
        description="balancer.linkerd.io/failure-accrual on every service (default: none; a "
        "traffic rule's outlier_detection also turns on consecutive accrual for its service).",
    )
    unsupported: Literal["error", "emulate"] = Field(
        "error",
        description="Traffic rules Linkerd cannot express (fault injection, mirroring): "
        "'error' refuses the run; 'emulate' applies them in the client proxy as Istio would, "
        "and says so in the run's warnings.",
    )
    model: str | None = Field(None, description="Cost-model file (default models/linkerd-proxy).")
    destination_cores: Annotated[int, Field(ge=1)] = Field(
        1, description="Cores of the destination controller (one replica)."
    )
    control_plane_model: str | None = Field(
        None, description="Cost-model file (default models/linkerd-control-plane)."
    )


class AmbientOptions(Spec):
    waypoints: list[Name] | Literal["all", "none"] = Field(
        "none", description="Services behind a waypoint (L7); 'all' or 'none'."
    )
    ztunnel_workers: Annotated[int, Field(ge=1)] = 2
    waypoint_workers: Annotated[int, Field(ge=1)] = 2
    ztunnel_model: str | None = None
    waypoint_model: str | None = None


class MeshOptions(Spec):
    istio: IstioOptions = Field(default_factory=IstioOptions)
    linkerd: LinkerdOptions = Field(default_factory=LinkerdOptions)
    istio_ambient: AmbientOptions = Field(
        default_factory=AmbientOptions,
        alias="istio-ambient",
    )

    keep_alive: bool = Field(
        True,
        description="Proxies (and apps) keep connections open and reuse them; false opens a "
        "new connection, with its (m)TLS handshake, for every request, in every mesh.",
    )
    meshed_clients: bool = Field(
        False,
        description="Workload clients run in meshed pods (a sidecar, or their node's ztunnel), "
        "like the load generator of Istio's benchmark; otherwise they enter the mesh at the "
        "target's proxy.",
    )

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )


class ControlPlaneOptions(Spec):
    """How the control plane is connected to the data plane."""

    enabled: bool = Field(
        True,
        description="false: proxies read the cluster's endpoints at once and pods need no "
        "certificate (the data-plane-only model of earlier versions).",
    )


# --------------------------------------------------------------------------- the scenario


class Scenario(Spec):
    """A complete scenario, format version 1."""

    meshsim: Literal[1] = Field(description="Scenario format version.")
    name: Name
    description: str = ""
    seed: Annotated[int, Field(ge=0)] = 0
    duration_s: PositiveFloat
    warmup_s: NonNegativeFloat = Field(5.0, description="Excluded from statistics.")
    replications: Annotated[int, Field(ge=1)] = 1
    meshes: list[Literal["none", "istio", "linkerd", "istio-ambient"]] = Field(
        default_factory=lambda: ["none"],  # type: ignore[arg-type]
        min_length=1,
    )
    cluster: Cluster = Field(default_factory=Cluster)
    services: list[Service] = Field(min_length=1)
    workloads: list[Workload] = Field(min_length=1)
    traffic: list[TrafficRule] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    slo: list[Slo] = Field(default_factory=list)
    mesh_options: MeshOptions = Field(default_factory=MeshOptions)
    security: Security = Field(
        default_factory=Security,
        description="Workload certificates and authorization policies, per mesh.",
    )
    control_plane: ControlPlaneOptions = Field(default_factory=lambda: ControlPlaneOptions())

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as plain data, loadable again with :func:`meshsim.scenario.from_dict`."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
