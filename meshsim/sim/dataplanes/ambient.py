"""Istio ambient: a ztunnel per node (L4) and optional waypoints (Envoy, L7) per service.

Paths (docs/mesh-semantics.md §11):

- without a waypoint: app -> source node's ztunnel -> HBONE (HTTP/2 CONNECT over mTLS) ->
  destination node's ztunnel -> app. ztunnel does not parse HTTP: its per-request cost is the
  L4 model (socket I/O, HBONE framing, copy and record encryption), so no L7 cost is paid.
  ztunnel balances per *connection*: an app connection is bound, when opened, to one endpoint
  drawn at random (equal capacities), and each app connection is one HBONE stream
  (``hbone_stream_open_us`` at both ends). ztunnel pools tunnels per source pod (in-pod mode
  gives every workload a pool of its own) and destination pod: one tunnel per (source pod,
  destination pod) carries up to 100 streams (``POOL_MAX_STREAMS_PER_CONNECTION``), more
  tunnels when needed (:meth:`AmbientDataPlane._tunnel_key`).
  Simplification: for an HTTP/1.1 app the endpoint is drawn per call, and the app keeps a
  connection to each endpoint it reaches (reused while it is ready), as for kube-proxy under
  ``none`` and Cilium's socket-LB, which also pick per connection: pooled keep-alive connections
  spread as evenly. A gRPC or HTTP/2 app's one connection to a service is bound once, under all
  three alike (:mod:`meshsim.sim.dataplanes.l4_balancing`). Binding an app's few long-lived
  HTTP/1.1 connections under one mesh only would give it another traffic mix than the
  baseline's: in Bookinfo (200 rps, a few app connections) reviews-v1, which calls no ratings,
  took 43 % of the calls instead of a third, and the added p99 swung from -0.3 to +2.9 ms
  between seeds where Linkerd's stayed within 0.3 ms.
- with a waypoint (services in ``mesh_options.istio-ambient.waypoints``): app -> source
  ztunnel -> HBONE -> the service's waypoint (L7 routing, least-request per request,
  telemetry after the response) -> HBONE -> destination ztunnel -> app. The source pod's
  tunnel to the waypoint is its own (per source pod, as above), and the waypoint accepts it
  on one Envoy worker, which serves all its streams; the waypoint's tunnels out are pooled
  as Envoy pools, per worker per upstream host, the host being the destination pod reached
  on its port 15008.

ztunnel runs a tokio multi-thread runtime (2 workers, work stealing); a waypoint is an Envoy
(pinned workers, as many as its CPU limit in whole cores: 2 for the default 2000m). Both run
on node cores: ztunnels on their node, each waypoint on the node with the fewest pods.
Same-node traffic also crosses the ztunnel (both roles are charged). Clients outside the
mesh reach the destination ztunnel (or the waypoint) in plaintext.

Endpoints (with a control plane, issue 6): every ztunnel and waypoint holds an
``endpoint_view`` that istiod keeps (:mod:`meshsim.sim.controlplane.istiod`): endpoints as of
the last update it applied. A ztunnel binds a new app connection to a pod of its view, so
until its update arrives it opens connections to pods that have died (the CONNECT fails: a
connect failure that ztunnel does not retry, docs/mesh-semantics.md §11) and none to new pods; a
waypoint picks from its view inside the resilience chain, whose retries may absorb the
failure. Every try is gated by :meth:`ControlPlane.gate` (a dead pod, or no valid certificate
on either side: ztunnel holds the certificates of its node's pods). Clients outside the mesh
reach a pod through kube-proxy (the cluster's endpoints at that instant). Without a control
plane (``control_plane.enabled: false``) no view is attached and ztunnels read the cluster's
endpoints, as before.

Resources (``mesh_options.istio-ambient.ztunnel_resources``, ``waypoint_resources``): each
ztunnel and each waypoint is a container of its own (:mod:`meshsim.sim.cpu.cgroups`). A memory
limit below its modelled memory OOM-kills it (:mod:`meshsim.sim.cpu.oom`): until the kubelet
restarts it (:meth:`AmbientDataPlane.proxy_up`), a ztunnel's node has no data path (its pods'
connections out and in are refused, those it carried reset) and a waypoint's service is
unreachable through the mesh (:meth:`AmbientDataPlane.proxy_down`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.scenario.base import selected_services
from meshsim.scenario.resources import envoy_concurrency
from meshsim.sim.app import CONNECT_FAILURE, RESET, Client, Pod, source_name
from meshsim.sim.dataplanes.connections import Conn, Pools
from meshsim.sim.dataplanes.mesh import ProxiedDataPlane, cost_model, run_inbound
from meshsim.sim.dataplanes.proxy import Proxy, Worker
from meshsim.sim.dataplanes.resilience_state import Resilience
from meshsim.sim.dataplanes.routing import EndpointView, L7Proxy
from meshsim.sim.prefetched import prefetched

if TYPE_CHECKING:
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.engine import Simulation

HBONE_MAX_STREAMS = 100
"""ztunnel ``POOL_MAX_STREAMS_PER_CONNECTION`` (docs/mesh-semantics.md §11)."""


class Ztunnel(Proxy):
    """A node's ztunnel: a :class:`Proxy` with the endpoint view istiod keeps for it."""

    __slots__ = ("endpoint_view",)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.endpoint_view: EndpointView | None = None
        """Set by the control plane: endpoints as of this ztunnel's last update."""

    def view(self, service: ServiceRuntime) -> list[Pod]:
        """The endpoints of ``service`` this ztunnel knows (the cluster's, without a view)."""
        view = self.endpoint_view
        if view is None:
            return service.endpoints
        return view.lookup(service)[1]


