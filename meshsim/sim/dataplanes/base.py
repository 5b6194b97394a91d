"""The seam between the application model and a mesh's data plane."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Client, Pod, Request, ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation


class DataPlane(ABC):
    """Base class: how a call travels from a caller to a service and back."""

    name = "base"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self.warnings: list[str] = []
        self.proxies: list[Proxy] = []
        """Every proxy the data plane runs (none for the `none` baseline)."""

    def install(self) -> None:  # noqa: B027 - optional hook; `none` has no proxies
        """Create the mesh's proxies for the pods and nodes that exist at start."""

    def on_pod_started(self, pod: Pod) -> None:  # noqa: B027 - optional hook
        """A pod was created after the start (scale-up, replacement)."""

    @abstractmethod
    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        """Carry one call from ``src`` to ``service``; return the status ``src`` sees."""

    def client_host(self, client: Client) -> Node | None:
        """The node a workload's client runs on: with ``mesh_options.meshed_clients``, its
        pod's (:meth:`client_node`); else None, outside the cluster."""
        return self.client_node() if self.sim.scenario.mesh_options.meshed_clients else None

    def client_node(self) -> Node:
        """The node of a client's pod: fewest pods, then lowest index (not recorded in the
        node's pods, so it never shifts the placement of the scenario's pods)."""
        return min(self.sim.nodes, key=lambda n: (len(n.pods), n.index))

    def cost_models(self) -> list[ProxyCostModel]:
        """The cost models of the proxies this data plane runs (for provenance in results)."""
        return []
