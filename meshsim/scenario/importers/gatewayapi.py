"""Gateway API routes (``HTTPRoute``, ``GRPCRoute``) -> ``traffic`` rules and entry points.

A route whose ``parentRefs`` name a Service is a mesh route (GAMMA, as Istio and Linkerd read
it): each rule becomes a scenario rule for that service. ``matches`` give ``match`` (one rule per
match entry); ``backendRefs`` weights give ``split`` when each backend Service selects one version
of the parent's pods (a canary's ``web-v2`` Service); ``timeouts.request`` gives ``timeout_ms``;
a ``RequestMirror`` filter gives ``mirror``. Linkerd reads retries and timeouts from annotations
(``retry.linkerd.io/http``, ``retry.linkerd.io/grpc``, ``retry.linkerd.io/limit``,
``retry.linkerd.io/timeout``, ``timeout.linkerd.io/request``), which map to ``retries`` and
``timeout_ms``. A route whose parent is a Gateway says where traffic enters: its backends
become the workloads' targets. Linkerd's own ``policy.linkerd.io`` HTTPRoute is read the same.
"""

from __future__ import annotations

from typing import Any

from meshsim.scenario.importers.documents import Manifests, Resource
from meshsim.scenario.importers.draft import SHAPE_ERRORS, Draft, duration_ms, shape_warning
from meshsim.scenario.importers.writer import Noted

GROUPS = ("gateway.networking.k8s.io", "policy.linkerd.io")
KINDS = {"HTTPRoute", "GRPCRoute"}


def _backend_version(draft: Draft, manifests: Manifests, service: str, backend: str) -> str | None:
    """The version of ``service`` that the backend Service ``backend`` selects."""
    if backend == draft.services[service].resource.name:
        return None
    for svc in manifests.of("Service"):
        if svc.name == backend:
            selector = svc.get("spec", "selector")
            if isinstance(selector, dict):
                version = draft.services[service].version_for_labels(
                    {str(k): str(v) for k, v in selector.items()}
                )
                return version.name if version is not None else None
    return None


def _match(route: Resource, path: tuple[Any, ...], draft: Draft) -> Noted | None:
    m = route.get(*path)
    if not isinstance(m, dict):
        return None
    out: dict[str, Any] = {}
    p = m.get("path")
    if isinstance(p, dict):
        kind = p.get("type", "PathPrefix")
        if kind == "PathPrefix":
            out["path_prefix"] = str(p.get("value", "/"))
        elif kind == "Exact":
            out["path_exact"] = str(p.get("value", "/"))
        else:
            draft.warn(f"{route.origin(*path, 'path')}: {kind} path matches do not map")
    method = m.get("method")
    if route.kind == "GRPCRoute" and isinstance(method, dict):
        if method.get("service") and method.get("method"):
            out["path_exact"] = f"/{method['service']}/{method['method']}"
        elif method.get("service"):
            out["path_prefix"] = f"/{method['service']}/"
    headers = {}
    for j, h in enumerate(m.get("headers", []) or []):
        if isinstance(h, dict) and h.get("type", "Exact") == "Exact" and "name" in h:
            headers[str(h["name"])] = str(h.get("value", ""))
        else:
            draft.warn(f"{route.origin(*path, 'headers', j)}: only exact header matches map")
    if headers:
        out["headers"] = headers
    if m.get("queryParams") or (route.kind == "HTTPRoute" and m.get("method")):
        draft.warn(f"{route.origin(*path)}: query-parameter and method matches do not map")
    return Noted(out, route.origin(*path)) if out else None


def _annotated_retries(route: Resource, draft: Draft) -> tuple[dict[str, Any], Noted | None]:
    ann = route.get("metadata", "annotations", default={}) or {}
    where = ("metadata", "annotations")
    retries: dict[str, Any] = {}
    conditions: list[str] = []
    for key in ("retry.linkerd.io/http", "retry.linkerd.io/grpc"):
        if isinstance(ann.get(key), str):
            conditions += [c.strip() for c in ann[key].split(",") if c.strip()]
    if conditions:
        keys = [k for k in ("retry.linkerd.io/http", "retry.linkerd.io/grpc") if k in ann]
        retries["retry_on"] = Noted(conditions, route.origin(*where, keys[0]))
    limit = ann.get("retry.linkerd.io/limit")
    if limit is not None:
        try:
            retries["attempts"] = Noted(
                int(str(limit)), route.origin(*where, "retry.linkerd.io/limit")
            )
        except ValueError:
            draft.warn(f"{route.origin(*where, 'retry.linkerd.io/limit')}: not a whole number")
    per_try = duration_ms(ann.get("retry.linkerd.io/timeout"))
    if per_try:
        retries["per_try_timeout_ms"] = Noted(
            per_try, route.origin(*where, "retry.linkerd.io/timeout")
        )
    if retries and "attempts" not in retries:
        retries["attempts"] = Noted(1, f"{route.origin(*where)} (Linkerd's default limit: 1)")
    timeout = duration_ms(ann.get("timeout.linkerd.io/request"))
    note = Noted(timeout, route.origin(*where, "timeout.linkerd.io/request")) if timeout else None
    return retries, note


