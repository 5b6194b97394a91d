"""Authorization as pure logic (meshsim.policy.authz): Istio's CUSTOM, DENY, ALLOW order and
matching; Linkerd's Servers, AuthorizationPolicies, MeshTLSAuthentications and defaults."""

from __future__ import annotations

import pytest

from meshsim.policy.authz import (
    IstioAuthz,
    IstioOperation,
    IstioPolicy,
    IstioRule,
    IstioSource,
    LinkerdAuthz,
    LinkerdMeshTLS,
    LinkerdPolicy,
    LinkerdServer,
    Peer,
    RequestInfo,
    istio_principal,
    linkerd_identity,
    matches,
)

WEB = Peer("web", "default")
OTHER = Peer("other", "shop")
OUTSIDE = Peer(None, None, in_cluster=False)


def req(peer: Peer, path: str = "/", method: str = "GET") -> RequestInfo:
    return RequestInfo(peer, path, method)


def test_string_match_forms() -> None:
    assert matches("*", "anything")
    assert matches("/api/*", "/api/v1")
    assert not matches("/api/*", "/apx")
    assert matches("*.svc", "a.svc")
    assert matches("GET", "GET")
    assert not matches("GET", "POST")


def test_identities() -> None:
    assert istio_principal(WEB) == "cluster.local/ns/default/sa/web"
    assert linkerd_identity(WEB) == ("web.default.serviceaccount.identity.linkerd.cluster.local")
    assert istio_principal(OUTSIDE) is None


def _allow_web() -> IstioPolicy:
    src = IstioSource(principals=("cluster.local/ns/default/sa/web",))
    return IstioPolicy("allow-web", selector="api", rules=(IstioRule((src,)),))


def test_istio_no_policy_allows() -> None:
    assert IstioAuthz([]).evaluate("api", "default", req(OTHER)).allowed
    assert not IstioAuthz([]).enforced("api", "default")


def test_istio_allow_admits_listed_and_denies_others() -> None:
    authz = IstioAuthz([_allow_web()])
    assert authz.evaluate("api", "default", req(WEB)).allowed
    d = authz.evaluate("api", "default", req(OTHER))
    assert not d.allowed
    assert d.reason == "no ALLOW policy matched"
    assert not authz.evaluate("api", "default", req(OUTSIDE)).allowed
    # The policy selects api only.
    assert authz.evaluate("web", "default", req(OTHER)).allowed


def test_istio_allow_nothing_denies_all() -> None:
    authz = IstioAuthz([IstioPolicy("allow-nothing")])
    assert not authz.evaluate("api", "default", req(WEB)).allowed


def test_istio_deny_wins_over_allow_and_custom_over_deny() -> None:
    deny_post = IstioPolicy(
        "no-post", action="DENY", rules=(IstioRule((), (IstioOperation(methods=("POST",)),)),)
    )
    authz = IstioAuthz([_allow_web(), deny_post])
    assert authz.evaluate("api", "default", req(WEB, method="GET")).allowed
    d = authz.evaluate("api", "default", req(WEB, method="POST"))
    assert not d.allowed
    assert d.reason == "DENY/default/no-post"
    custom = IstioPolicy(
        "ext",
        action="CUSTOM",
        custom_allows=True,
        rules=(IstioRule((), (IstioOperation(paths=("/admin/*",)),)),),
    )
    deny_admin = IstioPolicy(
        "no-admin", action="DENY", rules=(IstioRule((), (IstioOperation(paths=("/admin/*",)),)),)
    )
    # CUSTOM is evaluated first and its answer is final for matching requests.
    assert IstioAuthz([custom, deny_admin]).evaluate("api", "default", req(WEB, "/admin/x")).allowed
    refuse = IstioPolicy("ext", action="CUSTOM", custom_allows=False, rules=(IstioRule(),))
    assert not IstioAuthz([refuse]).evaluate("api", "default", req(WEB)).allowed


