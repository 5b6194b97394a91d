"""The one translation of a scenario's ``traffic`` rules into each mesh's policies.

Both clocks use it (docs/DESIGN.md, principle 1): the simulator's data planes
(:mod:`meshsim.sim.dataplanes.resilience_state`) and the real proxy
(:mod:`meshsim.proxy.policies`, whose listener ``traffic`` is one rule of this shape), so
the two cannot program different defaults. :func:`validate_traffic` runs the same
translation for ``meshsim check``.

The ``traffic`` block speaks Istio's vocabulary. Each mesh turns it into what it would
really program, with its own defaults where the scenario is silent, and says what it could
not map (the notes go into the run's warnings):

Istio (sidecars, and waypoints in ambient mode), docs/mesh-semantics.md §1-§4, §7:
  VirtualService: ``match`` -> HTTP route order; ``split`` -> weighted subsets;
  ``timeout_ms`` -> route timeout (default none); ``retries`` -> Envoy retry policy
  (default with no ``retries``: 2 retries on connect-failure, refused-stream, unavailable,
  cancelled, no HTTP status, previous_hosts, 5 host-selection attempts; ``attempts: 0``
  disables); ``fault`` -> the fault filter (delay, then an independent abort);
  ``mirror`` -> request_mirror_policies.
  DestinationRule: ``circuit_breaker`` -> connectionPool thresholds, every unset one
  2^32-1, ``max_retries`` included: istiod always installs thresholds and fills what the
  DestinationRule leaves out with MaxUint32, so Envoy's raw 1024/1024/1024/3 never apply
  under Istio, and with no ``circuit_breaker`` nothing can overflow (§2.2);
  ``outlier_detection`` -> Envoy outlier detection with Istio's defaults (5 x 5xx, 10 s,
  30 s, 10 %, panic 0 %; none without the block);
  ``load_balancer`` -> LEAST_REQUEST by default; ``peak_ewma`` is not an Istio algorithm
  (Envoy's contrib one is not used by Istio): noted, LEAST_REQUEST used. ``ring_hash`` and
  ``maglev`` hash the source (``useSourceIp``: the calling proxy).

Linkerd, docs/mesh-semantics.md §5, §6:
  HTTPRoute: ``match`` and ``split`` (backendRefs weights, re-picked per retry, available
  backends only); ``timeout_ms`` -> ``timeout.linkerd.io/request`` (covers retries, not
  retried); ``retries`` -> ``retry.linkerd.io/{limit,http,grpc,timeout}`` (5xx,
  gateway-error and status codes map; connect-failure and reset do not: linkerd2-proxy
  does not inspect connection errors; back-off is fixed by the controller). With
  ``mesh_options.linkerd.retry_budget`` the rule's retries become ServiceProfile
  ``isRetryable`` routes under the budget (no limit, no back-off, 5xx responses only).
  No ``retries``: no retries (Linkerd's default).
  Service annotations: ``outlier_detection`` (or ``mesh_options.linkerd.failure_accrual``)
  -> failure accrual, consecutive mode with ``consecutive_5xx`` as max failures (default 7).
  ``circuit_breaker``: no Linkerd equivalent (noted). ``load_balancer``: always P2C over
  peak-EWMA (others noted). The 3 s fail-fast with no ready endpoint is always on.
  ``fault`` and ``mirror``: Linkerd has neither. By default that is an error
  (:class:`meshsim.errors.MeshsimError`) naming the rule; with
  ``mesh_options.linkerd.unsupported: emulate`` the client proxy applies them as Istio
  would and the run's warnings say "EMULATED". Never a silent no-op.

Istio ambient: a service with a waypoint gets Istio's mapping, applied by its waypoint;
a service without one is reached through ztunnels only (L4), so its traffic rules are not
applied, and the warnings say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshsim.errors import MeshsimError, Problem
from meshsim.policy import (
    MAX_UINT32,
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
    parse_status_ranges,
)
from meshsim.policy.retry import ISTIO_DEFAULT_RETRY_ON

if TYPE_CHECKING:
    from meshsim.scenario.model import Scenario
    from meshsim.scenario.options import MeshOptions
    from meshsim.scenario.traffic import TrafficRule

__all__ = [
    "TRAFFIC_MESHES",
    "ClusterPolicy",
    "MeshPolicies",
    "Mirror",
    "RoutePolicy",
    "ServicePolicy",
    "TrafficRuleError",
    "map_traffic",
    "split_weights",
    "translate",
    "validate_traffic",
]

TRAFFIC_MESHES = ("istio", "linkerd", "istio-ambient", "cilium")
"""The meshes that apply traffic rules (``none`` has no proxy to apply them)."""


class TrafficRuleError(MeshsimError):
    """A rule the mesh cannot program; ``field`` names its key (``retries.retry_on``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


_GRPC_CONDITIONS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                    "unavailable")  # fmt: skip


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

    def policy(self, service: str) -> ServicePolicy:
        return self.services.get(service, self.default)

    def has_subsets(self, service: str) -> bool:
        """Whether the service's catch-all route splits by version (an Envoy cluster per
        subset besides the service's own: the size of the proxies' configuration)."""
        found = self.services.get(service)
        return found is not None and found.routes[-1].split is not None


