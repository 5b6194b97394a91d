"""``mesh_options.cilium``: the eBPF mesh (issue 16, :mod:`meshsim.sim.dataplanes.cilium`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshsim.scenario.base import ServiceSelection, Spec
from meshsim.scenario.resources import CILIUM_ENVOY_RESOURCES, Resources


class CiliumOptions(Spec):
    encryption: Literal["wireguard", "ipsec", "none"] = Field(
        "wireguard", description="Transparent encryption between nodes (in the kernel)."
    )
    mutual_auth: bool = Field(
        True, description="Mutual authentication through SPIRE (authentication.mode: required)."
    )
    l7_services: ServiceSelection = Field(
        "none",
        description="Services with an L7 rule (CiliumNetworkPolicy HTTP rules): their traffic "
        "passes the source node's Envoy, which parses it and forwards each request to the "
        "connection's original destination (the pod socket-LB picked). Services named in the "
        "traffic block are L7 too, balanced per request (CiliumEnvoyConfig).",
    )
    lb_l7_services: ServiceSelection = Field(
        "none",
        description="Services annotated service.cilium.io/lb-l7: enabled (Cilium's proxy load "
        "balancing, loadBalancer.l7.backend: envoy): their traffic passes the source node's "
        "Envoy, which balances each request (round robin, the operator's default), with no "
        "rule in the traffic block.",
    )
    envoy_workers: int = Field(2, ge=1, le=1024, description="Per-node Envoy worker threads.")
    envoy_model: str | None = Field(None, description="Cost model (default models/cilium-envoy).")
    envoy_resources: Resources = Field(
        CILIUM_ENVOY_RESOURCES,
        description="Requests and limits of each node's Envoy, the cilium-envoy DaemonSet's "
        "container (default the Cilium chart's envoy.resources: none). A CPU limit throttles "
        "it and a memory limit below its modelled memory OOM-kills it, as a sidecar's.",
    )