def test_istio_namespaces_not_fields_and_root_namespace() -> None:
    ns_rule = IstioRule((IstioSource(namespaces=("shop",)),))
    authz = IstioAuthz([IstioPolicy("from-shop", rules=(ns_rule,))])
    assert authz.evaluate("api", "default", req(OTHER)).allowed
    assert not authz.evaluate("api", "default", req(WEB)).allowed
    not_web = IstioRule((IstioSource(not_principals=("*/sa/web",)),))
    mesh_wide = IstioPolicy(
        "deny-not-web", namespace="istio-system", action="DENY", rules=(not_web,)
    )
    authz = IstioAuthz([mesh_wide])
    assert authz.evaluate("anything", "other-ns", req(WEB)).allowed
    assert not authz.evaluate("anything", "other-ns", req(OTHER)).allowed
    # An unauthenticated request has no principal: not_principals matches it.
    assert not authz.evaluate("anything", "other-ns", req(OUTSIDE)).allowed


def test_istio_rule_needs_source_and_operation() -> None:
    rule = IstioRule(
        (IstioSource(principals=("*/sa/web",)),),
        (IstioOperation(paths=("/api/*",), methods=("GET",)),),
    )
    authz = IstioAuthz([IstioPolicy("p", rules=(rule,))])
    assert authz.evaluate("api", "default", req(WEB, "/api/x")).allowed
    assert not authz.evaluate("api", "default", req(WEB, "/other")).allowed
    assert not authz.evaluate("api", "default", req(WEB, "/api/x", "POST")).allowed


@pytest.mark.parametrize(
    ("policy", "web", "outside", "outside_in_cluster"),
    [
        ("all-unauthenticated", True, True, True),
        ("all-authenticated", True, False, False),
        ("cluster-unauthenticated", True, False, True),
        ("cluster-authenticated", True, False, False),
        ("deny", False, False, False),
    ],
)
def test_linkerd_default_policies(
    policy: str, web: bool, outside: bool, outside_in_cluster: bool
) -> None:
    authz = LinkerdAuthz(default_policy=policy)  # type: ignore[arg-type]
    assert authz.evaluate("api", "default", req(WEB)).allowed is web
    assert authz.evaluate("api", "default", req(OUTSIDE)).allowed is outside
    plain_in_cluster = Peer(None, None, in_cluster=True)
    assert authz.evaluate("api", "default", req(plain_in_cluster)).allowed is outside_in_cluster


def _linkerd() -> LinkerdAuthz:
    return LinkerdAuthz(
        servers=[LinkerdServer("api-http", "api")],
        authentications=[LinkerdMeshTLS("web-only", service_accounts=(("web", "default"),))],
        policies=[LinkerdPolicy("api-from-web", "api-http", authentications=("web-only",))],
    )


def test_linkerd_server_denies_by_default_and_admits_the_authenticated_client() -> None:
    authz = _linkerd()
    assert authz.enforced("api", "default")
    d = authz.evaluate("api", "default", req(WEB))
    assert d.allowed
    assert d.reason == "AuthorizationPolicy/default/api-from-web"
    assert not authz.evaluate("api", "default", req(OTHER)).allowed
    assert not authz.evaluate("api", "default", req(OUTSIDE)).allowed
    # A pod no Server selects falls back to the default (all-unauthenticated).
    assert authz.evaluate("web", "default", req(OUTSIDE)).allowed
    assert not authz.enforced("web", "default")


def test_linkerd_identities_paths_and_unauthenticated_policies() -> None:
    any_meshed = LinkerdMeshTLS("meshed", identities=("*",))
    authz = LinkerdAuthz(
        servers=[LinkerdServer("api-http", "api")],
        authentications=[any_meshed],
        policies=[
            LinkerdPolicy("health", "api-http", paths=("/healthz",)),  # anyone
            LinkerdPolicy("meshed", "api-http", authentications=("meshed",)),
        ],
    )
    assert authz.evaluate("api", "default", req(OUTSIDE, "/healthz")).allowed
    assert not authz.evaluate("api", "default", req(OUTSIDE, "/data")).allowed
    assert authz.evaluate("api", "default", req(OTHER, "/data")).allowed
    # A policy naming an authentication that does not exist admits no one.
    broken = LinkerdAuthz(
        servers=[LinkerdServer("s", "api")],
        policies=[LinkerdPolicy("p", "s", authentications=("missing",))],
    )
    assert not broken.evaluate("api", "default", req(WEB)).allowed