def _match(rule: TrafficRule) -> tuple[HTTPMatch, ...]:
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


def _split(rule: TrafficRule) -> WeightedSplit | None:
    if not rule.split:
        return None
    return split_weights(rule.split)


def _fault(rule: TrafficRule) -> FaultInjection | None:
    f = rule.fault
    if f is None or (f.delay is None and f.abort is None):
        return None
    delay = FaultDelay(f.delay.fixed_ms / 1e3, f.delay.percent) if f.delay else None
    abort = FaultAbort(f.abort.status, f.abort.percent) if f.abort else None
    return FaultInjection(delay, abort)


def _mirror(rule: TrafficRule) -> Mirror | None:
    if rule.mirror is None:
        return None
    m = rule.mirror
    return Mirror(m.service, m.subset, MirrorPolicy(m.service, m.percent))


def _ordered(rules: Sequence[TrafficRule]) -> list[TrafficRule]:
    """Matching rules in file order, then the first catch-all (Istio evaluates in order; a
    catch-all written first would hide the others, which is never what a scenario means)."""
    matched = [r for r in rules if r.match is not None]
    catch_all = [r for r in rules if r.match is None]
    return matched + catch_all[:1]


def _first(rules: Iterable[TrafficRule], attr: str) -> object:
    for r in rules:
        value = getattr(r, attr)
        if value is not None:
            return value
    return None


# --------------------------------------------------------------------------- Istio


def _istio_retry(rule: TrafficRule, *, consistent_hash: bool) -> RetryPolicy | None:
    r = rule.retries
    if r is None:
        return RetryPolicy.istio_default(consistent_hash=consistent_hash)
    items: list[str | int] = (
        list(r.retry_on) if r.retry_on is not None else [c.value for c in ISTIO_DEFAULT_RETRY_ON]
    )
    items += list(r.retriable_status_codes or [])
    try:
        return RetryPolicy.istio(
            r.attempts,
            retry_on=items,
            per_try_timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
            backoff_base_s=r.backoff_base_ms / 1e3 if r.backoff_base_ms else None,
            consistent_hash=consistent_hash,
        )
    except ValueError as exc:
        raise TrafficRuleError(
            f"traffic rule for {rule.service}: retries.retry_on: {exc}", "retries.retry_on"
        ) from None


