"""Authorization, evaluated per request in the destination's proxy (docs/mesh-semantics.md §8).

Pure state and logic, shared by the simulator and the real proxy: no clock, no randomness.

Istio (``security.istio.io/v1`` AuthorizationPolicy), in the order Envoy's filters apply them:

1. CUSTOM policies: if one matches, the external authorizer decides (``custom_allows``).
2. DENY policies: if one matches, the request is denied.
3. ALLOW policies: if any applies to the workload, the request is allowed only when one of
   them matches; a policy with no rules matches nothing ("allow-nothing"). If none applies,
   the request is allowed.

A rule matches when one of its ``from`` sources and one of its ``to`` operations match (an
empty list matches everything); a source or operation matches when all the fields it sets
match. Strings match exactly, ``*``, ``prefix*`` or ``*suffix``. Principals are
``<trust domain>/ns/<namespace>/sa/<service account>``; a request without mTLS has none,
so principals and namespaces never match it (and ``not_`` fields do).

Linkerd (``policy.linkerd.io``): a pod that a Server selects is governed by it. A request is
admitted if an AuthorizationPolicy targeting that Server (and, when it has paths, the
request's path) admits its client: every MeshTLSAuthentication it requires lists the
client's identity or service account (no authentication required: any client). Otherwise
the Server's ``access_policy`` applies. A pod no Server selects gets the default inbound
policy. Default policies: ``all-unauthenticated`` admits everyone, ``all-authenticated``
only mTLS clients, ``cluster-*`` the same restricted to cluster networks (outside clients
are not in them), ``deny`` no one. Denied HTTP requests get 403.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DENIED_STATUS",
    "Decision",
    "IstioAuthz",
    "IstioOperation",
    "IstioPolicy",
    "IstioRule",
    "IstioSource",
    "LinkerdAuthz",
    "LinkerdDefault",
    "LinkerdMeshTLS",
    "LinkerdPolicy",
    "LinkerdServer",
    "Peer",
    "RequestInfo",
    "istio_principal",
    "linkerd_identity",
    "matches",
]

DENIED_STATUS = 403
"""What a denied HTTP request gets, from either mesh."""

TRUST_DOMAIN = "cluster.local"


def matches(pattern: str, value: str) -> bool:
    """Istio's string match: exact, ``*`` (anything), ``prefix*`` or ``*suffix``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def _any(patterns: Sequence[str], value: str | None) -> bool:
    return value is not None and any(matches(p, value) for p in patterns)


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is calling: a meshed workload (service account, namespace) or an outsider."""

    service_account: str | None = None
    namespace: str | None = None
    in_cluster: bool = True
    """False for clients outside the cluster's networks (Linkerd's ``cluster-*`` policies)."""

    @property
    def authenticated(self) -> bool:
        return self.service_account is not None


def istio_principal(peer: Peer) -> str | None:
    if peer.service_account is None or peer.namespace is None:
        return None
    return f"{TRUST_DOMAIN}/ns/{peer.namespace}/sa/{peer.service_account}"


def linkerd_identity(peer: Peer) -> str | None:
    if peer.service_account is None or peer.namespace is None:
        return None
    return f"{peer.service_account}.{peer.namespace}.serviceaccount.identity.linkerd.{TRUST_DOMAIN}"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request attributes policies look at."""

    peer: Peer
    path: str = "/"
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    """The deciding policy (``<action>/<namespace>/<name>``) or default."""


ALLOW_ALL = Decision(True, "no policy")


# --------------------------------------------------------------------------- Istio


@dataclass(frozen=True, slots=True)
class IstioSource:
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] | None = None
    namespaces: tuple[str, ...] | None = None
    not_namespaces: tuple[str, ...] | None = None

    def match(self, peer: Peer) -> bool:
        principal = istio_principal(peer)
        ns = peer.namespace if peer.authenticated else None
        if self.principals is not None and not _any(self.principals, principal):
            return False
        if self.not_principals is not None and _any(self.not_principals, principal):
            return False
        if self.namespaces is not None and not _any(self.namespaces, ns):
            return False
        return not (self.not_namespaces is not None and _any(self.not_namespaces, ns))


@dataclass(frozen=True, slots=True)
class IstioOperation:
    paths: tuple[str, ...] | None = None
    not_paths: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    not_methods: tuple[str, ...] | None = None

    def match(self, req: RequestInfo) -> bool:
        if self.paths is not None and not _any(self.paths, req.path):
            return False
        if self.not_paths is not None and _any(self.not_paths, req.path):
            return False
        if self.methods is not None and not _any(self.methods, req.method):
            return False
        return not (self.not_methods is not None and _any(self.not_methods, req.method))


@dataclass(frozen=True, slots=True)
class IstioRule:
    sources: tuple[IstioSource, ...] = ()
    operations: tuple[IstioOperation, ...] = ()

    def match(self, req: RequestInfo) -> bool:
        src = not self.sources or any(s.match(req.peer) for s in self.sources)
        return src and (not self.operations or any(o.match(req) for o in self.operations))


