"""Data planes, one per mesh architecture, selected by mesh name.

Each data plane carries a logical call from a caller (a pod or a workload's client)
to a service and returns the status the caller sees. The `none` baseline goes
straight through kube-proxy; sidecar and ambient data planes add their proxies'
hops, CPU and connection handling around the same application model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from meshsim.errors import MeshsimError
from meshsim.sim.dataplanes.ambient import AmbientDataPlane
from meshsim.sim.dataplanes.base import DataPlane
from meshsim.sim.dataplanes.cilium import CiliumDataPlane
from meshsim.sim.dataplanes.none import NoMesh
from meshsim.sim.dataplanes.sidecar import IstioSidecars, LinkerdSidecars

if TYPE_CHECKING:
    from meshsim.sim.engine import Simulation

DATA_PLANES: dict[str, Callable[[Simulation], DataPlane]] = {
    "none": NoMesh,
    "istio": IstioSidecars,
    "linkerd": LinkerdSidecars,
    "istio-ambient": AmbientDataPlane,
    "cilium": CiliumDataPlane,
}
"""Constructors by mesh name; later data planes register here."""


def data_plane_for(mesh: str, sim: Simulation) -> DataPlane:
    try:
        factory = DATA_PLANES[mesh]
    except KeyError:
        known = ", ".join(sorted(DATA_PLANES))
        raise MeshsimError(
            f"mesh '{mesh}' has no data-plane model yet (available: {known})"
        ) from None
    return factory(sim)


__all__ = [
    "DATA_PLANES",
    "AmbientDataPlane",
    "CiliumDataPlane",
    "DataPlane",
    "IstioSidecars",
    "LinkerdSidecars",
    "NoMesh",
    "data_plane_for",
]
