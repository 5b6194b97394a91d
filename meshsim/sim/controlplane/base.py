"""The seam between a control plane and the data plane, and what all control planes share.

The engine tells the control plane about every change in the cluster
(:meth:`ControlPlane.on_endpoints`, :meth:`ControlPlane.on_pod_started`, config changes
and outages from the timeline). A mesh's control plane turns them into updates that reach
each proxy later; the data plane reads a proxy's endpoints through the view attached to it
(``L7Proxy.view``) and asks :meth:`ControlPlane.gate` and :meth:`ControlPlane.authorize`
before a request enters a pod.

:class:`KubeOnly` is the `none` mesh (and any mesh with ``control_plane.enabled: false``):
kube-proxy semantics. Callers read the cluster's endpoints as they are at that instant (the
EndpointSlice controller, kube-proxy's sync and its iptables rules are not modelled, so a
dead pod receives no new traffic once it is out of the endpoints, and a new pod receives
traffic at once); pods need no certificate and no policy applies. Its convergence time is
therefore 0 by construction, not a measurement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshsim.sim.app import CONNECT_FAILURE

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.policy.authz import Decision
    from meshsim.sim.app import Client, Pod, Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation


class ControlPlane:
    """The `none` behaviour; meshes override what they do differently."""

    name = "kube"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self.stale_attempts = 0
        """Tries sent to a pod that had died (the sender's endpoints were stale)."""
        self.terminating_attempts = 0
        """Tries sent to a pod that was terminating (still serving: no failure)."""
        self.certificate_failures = 0
        """Tries refused because a side had no valid certificate."""
        self.denied = 0
        self.authz_checks = 0

    # ----------------------------------------------------------------- cluster changes

    def attach(self, proxy: Proxy) -> None:
        """A proxy exists (at start, or for a new pod): give it its view of the endpoints."""

    def detach(self, proxy: Proxy) -> None:
        """A proxy is gone (its pod died)."""

    def attach_pod(self, pod: Pod) -> None:
        proxy = getattr(self.sim.data_plane, "sidecars", {}).get(pod)
        if proxy is not None:
            self.attach(proxy)

    def on_pod_died(self, pod: Pod) -> None:
        proxy = getattr(self.sim.data_plane, "sidecars", {}).get(pod)
        if proxy is not None:
            self.detach(proxy)

    def on_endpoints(self, service: ServiceRuntime) -> None:
        """The cluster's endpoints of ``service`` changed just now."""

    def on_pod_started(self, pod: Pod) -> bool:
        """A new pod: return True if it is ready at once, else call ``sim.mark_ready`` later."""
        return True

    def on_config(self, target: str) -> None:
        """A configuration change about ``target`` (a service, or '*')."""

    def set_down(self, down: bool) -> None:
        """The control plane stops (True) or comes back (False)."""

    def set_slow(self, factor: float) -> None:
        """Control-plane CPU work takes ``factor`` times as long (1.0: normal)."""

    # ----------------------------------------------------------------- requests

    def gate(self, src: Pod | None, dst: Pod, mtls: bool) -> int | None:
        """Before a try reaches ``dst``: a transport failure status, or None to go ahead."""
        if not dst.alive:
            self.stale_attempts += 1
            return CONNECT_FAILURE
        if not dst.ready:
            self.terminating_attempts += 1
        return None

    def authorize(
        self, src: Pod | Client | None, dst: Pod, req: Request
    ) -> tuple[Decision, float] | None:
        """The destination proxy's policy check: (decision, CPU seconds), None if no policy."""
        return None

    # ----------------------------------------------------------------- results

    def cost_models(self) -> list[ProxyCostModel]:
        """The control plane's cost models (for provenance in results)."""
        return []

    def summary(self, warmup_s: float, end_s: float) -> dict[str, Any]:
        return {
            "mesh_control_plane": self.name,
            "cpu_vcpu": 0.0,
            "memory_mb": 0.0,
            "convergence_s": None,
            "stale_endpoint_attempts": self.stale_attempts,
            "terminating_endpoint_attempts": self.terminating_attempts,
            "certificate_failures": self.certificate_failures,
            "authz_denied": self.denied,
            "authz_checks": self.authz_checks,
        }


class KubeOnly(ControlPlane):
    name = "kube"
