"""What a mesh programs for a service (:mod:`meshsim.policy.mapping`): its routes, its cluster
policy, and the readers of a traffic rule that every mesh's translation shares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshsim.errors import MeshsimError
from meshsim.policy import (
    ENVOY_CONNECT_TIMEOUT_S,
    FaultAbort,
    FaultDelay,
    FaultInjection,
    HTTPMatch,
    LinkerdBackOff,
    LinkerdRetryPolicy,
    MirrorPolicy,
    OutlierConfig,
    RetryPolicy,
    StringMatch,
    Thresholds,
    WeightedSplit,
    first_match,
)

if TYPE_CHECKING:
    from meshsim.scenario.traffic import TrafficRule


DEFAULT_ATTEMPTS = 2
"""What a rule's silent ``retries.attempts`` means in the traffic block's vocabulary: a
VirtualService's default (istiod's 2 retries), which Linkerd's mapping takes too. A
CiliumEnvoyConfig is Envoy's own API, whose ``num_retries`` defaults to 1 instead."""


class TrafficRuleError(MeshsimError):
    """A rule the mesh cannot program; ``field`` names its key (``retries.retry_on``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Mirror:
    """Shadow traffic: a copy to ``service`` (``subset``), the response dropped (§7.4)."""

    service: str
    subset: str | None
    policy: MirrorPolicy


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """One HTTP route of a service as a mesh programs it."""

    matches: tuple[HTTPMatch, ...] = ()
    """Empty: the catch-all route."""
    split: WeightedSplit | None = None
    """Version name -> weight; ``None``: every endpoint of the service."""
    timeout_s: float | None = None
    """Istio route timeout / Linkerd request timeout: covers retries, never retried."""
    envoy_retry: RetryPolicy | None = None
    linkerd_retry: LinkerdRetryPolicy | None = None
    profile_retry: bool = False
    """Linkerd ServiceProfile ``isRetryable`` under the service's retry budget."""
    profile_failures: tuple[tuple[int, int], ...] = ((500, 599),)
    fault: FaultInjection | None = None
    mirror: Mirror | None = None
    repick_split_per_try: bool = False
    """Linkerd retries above the backend distribution (re-pick); Envoy keeps the cluster."""

    @property
    def per_try_timeout_s(self) -> float | None:
        if self.envoy_retry is not None:
            return self.envoy_retry.per_try_timeout_s
        if self.linkerd_retry is not None:
            return self.linkerd_retry.timeout_s
        return None

    @property
    def retries(self) -> bool:
        return self.envoy_retry is not None or self.linkerd_retry is not None or self.profile_retry


@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    """Per destination service: balancer, breakers, health (DestinationRule / annotations)."""

    balancer: str
    thresholds: Thresholds | None = None
    """``None``: nothing can overflow (Istio's 2^32-1 defaults, or Linkerd)."""
    outlier: OutlierConfig | None = None
    accrual_mode: str | None = None
    accrual_max_failures: int = 7
    accrual_backoff: LinkerdBackOff | None = None
    """``None``: Linkerd's penalty back-off (1 s to 60 s, jitter 0.5, §6.4)."""
    failfast: bool = False
    """Linkerd: requests wait up to 3 s for a ready endpoint, then fail fast (§5.1)."""
    hash_source: bool = False
    """ring_hash / maglev on the source (``useSourceIp``)."""


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """Everything a client proxy applies to calls to one service."""

    service: str
    routes: tuple[RoutePolicy, ...]
    cluster: ClusterPolicy

    def route(self, path: str, headers: Mapping[str, str]) -> RoutePolicy | None:
        """The first route whose match accepts the request (``None``: no route, 404)."""
        if len(self.routes) == 1 and not self.routes[0].matches:
            return self.routes[0]
        return first_match([(r.matches, r) for r in self.routes], path, headers)


@dataclass
class MeshPolicies:
    """A mesh's mapping of the whole traffic block."""

    mesh: str
    flavour: str
    """``envoy`` (Istio sidecars and waypoints) or ``linkerd``."""
    services: dict[str, ServicePolicy]
    default: ServicePolicy
    """For services no rule names (its ``service`` field is empty)."""
    notes: list[str] = field(default_factory=list)
    budget: tuple[float, int, float] | None = None
    """Linkerd ServiceProfile retry budget: (ratio, min retries per second, ttl seconds)."""
    emulated: bool = False
    connect_timeout_s: float = ENVOY_CONNECT_TIMEOUT_S
    """How long the mesh's client proxy tries to open a connection before it fails
    (:func:`meshsim.policy.mapping.connect_timeout_s`)."""

    def policy(self, service: str) -> ServicePolicy:
        return self.services.get(service, self.default)

    def has_subsets(self, service: str) -> bool:
        """Whether the service's catch-all route splits by version (an Envoy cluster per
        subset besides the service's own: the size of the proxies' configuration)."""
        found = self.services.get(service)
        return found is not None and found.routes[-1].split is not None


def route_matches(rule: TrafficRule) -> tuple[HTTPMatch, ...]:
    m = rule.match
    if m is None:
        return ()
    path = None
    if m.path_exact is not None:
        path = StringMatch(exact=m.path_exact)
    elif m.path_prefix is not None:
        path = StringMatch(prefix=m.path_prefix)
    headers = {k: StringMatch(exact=v) for k, v in m.headers.items()}
    return (HTTPMatch(path=path, headers=headers),)


def split_weights(split: Mapping[str, float]) -> WeightedSplit:
    """Scenario weights (any non-negative numbers) as the integer weights Envoy and Linkerd
    take: scaled by 1000 so that fractional weights keep their ratio."""
    return WeightedSplit({k: round(v * 1000) for k, v in split.items()})


def route_split(rule: TrafficRule) -> WeightedSplit | None:
    if not rule.split:
        return None
    return split_weights(rule.split)


def route_fault(rule: TrafficRule) -> FaultInjection | None:
    f = rule.fault
    if f is None or (f.delay is None and f.abort is None):
        return None
    delay = FaultDelay(f.delay.fixed_ms / 1e3, f.delay.percent) if f.delay else None
    abort = FaultAbort(f.abort.status, f.abort.percent) if f.abort else None
    return FaultInjection(delay, abort)


def route_mirror(rule: TrafficRule) -> Mirror | None:
    if rule.mirror is None:
        return None
    m = rule.mirror
    return Mirror(m.service, m.subset, MirrorPolicy(m.service, m.percent))


def ordered(rules: Sequence[TrafficRule]) -> list[TrafficRule]:
    """Matching rules in file order, then the first catch-all (Istio evaluates in order; a
    catch-all written first would hide the others, which is never what a scenario means)."""
    matched = [r for r in rules if r.match is not None]
    catch_all = [r for r in rules if r.match is None]
    return matched + catch_all[:1]


def first_set(rules: Iterable[TrafficRule], attr: str) -> object:
    for r in rules:
        value = getattr(r, attr)
        if value is not None:
            return value
    return None
