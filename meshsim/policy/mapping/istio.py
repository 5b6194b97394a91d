"""The traffic rules as Istio programs them: in the sidecars, in waypoints (ambient mode) and
in Cilium's node Envoy through CiliumEnvoyConfig (docs/mesh-semantics.md §1-§4, §7).

VirtualService: ``match`` -> HTTP route order; ``split`` -> weighted subsets;
``timeout_ms`` -> route timeout (default none); ``retries`` -> Envoy retry policy
(default with no ``retries``: 2 retries on connect-failure, refused-stream, unavailable,
cancelled, no HTTP status, previous_hosts, 5 host-selection attempts; ``attempts: 0``
disables); ``fault`` -> the fault filter (delay, then an independent abort);
``mirror`` -> request_mirror_policies.
DestinationRule: ``circuit_breaker`` -> connectionPool thresholds, every unset one
2^32-1, ``max_retries`` included: istiod always installs thresholds and fills what the
DestinationRule leaves out with MaxUint32, so Envoy's raw 1024/1024/1024/3 never apply
under Istio, and with no ``circuit_breaker`` nothing can overflow (§2.2); a 0 is unset
there too (``max_retries: 0`` leaves retries unlimited: istiod's ``> 0`` guards);
``outlier_detection`` -> Envoy outlier detection with Istio's defaults (5 x 5xx, 10 s,
30 s, 10 %, panic 0 %, success-rate detection off; none without the block; a
``max_ejection_percent`` of 0 is unset, 10 %);
``load_balancer`` -> LEAST_REQUEST by default; ``peak_ewma`` is not an Istio algorithm
(Envoy's contrib one is not used by Istio): noted, LEAST_REQUEST used. ``ring_hash`` and
``maglev`` hash the source (``useSourceIp``: the downstream connection's source address,
the calling pod's, or a gateway's client's, whichever proxy balances).

Cilium's CiliumEnvoyConfig is Envoy configuration as written, with no istiod to fill in
what a rule leaves out: there the rule's fields map as above, and the rest is raw Envoy's
(§12.2): no retries without ``retries``, and with it 1 retry without ``attempts``, no
``previous_hosts`` predicate and one host selection; a 15 s route timeout without
``timeout_ms``; ROUND_ROBIN without ``load_balancer`` (also what Cilium's ``lb-l7``
annotation programs); circuit breakers at 1024 / 1024 / 1024 / 3 for what
``circuit_breaker`` leaves out or without it (:data:`ENVOY_DEFAULTS`); with
``outlier_detection``, raw Envoy's success-rate detection (enforcing 100) and 50 % panic
threshold, and a ``max_ejection_percent`` of 0 as 0 %. A ``retries`` block
without ``retry_on`` takes the VirtualService's default list there too (Envoy has no
default condition: an empty ``retry_on`` retries nothing, which no rule asking for retries
means).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from meshsim.policy import (
    MAX_UINT32,
    EnvoyBackOff,
    OutlierConfig,
    RetryPolicy,
    RouteTimeout,
    Thresholds,
)
from meshsim.policy.mapping.cilium import cilium_notes
from meshsim.policy.mapping.policies import (
    ClusterPolicy,
    MeshPolicies,
    RoutePolicy,
    ServicePolicy,
    TrafficRuleError,
    first_set,
    ordered,
    route_fault,
    route_matches,
    route_mirror,
    route_split,
)
from meshsim.policy.retry import ISTIO_DEFAULT_RETRY_ON

if TYPE_CHECKING:
    from meshsim.scenario.traffic import TrafficRule


ISTIO_DEFAULTS = "istio"
"""What istiod fills in where a rule is silent (sidecars, waypoints)."""
ENVOY_DEFAULTS = "envoy"
"""Raw Envoy's own defaults where a rule is silent (Cilium's CiliumEnvoyConfig)."""


def istio_retry(
    rule: TrafficRule, *, consistent_hash: bool, defaults: str = ISTIO_DEFAULTS
) -> RetryPolicy | None:
    r = rule.retries
    if r is None:
        if defaults == ENVOY_DEFAULTS:
            return None  # Envoy retries only with a retry_policy (§1.1)
        return RetryPolicy.istio_default(consistent_hash=consistent_hash)
    # A rule without retry_on asks for the block's vocabulary's default list (a
    # VirtualService's retryOn), under Cilium too: Envoy itself has no default condition (an
    # empty retry_on retries nothing), so a CiliumEnvoyConfig must name them.
    items: list[str | int] = (
        list(r.retry_on) if r.retry_on is not None else [c.value for c in ISTIO_DEFAULT_RETRY_ON]
    )
    items += list(r.retriable_status_codes or [])
    per_try_s = r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None
    backoff_s = r.backoff_base_ms / 1e3 if r.backoff_base_ms else None
    try:
        if defaults == ENVOY_DEFAULTS:
            # Envoy as written: num_retries 1 when unset, no host predicate, one host
            # selection (§12.2); istiod's 2, previous_hosts and 5 re-picks are its own.
            if r.attempts == 0:
                return None
            return RetryPolicy.envoy(
                items,
                1 if r.attempts is None else r.attempts,
                per_try_timeout_s=per_try_s,
                backoff=None if backoff_s is None else EnvoyBackOff(backoff_s),
            )
        return RetryPolicy.istio(
            r.attempts,
            retry_on=items,
            per_try_timeout_s=per_try_s,
            backoff_base_s=backoff_s,
            consistent_hash=consistent_hash,
        )
    except ValueError as exc:
        raise TrafficRuleError(
            f"traffic rule for {rule.service}: retries.retry_on: {exc}", "retries.retry_on"
        ) from None


def istio_cluster(
    service: str, rules: Sequence[TrafficRule], notes: list[str], defaults: str = ISTIO_DEFAULTS
) -> ClusterPolicy:
    raw = defaults == ENVOY_DEFAULTS
    lb = first_set(rules, "load_balancer")
    balancer = "round_robin" if raw else "least_request"
    hash_source = False
    if lb == "peak_ewma":
        notes.append(
            f"{service}: load_balancer peak_ewma is not an Istio algorithm (Envoy's contrib "
            "peak-EWMA is not used by Istio); Istio's default LEAST_REQUEST is used"
            if not raw
            else f"{service}: load_balancer peak_ewma is Envoy's contrib policy, not in "
            "Cilium's Envoy build; its default ROUND_ROBIN is used"
        )
    elif lb in ("ring_hash", "maglev"):
        balancer, hash_source = str(lb), True
        notes.append(f"{service}: {lb} hashes the source (consistentHash useSourceIp)")
    elif isinstance(lb, str):
        balancer = lb
    cb = first_set(rules, "circuit_breaker")
    # istiod fills what a DestinationRule leaves out with MaxUint32 (and installs nothing
    # that can overflow without one); raw Envoy keeps its own 1024 / 1024 / 1024 / 3.
    unset = Thresholds.envoy_default() if raw else None
    thresholds = unset
    if cb is not None:
        from meshsim.scenario.traffic import CircuitBreaker

        assert isinstance(cb, CircuitBreaker)
        fill = unset or Thresholds(MAX_UINT32, MAX_UINT32, MAX_UINT32, MAX_UINT32)
        max_retries = cb.max_retries
        if max_retries == 0 and not raw:
            # The DestinationRule's maxRetries is a plain int32, so istiod cannot tell 0 from
            # unset: its `> 0` guard keeps MaxUint32 (cluster_traffic_policy.go). Envoy's
            # field is a UInt32Value, where 0 is 0 (no retries): a CiliumEnvoyConfig keeps it.
            notes.append(
                f"{service}: circuit_breaker.max_retries 0 is unset for istiod (a "
                "DestinationRule cannot say 0): retries stay unlimited (2^32-1)"
            )
            max_retries = None
        thresholds = Thresholds(
            cb.max_connections or fill.max_connections,
            cb.max_pending_requests or fill.max_pending_requests,
            cb.max_requests or fill.max_requests,
            fill.max_retries if max_retries is None else max_retries,
        )
    od = first_set(rules, "outlier_detection")
    outlier = None
    if od is not None:
        from meshsim.scenario.traffic import OutlierDetection

        assert isinstance(od, OutlierDetection)
        # istiod copies maxEjectionPercent only above 0 (applyOutlierDetection), so 0 leaves
        # Envoy's 10 %; Envoy's own field (a CiliumEnvoyConfig) takes 0 as 0 %.
        percent = od.max_ejection_percent
        if percent is None or (percent == 0 and not raw):
            percent = 10.0
        outlier = OutlierConfig.istio(
            consecutive_5xx_errors=od.consecutive_5xx or 5,
            consecutive_gateway_errors=od.consecutive_gateway_errors or 0,
            interval_s=od.interval_s or 10.0,
            base_ejection_time_s=od.base_ejection_s or 30.0,
            max_ejection_percent=percent,
        )
        if raw:
            # Success-rate detection off and a 0 % panic threshold are istiod's doing
            # (§3.1); raw Envoy keeps success-rate enforcing 100 and panic at 50 % (§12.2).
            default = OutlierConfig.envoy_default()
            outlier = replace(
                outlier,
                enforcing_success_rate=default.enforcing_success_rate,
                healthy_panic_threshold=default.healthy_panic_threshold,
            )
    return ClusterPolicy(balancer, thresholds, outlier, hash_source=hash_source)


def istio_service(
    service: str, rules: Sequence[TrafficRule], notes: list[str], defaults: str = ISTIO_DEFAULTS
) -> ServicePolicy:
    cluster = istio_cluster(service, rules, notes, defaults)
    # Istio disables the route timeout unless a rule sets one; raw Envoy's is 15 s.
    no_timeout = RouteTimeout.envoy_default().timeout_s if defaults == ENVOY_DEFAULTS else None
    routes = tuple(
        RoutePolicy(
            matches=route_matches(r),
            split=route_split(r),
            timeout_s=r.timeout_ms / 1e3 if r.timeout_ms else no_timeout,
            envoy_retry=istio_retry(r, consistent_hash=cluster.hash_source, defaults=defaults),
            fault=route_fault(r),
            mirror=route_mirror(r),
        )
        for r in ordered(rules)
    )
    if not routes or routes[-1].matches:
        # Requests no rule matches still reach the service through the default route.
        default_retry = (
            None
            if defaults == ENVOY_DEFAULTS
            else RetryPolicy.istio_default(consistent_hash=cluster.hash_source)
        )
        routes += (RoutePolicy(timeout_s=no_timeout, envoy_retry=default_retry),)
    return ServicePolicy(service, routes, cluster)


def envoy_policies(
    mesh: str,
    by_service: Mapping[str, Sequence[TrafficRule]],
    l7_services: Iterable[str] | None = None,
) -> MeshPolicies:
    """Each service's rules (``by_service``) as Istio's Envoy applies them: in the sidecars
    (``istio``), in a service's waypoint (``istio-ambient``: ``l7_services``, the services
    behind one; the others' rules are not applied, and said), or in the source node's Envoy
    (``cilium``, through CiliumEnvoyConfig, with what that needs)."""
    notes: list[str] = []
    l7 = None if l7_services is None else set(l7_services)
    services = {}
    for name, group in by_service.items():
        if mesh == "cilium":
            notes.extend(cilium_notes(name, group))
            services[name] = istio_service(name, group, notes, ENVOY_DEFAULTS)
            continue
        if l7 is not None and name not in l7:
            notes.append(
                f"{name}: traffic rules not applied: the service has no waypoint, so only "
                "ztunnel (L4) carries its traffic (add it to mesh_options.istio-ambient."
                "waypoints for L7 policy)"
            )
            continue
        services[name] = istio_service(name, group, notes)
    default = istio_service("", [], notes, ENVOY_DEFAULTS if mesh == "cilium" else ISTIO_DEFAULTS)
    return MeshPolicies(mesh, "envoy", services, default, notes)
