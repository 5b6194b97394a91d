"""Istio resources -> the scenario's ``traffic`` rules, mTLS mode, authorization and scoping.

The ``traffic`` block speaks Istio's vocabulary (docs/DESIGN.md, "Scenario format"), so most
fields map one to one:

- VirtualService ``http`` routes -> rules in route order: ``match`` (uri prefix/exact,
  exact headers; one rule per match entry), weighted ``route`` destinations -> ``split`` by the
  subsets' versions, ``timeout``, ``retries``, ``fault``, ``mirror``/``mirrorPercentage``. A
  VirtualService bound to a Gateway (not ``mesh``) says where traffic enters: its destinations
  become the workloads' targets.
- DestinationRule ``trafficPolicy`` -> ``load_balancer``, ``circuit_breaker`` (connection pool)
  and ``outlier_detection``; its ``subsets`` name versions by their labels.
- PeerAuthentication (mesh-wide) -> ``mesh_options.istio.mtls``; AuthorizationPolicy ->
  ``security.istio.authorization_policies``; a Sidecar -> ``mesh_options.istio.sidecar_scoping``.
- Gateway and ServiceEntry have no scenario counterpart: noted as warnings.

What a field cannot say in the scenario format (regex matches, header rewrites, port-level
settings, ``when`` conditions) is a warning naming the file and line, never dropped silently.
"""

from __future__ import annotations

from typing import Any

from meshsim.scenario.importers.documents import Manifests, Resource
from meshsim.scenario.importers.draft import (
    SHAPE_ERRORS,
    Draft,
    duration_ms,
    scenario_name,
    shape_warning,
)
from meshsim.scenario.importers.writer import Noted

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
KINDS = {
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Sidecar",
    "Gateway",
    "ServiceEntry",
}
LOAD_BALANCERS = {
    "ROUND_ROBIN": "round_robin",
    "LEAST_REQUEST": "least_request",
    "LEAST_CONN": "least_request",
    "RANDOM": "random",
}


