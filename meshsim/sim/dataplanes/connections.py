"""Connections between proxies: pools per upstream, HTTP/1.1 versus HTTP/2, and mTLS set-up.

- HTTP/1.1 carries one request at a time per connection: a pool keeps idle connections per
  key (Envoy: per worker per upstream host, docs/mesh-semantics.md §8.1 and §10.1) and opens another
  when all are busy. HTTP/2 (Linkerd between proxies, Istio for http2/grpc services or with
  ``h2_upgrade``, HBONE tunnels) multiplexes: one connection per key carries any number of
  concurrent streams (up to ``max_streams``, then another connection is opened).
- Opening a connection costs one TCP round trip, then, with TLS, a TLS 1.3 full handshake
  (one more round trip) whose CPU is charged on both sides from each side's cost model
  (key exchange, CertificateVerify signature, peer certificate and chain verification), each
  on the worker that owns the connection at that side.
- Resumption (PSK + ECDHE, ``tls_resumption_cpu_us`` a side instead) is what the two ends'
  cost models say (docs/mesh-semantics.md §8.3). A client keeps ``tls_session_tickets`` per
  upstream cluster, as Envoy's ``ClientContextImpl`` keeps ``max_session_keys`` (default 1)
  per cluster's TLS context: a new connection takes the newest ticket as it starts (a TLS
  1.3 ticket is used once) and resumes only if the server it reaches issued it, has not
  restarted since and resumes sessions (``tls_server_resumption``); each completed handshake
  stores the tickets its server sent, newest first, the oldest going when there are too many.
  So an Envoy resumes only where its cluster's last handshake was with the same host and no
  other connection took the ticket meanwhile: connections opened together, or to a cluster
  of several hosts, mostly pay a full handshake. linkerd2-proxy and ztunnel clients keep none
  (rustls ``Resumption::disabled()``), and ztunnel's server never resumes. The report counts
  full and resumed handshakes apart.
- With keep-alive off, every request opens its own connection and closes it afterwards.
- With a model's ``tcp_connection_cpu_us``, each end of a new connection pays it: the client's
  connect() before the SYN, the server's accept() before it reads the first bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Hashable, Iterator
from typing import Any

import simpy

from meshsim.sim.dataplanes.proxy import Proxy, Worker


class Conn:
    """One connection: who holds each end, the worker it is pinned to at each end, its TLS."""

    __slots__ = (
        "client",
        "client_worker",
        "epochs",
        "key",
        "ready",
        "server",
        "server_worker",
        "streams",
        "tls",
    )

    def __init__(
        self,
        client: Proxy | None,
        client_worker: Worker | None,
        server: Proxy,
        server_worker: Worker,
        tls: bool,
        key: Hashable,
    ) -> None:
        self.client = client
        self.client_worker = client_worker
        self.server = server
        self.server_worker = server_worker
        self.tls = tls
        self.key = key
        self.epochs = (0 if client is None else client.epoch, server.epoch)
        """Each end's :attr:`Proxy.epoch` when it opened: an end killed since (an OOM-killed
        ztunnel or waypoint) no longer holds it."""
        self.streams = 0
        """Requests (HTTP/2 streams) in flight on it."""
        self.ready: simpy.Event | None = None
        """Set while the connection is being opened; requests multiplexed on it wait for it."""


class HandshakeCounter:
    """Handshakes of one mesh, full and resumed."""

    __slots__ = ("connections_opened", "full", "resumed")

    def __init__(self) -> None:
        self.full = 0
        self.resumed = 0
        self.connections_opened = 0

    @property
    def total(self) -> int:
        return self.full + self.resumed


TICKETS_PER_HANDSHAKE = 2
"""NewSessionTicket messages a server sends after a TLS 1.3 handshake: BoringSSL's
``kNumTickets`` (Envoy's servers), so that a client has one for each of two connections. With
one ticket kept per cluster (Envoy's default) only the last counts."""


def connect(
    env: simpy.Environment,
    counter: HandshakeCounter,
    conn: Conn,
    one_way_s: float,
    cluster: Hashable = None,
) -> Generator[simpy.Event, Any, None]:
    """Open ``conn``: the TCP handshake, then the TLS 1.3 handshake if ``conn.tls``.

    SYN, SYN-ACK, then the ACK travels with the ClientHello: three one-way delays before the
    server computes its flight (ServerHello .. Finished, signing and verifying), one more
    before the client verifies and sends Finished with its first request (TLS 1.3, 1-RTT).
    ``cluster`` names the client's upstream cluster, whose session tickets it offers and
    keeps (the module's docstring); None is one cluster for every upstream, as a waypoint's
    ``connect_originate``.
    """
    counter.connections_opened += 1
    client, server = conn.client, conn.server
    if client is not None:
        client.opened(conn.tls)
    server.opened(conn.tls)
    # connect() on the client before the SYN; accept() on the server once the handshake
    # has completed in the kernel, before it reads the first bytes (models without
    # tcp_connection_cpu_us charge neither).
    if client is not None and conn.client_worker is not None and client.tcp_open_s:
        yield from client.work(conn.client_worker, client.tcp_open_s)
    if not conn.tls:
        yield env.timeout(2.0 * one_way_s)
        if server.tcp_open_s:
            yield from server.work(conn.server_worker, server.tcp_open_s)
        return
    resumed = False
    if client is not None and client.session_tickets:
        tickets = client.sessions.get(cluster)
        if tickets:
            # Envoy's newSsl: the newest ticket, removed as the connection starts (single use).
            issuer, epoch = tickets.popleft()
            resumed = server.resumes and issuer == server.name and epoch == server.epoch
    if resumed:
        counter.resumed += 1
    else:
        counter.full += 1
    server.handshakes += 1
    yield env.timeout(3.0 * one_way_s)
    yield from server.work(
        conn.server_worker, server.tcp_open_s + server.handshake_s("server", resumed)
    )
    yield env.timeout(one_way_s)
    if client is not None and conn.client_worker is not None:
        client.handshakes += 1
        yield from client.work(conn.client_worker, client.handshake_s("client", resumed))
        if client.session_tickets and client.epoch == conn.epochs[0]:
            tickets = client.sessions.get(cluster)
            if tickets is None:
                tickets = client.sessions[cluster] = deque(maxlen=client.session_tickets)
            tickets.extendleft([(server.name, conn.epochs[1])] * TICKETS_PER_HANDSHAKE)


def close(conn: Conn) -> None:
    """``conn`` is closed at both ends (at an end killed since it opened, it went with the
    process: :meth:`Pools.sever`)."""
    client, server = conn.client, conn.server
    if client is not None and client.epoch == conn.epochs[0]:
        client.closed(conn.tls)
    if server.epoch == conn.epochs[1]:
        server.closed(conn.tls)


class Pools:
    """Upstream connection pools of a whole data plane, by key.

    A key names one pool: for an Envoy sidecar ``(proxy, worker, upstream pod)``; for a
    Linkerd proxy ``(proxy, upstream pod)``; for a ztunnel's HBONE tunnels ``(ztunnel, source
    pod, peer ztunnel or waypoint, destination pod)``; for a waypoint's ``(waypoint, worker,
    peer ztunnel, destination pod)``.
    """

    __slots__ = ("_h2", "_idle", "counter", "env", "keep_alive", "max_streams")

    def __init__(
        self,
        env: simpy.Environment,
        *,
        keep_alive: bool,
        max_streams: int = 2**31 - 1,
    ) -> None:
        self.env = env
        self.keep_alive = keep_alive
        self.max_streams = max_streams
        self.counter = HandshakeCounter()
        self._idle: dict[Hashable, list[Conn]] = {}
        self._h2: dict[Hashable, list[Conn]] = {}

    def reuse(self, key: Hashable, h2: bool) -> Conn | None:
        """What :meth:`acquire` would return at once, without a generator: an idle HTTP/1.1
        connection, or an open HTTP/2 one with a free stream; None when it would open one
        or wait for one being opened (then call :meth:`acquire`)."""
        if not self.keep_alive:
            return None
        if h2:
            for conn in self._h2.get(key, ()):
                if conn.streams < self.max_streams:
                    if conn.ready is not None:
                        return None
                    conn.streams += 1
                    return conn
            return None
        idle = self._idle.get(key)
        if idle:
            conn = idle.pop()
            conn.streams = 1
            return conn
        return None

    def acquire(
        self,
        key: Hashable,
        client: Proxy | None,
        client_worker: Worker | None,
        server: Proxy,
        tls: bool,
        h2: bool,
        one_way_s: float,
        cluster: Hashable = None,
    ) -> Generator[simpy.Event, Any, Conn]:
        """A connection for one request: an idle or multiplexable one, else a new one
        (``cluster``: the client's upstream cluster, whose TLS session tickets a new one
        offers; :func:`connect`)."""
        if self.keep_alive:
            if h2:
                conns = self._h2.get(key)
                if conns is None:
                    conns = self._h2[key] = []
                for conn in conns:
                    if conn.streams < self.max_streams:
                        conn.streams += 1
                        if conn.ready is not None:
                            yield conn.ready
                        return conn
            else:
                idle = self._idle.get(key)
                if idle:
                    conn = idle.pop()
                    conn.streams = 1
                    return conn
        conn = Conn(client, client_worker, server, server.accept(), tls, key)
        conn.streams = 1
        if h2 and self.keep_alive:
            conn.ready = ready = self.env.event()
            self._h2[key].append(conn)
            yield from connect(self.env, self.counter, conn, one_way_s, cluster)
            conn.ready = None
            ready.succeed()
        else:
            yield from connect(self.env, self.counter, conn, one_way_s, cluster)
        return conn

    def release(self, conn: Conn, h2: bool) -> None:
        """The request on ``conn`` is done: keep the connection for reuse, or close it."""
        conn.streams -= 1
        if not self.keep_alive:
            close(conn)
        elif not h2:
            idle = self._idle.get(conn.key)
            if idle is None:
                idle = self._idle[conn.key] = []
            idle.append(conn)

    def held(self) -> Iterator[tuple[Hashable, int, bool]]:
        """Each pool's key, its idle HTTP/1.1 connections, and whether it holds an HTTP/2
        connection (what a black-holed upstream's clients still send on, meshsim.sim.zones)."""
        for key, idle in self._idle.items():
            yield key, len(idle), False
        for key, conns in self._h2.items():
            if conns:
                yield key, 0, True

    def sever(self, predicate: Any) -> None:
        """Close every connection whose key matches ``predicate``, idle or carrying streams:
        the proxy at one end was killed (:mod:`meshsim.sim.cpu.oom`; bump its epoch first).
        Its streams fail where their requests next look. For HTTP/2 pools (the HBONE
        tunnels): an HTTP/1.1 connection in use is in no table, so it is not severed."""
        for table in (self._idle, self._h2):
            for key in [k for k in table if predicate(k)]:
                for conn in table.pop(key):
                    close(conn)
