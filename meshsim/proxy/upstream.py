"""Upstream connections and per-host keep-alive pools.

An :class:`UpstreamConn` parses responses with httptools and hands every event to the
:class:`ResponseSink` of the exchange that owns it, in the callback: bodies go straight from
the upstream socket to the downstream one without a task switch.

Flow control: while a response is being written to a client whose socket buffer is full,
the connection is not read (:meth:`UpstreamConn.pause_reading`, driven by the client side);
a request body waits for :meth:`UpstreamConn.drain` when the upstream's socket buffer is full.
A response whose Transfer-Encoding is not exactly ``chunked`` is an upstream protocol error
(see :func:`meshsim.proxy.framing.response_codings_ok`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from meshsim.policy import ENVOY_CONNECT_TIMEOUT_S
from meshsim.proxy.framing import response_codings_ok
from meshsim.proxy.httpcore import Headers
from meshsim.proxy.metrics import ProxyMetrics
from meshsim.proxy.tls import PeerIdentityError, verify_peer

IDLE_TIMEOUT_S = 30.0  # shorter than common server keep-alive timeouts, to avoid races


class Reader(Protocol):
    """The client connection a response is written to (flow control's other end)."""

    write_paused: bool
    upstream: UpstreamConn | None

    def interim(self, status: int, headers: Headers) -> None:
        """Pass on a 1xx interim response (100 Continue, 103 Early Hints)."""


class ResponseSink(Protocol):
    @property
    def down(self) -> Reader: ...

    def on_head(self, status: int, headers: Headers, keep_alive: bool) -> None: ...
    def on_body(self, chunk: bytes) -> None: ...
    def on_done(self) -> None: ...
    def on_lost(self) -> None: ...
    def flush(self) -> None:
        """End of one socket read: write out what its events produced."""


class ConnectionLimits(Protocol):
    """A route's bounds on upstream connections and on requests waiting for one."""

    def try_connection(self) -> bool: ...
    def release_connection(self) -> None: ...
    def try_pending(self) -> bool: ...
    def release_pending(self) -> None: ...


class PoolOverflow(Exception):  # noqa: N818 - Envoy's word
    """max_connections reached and max_pending_requests too: the request is refused."""


class UpstreamConn(asyncio.Protocol):
    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.headers: Headers = []
        self.te: bytes | None = None
        self.has_length = False
        self.until_close = False
        """The response in progress has no length and no chunks: it ends with the connection."""
        self.interim = False
        """The message being parsed is a 1xx: the final response follows it."""
        self.complete = True  # no response in progress
        self.head_only = False  # response to HEAD: no body follows the head
        self.cpu_s = 0.0
        self.sampling = False
        """Measure CPU time in the callbacks (the exchange's request is sampled)."""
        self.read_t0 = 0.0
        self.idle_since = 0.0
        self.counted = False
        """Holds one unit of the route's max_connections."""
        self.read_paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pool.active.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.pool.active.dec()
        self.transport = None
        self.pool.forget(self)
        self._wake_drain()
        sink = self.detach()
        if sink is not None and not self.complete:
            sink.on_lost()

    def eof_received(self) -> bool:
        """The upstream closed its side: the end of a body delimited by the close (RFC 9112
        section 6.3, rule 8), else a response cut short (``connection_lost`` says so)."""
        if self.until_close and not self.complete:
            self.complete = True
            self.close()
            sink = self.detach()
            if sink is not None:
                self.read_t0 = time.thread_time()  # what on_done measures from
                sink.on_done()
        return False

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if not self.sampling:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.close()
        else:
            t0 = self.read_t0 = time.thread_time()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.close()
            self.cpu_s += time.thread_time() - t0
        if sink is not None and sink is self.sink:
            # (An exchange that ended in this read has written its output already.)
            sink.flush()

    def pause_writing(self) -> None:  # the upstream is slow to read our request body
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        """Until the upstream has read enough of what was written (or the connection ended)."""
        if self.write_paused and self.transport is not None:
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def detach(self) -> ResponseSink | None:
        """The exchange is over (or abandoned): unhook it, and read freely again."""
        sink, self.sink = self.sink, None
        if sink is not None and sink.down.upstream is self:
            sink.down.upstream = None
        if self.read_paused:
            self.resume_reading()
        return sink

    # -- httptools -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.te = None
        self.interim = False
        self.has_length = False
        self.until_close = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        n = len(name)
        if n == 17 and name.lower() == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value
        elif n == 14 and (name == b"Content-Length" or name.lower() == b"content-length"):
            self.has_length = True

    def on_headers_complete(self) -> None:
        sink = self.sink
        if sink is None:
            self.close()  # an unsolicited response: the connection is unusable
            return
        if self.te is not None and not response_codings_ok(self.te):
            # A coding the client would lose: an upstream protocol error, as a reset.
            self.close()
            raise ConnectionResetError("upstream used a transfer coding other than chunked")
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:  # nothing asked to switch protocols (upgrades are refused)
                self.close()
                raise ConnectionResetError("upstream switched protocols unasked")
            # Interim (RFC 9110 15.2): passed on; the final response comes after it. Taken
            # for the final one, it cut the exchange short and lost the real answer.
            self.interim = True
            headers, self.headers = self.headers, []
            sink.down.interim(status, headers)
            return
        self.until_close = (
            self.te is None
            and not self.has_length
            and not self.head_only
            and status >= 200
            and status != 204
            and status != 304
        )
        keep_alive = self.parser.should_keep_alive()
        headers = self.headers
        if self.te is not None:
            self.headers = []  # a chunked body's trailers, if any, go nowhere
        sink.on_head(status, headers, keep_alive)
        if self.head_only:
            # llhttp cannot be told that this answers HEAD; it would wait for a body.
            self.complete = True
            self.detach()
            sink.on_done()
            self.close()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        sink, self.sink = self.sink, None  # (detach, inline: once per response)
        if sink is not None and sink.down.upstream is self:
            sink.down.upstream = None
        if self.read_paused:
            self.resume_reading()
        self.complete = True
        if not self.parser.should_keep_alive():
            self.close()
        if sink is not None:
            sink.on_done()

    # -- for the exchange ------------------------------------------------------------
    def start(
        self, sink: ResponseSink, head: bytes, head_only: bool, sampling: bool = False
    ) -> None:
        transport = self.transport
        if transport is None:
            # Closed between its connect (or its return to the pool) and this request, e.g.
            # by a peer that accepts and resets: the try failed as a reset would.
            sink.on_lost()
            return
        self.sink = sink
        self.complete = False
        self.head_only = head_only
        self.sampling = sampling
        down = sink.down
        down.upstream = self
        if down.write_paused:  # the client has not read the previous response yet
            self.pause_reading()
        transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self.complete


class HostPool:
    """Keep-alive connections to one upstream host (most recently used first)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        listener: str,
        metrics: ProxyMetrics,
        ssl_context: ssl.SSLContext | None = None,
        trust_domain: str | None = None,
        limits: ConnectionLimits | None = None,
        identities: frozenset[str] | None = None,
        connect_timeout_s: float = ENVOY_CONNECT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.listener = listener
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.trust_domain = trust_domain
        self.identities = identities
        """Secure naming: the SPIFFE ids this upstream may present (None: any of the domain)."""
        self.connect_timeout_s = connect_timeout_s
        """How long a connect (with TLS, its handshake) may take: the listener's mesh's
        (:func:`meshsim.policy.mapping.connect_timeout_s`)."""
        self.idle: list[UpstreamConn] = []
        self.open: set[UpstreamConn] = set()
        self.active = metrics.active.labels(listener, "upstream")
        self.limits = limits
        self.siblings: list[HostPool] = [self]
        """The pools of the same route (they share ``limits``)."""
        self.waiters: deque[asyncio.Future[UpstreamConn | None]] = deque()
        """Requests pending for a connection (max_connections reached)."""

    async def acquire(self) -> UpstreamConn:
        """A reused idle connection when there is one, else a new one.

        Raises ConnectionError (connect failure, or a peer outside the trust domain).
        """
        limits = self.limits
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if limits is None:
                return await self._connect()
            if limits.try_connection():
                try:
                    conn = await self._connect()
                except BaseException:
                    limits.release_connection()
                    self._slot_freed()
                    raise
                conn.counted = True
                return conn
            if not limits.try_pending():
                raise PoolOverflow(f"{self.host}:{self.port}: too many pending requests")
            waiter: asyncio.Future[UpstreamConn | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                got = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self.release(handed, True)  # pass it on to the next waiter
                raise
            finally:
                limits.release_pending()
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if got is not None:
                return got
            # A connection slot came free: loop to take it (or an idle connection).

    def _wake(self, conn: UpstreamConn | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _slot_freed(self) -> None:
        """One of the route's connections closed: a pending request may open one."""
        for pool in self.siblings:
            if pool._wake(None):
                return

    def take_idle(self, now: float | None = None) -> UpstreamConn | None:
        """The most recently used idle connection still fit for use, or None (``now``:
        the caller's ``time.monotonic()``, when it has one)."""
        idle = self.idle
        if not idle:
            return None
        if now is None:
            now = time.monotonic()
        while idle:
            conn = idle.pop()
            transport = conn.transport  # (conn.usable, inline)
            if (
                transport is not None
                and conn.complete
                and not transport.is_closing()
                and now - conn.idle_since < IDLE_TIMEOUT_S
            ):
                return conn
            conn.close()
        return None

    async def _connect(self) -> UpstreamConn:
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConn] = lambda: UpstreamConn(self)  # noqa: E731
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                ),
                self.connect_timeout_s,
            )
        except ssl.SSLError as exc:
            self.metrics.handshakes.labels(self.listener, "upstream", "failed").inc()
            raise ConnectionError(f"TLS handshake with {self.host}:{self.port} failed") from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}") from exc
        self.metrics.connections.labels(self.listener, "upstream").inc()
        if self.ssl_context is not None:
            assert conn.transport is not None
            try:  # before any request byte goes out
                verify_peer(
                    conn.transport.get_extra_info("ssl_object"), self.trust_domain, self.identities
                )
            except PeerIdentityError as exc:
                self.metrics.handshakes.labels(self.listener, "upstream", "refused").inc()
                self.metrics.refused.labels(self.listener, exc.reason).inc()
                conn.close()
                raise ConnectionError(f"upstream {self.host}:{self.port}: {exc}") from exc
            self.metrics.handshakes.labels(self.listener, "upstream", "ok").inc()
        self.open.add(conn)
        return conn

    def release(self, conn: UpstreamConn, reusable: bool) -> None:
        transport = conn.transport  # (conn.usable, inline: once per request)
        if reusable and transport is not None and conn.complete and not transport.is_closing():
            if self.waiters and self._wake(conn):
                return  # straight to a pending request
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConn) -> None:
        self.open.discard(conn)
        if conn.counted and self.limits is not None:
            conn.counted = False
            self.limits.release_connection()
            self._slot_freed()
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.open):
            conn.close()
        self.idle.clear()