def import_routes(manifests: Manifests, draft: Draft) -> None:
    """Add the Gateway API (and Linkerd) routes' rules and entry points to the draft."""
    routes = [r for kind in sorted(KINDS) for r in manifests.of(kind) if r.group in GROUPS]
    for route in routes:
        try:
            retries, annotated_timeout = _annotated_retries(route, draft)
            for p, parent in enumerate(route.get("spec", "parentRefs", default=[]) or []):
                if not isinstance(parent, dict):
                    continue
                kind = parent.get("kind", "Gateway")
                if kind == "Gateway":
                    for i, rule in enumerate(route.get("spec", "rules", default=[]) or []):
                        for j, b in enumerate(
                            rule.get("backendRefs", []) if isinstance(rule, dict) else []
                        ):
                            target = draft.resolve_host(
                                b.get("name") if isinstance(b, dict) else None, route.namespace
                            )
                            if target is not None:
                                draft.entries.setdefault(
                                    target,
                                    f"{route.origin('spec', 'rules', i, 'backendRefs', j, 'name')} "
                                    f"(ingress via Gateway {parent.get('name')})",
                                )
                    continue
                if kind != "Service":
                    draft.warn(
                        f"{route.origin('spec', 'parentRefs', p)}: parent kind {kind} does not map"
                    )
                    continue
                service = draft.resolve_host(parent.get("name"), route.namespace)
                if service is None:
                    draft.warn(
                        f"{route.origin('spec', 'parentRefs', p, 'name')}: not an imported "
                        "service; route skipped"
                    )
                    continue
                _service_route(draft, manifests, route, service, p, retries, annotated_timeout)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, route, exc)


def _service_route(
    draft: Draft,
    manifests: Manifests,
    route: Resource,
    service: str,
    p: int,
    retries: dict[str, Any],
    annotated_timeout: Noted | None,
) -> None:
    for i, rule in enumerate(route.get("spec", "rules", default=[]) or []):
        if not isinstance(rule, dict):
            continue
        base: tuple[Any, ...] = ("spec", "rules", i)
        fields: dict[str, Any] = {}
        split: dict[str, Noted] = {}
        backends = rule.get("backendRefs", []) or []
        for j, b in enumerate(backends):
            if not isinstance(b, dict):
                continue
            version = _backend_version(draft, manifests, service, str(b.get("name")))
            if version is None:
                if str(b.get("name")) != draft.services[service].resource.name:
                    draft.warn(
                        f"{route.origin(*base, 'backendRefs', j, 'name')}: backend "
                        f"selects no single version of {service}; ignored"
                    )
                continue
            split[version] = Noted(
                b.get("weight", 1), route.origin(*base, "backendRefs", j, "weight")
            )
        if split and draft.services[service].versioned:
            fields["split"] = split
        timeout = duration_ms(
            rule.get("timeouts", {}).get("request")
            if isinstance(rule.get("timeouts"), dict)
            else None
        )
        if annotated_timeout is not None:
            # Linkerd's policy controller lets the annotation win over the rule's field
            # (docs/mesh-semantics.md 6.3); Istio reads only the field.
            fields["timeout_ms"] = annotated_timeout
            if timeout and timeout != annotated_timeout.value:
                draft.warn(
                    f"{route.origin(*base, 'timeouts', 'request')}: {timeout:g} ms here but "
                    f"timeout.linkerd.io/request says {annotated_timeout.value:g} ms: imported "
                    "as the annotation's, which Linkerd uses (Istio would use this field's)"
                )
        elif timeout:
            fields["timeout_ms"] = Noted(timeout, route.origin(*base, "timeouts", "request"))
        if retries:
            fields["retries"] = retries
        for k, f in enumerate(rule.get("filters", []) or []):
            if isinstance(f, dict) and f.get("type") == "RequestMirror":
                ref = f.get("requestMirror", {}).get("backendRef", {})
                target = draft.resolve_host(ref.get("name"), route.namespace)
                if target is not None:
                    fields["mirror"] = {
                        "service": Noted(target, route.origin(*base, "filters", k, "requestMirror"))
                    }
                    continue
            draft.warn(f"{route.origin(*base, 'filters', k)}: this filter does not map")
        matches = rule.get("matches") or [None]
        for k, m in enumerate(matches):
            match = _match(route, (*base, "matches", k), draft) if m else None
            if not fields and match is None:
                continue
            out: dict[str, Any] = {"service": Noted(service, route.origin("spec", "parentRefs", p))}
            if match is not None:
                out["match"] = match
            out.update(fields)
            draft.traffic.append(out)
