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
    retries = [r.retries for r in rules if r.retries is not None and r.retries.attempts != 0]
    if retries:
        unset = any(r.attempts is None for r in retries)
        notes.append(
            f"{service}: retries as Envoy runs them: no previous-hosts predicate, one host "
            "selection (istiod's previous_hosts and 5 re-picks are not Envoy's)"
            + ("; 1 retry where attempts is unset (Envoy's num_retries default)" if unset else "")
        )
    if any(r.retry_on is None for r in retries):
        notes.append(
            f"{service}: retries without retry_on: the VirtualService's default conditions "
            "(connect-failure, refused-stream, unavailable, cancelled) written into the "
            "CiliumEnvoyConfig; Envoy has no default condition of its own (an empty "
            "retry_on retries nothing)"
        )
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