def _percent(res: Resource, path: tuple[Any, ...], legacy: str = "percent") -> tuple[float, str]:
    """Istio's ``percentage: {value}`` (or the older integer ``percent``), default 100."""
    value = res.get(*path, "percentage", "value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), res.origin(*path, "percentage", "value")
    old = res.get(*path, legacy)
    if isinstance(old, int | float) and not isinstance(old, bool):
        return float(old), res.origin(*path, legacy)
    return 100.0, f"{res.origin(*path)} (no percentage: 100)"


def _subset_version(draft: Draft, manifests: Manifests, service: str, subset: str) -> str | None:
    """The version a DestinationRule subset of ``service`` selects by its labels."""
    svc = draft.services[service]
    for dr in manifests.of("DestinationRule", NETWORKING):
        if draft.resolve_host(dr.get("spec", "host"), dr.namespace) != service:
            continue
        for s in dr.get("spec", "subsets", default=[]) or []:
            if isinstance(s, dict) and s.get("name") == subset:
                labels = {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
                version = svc.version_for_labels(labels)
                return version.name if version is not None else None
    return subset if any(v.name == subset for v in svc.versions) else None


def _match(res: Resource, path: tuple[Any, ...], draft: Draft) -> Noted | None:
    m = res.get(*path)
    if not isinstance(m, dict) or not m:
        return None
    out: dict[str, Any] = {}
    uri = m.get("uri")
    if isinstance(uri, dict):
        if "prefix" in uri:
            out["path_prefix"] = str(uri["prefix"])
        elif "exact" in uri:
            out["path_exact"] = str(uri["exact"])
        else:
            draft.warn(f"{res.origin(*path, 'uri')}: only exact and prefix URI matches map")
    headers = m.get("headers")
    if isinstance(headers, dict):
        exact = {}
        for name, cond in headers.items():
            if isinstance(cond, dict) and "exact" in cond:
                exact[str(name)] = str(cond["exact"])
            else:
                draft.warn(f"{res.origin(*path, 'headers', name)}: only exact header matches map")
        if exact:
            out["headers"] = exact
    for key in m:
        if key not in ("uri", "headers", "name"):
            draft.warn(f"{res.origin(*path, key)}: match on {key} is not a scenario key; ignored")
    return Noted(out, res.origin(*path)) if out else None


def _route_rule(
    draft: Draft, manifests: Manifests, vs: Resource, i: int, service: str
) -> dict[str, Any]:
    base: tuple[Any, ...] = ("spec", "http", i)
    rule: dict[str, Any] = {}
    dests = vs.get(*base, "route", default=[]) or []
    weights: dict[str, Noted] = {}
    for j, d in enumerate(dests):
        if not isinstance(d, dict):
            continue
        host = draft.resolve_host(d.get("destination", {}).get("host"), vs.namespace)
        if host != service:
            draft.warn(
                f"{vs.origin(*base, 'route', j, 'destination', 'host')}: a route to another "
                "service than the VirtualService's host is not a scenario key; ignored"
            )
            continue
        subset = d.get("destination", {}).get("subset")
        weight = d.get("weight", 100 if len(dests) == 1 else 0)
        if subset is None:
            continue
        version = _subset_version(draft, manifests, service, str(subset))
        if version is None:
            draft.warn(
                f"{vs.origin(*base, 'route', j, 'destination', 'subset')}: subset "
                f"{subset} matches no single version of {service}; ignored"
            )
            continue
        weights[version] = Noted(weight, vs.origin(*base, "route", j, "weight"))
    if weights and draft.services[service].versioned:
        rule["split"] = weights
    timeout = duration_ms(vs.get(*base, "timeout"))
    if timeout:
        rule["timeout_ms"] = Noted(timeout, vs.origin(*base, "timeout"))
    retries = vs.get(*base, "retries")
    if isinstance(retries, dict):
        rule["retries"] = _retries(draft, vs, (*base, "retries"), retries)
    fault = vs.get(*base, "fault")
    if isinstance(fault, dict):
        f: dict[str, Any] = {}
        if isinstance(fault.get("delay"), dict):
            pct, pct_note = _percent(vs, (*base, "fault", "delay"))
            fixed = duration_ms(fault["delay"].get("fixedDelay"))
            if fixed is not None:
                f["delay"] = {
                    "percent": Noted(pct, pct_note),
                    "fixed_ms": Noted(fixed, vs.origin(*base, "fault", "delay", "fixedDelay")),
                }
        if isinstance(fault.get("abort"), dict):
            pct, pct_note = _percent(vs, (*base, "fault", "abort"))
            status = fault["abort"].get("httpStatus")
            if isinstance(status, int):
                f["abort"] = {
                    "percent": Noted(pct, pct_note),
                    "status": Noted(status, vs.origin(*base, "fault", "abort", "httpStatus")),
                }
            else:
                draft.warn(f"{vs.origin(*base, 'fault', 'abort')}: only httpStatus aborts map")
        if f:
            rule["fault"] = f
    mirror = vs.get(*base, "mirror")
    mirrors = vs.get(*base, "mirrors")
    if isinstance(mirrors, list) and mirrors:
        if len(mirrors) > 1:
            draft.warn(f"{vs.origin(*base, 'mirrors')}: only the first mirror maps")
        mirror = mirrors[0].get("destination") if isinstance(mirrors[0], dict) else None
    if isinstance(mirror, dict):
        target = draft.resolve_host(mirror.get("host"), vs.namespace)
        if target is None:
            draft.warn(f"{vs.origin(*base, 'mirror')}: mirror host is not an imported service")
        else:
            m: dict[str, Any] = {"service": Noted(target, vs.origin(*base, "mirror", "host"))}
            if mirror.get("subset") is not None:
                version = _subset_version(draft, manifests, target, str(mirror["subset"]))
                if version is not None and draft.services[target].versioned:
                    m["subset"] = Noted(version, vs.origin(*base, "mirror", "subset"))
            pct = vs.get(*base, "mirrorPercentage", "value")
            if isinstance(pct, int | float):
                m["percent"] = Noted(float(pct), vs.origin(*base, "mirrorPercentage", "value"))
            rule["mirror"] = m
    for key in ("rewrite", "redirect", "headers", "corsPolicy", "directResponse"):
        if vs.get(*base, key) is not None:
            draft.warn(f"{vs.origin(*base, key)}: {key} is not a scenario key; ignored")
    return rule


def _virtual_services(draft: Draft, manifests: Manifests) -> None:
    for vs in manifests.of("VirtualService", NETWORKING):
        try:
            gateways = vs.get("spec", "gateways", default=None) or ["mesh"]
            hosts = vs.get("spec", "hosts", default=[]) or []
            routes = vs.get("spec", "http", default=[]) or []
            if vs.get("spec", "tcp") or vs.get("spec", "tls"):
                draft.warn(
                    f"{vs.origin('spec')}: tcp and tls routes are not scenario keys; ignored"
                )
            if any(g != "mesh" for g in gateways):
                for i, route in enumerate(routes):
                    for j, d in enumerate(
                        route.get("route", []) if isinstance(route, dict) else []
                    ):
                        host = d.get("destination", {}).get("host") if isinstance(d, dict) else None
                        target = draft.resolve_host(host, vs.namespace)
                        if target is not None:
                            where = vs.origin("spec", "http", i, "route", j, "destination", "host")
                            via = ", ".join(g for g in gateways if g != "mesh")
                            draft.entries.setdefault(target, f"{where} (ingress via {via})")
                if "mesh" not in gateways:
                    continue
            for h, host in enumerate(hosts):
                service = draft.resolve_host(host, vs.namespace)
                if service is None:
                    draft.warn(
                        f"{vs.origin('spec', 'hosts', h)}: host {host} is not an imported "
                        "service; its routes are skipped"
                    )
                    continue
                for i in range(len(routes)):
                    rule = _route_rule(draft, manifests, vs, i, service)
                    matches = vs.get("spec", "http", i, "match", default=None) or [None]
                    for k in range(len(matches)):
                        match = (
                            _match(vs, ("spec", "http", i, "match", k), draft)
                            if matches[k]
                            else None
                        )
                        if not rule and match is None:
                            continue
                        out: dict[str, Any] = {
                            "service": Noted(service, vs.origin("spec", "hosts", h))
                        }
                        if match is not None:
                            out["match"] = match
                        out.update(rule)
                        draft.traffic.append(out)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, vs, exc)


def _retries(
    draft: Draft, vs: Resource, path: tuple[Any, ...], retries: dict[str, Any]
) -> dict[str, Any]:
    """A VirtualService's ``retries`` as istiod programs it (docs/mesh-semantics.md §1.3)."""
    r: dict[str, Any] = {}
    attempts = retries.get("attempts")
    if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 0:
        r["attempts"] = Noted(attempts, vs.origin(*path, "attempts"))
    else:
        # istiod's ConvertPolicy returns no policy when attempts <= 0, and proto3 reads an
        # omitted attempts as 0: such a block turns retries off, not on at the default 2.
        r["attempts"] = Noted(0, vs.origin(*path))
        if attempts is None and set(retries) - {"attempts"}:
            draft.warn(
                f"{vs.origin(*path)}: retries without attempts turn retries off in Istio "
                "(attempts 0); imported as attempts: 0"
            )
        return r
    per_try = duration_ms(retries.get("perTryTimeout"))
    if per_try:
        r["per_try_timeout_ms"] = Noted(per_try, vs.origin(*path, "perTryTimeout"))
    if isinstance(retries.get("retryOn"), str):
        r["retry_on"] = Noted(
            [s.strip() for s in retries["retryOn"].split(",") if s.strip()],
            vs.origin(*path, "retryOn"),
        )
    # HTTPRetry.backoff is one duration, Envoy's base_interval.
    backoff = duration_ms(retries.get("backoff"))
    if backoff:
        r["backoff_base_ms"] = Noted(backoff, vs.origin(*path, "backoff"))
    if retries.get("retryIgnorePreviousHosts") is False:
        draft.warn(
            f"{vs.origin(*path, 'retryIgnorePreviousHosts')}: retrying the same host is not a "
            "scenario key; Istio's default (retries avoid the hosts already tried) applies"
        )
    if retries.get("retryRemoteLocalities") is not None:
        draft.warn(f"{vs.origin(*path, 'retryRemoteLocalities')}: does not map; ignored")
    return r


# connectionPool fields with no scenario key (mesh_options.istio holds mesh-wide ones).
UNMAPPED_POOL = {
    "tcp": ("connectTimeout", "tcpKeepalive", "maxConnectionDuration", "idleTimeout"),
    "http": (
        "maxRequestsPerConnection", "idleTimeout", "h2UpgradePolicy", "useClientProtocol",
        "maxConcurrentStreams",
    ),
}  # fmt: skip


def _destination_rules(draft: Draft, manifests: Manifests) -> None:
    for dr in manifests.of("DestinationRule", NETWORKING):
        try:
            service = draft.resolve_host(dr.get("spec", "host"), dr.namespace)
            if service is None:
                draft.warn(f"{dr.origin('spec', 'host')}: host is not an imported service; skipped")
                continue
            tp: tuple[Any, ...] = ("spec", "trafficPolicy")
            fields: dict[str, Any] = {}
            lb = dr.get(*tp, "loadBalancer")
            if isinstance(lb, dict):
                if lb.get("simple") in LOAD_BALANCERS:
                    fields["load_balancer"] = Noted(
                        LOAD_BALANCERS[lb["simple"]], dr.origin(*tp, "loadBalancer", "simple")
                    )
                elif isinstance(lb.get("consistentHash"), dict):
                    algo = "maglev" if "maglev" in lb["consistentHash"] else "ring_hash"
                    fields["load_balancer"] = Noted(
                        algo, dr.origin(*tp, "loadBalancer", "consistentHash")
                    )
                else:
                    draft.warn(f"{dr.origin(*tp, 'loadBalancer')}: this load balancer does not map")
            cp = dr.get(*tp, "connectionPool")
            if isinstance(cp, dict):
                cb: dict[str, Any] = {}
                for path, key in (
                    (("tcp", "maxConnections"), "max_connections"),
                    (("http", "http1MaxPendingRequests"), "max_pending_requests"),
                    (("http", "http2MaxRequests"), "max_requests"),
                    (("http", "maxRetries"), "max_retries"),
                ):
                    value = dr.get(*tp, "connectionPool", *path)
                    # istiod sets a threshold only when it is above 0 (applyConnectionPool):
                    # 0 is "unset" and leaves Istio's 2^32-1.
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                        cb[key] = Noted(value, dr.origin(*tp, "connectionPool", *path))
                if cb:
                    fields["circuit_breaker"] = cb
                for group, keys in UNMAPPED_POOL.items():
                    for name in keys:
                        if dr.get(*tp, "connectionPool", group, name) is not None:
                            draft.warn(
                                f"{dr.origin(*tp, 'connectionPool', group, name)}: a service's "
                                f"{name} is not a scenario key; ignored"
                            )
            od = dr.get(*tp, "outlierDetection")
            if isinstance(od, dict):
                o: dict[str, Any] = {}
                for src, key in (
                    ("consecutive5xxErrors", "consecutive_5xx"),
                    ("consecutiveErrors", "consecutive_5xx"),
                    ("consecutiveGatewayErrors", "consecutive_gateway_errors"),
                    ("maxEjectionPercent", "max_ejection_percent"),
                ):
                    if isinstance(od.get(src), int) and key not in o:
                        o[key] = Noted(od[src], dr.origin(*tp, "outlierDetection", src))
                for src, key in (
                    ("interval", "interval_s"),
                    ("baseEjectionTime", "base_ejection_s"),
                ):
                    ms = duration_ms(od.get(src))
                    if ms:
                        o[key] = Noted(ms / 1e3, dr.origin(*tp, "outlierDetection", src))
                if o:
                    fields["outlier_detection"] = o
            if dr.get(*tp, "portLevelSettings") is not None:
                draft.warn(f"{dr.origin(*tp, 'portLevelSettings')}: port-level settings do not map")
            for k, s in enumerate(dr.get("spec", "subsets", default=[]) or []):
                if isinstance(s, dict) and s.get("trafficPolicy") is not None:
                    draft.warn(
                        f"{dr.origin('spec', 'subsets', k, 'trafficPolicy')}: a subset's own "
                        "traffic policy does not map (the scenario sets one per service)"
                    )
            if not fields:
                continue
            rule = next((r for r in draft.traffic if _service_of(r) == service), None)
            if rule is None:
                rule = {"service": Noted(service, dr.origin("spec", "host"))}
                draft.traffic.append(rule)
            rule.update(fields)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, dr, exc)