class AppStream:
    """An app connection carried by ztunnel: its destination and its HBONE stream."""

    __slots__ = ("dest", "epochs", "src_worker", "tunnel")

    def __init__(
        self, dest: Pod | None, tunnel: Conn, src_worker: Worker, epochs: tuple[int, int]
    ) -> None:
        self.dest = dest
        """The endpoint it was bound to (None: it goes to the service's waypoint)."""
        self.tunnel = tunnel
        """Its HBONE tunnel: client the source ztunnel, server the peer ztunnel or waypoint."""
        self.src_worker = src_worker
        self.epochs = epochs
        """The two ends' :attr:`Proxy.epoch` when it opened (:meth:`broken`)."""

    def broken(self) -> bool:
        """Whether an end of it was killed since it opened (an OOM kill: the stream is gone)."""
        tunnel = self.tunnel
        assert tunnel.client is not None
        return tunnel.client.epoch != self.epochs[0] or tunnel.server.epoch != self.epochs[1]


class AmbientDataPlane(ProxiedDataPlane):
    """Istio ambient mode (mesh_options.istio-ambient)."""

    name = "istio-ambient"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        opts = sim.scenario.mesh_options.istio_ambient
        self.zt_model = cost_model(opts.ztunnel_model, "ztunnel", sim.model_values)
        self.wp_model = cost_model(opts.waypoint_model, "waypoint", sim.model_values)
        self.zt_threads = opts.ztunnel_workers
        self.wp_threads = opts.waypoint_workers or envoy_concurrency(
            opts.waypoint_resources, sim.scenario.cluster.allocatable_cpu_m
        )
        self.waypoint_for = selected_services(opts.waypoints, sim.services)
        self.tunnels = Pools(self.env, keep_alive=self.keep_alive, max_streams=HBONE_MAX_STREAMS)
        self.pools = self.tunnels
        self._lb_rng = prefetched(sim.streams("balancers/waypoint"))
        self.resilience = Resilience(
            sim,
            self.name,
            self.warnings,
            h2=lambda s: s.spec.speaks_http2,
            mtls=True,
            l7_services=self.waypoint_for,
        )
        self.ztunnels: dict[Node, Ztunnel] = {}
        self.waypoints: dict[str, L7Proxy] = {}
        self._streams: dict[tuple[str, str, str], list[AppStream]] = {}
        self._attempt_fn = self._attempt

    # ----------------------------------------------------------------- proxies

    def install(self) -> None:
        for node in self.sim.nodes:
            zt = Ztunnel(
                self.env,
                f"{node.name}/ztunnel",
                "ztunnel",
                self.zt_model,
                node,
                self.zt_threads,
                stealing=True,
                pick=self._accept,
                cpu_factor=self.cpu_factor(self.zt_model),
                drift=self.cpu_drift(self.zt_model),
            )
            self.ztunnels[node] = zt
            self.proxies.append(zt)
        for name in sorted(self.waypoint_for):
            node = self.client_node()
            wp = L7Proxy(
                self.env,
                f"{name}/waypoint",
                "waypoint",
                self.wp_model,
                node,
                self.wp_threads,
                stealing=False,
                pick=self._accept,
                rng=self._lb_rng,
                resilience=self.resilience,
                cpu_factor=self.cpu_factor(self.wp_model),
                drift=self.cpu_drift(self.wp_model),
            )
            self.waypoints[name] = wp
            self.proxies.append(wp)

    def _source_ztunnel(self, src: Pod | Client) -> Ztunnel | None:
        if isinstance(src, Pod):
            return self.ztunnels[src.node]
        if self.meshed_clients:
            return self.ztunnels[self.client_node()]
        return None

    # ----------------------------------------------------------------- app connections

    def _stream(
        self, zs: Ztunnel, src: Pod | Client, service: ServiceRuntime, net_node: Node | None
    ) -> Generator[simpy.Event, Any, AppStream | None]:
        """An app connection from ``src`` to ``service``: reused, or opened (L4 pick);
        None when it cannot be: no endpoint known, or a ztunnel or waypoint on the way down
        after an OOM kill (refused)."""
        if not zs.alive:
            return None  # nothing listens behind the pod's redirection: refused at once
        wp = self.waypoints.get(service.name)
        dest: Pod | None = None
        if wp is None:
            # ztunnel binds an app connection to one endpoint (random, equal capacity, among
            # the pods it knows), as kube-proxy and Cilium do (l4_balancing: per call for an
            # HTTP/1.1 app, the app keeping a connection to each endpoint it reaches; where
            # its one connection is bound for a gRPC app).
            dest = self.l4_balancer.pick(src, service, zs.view(service))
            if dest is None:
                return None
            peer: Proxy = self.ztunnels[dest.node]
            peer_node: Node = dest.node
        else:
            peer, peer_node = wp, wp.node
        idle = self._streams.get(self._app_key(src.name, service.name, dest))
        while idle:
            stream = idle.pop()
            if stream.dest is None or (stream.dest.alive and stream.dest.ready):
                return stream
            self._close_stream(stream)
        one_way = self.net.delay(net_node, peer_node, 0)
        if not peer.alive:
            # Nothing listens on the peer's port 15008: the connection is refused (a RST).
            yield self.env.timeout(2.0 * one_way)
            return None
        epochs = (zs.epoch, peer.epoch)
        worker = zs.accept()
        tunnel = yield from self.tunnels.acquire(
            self._tunnel_key(zs, src.name, peer, dest), zs, worker, peer, True, True, one_way
        )
        if (zs.epoch, peer.epoch) != epochs:
            self.tunnels.release(tunnel, True)
            return None  # an end was killed while the tunnel opened
        zs.opened(False)
        peer.opened(False)
        stream = AppStream(dest, tunnel, worker, epochs)
        if wp is None:
            # The CONNECT stream: a HEADERS exchange, CPU at both ztunnels.
            open_s = self.zt_model.connection_open_cpu_us() * 1e-6
            yield from zs.work(worker, open_s)
            yield self.env.timeout(2.0 * one_way)
            if stream.broken():
                self._close_stream(stream)
                return None
            yield from peer.work(tunnel.server_worker, open_s)
        return stream

    @staticmethod
    def _tunnel_key(
        zs: Proxy, src_key: str, peer: Proxy, dest: Pod | None
    ) -> tuple[str, str, str, str]:
        """The pool of HBONE tunnels a new app connection from ``src_key`` uses: ztunnel's
        ``WorkloadKey`` (source identity, destination identities, destination address, source
        IP) in in-pod mode, where every pod has a pool of its own: one per source pod and
        destination pod (to a waypoint: the waypoint's address, whatever pod is behind it).
        Both ends' proxies are named in it, so that an OOM kill severs their tunnels."""
        return (zs.name, src_key, peer.name, "" if dest is None else dest.name)

    @staticmethod
    def _app_key(src_key: str, service: str, dest: Pod | None) -> tuple[str, str, str]:
        """The idle app connections a call may reuse: from its caller to its service, and to
        the endpoint drawn for it (to the waypoint: any)."""
        return (src_key, service, "" if dest is None else dest.name)

    def _done(self, src_key: str, service: str, stream: AppStream) -> None:
        if not self.keep_alive:
            self._close_stream(stream)
            return
        key = self._app_key(src_key, service, stream.dest)
        idle = self._streams.get(key)
        if idle is None:
            idle = self._streams[key] = []
        idle.append(stream)

    def _close_stream(self, stream: AppStream) -> None:
        """The app connection closes: its stream at both ends (an end killed since holds
        nothing any more), and its tunnel's stream is given back."""
        tunnel = stream.tunnel
        zs, peer = tunnel.client, tunnel.server
        assert zs is not None
        if zs.epoch == stream.epochs[0]:
            zs.closed(False)
        if peer.epoch == stream.epochs[1]:
            peer.closed(False)
        self.tunnels.release(tunnel, True)

    def _reset(self, stream: AppStream) -> int:
        """A request whose stream broke (a ztunnel or waypoint on its way was OOM-killed):
        the app connection is reset."""
        self._close_stream(stream)
        return RESET

    # ----------------------------------------------------------------- a call

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        # Not a generator itself: it hands over the path's generator, so that the events
        # of the call do not pass through one more frame each.
        nbytes = call.request_bytes if call is not None else req.request_bytes
        zs = self._source_ztunnel(src)
        wp = self.waypoints.get(service.name)
        if zs is None:
            return self._from_outside(src, service, req, nbytes, wp)
        return self._from_ztunnel(zs, wp, src, service, req, nbytes, call)

    def _from_ztunnel(
        self,
        zs: Ztunnel,
        wp: L7Proxy | None,
        src: Pod | Client,
        service: ServiceRuntime,
        req: Request,
        nbytes: int,
        call: Call | None,
    ) -> Generator[simpy.Event, Any, int]:
        """A meshed caller: its node's ztunnel, then the waypoint or the peer ztunnel."""
        env = self.env
        delay = self.net.delay
        src_node = src.node if isinstance(src, Pod) else None
        src_key = src.name
        stream = yield from self._stream(zs, src, service, src_node)
        if stream is None:
            return CONNECT_FAILURE
        sw = stream.src_worker
        tunnel = stream.tunnel
        if wp is not None:
            zs_req = zs.costs(nbytes, 0, True)[0]
            yield from zs.work(sw, zs_req)
            sw.requests += 1
            yield env.timeout(zs.hop_s + delay(src_node, wp.node, nbytes))
            if stream.broken():
                return self._reset(stream)
            ww = tunnel.server_worker
            yield from wp.work(ww, wp.costs(nbytes, 0, True)[0])
            ww.requests += 1
            status: int = yield from wp.outbound(self._attempt_fn, service, req, ww, nbytes, call,
                                                 source_name(src))  # fmt: skip
            resp = service.spec.response_bytes
            yield env.timeout(delay(wp.node, src_node, resp) + zs.hop_s)
            if stream.broken():
                return self._reset(stream)
            yield from zs.work(sw, zs.costs(nbytes, resp, True)[1])
            self._done(src_key, service.name, stream)
            return status
        pod = stream.dest
        assert pod is not None
        zd = tunnel.server
        resp = pod.response_bytes
        costs = zs.costs(nbytes, resp, True)
        yield from zs.work(sw, costs[0])
        sw.requests += 1
        refused = self.sim.control_plane.gate(src if isinstance(src, Pod) else None, pod, True)
        if refused is not None:
            # A pod gone from the cluster but not from this ztunnel's view (or a side with no
            # certificate): the destination ztunnel refuses the stream; ztunnel does not retry.
            yield env.timeout(2.0 * (zs.hop_s + delay(src_node, pod.node, 0)))
            self._close_stream(stream)
            return refused
        yield env.timeout(zs.hop_s + delay(src_node, pod.node, nbytes))
        if stream.broken():
            return self._reset(stream)
        status = yield from run_inbound(
            env, self.sim, zd, tunnel.server_worker, pod, req, zd.costs(nbytes, resp, True)
        )
        yield env.timeout(delay(pod.node, src_node, resp) + zs.hop_s)
        if stream.broken():
            return self._reset(stream)
        yield from zs.work_then_linger(sw, costs[1], costs[2])
        self._done(src_key, service.name, stream)
        return status

    def _attempt(
        self,
        wp: L7Proxy,
        worker: Worker,
        pod: Pod,
        req: Request,
        nbytes: int,
        connected: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """One try from a waypoint to ``pod`` through the pod's node ztunnel (``connected``:
        see :class:`~meshsim.sim.dataplanes.routing.Attempt`)."""
        env = self.env
        zd = self.ztunnels[pod.node]
        delay = self.net.delay
        refused = self.sim.control_plane.gate(None, pod, True)  # dead: counted by the chain
        if refused is None and not zd.alive:
            refused = CONNECT_FAILURE  # its node's ztunnel is down after an OOM kill
        if refused is not None:
            yield env.timeout(2.0 * (wp.hop_s + delay(wp.node, pod.node, 0)))
            return refused
        epochs = (wp.epoch, zd.epoch)
        # Envoy pools per worker per upstream host: the waypoint's connect_originate cluster
        # is an ORIGINAL_DST one whose host is the destination pod on port 15008.
        key = (wp.name, worker.index, zd.name, pod.name)
        tunnel = self.tunnels.reuse(key, True)
        if tunnel is None:
            tunnel = yield from self.tunnels.acquire(
                key, wp, worker, zd, True, True, delay(wp.node, pod.node, 0)
            )
            if (wp.epoch, zd.epoch) != epochs:
                self.tunnels.release(tunnel, True)
                return CONNECT_FAILURE  # an end was killed while the tunnel opened
        if connected is not None:
            connected()
        yield env.timeout(wp.hop_s + delay(wp.node, pod.node, nbytes))
        if (wp.epoch, zd.epoch) != epochs:
            self.tunnels.release(tunnel, True)
            return RESET
        resp = pod.response_bytes
        status: int = yield from run_inbound(
            env, self.sim, zd, tunnel.server_worker, pod, req, zd.costs(nbytes, resp, True)
        )
        if (wp.epoch, zd.epoch) != epochs:
            self.tunnels.release(tunnel, True)
            return RESET
        yield env.timeout(delay(pod.node, wp.node, resp) + wp.hop_s)
        costs = wp.costs(nbytes, resp, True)
        yield from wp.work_then_linger(worker, costs[1], costs[2])
        self.tunnels.release(tunnel, True)
        return status

    def _from_outside(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, nbytes: int,
        wp: L7Proxy | None,
    ) -> Generator[simpy.Event, Any, int]:  # fmt: skip
        env = self.env
        delay = self.net.delay
        if wp is not None:
            if not wp.alive:  # down after an OOM kill: refused
                yield env.timeout(2.0 * delay(None, wp.node, 0))
                return CONNECT_FAILURE
            epoch = wp.epoch
            worker = wp.accept()
            yield env.timeout(delay(None, wp.node, nbytes))
            yield from wp.work(worker, wp.costs(nbytes, 0, False)[0])
            worker.requests += 1
            status: int = yield from wp.outbound(self._attempt_fn, service, req, worker, nbytes,
                                                 source=source_name(src))  # fmt: skip
            if wp.epoch != epoch:
                return RESET
            yield env.timeout(delay(wp.node, None, service.spec.response_bytes))
            return status
        pod = self.pick_any(service)
        if pod is None:
            return CONNECT_FAILURE
        zd = self.ztunnels[pod.node]
        if not zd.alive:  # down after an OOM kill: refused
            yield env.timeout(2.0 * delay(None, pod.node, 0))
            return CONNECT_FAILURE
        epoch = zd.epoch
        yield env.timeout(delay(None, pod.node, nbytes))
        if zd.epoch != epoch:
            return RESET
        status = yield from run_inbound(
            env, self.sim, zd, zd.workers[0], pod, req, zd.costs(nbytes, pod.response_bytes, False)
        )
        if zd.epoch != epoch:
            return RESET
        yield env.timeout(delay(pod.node, None, pod.response_bytes))
        return status

    # ----------------------------------------------------------------- OOM kills

    def proxy_down(self, proxy: Proxy) -> None:
        """``proxy`` (a node's ztunnel or a waypoint) is OOM-killed (:mod:`meshsim.sim.cpu.oom`):
        its process and everything it held are gone. Its tunnels are severed and the app
        connections it carried closed at their other end; requests on them fail (a reset)
        where they next look, and new connections through it are refused until
        :meth:`proxy_up`. A ztunnel takes its whole node's data path with it: every pod there
        stays ready in the endpoints (its probes bypass ztunnel), but nothing reaches it or
        leaves it through the mesh. Session tickets it issued no longer resume (each names
        the epoch it was issued in)."""
        proxy.killed()
        name = proxy.name
        self.tunnels.sever(lambda key: name in key)
        for idle in self._streams.values():
            kept = []
            for stream in idle:
                if stream.broken():
                    self._close_stream(stream)
                else:
                    kept.append(stream)
            idle[:] = kept

    def proxy_up(self, proxy: Proxy) -> None:
        """``proxy`` restarts after its backoff: a fresh process with no connections (a
        waypoint's balancers, breakers and outlier detection start afresh). It takes its
        endpoints as istiod holds them for it and keeps its certificates: the full push and
        the CSRs a restarted ztunnel waits for are not modelled (milliseconds on an idle
        istiod, beside a backoff of at least 10 s)."""
        proxy.restarted()

    # ----------------------------------------------------------------- configuration

    def config_in_view(self, proxy: Proxy) -> tuple[int, int]:
        services = self.sim.services
        if proxy.kind == "ztunnel":
            return len(services), sum(len(s.endpoints) for s in services.values())
        name = proxy.name.removesuffix("/waypoint")
        svc = services.get(name)
        if svc is None:
            return 0, 0  # a gateway's proxy: it counts its own (meshsim.sim.gateways)
        split = self.resilience.policies.has_subsets(name)
        return 1 + (len(svc.versions) if split else 0), len(svc.endpoints)