@dataclass(frozen=True, slots=True)
class IstioPolicy:
    name: str
    namespace: str = "default"
    selector: str | None = None
    """The workload (service) it selects; None: every workload of its namespace."""
    action: Literal["ALLOW", "DENY", "CUSTOM"] = "ALLOW"
    rules: tuple[IstioRule, ...] = ()
    custom_allows: bool = False

    def applies_to(self, service: str, namespace: str, root_namespace: str) -> bool:
        if self.namespace == root_namespace:
            return self.selector is None or self.selector == service
        return self.namespace == namespace and self.selector in (None, service)

    def match(self, req: RequestInfo) -> bool:
        return any(r.match(req) for r in self.rules)

    @property
    def label(self) -> str:
        return f"{self.action}/{self.namespace}/{self.name}"


@dataclass
class IstioAuthz:
    """The AuthorizationPolicies of a mesh; :meth:`for_workload` gives one workload's."""

    policies: Sequence[IstioPolicy] = ()
    root_namespace: str = "istio-system"
    _cache: dict[tuple[str, str], tuple[IstioPolicy, ...]] = field(default_factory=dict)

    def for_workload(self, service: str, namespace: str) -> tuple[IstioPolicy, ...]:
        key = (service, namespace)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = tuple(
                p for p in self.policies if p.applies_to(service, namespace, self.root_namespace)
            )
        return got

    def enforced(self, service: str, namespace: str) -> bool:
        """True when any policy applies (the RBAC filter runs, and costs CPU)."""
        return bool(self.for_workload(service, namespace))

    def evaluate(self, service: str, namespace: str, req: RequestInfo) -> Decision:
        policies = self.for_workload(service, namespace)
        if not policies:
            return ALLOW_ALL
        for p in policies:
            if p.action == "CUSTOM" and p.match(req):
                return Decision(p.custom_allows, p.label)
        for p in policies:
            if p.action == "DENY" and p.match(req):
                return Decision(False, p.label)
        allows = [p for p in policies if p.action == "ALLOW"]
        if not allows:
            return Decision(True, "no ALLOW policy")
        for p in allows:
            if p.match(req):
                return Decision(True, p.label)
        return Decision(False, "no ALLOW policy matched")


# --------------------------------------------------------------------------- Linkerd

LinkerdDefault = Literal[
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
]


def _default_admits(policy: LinkerdDefault, peer: Peer) -> bool:
    if policy == "deny":
        return False
    if policy.startswith("cluster-") and not peer.in_cluster:
        return False
    if policy.endswith("-authenticated"):
        return peer.authenticated
    return True


@dataclass(frozen=True, slots=True)
class LinkerdServer:
    name: str
    service: str
    namespace: str = "default"
    access_policy: LinkerdDefault = "deny"


@dataclass(frozen=True, slots=True)
class LinkerdMeshTLS:
    """A MeshTLSAuthentication: identities (patterns) and service accounts (name, namespace)."""

    name: str
    namespace: str = "default"
    identities: tuple[str, ...] = ()
    service_accounts: tuple[tuple[str, str], ...] = ()

    def admits(self, peer: Peer) -> bool:
        identity = linkerd_identity(peer)
        if identity is None:
            return False
        if _any(self.identities, identity):
            return True
        return (peer.service_account, peer.namespace) in self.service_accounts


@dataclass(frozen=True, slots=True)
class LinkerdPolicy:
    """An AuthorizationPolicy targeting a Server (optionally restricted to some paths)."""

    name: str
    server: str
    namespace: str = "default"
    authentications: tuple[str, ...] = ()
    paths: tuple[str, ...] | None = None


@dataclass
class LinkerdAuthz:
    default_policy: LinkerdDefault = "all-unauthenticated"
    servers: Sequence[LinkerdServer] = ()
    authentications: Sequence[LinkerdMeshTLS] = ()
    policies: Sequence[LinkerdPolicy] = ()

    def server_for(self, service: str, namespace: str) -> LinkerdServer | None:
        for s in self.servers:
            if s.service == service and s.namespace == namespace:
                return s
        return None

    def enforced(self, service: str, namespace: str) -> bool:
        """True when a check runs beyond the permissive default (costs CPU)."""
        return (
            self.server_for(service, namespace) is not None
            or self.default_policy != "all-unauthenticated"
        )

    def evaluate(self, service: str, namespace: str, req: RequestInfo) -> Decision:
        server = self.server_for(service, namespace)
        if server is None:
            ok = _default_admits(self.default_policy, req.peer)
            return Decision(ok, f"default/{self.default_policy}")
        by_name = {(a.namespace, a.name): a for a in self.authentications}
        for p in self.policies:
            if p.server != server.name or p.namespace != server.namespace:
                continue
            if p.paths is not None and not _any(p.paths, req.path):
                continue
            required = [by_name.get((p.namespace, n)) for n in p.authentications]
            if all(a is not None and a.admits(req.peer) for a in required):
                return Decision(True, f"AuthorizationPolicy/{p.namespace}/{p.name}")
        ok = _default_admits(server.access_policy, req.peer)
        return Decision(ok, f"Server/{server.namespace}/{server.name}/{server.access_policy}")
