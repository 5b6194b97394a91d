"""The downstream side: one client connection, parsed with httptools, under :class:`Limits`.

Requests on a connection are served one at a time and in order (pipelined ones queue). A
malformed request gets a 400 and closes *its* connection only; an over-long head a 431; an
over-large body a 413; a client too slow to send its head (slowloris) a 408.

Most requests are served without a task: :func:`~meshsim.proxy.fastpath.try_fast` runs the
exchange in the socket callbacks when the route's policy needs no timers or retries and the
request has no body (see :mod:`meshsim.proxy.forward`). Timers are lazy: each connection
keeps one deadline and one timer handle, re-armed only when a deadline comes earlier than
the pending timer, so a keep-alive request costs no timer allocation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from meshsim.proxy.body import Body
from meshsim.proxy.fastpath import try_fast
from meshsim.proxy.forward import Request, Route, forward
from meshsim.proxy.httpcore import Headers, Limits, simple_response
from meshsim.proxy.tls import PeerIdentityError, verify_peer

if TYPE_CHECKING:
    from meshsim.proxy.server import ListenerState

_MAX_QUEUED = 16
_LINGER_S = 2.0


class Exchange(Protocol):
    """The request being served: a task (general path) or a callback exchange (fast path)."""

    def cancel(self) -> object: ...


class DownstreamProtocol(asyncio.Protocol):
    def __init__(self, state: ListenerState) -> None:
        self.state = state
        self.route: Route = state.route
        self.limits: Limits = state.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = "-"
        self.peer_id: str | None = None
        self._url = b""
        self._headers: Headers = []
        self._chunked = False
        self._length: bytes | None = None
        self._head_bytes = 0
        self._parsing: Request | None = None
        self._queue: deque[Request] = deque()
        self.active: Exchange | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0  # 0: no deadline
        self._closing = False
        self._read_paused = False
        self._write_paused = False
        self._sampling = False
        self._cpu_s = 0.0
        self._responded = False

    @property
    def draining(self) -> bool:
        return self.state.draining

    @property
    def busy(self) -> bool:
        return self.active is not None or self._parsing is not None

    # -- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "-"
        route = self.route
        metrics, name = route.metrics, route.name
        metrics.connections.labels(name, "downstream").inc()
        route.active_down.inc()
        self.state.connections.add(self)
        if self.state.trust_domain is not None:
            try:
                ssl_object = transport.get_extra_info("ssl_object")
                self.peer_id = verify_peer(ssl_object, self.state.trust_domain)
            except PeerIdentityError as exc:
                metrics.handshakes.labels(name, "downstream", "refused").inc()
                metrics.refused.labels(name, exc.reason).inc()
                self._closing = True
                self.transport.abort()
                return
            metrics.handshakes.labels(name, "downstream", "ok").inc()
        self._arm(self.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.route.active_down.dec()
        self.state.connections.discard(self)
        self._closing = True
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        if self.active is not None:
            self.active.cancel()  # the client left: stop working for it
        self.state.maybe_drained()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if not self.route.sample_cpu():
            self._sampling = False
            self._feed(data)
            return
        # A sampled read: its parse time goes to the request(s) it completes.
        self._sampling = True
        t0 = time.thread_time()
        self._feed(data)
        spent = time.thread_time() - t0
        target = self._parsing or (self._queue[-1] if self._queue else None)
        if target is not None and target.sampled:
            target.cpu_s += spent
        else:
            self._cpu_s += spent

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(501, b"protocol upgrade is not supported\n")
        except httptools.HttpParserError:
            self._fail(400, b"malformed request\n")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False

    # -- httptools -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._chunked = False
        self._length = None
        self._head_bytes = 0
        self._arm(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._fail(431, b"request header fields too large\n")
        elif len(headers) > self.limits.max_headers:
            self._fail(431, b"too many header fields\n")
        # Only two names matter for framing; their lengths (14, 17) filter cheaply.
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self._length = value
        elif n == 17 and name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self._chunked = True

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        parser = self.parser
        length: int | None = None
        if self._length is not None:
            try:
                length = int(self._length)
            except ValueError:
                self._fail(400, b"bad content-length\n")
                return
            if length > self.limits.max_body_bytes:
                self._fail(413, b"request body too large\n")
                return
        body = Body(
            chunked=self._chunked, expected=length, pause=self._pause_reading,
            resume=self._resume_reading,
        )
        req = Request(
            parser.get_method(), self._url, parser.get_http_version().encode(), self._headers,
            parser.should_keep_alive(), body,
        )
        if self._sampling:
            req.sampled = True
            req.cpu_s = self._cpu_s
            self._cpu_s = 0.0
        self._parsing = req
        if body.eof:
            self._disarm()
        else:
            self._arm(self.limits.body_timeout_s)
        self._queue.append(req)
        if self.active is None:
            self._next()
        elif len(self._queue) >= _MAX_QUEUED:
            self._pause_reading()

    def on_body(self, piece: bytes) -> None:
        req = self._parsing
        if req is None or self._closing:
            return
        if req.body.total + len(piece) > self.limits.max_body_bytes:
            self._fail(413, b"request body too large\n")
            return
        req.body.feed(piece)
        self._arm(self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        self._head_bytes = 0
        if req is not None:
            req.body.finish()
        if self.active is None and not self._queue:
            self._arm(self.limits.idle_timeout_s)
        else:
            self._disarm()

    # -- serving ---------------------------------------------------------------------
    def _next(self) -> None:
        req = self._queue.popleft()
        if len(self._queue) < _MAX_QUEUED // 2:
            self._resume_reading()
        self._responded = False
        self.state.in_flight += 1
        if try_fast(self, req):
            return  # answered, or running in callbacks (it set self.active)
        self.active = self.loop.create_task(self._serve(req))

    async def _serve(self, req: Request) -> None:
        try:
            keep_alive = await forward(self, req)
        except asyncio.CancelledError:
            keep_alive = False
        self.finish(keep_alive)

    def finish(self, keep_alive: bool) -> None:
        """The current request is answered: close, or go on with the next one."""
        self.state.in_flight -= 1
        self.active = None
        if not keep_alive or self.draining:
            self.close()
            self.state.maybe_drained()
            return
        if self._queue:
            self._next()
        elif self._parsing is None:
            self._arm(self.limits.idle_timeout_s)

    def write(self, data: bytes) -> None:
        self._responded = True
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self._closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        """For graceful shutdown: close now unless a request is in progress."""
        if not self.busy and not self._queue:
            self.close()

    # -- internals -------------------------------------------------------------------
    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_header_bytes:
            self._fail(431, b"request header fields too large\n")

    def _fail(self, status: int, text: bytes) -> None:
        if self._closing or self.transport is None:
            return
        self.route.count_status(status)
        self.route.metrics.refused.labels(self.route.name, f"http_{status}").inc()
        if not self._responded:
            self.transport.write(simple_response(status, text, keep_alive=False))
            self._responded = True
        if self.active is not None:
            self.active.cancel()  # its request is broken: stop forwarding it
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after an error answer without resetting the connection.

        Closing a socket with unread input makes the kernel send RST, and a client that is
        still sending (a slowloris drip, the rest of an over-large body) may then lose our
        answer before reading it. So: send FIN after the answer, keep reading (and
        discarding) input for up to ``_LINGER_S``, then close (lingering close, as nginx).
        """
        self._closing = True
        self._disarm()
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._resume_reading()
        self.loop.call_later(_LINGER_S, self.close)

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def _arm(self, delay_s: float) -> None:
        at = self.loop.time() + delay_s
        self._deadline = at
        if self._timer is None or self._timer_at > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(at, self._timeout)
            self._timer_at = at

    def _disarm(self) -> None:
        self._deadline = 0.0  # the pending timer, if any, will find nothing to do

    def _timeout(self) -> None:
        self._timer = None
        if self._closing or self.transport is None or not self._deadline:
            return
        if self.loop.time() < self._deadline:  # the deadline moved later meanwhile
            self._timer = self.loop.call_at(self._deadline, self._timeout)
            self._timer_at = self._deadline
            return
        self._deadline = 0.0
        if self._parsing is not None or self._head_bytes:
            self._fail(408, b"request timed out\n")
        elif self.active is None:
            self.close()  # idle keep-alive connection
