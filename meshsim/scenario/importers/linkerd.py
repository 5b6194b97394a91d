"""Linkerd resources -> ``traffic`` rules, the retry budget and ``security.linkerd``.

- ServiceProfile (``linkerd.io``): each route with ``isRetryable`` or ``timeout`` becomes a rule
  matching its path (a ``pathRegex`` that is a literal path, or a literal prefix followed by
  ``.*``; other regexes are warned and skipped); ``isRetryable`` turns on
  ``mesh_options.linkerd.retry_budget`` with the profile's ``retryBudget`` (``retryRatio``,
  ``minRetriesPerSecond``, ``ttl``), under which a rule's ``retries`` are budgeted, not counted.
- Server, AuthorizationPolicy and MeshTLSAuthentication (``policy.linkerd.io``) map to
  ``security.linkerd`` one to one; the namespace annotation
  ``config.linkerd.io/default-inbound-policy`` gives the default policy (read with the
  Kubernetes objects).
"""

from __future__ import annotations

import re
from typing import Any

from meshsim.scenario.importers.documents import Manifests
from meshsim.scenario.importers.draft import (
    SHAPE_ERRORS,
    Draft,
    duration_ms,
    scenario_name,
    shape_warning,
)
from meshsim.scenario.importers.writer import Noted

KINDS = {
    "ServiceProfile",
    "Server",
    "AuthorizationPolicy",
    "MeshTLSAuthentication",
    "ServerAuthorization",
}
POLICY = "policy.linkerd.io"
_REGEX_META = set(".^$*+?()[]{}|\\")


def _literal(regex: str) -> tuple[str, str] | None:
    """A pathRegex as ('path_exact', path) or ('path_prefix', prefix), if it is that simple."""
    text = regex.removeprefix("^").removesuffix("$")
    prefix = text.endswith(".*")
    if prefix:
        text = text[:-2]
    unescaped = re.sub(r"\\(.)", r"\1", text)
    escaped_only = re.sub(r"\\.", "", text)
    if any(c in _REGEX_META for c in escaped_only):
        return None
    return ("path_prefix", unescaped) if prefix else ("path_exact", unescaped)


def _service_profiles(draft: Draft, manifests: Manifests) -> None:
    for sp in manifests.of("ServiceProfile"):
        try:
            service = draft.resolve_host(sp.name, sp.namespace)
            if service is None:
                draft.warn(f"{sp.origin('metadata', 'name')}: {sp.name} is not an imported service")
                continue
            budget = sp.get("spec", "retryBudget")
            any_retryable = False
            for i, route in enumerate(sp.get("spec", "routes", default=[]) or []):
                if not isinstance(route, dict):
                    continue
                base: tuple[Any, ...] = ("spec", "routes", i)
                fields: dict[str, Any] = {}
                if route.get("isRetryable") is True:
                    any_retryable = True
                    fields["retries"] = Noted(
                        {"retry_on": ["5xx"]},
                        f"{sp.origin(*base, 'isRetryable')} (Linkerd retries 5xx under the budget)",
                    )
                timeout = duration_ms(route.get("timeout"))
                if timeout:
                    fields["timeout_ms"] = Noted(timeout, sp.origin(*base, "timeout"))
                if not fields:
                    continue
                regex = (
                    route.get("condition", {}).get("pathRegex")
                    if isinstance(route.get("condition"), dict)
                    else None
                )
                literal = _literal(regex) if isinstance(regex, str) else None
                if literal is None:
                    draft.warn(
                        f"{sp.origin(*base, 'condition')}: route {route.get('name')} matches "
                        "by a regex that is not a literal path or prefix; skipped"
                    )
                    continue
                rule: dict[str, Any] = {
                    "service": Noted(service, sp.origin("metadata", "name")),
                    "match": Noted(
                        {literal[0]: literal[1]}, sp.origin(*base, "condition", "pathRegex")
                    ),
                }
                rule.update(fields)
                draft.traffic.append(rule)
            if any_retryable:
                draft.option(
                    "linkerd",
                    "retry_budget",
                    True,
                    f"{sp.origin('spec', 'routes')} (isRetryable routes retry under a budget)",
                )
                if isinstance(budget, dict):
                    for key, opt in (
                        ("retryRatio", "retry_ratio"),
                        ("minRetriesPerSecond", "min_retries_per_second"),
                    ):
                        if isinstance(budget.get(key), int | float):
                            draft.option(
                                "linkerd",
                                opt,
                                float(budget[key]),
                                sp.origin("spec", "retryBudget", key),
                            )
                    ttl = duration_ms(budget.get("ttl"))
                    if ttl:
                        draft.option(
                            "linkerd",
                            "retry_ttl_s",
                            ttl / 1e3,
                            sp.origin("spec", "retryBudget", "ttl"),
                        )
        except SHAPE_ERRORS as exc:
            shape_warning(draft, sp, exc)


