"""Where nodes are: their zone, cluster and region (``cluster.zones``), and the network
between them.

Nodes are numbered zone by zone in the order of ``cluster.zones``; without zones the whole
cluster is one zone (``zone-1`` of ``cluster-1``) and nothing here changes a run: the plain
:class:`~meshsim.sim.cluster.NetworkModel` is used. With zones, a message between nodes of
two zones takes ``cross_zone_us`` (between clusters ``cross_cluster_us``) plus its bytes at
``cross_zone_bandwidth_gbps``, instead of ``cross_node_us`` and ``bandwidth_gbps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshsim.scenario.edges import DEFAULT_CLUSTER, DEFAULT_REGION
from meshsim.sim.cluster import NetworkModel

if TYPE_CHECKING:
    from meshsim.scenario.cluster import Network
    from meshsim.scenario.model import Scenario

SINGLE_ZONE = "zone-1"


@dataclass(frozen=True)
class Locality:
    """A node's place: region, zone, cluster."""

    region: str
    zone: str
    cluster: str


class Topology:
    """Each node's locality, by node index."""

    def __init__(self, scenario: Scenario) -> None:
        spec = scenario.cluster
        self.zoned = spec.zones is not None
        self.by_index: list[Locality] = []
        if spec.zones is None:
            self.by_index = [Locality(DEFAULT_REGION, SINGLE_ZONE, DEFAULT_CLUSTER)] * spec.nodes
        else:
            for zone in spec.zones:
                here = Locality(zone.region, zone.name, zone.cluster)
                self.by_index.extend([here] * zone.nodes)
        self.vm_zones: set[str] = {z.name for z in spec.zones or [] if z.vm}
        self.vm_network_s: dict[str, float] = {
            z.name: (z.network_us if z.network_us is not None else spec.network.cross_zone_us)
            * 1e-6
            for z in spec.zones or []
            if z.vm
        }
        self.zones: list[str] = list(dict.fromkeys(loc.zone for loc in self.by_index))
        self.clusters: list[str] = list(dict.fromkeys(loc.cluster for loc in self.by_index))
        self.cores = spec.cores_per_node

    def of(self, node: Any) -> Locality | None:
        """The locality of a node (None: outside every cluster)."""
        if node is None:
            return None
        index: int = node.index
        return self.by_index[index]

    def nodes_for(self, nodes: list[Any], zones: list[str] | None) -> list[Any]:
        """The nodes a pod may be placed on: those of ``zones`` if given, else every node
        that is not a VM (all of them without cluster.zones)."""
        if not self.zoned:
            return nodes
        if zones is None:
            if not self.vm_zones:
                return nodes
            return [n for n in nodes if self.by_index[n.index].zone not in self.vm_zones]
        wanted = set(zones)
        return [n for n in nodes if self.by_index[n.index].zone in wanted]

    def zone_cpu(self, down: set[str]) -> dict[str, float]:
        """Allocatable cores per zone (Kubernetes nodes only), leaving out zones that are
        down."""
        out: dict[str, float] = {}
        for loc in self.by_index:
            if loc.zone not in down and loc.zone not in self.vm_zones:
                out[loc.zone] = out.get(loc.zone, 0.0) + self.cores
        return out


class ZonedNetwork(NetworkModel):
    """:class:`NetworkModel` with zone- and cluster-crossing latency and bandwidth."""

    __slots__ = ("_cluster_of", "_vm_s", "_zone_of", "cross_cluster_s", "cross_zone_s",
                 "east_west_s", "zone_spb")  # fmt: skip

    def __init__(self, spec: Network, topology: Topology) -> None:
        super().__init__(spec)
        self.cross_zone_s = spec.cross_zone_us * 1e-6
        cluster_us = spec.cross_cluster_us
        self.cross_cluster_s = (cluster_us if cluster_us is not None else spec.cross_zone_us) * 1e-6
        gbps = spec.cross_zone_bandwidth_gbps or spec.bandwidth_gbps
        self.zone_spb = 8.0 / (gbps * 1e9)
        self._zone_of = [loc.zone for loc in topology.by_index]
        self._cluster_of = [loc.cluster for loc in topology.by_index]
        self._vm_s: list[float | None] = [
            topology.vm_network_s.get(loc.zone) for loc in topology.by_index
        ]
        """Per node: its VM zone's one-way latency to the cluster, None for a Kubernetes node."""
        self.east_west_s = 0.0
        """Added to every cross-cluster message through east-west gateways
        (meshsim.sim.multicluster)."""

    def delay(self, src: Any, dst: Any, nbytes: int) -> float:
        if src is None or dst is None or src is dst:
            return super().delay(src, dst, nbytes)
        a: int = src.index
        b: int = dst.index
        vm = self._vm_s[a] if self._vm_s[a] is not None else self._vm_s[b]
        if vm is not None and self._zone_of[a] != self._zone_of[b]:
            return vm + nbytes * self.zone_spb  # a VM's own link to the cluster
        if self._cluster_of[a] != self._cluster_of[b]:
            return self.cross_cluster_s + self.east_west_s + nbytes * self.zone_spb
        if self._zone_of[a] != self._zone_of[b]:
            return self.cross_zone_s + nbytes * self.zone_spb
        return super().delay(src, dst, nbytes)


def network_for(scenario: Scenario, topology: Topology) -> NetworkModel:
    """The scenario's network model: the plain one unless the cluster has zones."""
    if not topology.zoned:
        return NetworkModel(scenario.cluster.network)
    return ZonedNetwork(scenario.cluster.network, topology)
