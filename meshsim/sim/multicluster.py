"""Several clusters in one mesh (``cluster.zones[].cluster``): cross-cluster endpoint
discovery and the east-west path.

When the zones span two or more clusters, a proxy learns of endpoints in *another* cluster
by a longer path than the local one, which depends on the mesh's multi-cluster model
(``multicluster.istio`` / ``multicluster.linkerd``; docs/mesh-semantics.md §15):

======================  =================================================================
Istio multi-primary     each cluster's istiod watches the other clusters' API servers
                        (remote secrets): remote informer event + the watch crossing
                        the clusters + debounce + push
Istio primary-remote    one istiod (the first cluster's) for all: a change in a remote
                        cluster crosses once to istiod; every push to a remote cluster's
                        proxies crosses back
Linkerd pod-to-pod      the service mirror watches the linked cluster's API server and
                        writes mirror EndpointSlices locally, which the destination
                        controller's informer then reads: two informer events
Linkerd gateway         the mirror service's only endpoint is the linked cluster's
                        gateway, whose proxy balances over its own cluster's endpoints
                        with local discovery: no cross-cluster discovery delay, one
                        gateway hop
======================  =================================================================

The simulator's control plane keeps doing the local path for every proxy; for endpoints in
another cluster this module shows a proxy the kube endpoints as they were ``delay`` ago,
where ``delay`` is the sum of the path's parts, each read from the control plane's model
file (``kube_event_delay_ms``, ``debounce_after_ms``, ``send_latency_ms``) or from the
network (``cross_cluster_us``). ``summary.json`` gives the parts (``topology.multicluster``).
East-west gateways (Istio on separate networks, Linkerd's gateway mode) add their hop
latency to every cross-cluster message (mTLS passes through: no TLS termination); their CPU
is not charged yet.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshsim.sim.app import Pod, ServiceRuntime
    from meshsim.sim.engine import Simulation
    from meshsim.sim.topology import Topology


class MultiCluster:
    """Remote endpoints as a proxy in each cluster sees them."""

    def __init__(self, sim: Simulation, topology: Topology, mesh: str) -> None:
        self.sim = sim
        self.env = sim.env
        self.topology = topology
        spec = sim.scenario.multicluster
        self.mesh = mesh
        self.primary = topology.clusters[0]
        cp = sim.control_plane
        model = getattr(cp, "model", None)

        def v(name: str) -> float:
            return float(model.value(name)) * 1e-3 if model is not None else 0.0

        net = sim.scenario.cluster.network
        cross_s = (net.cross_cluster_us if net.cross_cluster_us is not None
                   else net.cross_zone_us) * 1e-6  # fmt: skip
        kube_s = v("kube_event_delay_ms")
        send_s = v("send_latency_ms")
        self.parts: dict[str, float]
        self.mode: str
        if mesh == "istio":
            self.mode = spec.istio
            debounce_s = v("debounce_after_ms")
            self.parts = {
                "remote_api_watch_s": kube_s,
                "watch_crossing_s": cross_s,
                "debounce_s": debounce_s,
                "push_s": send_s,
            }
            if self.mode == "primary-remote":
                self.parts["push_crossing_s"] = cross_s
        else:
            self.mode = spec.linkerd
            if self.mode == "gateway":
                self.parts = {"remote_gateway_local_discovery_s": kube_s + send_s}
            else:
                self.parts = {
                    "service_mirror_watch_s": kube_s,
                    "watch_crossing_s": cross_s,
                    "mirror_endpointslice_informer_s": kube_s,
                    "stream_send_s": send_s,
                }
        self.history: dict[str, tuple[list[float], list[list[Pod]]]] = {
            name: ([0.0], [list(svc.endpoints)]) for name, svc in sim.services.items()
        }
        original = cp.on_endpoints

        def recording(service: ServiceRuntime) -> None:
            times, snaps = self.history[service.name]
            times.append(self.env.now)
            snaps.append(list(service.endpoints))
            original(service)

        # The control plane is told of every endpoint change through this one method: keep
        # the kube truth's history for the remote views, then let it do its local path.
        cp.on_endpoints = recording  # type: ignore[method-assign]
        self.east_west = spec.east_west_gateway if mesh == "istio" else self.mode == "gateway"
        if self.east_west:
            from meshsim.sim.topology import ZonedNetwork

            dp_models = sim.data_plane.cost_models()
            hop_us = dp_models[0].hop_latency_us if dp_models else 0.0
            if isinstance(sim.network, ZonedNetwork):
                # In and out of the remote cluster's gateway, each way.
                sim.network.east_west_s = 2.0 * hop_us * 1e-6
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int, int], list[Pod]]] = {}

    def delay_s(self, src_cluster: str, dst_cluster: str) -> float:
        """How long a change of an endpoint in ``dst_cluster`` takes to reach a proxy in
        ``src_cluster`` (0 for its own cluster: the control plane's local path applies)."""
        if src_cluster == dst_cluster:
            if self.mode == "primary-remote" and src_cluster != self.primary:
                return 2.0 * self.parts["watch_crossing_s"]  # to the primary and back
            return 0.0
        total = sum(self.parts.values())
        if self.mode == "primary-remote" and src_cluster == self.primary:
            total -= self.parts["push_crossing_s"]  # its proxies are the primary's own
        if self.mode == "gateway":
            return 0.0  # the remote gateway's proxy discovers locally
        return total

    def visible(self, proxy: Any, service: ServiceRuntime, view: list[Pod]) -> list[Pod]:
        """``view`` with the other clusters' endpoints as they were ``delay`` ago."""
        topo = self.topology
        src = topo.of(proxy.node)
        if src is None:
            return view
        times, snaps = self.history[service.name]
        clusters = topo.clusters
        index = tuple(
            bisect_right(times, self.env.now - self.delay_s(src.cluster, c)) - 1 for c in clusters
        )
        key = (id(view), len(view), service.generation, hash(index))
        cached = self._cache.get((proxy.name, service.name))
        if cached is not None and cached[0] == key:
            return cached[1]

        def cluster_of(pod: Pod) -> str:
            loc = topo.of(pod.node)
            assert loc is not None
            return loc.cluster

        local_path = self.delay_s(src.cluster, src.cluster) == 0.0
        out = [p for p in view if cluster_of(p) == src.cluster] if local_path else []
        for c, i in zip(clusters, index, strict=True):
            if c == src.cluster and local_path:
                continue
            out.extend(p for p in snaps[max(i, 0)] if cluster_of(p) == c)
        self._cache[(proxy.name, service.name)] = (key, out)
        return out

    def summary(self) -> dict[str, Any]:
        clusters = self.topology.clusters
        return {
            "mode": self.mode,
            "primary": self.primary if self.mode == "primary-remote" else None,
            "discovery_delay_parts_s": dict(self.parts),
            "discovery_delay_s": {
                f"{a}<-{b}": self.delay_s(a, b) for a in clusters for b in clusters if a != b
            },
            "east_west_gateway": self.east_west,
        }


def multicluster_for(sim: Simulation) -> MultiCluster | None:
    """The cross-cluster discovery of a run whose zones span clusters (Istio or Linkerd
    sidecars), else None."""
    topo: Topology = sim.topology
    if len(topo.clusters) < 2 or sim.mesh not in ("istio", "linkerd"):
        return None
    return MultiCluster(sim, topo, sim.mesh)