def _istio_cluster(service: str, rules: Sequence[TrafficRule], notes: list[str]) -> ClusterPolicy:
    lb = _first(rules, "load_balancer")
    balancer = "least_request"
    hash_source = False
    if lb == "peak_ewma":
        notes.append(
            f"{service}: load_balancer peak_ewma is not an Istio algorithm (Envoy's contrib "
            "peak-EWMA is not used by Istio); Istio's default LEAST_REQUEST is used"
        )
    elif lb in ("ring_hash", "maglev"):
        balancer, hash_source = str(lb), True
        notes.append(f"{service}: {lb} hashes the source (consistentHash useSourceIp)")
    elif isinstance(lb, str):
        balancer = lb
    cb = _first(rules, "circuit_breaker")
    thresholds = None
    if cb is not None:
        from meshsim.scenario.traffic import CircuitBreaker

        assert isinstance(cb, CircuitBreaker)
        thresholds = Thresholds(
            cb.max_connections or MAX_UINT32,
            cb.max_pending_requests or MAX_UINT32,
            cb.max_requests or MAX_UINT32,
            MAX_UINT32 if cb.max_retries is None else cb.max_retries,
        )
    od = _first(rules, "outlier_detection")
    outlier = None
    if od is not None:
        from meshsim.scenario.traffic import OutlierDetection

        assert isinstance(od, OutlierDetection)
        outlier = OutlierConfig.istio(
            consecutive_5xx_errors=od.consecutive_5xx or 5,
            consecutive_gateway_errors=od.consecutive_gateway_errors or 0,
            interval_s=od.interval_s or 10.0,
            base_ejection_time_s=od.base_ejection_s or 30.0,
            max_ejection_percent=10.0
            if od.max_ejection_percent is None
            else od.max_ejection_percent,
        )
    return ClusterPolicy(balancer, thresholds, outlier, hash_source=hash_source)


def _istio_service(service: str, rules: Sequence[TrafficRule], notes: list[str]) -> ServicePolicy:
    cluster = _istio_cluster(service, rules, notes)
    routes = tuple(
        RoutePolicy(
            matches=_match(r),
            split=_split(r),
            timeout_s=r.timeout_ms / 1e3 if r.timeout_ms else None,
            envoy_retry=_istio_retry(r, consistent_hash=cluster.hash_source),
            fault=_fault(r),
            mirror=_mirror(r),
        )
        for r in _ordered(rules)
    )
    if not routes or routes[-1].matches:
        # Requests no rule matches still reach the service through Istio's default route.
        routes += (RoutePolicy(envoy_retry=RetryPolicy.istio_default(
            consistent_hash=cluster.hash_source)),)  # fmt: skip
    return ServicePolicy(service, routes, cluster)


# --------------------------------------------------------------------------- Linkerd


def _linkerd_statuses(
    rule: TrafficRule, notes: list[str]
) -> tuple[tuple[tuple[int, int], ...], list[str]]:
    r = rule.retries
    assert r is not None
    http: list[str] = []
    grpc: list[str] = []
    unmapped: list[str] = []
    for item in (
        r.retry_on
        if r.retry_on is not None
        else ["connect-failure", "refused-stream", "unavailable", "cancelled"]
    ):
        text = str(item).strip()
        if text in ("5xx", "gateway-error") or text.isdigit():
            http.append(text)
        elif text == "retriable-4xx":
            http.append("409")
        elif text in _GRPC_CONDITIONS:
            grpc.append(text)
        elif text == "refused-stream":
            pass  # linkerd2-proxy retries REFUSED_STREAM whenever a route retries
        else:
            unmapped.append(text)
    http += [str(c) for c in r.retriable_status_codes or []]
    if unmapped:
        notes.append(
            f"{rule.service}: retry_on {', '.join(unmapped)} not mapped: linkerd2-proxy does "
            "not retry connection errors or resets (it does not inspect them)"
        )
    return parse_status_ranges(",".join(http)), grpc


