"""What Cilium needs to program the traffic rules: it programs Envoy through
CiliumEnvoyConfig, so a rule applies in the source node's Envoy as Istio's Envoy would apply
it, and what the rule leaves out is raw Envoy's default, not istiod's
(:mod:`meshsim.policy.mapping.istio`); these are the notes that say what that takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshsim.scenario.traffic import TrafficRule


def cilium_notes(service: str, rules: Sequence[TrafficRule]) -> list[str]:
    """What Cilium needs beyond one CiliumEnvoyConfig for ``service``'s rules."""
    notes = [
        f"{service}: L7 through the node's Envoy (CiliumEnvoyConfig for retries, timeouts, "
        "balancing and breakers; its traffic leaves the kernel datapath), with Envoy's own "
        "defaults where the rule is silent: no retries, a 15 s route timeout, round robin, "
        "breakers at 1024 connections, pending and requests and 3 retries"
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
