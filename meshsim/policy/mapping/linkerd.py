"""The traffic rules as Linkerd programs them (docs/mesh-semantics.md §5, §6).

HTTPRoute: ``match`` and ``split`` (backendRefs weights, re-picked per retry, available
backends only); ``timeout_ms`` -> ``timeout.linkerd.io/request`` (covers retries, not
retried); ``retries`` -> ``retry.linkerd.io/{limit,http,grpc,timeout}`` (5xx,
gateway-error and status codes map; connect-failure and reset do not: linkerd2-proxy
does not inspect connection errors; back-off is fixed by the controller). With
``mesh_options.linkerd.retry_budget`` the rule's retries become ServiceProfile
``isRetryable`` routes under the budget (no limit, no back-off, 5xx responses and gRPC
failures in headers only); such a service has a ServiceProfile, so it gets no failure
accrual (noted).
No ``retries``: no retries (Linkerd's default).
Service annotations: ``outlier_detection`` (or ``mesh_options.linkerd.failure_accrual``)
-> failure accrual, consecutive mode with ``consecutive_5xx`` as max failures (default 7;
``unified`` keeps that rule beside its success rate).
``circuit_breaker``: no Linkerd equivalent (noted). ``load_balancer``: always P2C over
peak-EWMA (others noted). The 3 s fail-fast with no ready endpoint is always on.
``fault`` and ``mirror``: Linkerd has neither. By default that is an error
(:class:`meshsim.errors.MeshsimError`) naming the rule; with
``mesh_options.linkerd.unsupported: emulate`` the client proxy applies them as Istio
would and the run's warnings say "EMULATED". Never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from meshsim.policy import LinkerdRetryPolicy, parse_status_ranges
from meshsim.policy.mapping.policies import (
    DEFAULT_ATTEMPTS,
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

if TYPE_CHECKING:
    from meshsim.scenario.options import LinkerdOptions
    from meshsim.scenario.traffic import TrafficRule

_GRPC_CONDITIONS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                    "unavailable")  # fmt: skip


def linkerd_statuses(
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
        elif text in ("refused-stream", "retriable-status-codes"):
            # linkerd2-proxy retries REFUSED_STREAM whenever a route retries; the listed
            # status codes are mapped below.
            pass
        else:
            unmapped.append(text)
    http += [str(c) for c in r.retriable_status_codes or []]
    # Istio's default conditions stand in for an unset retry_on: what of them Linkerd
    # cannot do is nothing the rule asked for, so it is not noted.
    if unmapped and r.retry_on is not None:
        notes.append(
            f"{rule.service}: retry_on {', '.join(unmapped)} not mapped: linkerd2-proxy does "
            "not retry connection errors or resets (it does not inspect them)"
        )
    return parse_status_ranges(",".join(http)), grpc


def linkerd_route(rule: TrafficRule, budget: bool, notes: list[str], emulate: bool) -> RoutePolicy:
    fault = route_fault(rule)
    mirror = route_mirror(rule)
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
    attempts = DEFAULT_ATTEMPTS if r is None or r.attempts is None else r.attempts
    if r is not None and attempts > 0:
        statuses, grpc = linkerd_statuses(rule, notes)
        if budget:
            profile = True
            if statuses:
                failures = statuses
            notes.append(
                f"{rule.service}: retries mapped to a ServiceProfile isRetryable route under "
                "the retry budget: attempts, per-try timeout and back-off do not apply "
                "(no limit, no back-off; only 5xx-class responses and gRPC failure "
                "statuses in headers are retried)"
            )
        else:
            linkerd_retry = LinkerdRetryPolicy.from_annotations(
                http=",".join(f"{lo}-{hi}" for lo, hi in statuses) or None,
                grpc=grpc or None,
                limit=attempts,
                timeout_s=r.per_try_timeout_ms / 1e3 if r.per_try_timeout_ms else None,
            )
            if r.backoff_base_ms is not None:
                notes.append(
                    f"{rule.service}: retries.backoff_base_ms not mapped: Linkerd's back-off "
                    "is fixed by its policy controller (25 ms to 250 ms)"
                )
    return RoutePolicy(
        matches=route_matches(rule),
        split=route_split(rule),
        timeout_s=rule.timeout_ms / 1e3 if rule.timeout_ms else None,
        linkerd_retry=linkerd_retry,
        profile_retry=profile,
        profile_failures=failures,
        fault=fault,
        mirror=mirror,
        repick_split_per_try=True,
    )


def linkerd_service(
    service: str,
    rules: Sequence[TrafficRule],
    notes: list[str],
    *,
    budget: bool,
    accrual: str | None,
    emulate: bool,
) -> ServicePolicy:
    lb = first_set(rules, "load_balancer")
    if lb is not None and lb != "peak_ewma":
        notes.append(
            f"{service}: load_balancer {lb} not mapped: linkerd2-proxy always balances with "
            "P2C over peak-EWMA"
        )
    if first_set(rules, "circuit_breaker") is not None:
        notes.append(
            f"{service}: circuit_breaker not mapped: Linkerd has no connection-pool circuit "
            "breakers (failure accrual is its breaker: outlier_detection or "
            "mesh_options.linkerd.failure_accrual)"
        )
    routes = tuple(linkerd_route(r, budget, notes, emulate) for r in ordered(rules))
    if not routes or routes[-1].matches:
        routes += (RoutePolicy(repick_split_per_try=True),)
    od = first_set(rules, "outlier_detection")
    mode = accrual
    max_failures = 7
    if any(r.profile_retry for r in routes):
        if mode is not None or od is not None:
            asked = "mesh_options.linkerd.failure_accrual" if od is None else "outlier_detection"
            notes.append(
                f"{service}: {asked} not mapped: its retries under the retry budget make a "
                "ServiceProfile, and Linkerd's proxies do no circuit breaking (failure "
                "accrual) for a Service that has one (docs/mesh-semantics.md §6.4)"
            )
        mode = None
    elif od is not None:
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
    cluster = ClusterPolicy("peak_ewma", accrual_mode=mode, accrual_max_failures=max_failures,
                            failfast=True)  # fmt: skip
    return ServicePolicy(service, routes, cluster)


def linkerd_policies(
    mesh: str, by_service: Mapping[str, Sequence[TrafficRule]], opts: LinkerdOptions
) -> MeshPolicies:
    """Each service's rules (``by_service``) as Linkerd programs them, with
    ``mesh_options.linkerd``; the retry budget, clamped as the ServiceProfile's is."""
    notes: list[str] = []
    emulate = opts.unsupported == "emulate"
    services = {
        name: linkerd_service(name, group, notes, budget=opts.retry_budget,
                              accrual=opts.failure_accrual, emulate=emulate)
        for name, group in by_service.items()
    }  # fmt: skip
    default = linkerd_service("", [], notes, budget=opts.retry_budget,
                              accrual=opts.failure_accrual, emulate=emulate)  # fmt: skip
    budget = None
    if opts.retry_budget:
        ttl = min(max(opts.retry_ttl_s, 1.0), 60.0)
        if ttl != opts.retry_ttl_s:
            notes.append(f"retry_ttl_s {opts.retry_ttl_s:g} clamped to {ttl:g} (1..60)")
        budget = (opts.retry_ratio, int(opts.min_retries_per_second), ttl)
    return MeshPolicies(mesh, "linkerd", services, default, notes, budget,
                        emulated=any(n.startswith("EMULATED") for n in notes))  # fmt: skip
