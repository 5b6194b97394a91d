"""The typed scenario model, format version 1 (docs/DESIGN.md, "Scenario format").

Every key of the format is a field here, with its unit in its name and its default
documented, so that ``meshsim schema`` gives editors a complete JSON Schema. The
models validate one value at a time; checks that span the document (references
between services, call cycles) live in :mod:`meshsim.scenario.references`.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from meshsim.scenario.base import (
    MAX_COUNT,
    MIN_QUANTITY,
    Name,
    NonNegativeFloat,
    PositiveFloat,
    Probability,
    Spec,
)
from meshsim.scenario.cluster import Cluster
from meshsim.scenario.edges import External, Gateway, MultiClusterOptions
from meshsim.scenario.events import Event
from meshsim.scenario.options import ControlPlaneOptions, MeshOptions
from meshsim.scenario.resources import Resources
from meshsim.scenario.security import Security
from meshsim.scenario.traffic import TrafficRule

MAX_CV = 100.0
"""Beyond a coefficient of variation of 100 a lognormal's sigma passes 3 (most draws near 0,
rare ones astronomically large) and a gamma's shape 1/cv^2 underflows to draws of 0: no
measured service time looks like either, and at cv 1e308 the parameters become NaN."""
MAX_REPLICAS = 150_000
"""Kubernetes' tested limit of pods per cluster (see also meshsim.scenario.limits)."""
MAX_REPLICATIONS = 1_000
"""Confidence intervals narrow as 1/sqrt(n): past 1,000 replications a longer run does more."""
MAX_SEED = 2**63 - 1
"""Seeds are stored as signed 64-bit integers (a sweep point's seed is up to this)."""

MESH_NAMES: tuple[str, ...] = ("none", "istio", "linkerd", "istio-ambient", "cilium")
"""Meshes a scenario may ask for; each maps to a data plane in :mod:`meshsim.sim`."""


# --------------------------------------------------------------------------- distributions


class Distribution(Spec):
    """A random quantity, with its mean in the unit of the key that holds it.

    ``constant`` and ``exponential`` need ``mean``; ``lognormal`` and ``gamma`` need
    ``mean`` and ``cv`` (coefficient of variation, standard deviation / mean);
    ``empirical`` draws uniformly from ``values``.
    """

    dist: Literal["constant", "exponential", "lognormal", "gamma", "empirical"]
    mean: PositiveFloat | None = None
    cv: Annotated[float, Field(ge=0, le=MAX_CV)] | None = None
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
        if self.dist == "gamma" and self.cv is not None and 0 < self.cv < MIN_QUANTITY:
            # The gamma's shape is 1 / cv^2, and (1e-200)^2 is 0: a division by zero.
            raise ValueError(
                f"a gamma distribution's cv must be 0 or at least {MIN_QUANTITY:g} "
                f"(got {self.cv!r})"
            )
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


def _numbers_are_constants(data: Any, *keys: str) -> Any:
    """Apply the bare-number shorthand to the distribution-valued ``keys`` of a mapping."""
    if isinstance(data, dict):
        for key in keys:
            if key in data:
                data = {**data, key: _number_is_constant(data[key])}
    return data


# --------------------------------------------------------------------------- services


class Call(Spec):
    """A downstream call made while serving a request."""

    service: Name
    parallel: bool = Field(
        False,
        description="Consecutive calls marked parallel are made at once; others in order.",
    )
    probability: Probability = Field(1.0, description="Chance that a request makes this call.")
    request_bytes: Annotated[int, Field(ge=0, le=MAX_COUNT)] = Field(
        512, description="Request body size."
    )
    required: bool = Field(
        True, description="If true, a failed call fails the caller's request (status 502)."
    )
    path: str = Field("/", description="HTTP path, for route matching.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers sent.")


class Version(Spec):
    """A subset of a service's replicas (a Deployment per version, as in Istio's samples)."""

    name: Name
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    cpu_ms: Distribution | None = Field(None, description="Overrides the service's cpu_ms.")
    calls: list[Call] | None = Field(None, description="Overrides the service's calls.")
    response_bytes: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _numbers_are_constants(data, "cpu_ms")


DEFAULT_CPU_MS = Distribution(dist="lognormal", mean=1.0, cv=0.5)