def _linkerd_route(rule: TrafficRule, budget: bool, notes: list[str], emulate: bool) -> RoutePolicy:
    fault = _fault(rule)
    mirror = _mirror(rule)
    for what, key, present in (
        ("fault injection", "fault", fault is not None),
        ("mirroring", "mirror", mirror is not None),
    ):
        if not present:
            continue
        if not emulate:
            raise TrafficRuleError(
                f"traffic rule for {rule.service}: Linkerd has no {what} (docs/mesh-semantics.md "
                f"§7.2, §7.4); remove it from the linkerd run, or set "
                "mesh_options.linkerd.unsupported: emulate to apply it in the client proxy "
                "as Istio would (reported as an emulation)",
                key,
            )
        notes.append(
            f"EMULATED: {rule.service}: Linkerd has no {what}; meshsim applies it in the "
            "client proxy as Istio's Envoy would (mesh_options.linkerd.unsupported: emulate)"
        )
    r = rule.retries
    linkerd_retry = None
    profile = False
    failures: tuple[tuple[int, int], ...] = ((500, 599),)
    if r is not None and r.attempts > 0:
        statuses, grpc = _linkerd_statuses(rule, notes)
        if budget:
            profile = True
            if statuses:
                failures = statuses
            notes.append(
                f"{rule.service}: retries mapped to a ServiceProfile isRetryable route under "
                "the retry budget: attempts, per-try timeout and back-off do not apply "
                "(no limit, no back-off; only 5xx-class responses are retried)"
            )
        else:
            linkerd_retry = LinkerdRetryPolicy.from_annotations(
                http=",".join(f"{lo}-{hi}" for lo, hi in statuses) or None,
                grpc=grpc or None,
                limit=r.attempts,
                timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
            )
            if r.backoff_base_ms is not None:
                notes.append(
                    f"{rule.service}: retries.backoff_base_ms not mapped: Linkerd's back-off "
                    "is fixed by its policy controller (25 ms to 250 ms)"
                )
    return RoutePolicy(
        matches=_match(rule),
        split=_split(rule),
        timeout_s=rule.timeout_ms / 1e3 if rule.timeout_ms else None,
        linkerd_retry=linkerd_retry,
        profile_retry=profile,
        profile_failures=failures,
        fault=fault,
        mirror=mirror,
        repick_split_per_try=True,
    )


def _linkerd_service(
    service: str,
    rules: Sequence[TrafficRule],
    notes: list[str],
    *,
    budget: bool,
    accrual: str | None,
    emulate: bool,
) -> ServicePolicy:
    lb = _first(rules, "load_balancer")
    if lb is not None and lb != "peak_ewma":
        notes.append(
            f"{service}: load_balancer {lb} not mapped: linkerd2-proxy always balances with "
            "P2C over peak-EWMA"
        )
    if _first(rules, "circuit_breaker") is not None:
        notes.append(
            f"{service}: circuit_breaker not mapped: Linkerd has no connection-pool circuit "
            "breakers (failure accrual is its breaker: outlier_detection or "
            "mesh_options.linkerd.failure_accrual)"
        )
    od = _first(rules, "outlier_detection")
    mode = accrual
    max_failures = 7
    if od is not None:
        from meshsim.scenario.traffic import OutlierDetection

        assert isinstance(od, OutlierDetection)
        mode = mode or "consecutive"
        if od.consecutive_5xx is not None:
            max_failures = od.consecutive_5xx
        notes.append(
            f"{service}: outlier_detection mapped to failure accrual ({mode}, max failures "
            f"{max_failures}, penalty 1 s to 60 s with jitter); interval_s, base_ejection_s "
            "and max_ejection_percent have no Linkerd equivalent"
        )
    routes = tuple(_linkerd_route(r, budget, notes, emulate) for r in _ordered(rules))
    if not routes or routes[-1].matches:
        routes += (RoutePolicy(repick_split_per_try=True),)
    cluster = ClusterPolicy("peak_ewma", accrual_mode=mode, accrual_max_failures=max_failures,
                            failfast=True)  # fmt: skip
    return ServicePolicy(service, routes, cluster)


# --------------------------------------------------------------------------- entry point


def map_traffic(
    scenario: Scenario, mesh: str, *, l7_services: Iterable[str] | None = None
) -> MeshPolicies:
    """Map the scenario's traffic block for ``mesh`` (``istio``, ``linkerd``, ``istio-ambient``).

    ``l7_services`` (ambient only): the services behind a waypoint; rules for the others are
    reported as not applied.
    """
    return translate(scenario.traffic, mesh, scenario.mesh_options, l7_services=l7_services)


