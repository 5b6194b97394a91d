"""The one translation of a scenario's ``traffic`` rules into each mesh's policies.

Both clocks use it (docs/DESIGN.md, principle 1): the simulator's data planes
(:mod:`meshsim.sim.dataplanes.resilience_state`) and the real proxy
(:mod:`meshsim.proxy.policies`, whose listener ``traffic`` is one rule of this shape), so
the two cannot program different defaults. :func:`validate_traffic` runs the same
translation for ``meshsim check``.

The ``traffic`` block speaks Istio's vocabulary. Each mesh turns it into what it would
really program, with its own defaults where the scenario is silent, and says what it could
not map (the notes go into the run's warnings). Each mesh's translation is a module of its
own: :mod:`~meshsim.policy.mapping.istio`
(VirtualService and DestinationRule, Envoy's defaults as istiod fills them),
:mod:`~meshsim.policy.mapping.linkerd` (HTTPRoute, its retry annotations or a ServiceProfile
under the retry budget, failure accrual), :mod:`~meshsim.policy.mapping.cilium` (Istio's
Envoy programming through CiliumEnvoyConfig, with what that needs); what they program is in
:mod:`~meshsim.policy.mapping.policies`.

Istio ambient: a service with a waypoint gets Istio's mapping, applied by its waypoint;
a service without one is reached through ztunnels only (L4), so its traffic rules are not
applied, and the warnings say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from meshsim.errors import MeshsimError, Problem
from meshsim.policy import ENVOY_CONNECT_TIMEOUT_S, LINKERD_CONNECT_TIMEOUT_S
from meshsim.policy.mapping.istio import envoy_policies
from meshsim.policy.mapping.linkerd import linkerd_policies
from meshsim.policy.mapping.policies import (
    ClusterPolicy,
    MeshPolicies,
    Mirror,
    RoutePolicy,
    ServicePolicy,
    TrafficRuleError,
    split_weights,
)

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
    "connect_timeout_s",
    "map_traffic",
    "split_weights",
    "translate",
    "validate_traffic",
]

TRAFFIC_MESHES = ("istio", "linkerd", "istio-ambient", "cilium")
"""The meshes that apply traffic rules (``none`` has no proxy to apply them)."""


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
    if mesh == "linkerd":
        mapped = linkerd_policies(mesh, by_service, options.linkerd)
    elif mesh in ("istio", "istio-ambient", "cilium"):
        mapped = envoy_policies(mesh, by_service, l7_services)
    else:
        raise MeshsimError(f"mesh {mesh!r} has no traffic mapping")
    mapped.connect_timeout_s = connect_timeout_s(mesh, options)
    return mapped


def connect_timeout_s(mesh: str, options: MeshOptions) -> float:
    """How long ``mesh``'s client proxy tries a connection to an address that answers
    nothing before the try fails as a connect failure (§2.1, §14.4): Linkerd's outbound
    connect timeout (1 s); Cilium's node Envoy, Envoy's own 5 s (a CiliumEnvoyConfig is
    Envoy as written, §12.2); Istio's ``meshConfig.connectTimeout``
    (``mesh_options.istio.connect_timeout_ms``, 10 s) for Istio's sidecars and waypoints,
    and for a mesh without a client proxy, whose figure is only reported."""
    if mesh == "linkerd":
        return LINKERD_CONNECT_TIMEOUT_S
    if mesh == "cilium":
        return ENVOY_CONNECT_TIMEOUT_S
    return options.istio.connect_timeout_ms / 1e3


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
