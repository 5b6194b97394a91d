"""Several clusters in one mesh (``cluster.zones[].cluster``): cross-cluster endpoint
discovery and the east-west path.

Discovery is done by the control planes themselves (:mod:`meshsim.sim.controlplane.clusters`:
an istiod or a Linkerd control plane per cluster, or one istiod for all under Istio
primary-remote), along the mesh's documented path (``multicluster.istio`` /
``multicluster.linkerd``; docs/mesh-semantics.md §15):

======================  =================================================================
Istio multi-primary     each cluster's istiod watches the other clusters' API servers
                        (remote secrets): remote informer event + the watch crossing
                        the clusters + its own debounce + its push to its own proxies
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

This module gives the documented sum of each path (``discovery_delay_s``, from the model
files' ``kube_event_delay_ms``, ``debounce_after_ms``, ``send_latency_ms`` and the network's
``cross_cluster_us``) next to what the run measured from its actual endpoint changes
(``convergence``: per path, the time from the change to the last proxy of the other cluster
that applied it, by part), in ``summary.json``'s ``topology.multicluster``.

Gateways (Istio's east-west gateway with ``east_west_gateway``, Linkerd's gateway mode) are
pods: ``gateway_replicas`` per cluster, placed on that cluster's nodes, connected to its
control plane, and every try from a proxy of another cluster passes through one of them (a
replica per connection, round-robin), which costs CPU on its worker and node:

- Istio's east-west gateway is an Envoy routing the client's mTLS stream by SNI without
  terminating it (``AUTO_PASSTHROUGH``): an L4 proxy. Per request it does one proxied
  exchange of socket I/O (``socket_io_us``, split over the two directions) and copies the
  bytes (``payload_cpu_us_per_kib``), from the mesh's Envoy model; no TLS record, HTTP or
  telemetry work. Per connection it accepts one and connects one (``tcp_connection_cpu_us``
  twice; 0 in the shipped model). :func:`l4_passthrough_us`.
- Linkerd's gateway is a linkerd2-proxy whose inbound side terminates the caller's mTLS
  (identity checked) and routes to its outbound side, which opens mTLS to the target
  (linkerd/linkerd2#4528): a whole proxied request of the mesh's proxy model plus the second
  TLS leg's record work, and per connection a TLS handshake on each side.
  :func:`linkerd_gateway_us`.

Both add their model's ``hop_latency_us`` once per direction to every message between the
clusters (a gateway is one proxy on the path). An idle worker's wake-up is charged as for
any proxy of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.models.parameters import KIB
from meshsim.sim.controlplane.clusters import ClusterControlPlanes
from meshsim.sim.dataplanes.routing import L7Proxy

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.sim.app import Pod, Request
    from meshsim.sim.dataplanes.proxy import Worker
    from meshsim.sim.dataplanes.routing import Attempt
    from meshsim.sim.dataplanes.sidecar import SidecarDataPlane
    from meshsim.sim.engine import Simulation
    from meshsim.sim.topology import Topology


def l4_passthrough_us(
    model: ProxyCostModel, request_bytes: int, response_bytes: int
) -> tuple[float, float]:
    """CPU (request path, response path) of an Envoy forwarding one TLS-passthrough
    exchange: half the proxied exchange's socket I/O each way, plus the copy of its bytes."""
    v = model.value
    half = v("socket_io_us") / 2.0
    per_kib = v("payload_cpu_us_per_kib")
    return half + per_kib * request_bytes / KIB, half + per_kib * response_bytes / KIB


def linkerd_gateway_us(
    model: ProxyCostModel, request_bytes: int, response_bytes: int
) -> tuple[float, float, float]:
    """CPU (request path, response path, after) of a linkerd2-proxy gateway for one request:
    the proxied request of ``model`` with mTLS, plus the second mTLS leg's records."""
    v = model.value
    req, resp, after = model.request_cpu_us(request_bytes, response_bytes, mtls=True)
    leg = v("tls_record_cpu_us_per_kib")
    fixed = v("tls_request_cpu_us") / 2.0
    return req + fixed + leg * request_bytes / KIB, resp + fixed + leg * response_bytes / KIB, after


