"""Control planes: how changes in the cluster reach each proxy, certificates, authorization.

One control plane per mesh (:func:`control_plane_for`): istiod for Istio (its sidecars, or
under ambient its ztunnels and waypoints), Linkerd's destination and identity controllers
for Linkerd, and kube-proxy semantics for `none` and any scenario with
``control_plane.enabled: false``. Istio and Linkerd sidecars over several clusters get one
per cluster, or one for all under Istio primary-remote (:mod:`.clusters`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshsim.sim.controlplane.base import ControlPlane, KubeOnly

if TYPE_CHECKING:
    from meshsim.sim.engine import Simulation

__all__ = ["ControlPlane", "KubeOnly", "control_plane_for"]


def control_plane_for(sim: Simulation) -> ControlPlane:
    if not sim.scenario.control_plane.enabled:
        return KubeOnly(sim)
    if len(sim.topology.clusters) > 1 and sim.mesh in ("istio", "linkerd"):
        return _multicluster(sim)
    if sim.mesh in ("istio", "istio-ambient"):
        from meshsim.sim.controlplane.istiod import Istiod

        return Istiod(sim)
    if sim.mesh == "linkerd":
        from meshsim.sim.controlplane.linkerd import LinkerdControlPlane

        return LinkerdControlPlane(sim)
    if sim.mesh == "cilium":
        from meshsim.sim.controlplane.cilium import CiliumControlPlane

        return CiliumControlPlane(sim)
    return KubeOnly(sim)


def _multicluster(sim: Simulation) -> ControlPlane:
    """Istio or Linkerd sidecars over several clusters: a control plane per cluster, or
    (Istio primary-remote) one for all (:mod:`.clusters`)."""
    from meshsim.sim.controlplane.clusters import ClusterControlPlanes

    spec = sim.scenario.multicluster
    if sim.mesh == "istio":
        from meshsim.sim.controlplane.istiod import Istiod

        return ClusterControlPlanes(sim, lambda c: Istiod(sim, c), spec.istio)
    from meshsim.sim.controlplane.linkerd import LinkerdControlPlane

    return ClusterControlPlanes(sim, lambda c: LinkerdControlPlane(sim, c), spec.linkerd)