def translate(
    rules: Sequence[TrafficRule],
    mesh: str,
    options: MeshOptions,
    *,
    l7_services: Iterable[str] | None = None,
) -> MeshPolicies:
    """The traffic ``rules`` as ``mesh`` programs them, given its ``mesh_options``.

    Raises :class:`TrafficRuleError` for a rule the mesh cannot program.
    """
    by_service: dict[str, list[TrafficRule]] = {}
    for rule in rules:
        by_service.setdefault(rule.service, []).append(rule)
    notes: list[str] = []
    if mesh == "linkerd":
        opts = options.linkerd
        emulate = opts.unsupported == "emulate"
        services = {
            name: _linkerd_service(name, group, notes, budget=opts.retry_budget,
                                   accrual=opts.failure_accrual, emulate=emulate)
            for name, group in by_service.items()
        }  # fmt: skip
        default = _linkerd_service("", [], notes, budget=opts.retry_budget,
                                   accrual=opts.failure_accrual, emulate=emulate)  # fmt: skip
        budget = None
        if opts.retry_budget:
            ttl = min(max(opts.retry_ttl_s, 1.0), 60.0)
            if ttl != opts.retry_ttl_s:
                notes.append(f"retry_ttl_s {opts.retry_ttl_s:g} clamped to {ttl:g} (1..60)")
            budget = (opts.retry_ratio, int(opts.min_retries_per_second), ttl)
        return MeshPolicies(mesh, "linkerd", services, default, notes, budget,
                            emulated=any(n.startswith("EMULATED") for n in notes))  # fmt: skip
    if mesh not in ("istio", "istio-ambient", "cilium"):
        raise MeshsimError(f"mesh {mesh!r} has no traffic mapping")
    l7 = None if l7_services is None else set(l7_services)
    services = {}
    for name, group in by_service.items():
        if mesh == "cilium":
            # Cilium programs Envoy through CiliumEnvoyConfig: the rules apply in the source
            # node's Envoy, as Istio's Envoy would apply them (docs/mesh-semantics.md).
            notes.extend(_cilium_notes(name, group))
            services[name] = _istio_service(name, group, notes)
            continue
        if l7 is not None and name not in l7:
            notes.append(
                f"{name}: traffic rules not applied: the service has no waypoint, so only "
                "ztunnel (L4) carries its traffic (add it to mesh_options.istio-ambient."
                "waypoints for L7 policy)"
            )
            continue
        services[name] = _istio_service(name, group, notes)
    default = _istio_service("", [], notes)
    return MeshPolicies(mesh, "envoy", services, default, notes)


def _cilium_notes(service: str, rules: Sequence[TrafficRule]) -> list[str]:
    """What Cilium needs beyond one CiliumEnvoyConfig for ``service``'s rules."""
    notes = [
        f"{service}: L7 through the node's Envoy (CiliumEnvoyConfig for retries, timeouts, "
        "balancing and breakers; its traffic leaves the kernel datapath)"
    ]
    if any(r.split for r in rules):
        notes.append(
            f"{service}: split needs one backend Service per version "
            "(CiliumEnvoyConfig backendServices); assumed to exist"
        )
    if any(r.fault or r.mirror for r in rules):
        notes.append(
            f"{service}: fault injection and mirroring need hand-written Envoy filters in the "
            "CiliumEnvoyConfig (no Cilium API for them); applied as Envoy would"
        )
    return notes


def validate_traffic(scenario: Scenario) -> list[Problem]:
    """Every traffic rule that a mesh among the scenario's ``meshes`` cannot program.

    The same translation as a run, so ``meshsim check`` and ``meshsim run`` agree: each rule
    on its own, under each mesh that applies traffic rules. A problem's ``field`` is the
    rule's key (``traffic[2].fault``); its message names the mesh.
    """
    problems: list[Problem] = []
    meshes = [m for m in scenario.meshes if m in TRAFFIC_MESHES]
    for index, rule in enumerate(scenario.traffic):
        for mesh in meshes:
            try:
                translate([rule], mesh, scenario.mesh_options)
            except TrafficRuleError as exc:
                problems.append(Problem(f"traffic[{index}].{exc.field}", f"{mesh}: {exc}"))
    return problems