@dataclass
class ClusterGateway:
    """One cluster's gateway: its replicas and what went through them (the whole run)."""

    cluster: str
    kind: str
    proxies: list[L7Proxy]
    connection_us: float
    requests: int = 0
    connections: int = 0
    _pins: dict[tuple[str, int, str], tuple[L7Proxy, Worker]] = field(default_factory=dict)


class MultiCluster:
    """The documented discovery paths, the gateways, and what the run measured."""

    def __init__(self, sim: Simulation, topology: Topology, mesh: str) -> None:
        self.sim = sim
        self.env = sim.env
        self.topology = topology
        spec = sim.scenario.multicluster
        self.mesh = mesh
        self.primary = topology.clusters[0]
        cp = sim.control_plane
        self.planes = cp if isinstance(cp, ClusterControlPlanes) else None
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
            self.parts = {
                "remote_api_watch_s": kube_s,
                "watch_crossing_s": cross_s,
                "debounce_s": v("debounce_after_ms"),
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
        self.east_west = spec.east_west_gateway if mesh == "istio" else self.mode == "gateway"
        self.gateways: dict[str, ClusterGateway] = {}
        if self.east_west:
            self._install_gateways(spec.gateway_replicas)

    # ----------------------------------------------------------------- gateways

    def _install_gateways(self, replicas: int) -> None:
        from meshsim.sim.dataplanes.sidecar import SidecarDataPlane
        from meshsim.sim.topology import ZonedNetwork

        sim = self.sim
        dp = sim.data_plane
        assert isinstance(dp, SidecarDataPlane)
        self.dp: SidecarDataPlane = dp
        model = dp.model
        kind = "east-west-gateway" if self.mesh == "istio" else "linkerd-gateway"
        if self.mesh == "istio":
            connection_us = 2.0 * model.tcp_connection_cpu_us
        else:
            connection_us = (
                2.0 * model.tcp_connection_cpu_us
                + model.handshake_cpu_us("server")
                + model.handshake_cpu_us("client")
            )
        topo = self.topology
        for cluster in topo.clusters:
            nodes = [
                n
                for n in sim.nodes
                if topo.by_index[n.index].cluster == cluster
                and topo.by_index[n.index].zone not in topo.vm_zones
            ]
            placed: dict[int, int] = {}
            proxies: list[L7Proxy] = []
            for i in range(replicas):
                # Spread like the scheduler: fewest pods (and gateways placed), lowest index.
                node = min(nodes, key=lambda n: (len(n.pods) + placed.get(n.index, 0), n.index))
                placed[node.index] = placed.get(node.index, 0) + 1
                proxy = L7Proxy(
                    self.env, f"{cluster}/{kind}-{i}", kind, model, node,
                    model.worker_threads, stealing=dp.stealing, pick=dp._accept, pod=None,
                    telemetry=self.mesh != "istio", rng=dp._lb_rng, resilience=dp.resilience,
                    cpu_factor=dp.cpu_factor(model), drift=dp.cpu_drift(model),
                )  # fmt: skip
                dp.proxies.append(proxy)
                sim.control_plane.attach(proxy)
                proxies.append(proxy)
            self.gateways[cluster] = ClusterGateway(cluster, kind, proxies, connection_us)
        if isinstance(sim.network, ZonedNetwork):
            # One proxy on the path, each way.
            sim.network.east_west_s = model.hop_latency_us * 1e-6
        self._inner: Attempt = dp._attempt_fn
        dp._attempt_fn = self._attempt

    def _cluster(self, node: Any) -> str | None:
        loc = self.topology.of(node)
        return None if loc is None else loc.cluster

    def _attempt(
        self,
        proxy: L7Proxy,
        worker: Worker,
        pod: Pod,
        req: Request,
        nbytes: int,
        connected: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """A try from ``proxy`` to ``pod``; across clusters, through the pod's cluster's
        gateway (its CPU before the try goes on and after its answer comes back). The
        connection is the caller's to the pod, through the gateway (``connected``): one
        it holds is had before the gateway's work; a new one when the inner attempt has
        opened it."""
        inner = self._inner
        src = self._cluster(proxy.net_node)
        gw = None
        if src is not None and pod.alive:
            dst = self._cluster(pod.node)
            if dst != src and dst is not None:
                gw = self.gateways.get(dst)
        if gw is None:
            status: int = yield from inner(proxy, worker, pod, req, nbytes, connected)
            return status
        replica, gw_worker, fresh = self._pin(gw, proxy, worker, pod)
        resp_bytes = pod.response_bytes
        if self.mesh == "istio":
            req_us, resp_us = l4_passthrough_us(replica.model, nbytes, resp_bytes)
            after_us = 0.0
        else:
            req_us, resp_us, after_us = linkerd_gateway_us(replica.model, nbytes, resp_bytes)
        gw.requests += 1
        gw_worker.requests += 1
        if fresh:
            gw.connections += 1
        open_us = gw.connection_us if fresh else 0.0
        if not fresh and connected is not None:
            connected()
            connected = None
        yield from replica.work(gw_worker, (req_us + open_us) * 1e-6)
        status = yield from inner(proxy, worker, pod, req, nbytes, connected)
        yield from replica.work_then_linger(gw_worker, resp_us * 1e-6, after_us * 1e-6)
        return status

    def _pin(
        self, gw: ClusterGateway, proxy: L7Proxy, worker: Worker, pod: Pod
    ) -> tuple[L7Proxy, Worker, bool]:
        """The replica and worker of the connection this try rides, and whether the try
        opens it (the caller's pool has none to reuse)."""
        dp = self.dp
        pools = dp.pools
        key = dp.pool_key(proxy, worker, pod)
        if not pools.keep_alive:
            fresh = True
        elif dp.h2(pod.service):
            fresh = not pools._h2.get(key)
        else:
            fresh = not pools._idle.get(key)
        pin_key = (proxy.name, worker.index, pod.name)
        pinned = gw._pins.get(pin_key)
        if pinned is None:
            replica = gw.proxies[len(gw._pins) % len(gw.proxies)]
            pinned = gw._pins[pin_key] = (replica, replica.accept())
        return pinned[0], pinned[1], fresh

    # ----------------------------------------------------------------- discovery

    def delay_s(self, src_cluster: str, dst_cluster: str) -> float:
        """The documented time for a change of an endpoint in ``dst_cluster`` to reach a
        proxy in ``src_cluster`` (the model's parts, no CPU or queueing; 0 for the local
        path's cross-cluster share)."""
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

    def summary(self) -> dict[str, Any]:
        clusters = self.topology.clusters
        out: dict[str, Any] = {
            "mode": self.mode,
            "primary": self.primary if self.mode == "primary-remote" else None,
            "discovery_delay_parts_s": dict(self.parts),
            "discovery_delay_s": {
                f"{a}<-{b}": self.delay_s(a, b) for a in clusters for b in clusters if a != b
            },
            "east_west_gateway": self.east_west,
        }
        if self.planes is not None:
            out["control_planes"] = len(self.planes.planes)
            out["convergence"] = self.planes.convergence()
        if self.gateways:
            out["gateways"] = {c: self._gateway_summary(g) for c, g in self.gateways.items()}
        return out

    def _gateway_summary(self, gw: ClusterGateway) -> dict[str, Any]:
        cpu_s = sum(p.cpu_s for p in gw.proxies)
        wakeups = sum(w.wakeups for p in gw.proxies for w in p.workers)
        return {
            "kind": gw.kind,
            "replicas": len(gw.proxies),
            "nodes": [p.node.name for p in gw.proxies],
            "requests": gw.requests,
            "connections": gw.connections,
            "wakeups": wakeups,
            "cpu_s": cpu_s,
            "cpu_us_per_request": cpu_s / gw.requests * 1e6 if gw.requests else None,
            "connection_cpu_us": gw.connection_us,
        }


def multicluster_for(sim: Simulation) -> MultiCluster | None:
    """The cross-cluster discovery of a run whose zones span clusters (Istio or Linkerd
    sidecars), else None."""
    topo: Topology = sim.topology
    if len(topo.clusters) < 2 or sim.mesh not in ("istio", "linkerd"):
        return None
    return MultiCluster(sim, topo, sim.mesh)