class Service(Spec):
    name: Name
    namespace: Name = "default"
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = Field(
        None, description="Replicas, when the service has no versions (default 1)."
    )
    versions: list[Version] | None = Field(
        None, min_length=1, description="Subsets for traffic splitting, each with its replicas."
    )
    cpu_ms: Distribution = Field(
        DEFAULT_CPU_MS, description="App CPU per request (ms); default lognormal mean 1, cv 0.5."
    )
    concurrency: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        64, description="App worker limit per replica; further requests wait in a FIFO queue."
    )
    response_bytes: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 1024
    protocol: Literal["http1", "http2", "grpc"] = Field(
        "http1",
        description="What the app speaks; meshes may upgrade between proxies. Callers of a "
        "grpc or http2 service hold one connection to it each, which an L4 balancer "
        "(none, ambient without a waypoint, Cilium) binds to one pod.",
    )
    max_connection_age_s: PositiveFloat | None = Field(
        None,
        description="grpc or http2 only: the server's MaxConnectionAge (grpc-go's keepalive "
        "ServerParameters; none by default): it closes each connection (GOAWAY) this long "
        "after it opened, +-10 % jitter, and the caller reconnects, which under an L4 "
        "balancer picks a pod again.",
    )
    calls: list[Call] = Field(default_factory=list)
    resources: Resources = Field(
        default_factory=Resources,
        description=(
            "The app container's requests and limits (CPU requests weigh under "
            "cluster.scheduler cfs; CPU limits throttle under either)."
        ),
    )
    proxy_resources: Resources | None = Field(
        None,
        description="Its sidecars' requests and limits, as the pod annotations set them "
        "(sidecar.istio.io/proxyCPU, proxyCPULimit, proxyMemory, proxyMemoryLimit; "
        "config.linkerd.io/proxy-cpu-request, -cpu-limit, ...); default the mesh's "
        "mesh_options.<mesh>.proxy_resources. As each injector applies them: for Istio the "
        "values given replace the mesh's whole (any one annotation drops "
        "global.proxy.resources); for Linkerd each value given replaces the mesh's own.",
    )
    external: External | None = Field(
        None, description="A host outside the mesh (ServiceEntry); replicas: 0."
    )
    zones: list[Name] | None = Field(
        None,
        min_length=1,
        description="Place the replicas only in these zones of cluster.zones (VM zones too); "
        "default every zone that is not of VMs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _numbers_are_constants(data, "cpu_ms")

    @property
    def speaks_http2(self) -> bool:
        """grpc or http2: each caller holds one multiplexed connection to it (an L4 balancer
        binds it to one pod), and proxies pool HTTP/2 connections to it."""
        return self.protocol != "http1"

    @model_validator(mode="after")
    def _connection_age_is_http2s(self) -> Service:
        if self.max_connection_age_s is not None and not self.speaks_http2:
            raise ValueError(
                "max_connection_age_s is a gRPC/HTTP2 server's setting: give protocol grpc "
                "or http2, or drop it"
            )
        return self

    @model_validator(mode="after")
    def _replicas_or_versions(self) -> Service:
        if self.versions is not None and self.replicas is not None:
            raise ValueError("give either 'replicas' or 'versions' (each with replicas), not both")
        if self.versions is not None:
            names = [v.name for v in self.versions]
            dupes = sorted(n for n, k in Counter(names).items() if k > 1)
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
    clients: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Closed loop: clients that each send, wait, think, repeat."
    )
    think_time_ms: Distribution | None = Field(
        None, description="Closed loop: pause between a response and the next request."
    )
    request_bytes: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 1024
    connections: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None,
        description="Client connections (HTTP/1.1: at most this many requests in flight; "
        "the rest wait at the client and the wait counts). Unlimited if omitted.",
    )
    path: str = "/"
    headers: dict[str, str] = Field(default_factory=dict)
    via: Name | None = Field(
        None, description="Enter through this gateway of 'gateways' (TLS, its own replicas)."
    )
    client_delay_ms: Distribution | None = Field(
        None,
        description="Latency outside the simulated cluster added to every request's measured "
        "latency (e.g. the load generator's own delays, measured without the mesh); drawn "
        "per request (stream client_delay/NAME) after the response, holding no connection.",
    )
    release_tick_ms: PositiveFloat | None = Field(
        None,
        description="Open loop: the load generator releases requests on the ticks of its "
        "event loop's timer (libuv and epoll count in whole milliseconds: 1.0), each at the "
        "tick nearest its intended time, so requests leave in clumps; one released before "
        "its intended time counts its latency from its release. Omitted: each request "
        "leaves at its intended time.",
    )
    release_lateness_ms: (
        Annotated[list[Annotated[float, Field(ge=-1000, le=1000)]], Field(min_length=2)] | None
    ) = Field(
        None,
        description="Open loop, with release_tick_ms: the load generator sleeps until its next "
        "request is due and its timer fires this late (ms; negative: early), drawn per wake-up "
        "(stream release/NAME) from these equally spaced quantiles in increasing order; it "
        "then sends everything due within half a tick. Omitted: releases on a grid of ticks.",
    )
    release_timer: Literal["grid", "event_loop"] | None = Field(
        None,
        description="Open loop, with release_tick_ms: how the load generator's timer fires. "
        "grid (the default without release_lateness_ms): on the tick nearest each request. "
        "event_loop: as libuv's (uvloop, Node.js) with its clock in whole ticks: a sleep is "
        "armed for the clock's current tick plus the delay rounded to ticks, and fires at the "
        "first loop iteration whose clock has reached that tick: the loop's own wake-up "
        "(whole ticks after it last began to sleep, plus timer_slack_us) or an earlier one "
        "for a response (so up to 1.5 ticks early, and less late on a busy loop).",
    )
    timer_slack_us: NonNegativeFloat = Field(
        50.0,
        description="With release_timer event_loop: how late the kernel wakes a sleeping "
        "loop past its timeout (the timer slack; Linux's default timer_slack_ns: 50 us).",
    )
    client_cpu_ms: Distribution | None = Field(
        None,
        description="The client's own CPU per request (e.g. a load generator sharing a core "
        "with the client's sidecar), drawn per request (stream client_cpu/NAME) and run on "
        "the node of the client's pod when mesh_options.meshed_clients is on (ignored "
        "otherwise: the client is outside the cluster). It is on the request's path, half "
        "before sending and half after the response, each queued for that node's cores with "
        "the node's proxies, so the client and its sidecar hold each other up (a "
        "client_delay_ms measured without the mesh should then exclude this CPU).",
    )
    client_threads: int = Field(
        1,
        ge=1,
        description="The threads the client's client_cpu_ms runs on. 1 (the default): one "
        "event loop, as meshsim's own load generator and asyncio or Node.js clients are: "
        "its bursts run one at a time, and one ending with more of its work ready "
        "(responses to read, requests due) goes on with it on the same core, as "
        "cluster.scheduler fcfs serves a proxy's worker. More: a pool (fortio's goroutines "
        "on GOMAXPROCS threads) whose bursts each queue for a core.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _numbers_are_constants(data, "think_time_ms", "client_delay_ms", "client_cpu_ms")

    @model_validator(mode="after")
    def _load_is_defined(self) -> Workload:
        if self.arrival == "closed":
            if self.clients is None:
                raise ValueError("a closed workload needs 'clients'")
            if self.rate_rps is not None or self.phases is not None:
                raise ValueError("a closed workload takes 'clients', not 'rate_rps' or 'phases'")
            if any(
                k is not None
                for k in (self.release_tick_ms, self.release_lateness_ms, self.release_timer)
            ):
                raise ValueError(
                    "'release_tick_ms', 'release_lateness_ms' and 'release_timer' belong to "
                    "open-loop workloads"
                )
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
            lateness = self.release_lateness_ms
            if lateness is not None:
                if self.release_tick_ms is None:
                    raise ValueError("'release_lateness_ms' needs 'release_tick_ms' (its tick)")
                if lateness != sorted(lateness):
                    raise ValueError("'release_lateness_ms' are quantiles: in increasing order")
            if self.release_timer is not None:
                if self.release_tick_ms is None:
                    raise ValueError("'release_timer' needs 'release_tick_ms' (its clock's tick)")
                if lateness is not None:
                    raise ValueError(
                        "'release_timer' and 'release_lateness_ms' are two ways to say when "
                        "the timer fires: give one"
                    )
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


# --------------------------------------------------------------------------- the scenario


class Scenario(Spec):
    """A complete scenario, format version 1."""

    meshsim: Literal[1] = Field(description="Scenario format version.")
    name: Name
    description: str = ""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    duration_s: PositiveFloat
    warmup_s: NonNegativeFloat = Field(5.0, description="Excluded from statistics.")
    replications: Annotated[int, Field(ge=1, le=MAX_REPLICATIONS)] = 1
    model_samples: Annotated[int, Field(ge=0, le=64)] = Field(
        0,
        description=(
            "Cost-model parameter sets drawn over the models' ranges (Latin hypercube); each "
            "reruns every mesh once, giving each metric a model band. 0: central values only."
        ),
    )
    meshes: list[Literal["none", "istio", "linkerd", "istio-ambient", "cilium"]] = Field(
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
    gateways: list[Gateway] = Field(
        default_factory=list, description="Ingress gateways (meshsim.scenario.edges)."
    )
    multicluster: MultiClusterOptions = Field(
        default_factory=MultiClusterOptions,
        description="How the meshes join the clusters of cluster.zones.",
    )

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as plain data, loadable again with :func:`meshsim.scenario.from_dict`."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