def _security(draft: Draft, manifests: Manifests) -> None:
    servers: list[Noted] = []
    server_names: set[str] = set()
    for s in manifests.of("Server", POLICY):
        try:
            labels = s.get("spec", "podSelector", "matchLabels")
            service = (
                draft.service_for_labels({str(k): str(v) for k, v in labels.items()}, s.namespace)
                if isinstance(labels, dict)
                else None
            )
            if service is None:
                draft.warn(
                    f"{s.origin('spec', 'podSelector')}: selects no imported service; skipped"
                )
                continue
            out: dict[str, Any] = {
                "name": scenario_name(s.name),
                "service": Noted(service, s.origin("spec", "podSelector")),
            }
            if s.namespace:
                out["namespace"] = scenario_name(s.namespace)
            if s.get("spec", "accessPolicy") is not None:
                out["access_policy"] = Noted(
                    s.get("spec", "accessPolicy"), s.origin("spec", "accessPolicy")
                )
            servers.append(Noted(out, s.origin()))
            server_names.add(s.name)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, s, exc)
    auths: list[Noted] = []
    for m in manifests.of("MeshTLSAuthentication", POLICY):
        try:
            out = {"name": scenario_name(m.name)}
            if m.namespace:
                out["namespace"] = scenario_name(m.namespace)
            ids = m.get("spec", "identities")
            if isinstance(ids, list):
                out["identities"] = Noted([str(i) for i in ids], m.origin("spec", "identities"))
            refs = m.get("spec", "identityRefs")
            if isinstance(refs, list):
                accounts = []
                for j, ref in enumerate(refs):
                    if isinstance(ref, dict) and ref.get("kind") == "ServiceAccount":
                        acct = {"name": scenario_name(str(ref.get("name")))}
                        if ref.get("namespace"):
                            acct["namespace"] = scenario_name(str(ref["namespace"]))
                        accounts.append(Noted(acct, m.origin("spec", "identityRefs", j)))
                    else:
                        draft.warn(
                            f"{m.origin('spec', 'identityRefs', j)}: only ServiceAccount "
                            "references map"
                        )
                out["service_accounts"] = accounts
            auths.append(Noted(out, m.origin()))
        except SHAPE_ERRORS as exc:
            shape_warning(draft, m, exc)
    policies: list[Noted] = []
    routes = {r.name: r for r in manifests.of("HTTPRoute") if r.group == POLICY}
    for ap in manifests.of("AuthorizationPolicy", POLICY):
        try:
            target = ap.get("spec", "targetRef", default={}) or {}
            out = {"name": scenario_name(ap.name)}
            if ap.namespace:
                out["namespace"] = scenario_name(ap.namespace)
            if target.get("kind") == "Server":
                out["server"] = Noted(
                    scenario_name(str(target.get("name"))), ap.origin("spec", "targetRef")
                )
            elif target.get("kind") == "HTTPRoute" and target.get("name") in routes:
                route = routes[target["name"]]
                parents = route.get("spec", "parentRefs", default=[]) or []
                server = next(
                    (
                        p.get("name")
                        for p in parents
                        if isinstance(p, dict) and p.get("kind") == "Server"
                    ),
                    None,
                )
                if server is None:
                    draft.warn(
                        f"{ap.origin('spec', 'targetRef')}: its HTTPRoute has no Server parent"
                    )
                    continue
                paths = []
                for rule in route.get("spec", "rules", default=[]) or []:
                    for m in rule.get("matches", []) if isinstance(rule, dict) else []:
                        p = m.get("path", {}) if isinstance(m, dict) else {}
                        if p.get("type", "PathPrefix") == "PathPrefix":
                            paths.append(str(p.get("value", "/")) + "*")
                        elif p.get("type") == "Exact":
                            paths.append(str(p.get("value")))
                out["server"] = Noted(
                    scenario_name(str(server)), route.origin("spec", "parentRefs")
                )
                if paths:
                    out["paths"] = Noted(paths, route.origin("spec", "rules"))
            else:
                draft.warn(
                    f"{ap.origin('spec', 'targetRef')}: target kind {target.get('kind')} "
                    "does not map; skipped"
                )
                continue
            names = []
            for j, ref in enumerate(ap.get("spec", "requiredAuthenticationRefs", default=[]) or []):
                if isinstance(ref, dict) and ref.get("kind") == "MeshTLSAuthentication":
                    names.append(scenario_name(str(ref.get("name"))))
                else:
                    draft.warn(
                        f"{ap.origin('spec', 'requiredAuthenticationRefs', j)}: only "
                        "MeshTLSAuthentication references map (NetworkAuthentication does "
                        "not); the policy admits without it"
                    )
            if names:
                out["authentications"] = Noted(
                    names, ap.origin("spec", "requiredAuthenticationRefs")
                )
            policies.append(Noted(out, ap.origin()))
        except SHAPE_ERRORS as exc:
            shape_warning(draft, ap, exc)
    for old in manifests.of("ServerAuthorization", POLICY):
        draft.warn(
            f"{old.origin()}: ServerAuthorization (deprecated) does not map; use "
            "AuthorizationPolicy"
        )
    if servers:
        draft.linkerd_security["servers"] = servers
    if auths:
        draft.linkerd_security["mesh_tls_authentications"] = auths
    if policies:
        draft.linkerd_security["authorization_policies"] = policies


def import_linkerd(manifests: Manifests, draft: Draft) -> None:
    """Add ServiceProfiles' rules and budget, and Linkerd's policy resources, to the draft."""
    _service_profiles(draft, manifests)
    _security(draft, manifests)
