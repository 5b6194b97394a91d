"""Cilium's control plane: a cilium-agent per node, the operator, SPIRE (issue 16).

What it charges (models/cilium-agent.yaml, cilium-operator.yaml, spire.yaml):

- agents: upkeep CPU per node, one endpoint regeneration per pod created or changed, the
  mutual-auth handshakes the data plane asked for; memory per node for its endpoints and for
  every identity in the cluster (one per service here, Cilium's identities being label sets);
- the operator: upkeep and memory per identity;
- SPIRE: a server (memory per registration entry, an X509-SVID signed per pod per TTL) and an
  agent per node.

Endpoints: agents learn of pod changes through the Kubernetes API and Cilium's own CRDs; a new
pod becomes reachable once its identity has reached every agent (``identity_propagation_ms``)
and, with mutual authentication, once its SVID has reached its node's spire-agent (up to one
``svid_sync_interval_s``). Callers read the cluster's endpoints otherwise (socket-LB's service
map is kept in step by the agent; its delay is not modelled apart), so ``convergence_s`` is the
new pods' time to ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshsim.models import ProxyCostModel, default_model
from meshsim.models.samples import apply_values
from meshsim.sim.controlplane.base import ControlPlane

if TYPE_CHECKING:
    from meshsim.sim.app import Pod
    from meshsim.sim.engine import Simulation


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class CiliumControlPlane(ControlPlane):
    name = "cilium"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        opts = sim.scenario.mesh_options.cilium
        values = sim.model_values
        self.agent = apply_values(default_model("cilium-agent"), values)
        self.operator = apply_values(default_model("cilium-operator"), values)
        self.spire = apply_values(default_model("spire"), values)
        self.mutual_auth = opts.mutual_auth
        self.auth_latency_s = (
            self.spire.value("auth_handshake_latency_ms") * 1e-3 if self.mutual_auth else 0.0
        )
        """How long the first connection of a new identity pair waits (read by the data plane)."""
        self.regenerations = 0
        self.ready_delays: list[float] = []

    def on_pod_started(self, pod: Pod) -> bool:
        """Ready once its identity reached every agent (and its SVID its spire-agent)."""
        pod.ready = False
        self.regenerations += 1
        delay = self.agent.value("identity_propagation_ms") * 1e-3
        if self.mutual_auth:
            delay += self.spire.value("svid_sync_interval_s")
        self.ready_delays.append(delay)
        timer = self.env.timeout(delay)
        assert timer.callbacks is not None
        timer.callbacks.append(lambda _e: self.sim.mark_ready(pod))
        return False

    def cost_models(self) -> list[ProxyCostModel]:
        return [self.operator, *([self.spire] if self.mutual_auth else [])]

    def summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        out = super().summary(warmup_s, end_s)
        sim = self.sim
        window = max(end_s - warmup_s, 1e-9)
        nodes = len(sim.nodes)
        pods = [p for s in sim.services.values() for p in s.pods if p.alive]
        identities = len(sim.services)
        a, o, s = self.agent.value, self.operator.value, self.spire.value
        handshakes = getattr(sim.data_plane, "auth_handshakes", 0) if self.mutual_auth else 0
        cpu_s = (
            self.regenerations * a("endpoint_regeneration_cpu_us")
            + 2 * handshakes * s("auth_handshake_us")
        ) * 1e-6
        cpu = (nodes * a("agent_upkeep_cpu_us_per_s") + o("operator_upkeep_cpu_us_per_s")) * 1e-6
        cpu += cpu_s / window
        memory = (
            nodes * a("agent_base_memory_mb")
            + (len(pods) * a("agent_endpoint_kb") + nodes * identities * a("agent_identity_kb"))
            / 1024.0
        )
        memory += o("operator_base_memory_mb") + identities * o("operator_identity_kb") / 1024.0
        if self.mutual_auth:
            cpu += len(pods) * s("svid_sign_us") * 1e-6 / s("svid_ttl_s")
            memory += (s("spire_server_base_memory_mb") + nodes * s("spire_agent_memory_mb")
                       + identities * s("spire_server_entry_kb") / 1024.0)  # fmt: skip
        out["cpu_vcpu"] = cpu
        out["memory_mb"] = memory
        delays = self.ready_delays
        out["convergence_s"] = None if not delays else {
            "p50": _quantile(delays, 0.5), "p90": _quantile(delays, 0.9),
            "p99": _quantile(delays, 0.99), "max": max(delays), "count": len(delays),
        }  # fmt: skip
        out["agents"] = nodes
        out["identities"] = identities
        out["auth_handshakes"] = handshakes
        out["endpoint_regenerations"] = self.regenerations
        return out
