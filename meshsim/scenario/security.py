"""The ``security:`` block of a scenario: certificates and authorization, per mesh.

Istio's resources are written in Istio's vocabulary (AuthorizationPolicy with CUSTOM, DENY and
ALLOW actions, ``from``/``to`` rules with principals, namespaces, paths and methods); Linkerd's
in Linkerd's (a default inbound policy, Servers, MeshTLSAuthentications and
AuthorizationPolicies). Each mesh reads only its own block; the evaluation itself is pure logic
in :mod:`meshsim.policy.authz`. A pod's service account is its service's name, in the
service's namespace; workload clients outside the mesh are unauthenticated.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from meshsim.policy.authz import LinkerdDefault
from meshsim.scenario.base import Name, PositiveFloat, Spec

Pattern = Annotated[
    str,
    Field(description="Exact, '*', 'prefix*' or '*suffix' (Istio's string match)."),
]


class IstioSource(Spec):
    principals: list[Pattern] | None = Field(
        None, description="Peer identities, e.g. cluster.local/ns/default/sa/productpage."
    )
    not_principals: list[Pattern] | None = None
    namespaces: list[Pattern] | None = None
    not_namespaces: list[Pattern] | None = None


class IstioOperation(Spec):
    paths: list[Pattern] | None = None
    not_paths: list[Pattern] | None = None
    methods: list[Pattern] | None = None
    not_methods: list[Pattern] | None = None


class IstioRule(Spec):
    """Matches when one ``from`` entry and one ``to`` entry match (empty lists match all)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    from_: list[IstioSource] = Field(default_factory=list, alias="from")
    to: list[IstioOperation] = Field(default_factory=list)


class IstioAuthorizationPolicy(Spec):
    """An Istio AuthorizationPolicy (security.istio.io/v1)."""

    name: Name
    namespace: Name = Field(
        "default", description="The policy's namespace; istio-system makes it mesh-wide."
    )
    selector: Name | None = Field(
        None, description="The service whose pods it applies to (default: the whole namespace)."
    )
    action: Literal["ALLOW", "DENY", "CUSTOM"] = "ALLOW"
    rules: list[IstioRule] = Field(
        default_factory=list,
        description="No rules: an ALLOW policy matches nothing (allow-nothing, so deny all); "
        "a rule {} matches everything.",
    )
    custom_allows: bool = Field(
        False, description="CUSTOM only: what the external authorizer answers for matches."
    )


class IstioSecurity(Spec):
    authorization_policies: list[IstioAuthorizationPolicy] = Field(default_factory=list)


class LinkerdServer(Spec):
    """A policy.linkerd.io Server: selects the pods (of a service) and their port."""

    name: Name
    namespace: Name = "default"
    service: Name = Field(description="The service whose pods it selects.")
    access_policy: LinkerdDefault = Field(
        "deny", description="What traffic no AuthorizationPolicy admits gets (Linkerd default)."
    )


class LinkerdServiceAccount(Spec):
    name: Name
    namespace: Name = "default"


class LinkerdMeshTLSAuthentication(Spec):
    name: Name
    namespace: Name = "default"
    identities: list[Pattern] = Field(
        default_factory=list,
        description="Proxy identities, e.g. web.default.serviceaccount.identity.linkerd."
        "cluster.local, or '*' for any meshed client.",
    )
    service_accounts: list[LinkerdServiceAccount] = Field(default_factory=list)


class LinkerdAuthorizationPolicy(Spec):
    name: Name
    namespace: Name = "default"
    server: Name = Field(description="The Server it targets (targetRef).")
    paths: list[Pattern] | None = Field(
        None, description="Only these paths (an HTTPRoute target); default all paths."
    )
    authentications: list[Name] = Field(
        default_factory=list,
        description="MeshTLSAuthentication names (requiredAuthenticationRefs); empty admits "
        "unauthenticated clients too.",
    )


class LinkerdSecurity(Spec):
    default_policy: LinkerdDefault = Field(
        "all-unauthenticated",
        description="proxyInit defaultInboundPolicy: applies to pods no Server selects.",
    )
    servers: list[LinkerdServer] = Field(default_factory=list)
    mesh_tls_authentications: list[LinkerdMeshTLSAuthentication] = Field(default_factory=list)
    authorization_policies: list[LinkerdAuthorizationPolicy] = Field(default_factory=list)


class Certificates(Spec):
    """Overrides of the workload-certificate lifetime (default: the control plane's model)."""

    lifetime_s: PositiveFloat | None = Field(None, description="Workload certificate lifetime.")
    renew_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Renew after this fraction of the lifetime (Istio 0.5, Linkerd 0.7)."
    )


class Security(Spec):
    """Identity and authorization, per mesh."""

    certificates: Certificates = Field(default_factory=Certificates)
    istio: IstioSecurity = Field(default_factory=IstioSecurity)
    linkerd: LinkerdSecurity = Field(default_factory=LinkerdSecurity)