def _service_of(rule: dict[str, Any]) -> Any:
    s = rule["service"]
    return s.value if isinstance(s, Noted) else s


def _peer_authentications(draft: Draft, manifests: Manifests) -> None:
    modes: list[tuple[str, str, bool]] = []
    for pa in manifests.of("PeerAuthentication", SECURITY):
        try:
            mode = pa.get("spec", "mtls", "mode")
            if mode not in ("STRICT", "PERMISSIVE", "DISABLE"):
                continue
            mesh_wide = pa.namespace in ("istio-system", None) and not pa.get("spec", "selector")
            modes.append((mode, pa.origin("spec", "mtls", "mode"), mesh_wide))
            if pa.get("spec", "portLevelMtls") is not None:
                draft.warn(f"{pa.origin('spec', 'portLevelMtls')}: port-level mTLS does not map")
        except SHAPE_ERRORS as exc:
            shape_warning(draft, pa, exc)
    wide = [m for m in modes if m[2]]
    chosen = wide[0] if wide else (modes[0] if modes else None)
    if chosen is None:
        return
    if len({m[0] for m in modes}) > 1:
        draft.warn(
            "PeerAuthentications set different mTLS modes; the scenario has one mesh-wide "
            f"mode: {chosen[0]} (from {chosen[1]})"
        )
    draft.option("istio", "mtls", chosen[0], chosen[1])


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def _authorization_policies(draft: Draft, manifests: Manifests) -> None:
    for ap in manifests.of("AuthorizationPolicy", SECURITY):
        try:
            policy: dict[str, Any] = {
                "name": Noted(scenario_name(ap.name), ap.origin("metadata", "name"))
            }
            if ap.namespace:
                policy["namespace"] = scenario_name(ap.namespace)
            labels = ap.get("spec", "selector", "matchLabels")
            if isinstance(labels, dict):
                service = draft.service_for_labels(
                    {str(k): str(v) for k, v in labels.items()}, ap.namespace
                )
                if service is None:
                    draft.warn(
                        f"{ap.origin('spec', 'selector')}: selects no imported service; "
                        "policy skipped"
                    )
                    continue
                policy["selector"] = Noted(service, ap.origin("spec", "selector", "matchLabels"))
            action = ap.get("spec", "action", default="ALLOW")
            if action not in ("ALLOW", "DENY", "CUSTOM"):
                draft.warn(f"{ap.origin('spec', 'action')}: action {action} does not map; skipped")
                continue
            policy["action"] = Noted(action, ap.origin("spec", "action"))
            rules = []
            for i, rule in enumerate(ap.get("spec", "rules", default=[]) or []):
                if not isinstance(rule, dict):
                    continue
                if rule.get("when"):
                    draft.warn(
                        f"{ap.origin('spec', 'rules', i, 'when')}: 'when' conditions do not "
                        "map; the rule is imported without them (it matches more)"
                    )
                out: dict[str, Any] = {}
                froms = []
                for j, f in enumerate(rule.get("from", []) or []):
                    src = f.get("source", {}) if isinstance(f, dict) else {}
                    s = {}
                    for key, to in (
                        ("principals", "principals"),
                        ("notPrincipals", "not_principals"),
                        ("namespaces", "namespaces"),
                        ("notNamespaces", "not_namespaces"),
                    ):
                        if _strings(src.get(key)) is not None:
                            s[to] = Noted(
                                _strings(src[key]),
                                ap.origin("spec", "rules", i, "from", j, "source", key),
                            )
                    for key in src:
                        if key not in (
                            "principals",
                            "notPrincipals",
                            "namespaces",
                            "notNamespaces",
                        ):
                            draft.warn(
                                f"{ap.origin('spec', 'rules', i, 'from', j, 'source', key)}: "
                                f"source {key} does not map; ignored"
                            )
                    froms.append(s)
                if froms:
                    out["from"] = froms
                tos = []
                for j, t in enumerate(rule.get("to", []) or []):
                    op = t.get("operation", {}) if isinstance(t, dict) else {}
                    o = {}
                    for key, to in (
                        ("paths", "paths"),
                        ("notPaths", "not_paths"),
                        ("methods", "methods"),
                        ("notMethods", "not_methods"),
                    ):
                        if _strings(op.get(key)) is not None:
                            o[to] = Noted(
                                _strings(op[key]),
                                ap.origin("spec", "rules", i, "to", j, "operation", key),
                            )
                    for key in op:
                        if key not in ("paths", "notPaths", "methods", "notMethods"):
                            draft.warn(
                                f"{ap.origin('spec', 'rules', i, 'to', j, 'operation', key)}: "
                                f"operation {key} does not map; ignored"
                            )
                    tos.append(o)
                if tos:
                    out["to"] = tos
                rules.append(out)
            if rules:
                policy["rules"] = rules
            if action == "CUSTOM":
                draft.warn(
                    f"{ap.origin('spec', 'provider')}: a CUSTOM policy's external authorizer "
                    "is not imported; the scenario's custom_allows is false (it denies)"
                )
            draft.istio_policies.append(Noted(policy, ap.origin()))
        except SHAPE_ERRORS as exc:
            shape_warning(draft, ap, exc)


def import_istio(manifests: Manifests, draft: Draft) -> None:
    """Add what Istio's resources say to the draft (call after the Kubernetes import)."""
    _virtual_services(draft, manifests)
    _destination_rules(draft, manifests)
    _peer_authentications(draft, manifests)
    _authorization_policies(draft, manifests)
    for sc in manifests.of("Sidecar", NETWORKING):
        draft.option(
            "istio",
            "sidecar_scoping",
            True,
            f"{sc.origin('spec')} (the scenario scopes each proxy to what it calls)",
        )
    for gw in manifests.of("Gateway", NETWORKING):
        draft.warn(
            f"{gw.origin()}: the ingress gateway itself is not simulated; clients enter "
            "at the routed service's proxy"
        )
    for se in manifests.of("ServiceEntry", NETWORKING):
        try:
            hosts = ", ".join(str(h) for h in se.get("spec", "hosts", default=[]) or [])
            draft.warn(
                f"{se.origin('spec', 'hosts')}: external hosts ({hosts}) are not part of the "
                "scenario; calls to them are not simulated"
            )
        except SHAPE_ERRORS as exc:
            shape_warning(draft, se, exc)
