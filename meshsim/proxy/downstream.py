"""The downstream side: one client connection, parsed with httptools, under :class:`Limits`.

Requests on a connection are served one at a time and in order (pipelined ones queue). A
malformed or ambiguous request (see :mod:`meshsim.proxy.framing`) gets a 400, 501 or 505 and
closes *its* connection only, after the answers to the requests before it; an over-long head
a 431; an over-large body a 413 (a chunk is refused by its size line); a client too slow to
send its head (slowloris) a 408. A client that half-closes after its requests still gets
their answers.

Flow control, both ways: while the client's socket buffer is over its high-water mark, the
upstream connection feeding it is not read (:meth:`DownstreamProtocol.pause_writing`), so a
client that does not read costs the proxy a socket buffer, not the whole response; request
bodies going upstream wait on the upstream socket likewise (:class:`~meshsim.proxy.body.Body`).

Most requests are served without a task: :func:`~meshsim.proxy.fastpath.try_fast` runs the
exchange in the socket callbacks when the route's policy needs no timers or retries and the
request has no body, or a small one it holds until whole (see :mod:`meshsim.proxy.fastpath`).
Timers are lazy: each connection keeps one deadline and one timer handle, re-armed only
when a deadline comes earlier than the pending timer, so a keep-alive request costs no timer
allocation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from meshsim.proxy.body import NO_BODY, Body
from meshsim.proxy.fastpath import holds_whole, try_fast
from meshsim.proxy.forward import ID_PREFIX, REQUEST_SEQ, Request, Route, forward
from meshsim.proxy.framing import CHUNKED, Refusal, interim_head, request_body
from meshsim.proxy.httpcore import (
    CHUNK_SIZES_READABLE,
    ChunkSize,
    Headers,
    Limits,
    chunk_size_reader,
    simple_response,
)
from meshsim.proxy.tls import PeerIdentityError, verify_peer

if TYPE_CHECKING:
    from meshsim.proxy.server import ListenerState
    from meshsim.proxy.upstream import UpstreamConn

_MAX_QUEUED = 16
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
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
        self._chunk_size: ChunkSize | None = None  # made on the first chunked body
        self.client_ip = "-"
        self.peer_id: str | None = None
        self._url = b""
        self._headers: Headers = []
        self._length: bytes | None = None
        self._te: bytes | None = None
        self._hosts = 0
        self._request_id: bytes | None = None
        self._head_bytes = 0
        self._in_message = False
        self._head_begun = False
        self._parsing: Request | None = None
        self._whole_body: Request | None = None
        """A request held until its small body is whole, then served on the fast path."""
        self._queue: deque[Request] = deque()
        self.active: Exchange | None = None
        self._current: Request | None = None
        self._refusal: bytes | None = None
        """The answer to a broken request, sent once the requests before it are answered."""
        self._eof = False
        self.write_paused = False
        self.upstream: UpstreamConn | None = None
        """The upstream connection whose response is being written to this client."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0  # 0: no deadline
        self._closing = False
        self._read_paused = False
        self._sampling = False
        self._cpu_s = 0.0
        self.timing_read = False
        """A sampled read is being timed: what it calls (the fast path's dispatch) is in its
        interval, so it must not time itself too."""
        self._read_req: Request | None = None
        """The last request whose head a sampled read completed (it may be under way)."""
        self.responded = False

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
        if self._closing or self._refusal is not None:
            return
        route = self.route
        left = route.cpu_countdown - 1  # (Route.sample_cpu, inline: once per read)
        if left:
            route.cpu_countdown = left
            self._sampling = False
            try:  # (_feed's common case, inline: once per read)
                self.parser.feed_data(data)
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                self._parse_failed(exc)
                return
            if self._head_begun:
                self._arm_head()
            return
        # A sampled read: its parse time goes to the request(s) it completes, with the
        # dispatch of one the fast path started during the read (not timed again there).
        route.cpu_countdown = route.cpu_sample_every
        self._sampling = True
        self._read_req = None
        self.timing_read = True
        t0 = time.thread_time()
        self._feed(data)
        spent = time.thread_time() - t0
        self.timing_read = False
        target = self._parsing or (self._queue[-1] if self._queue else None) or self._read_req
        self._read_req = None
        if target is not None and target.sampled:
            target.cpu_s += spent
        else:
            self._cpu_s += spent

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc)
            return
        if self._head_begun:
            self._arm_head()

    def _arm_head(self) -> None:
        # A head begun in this read: if it is still incomplete, the slowloris bound runs
        # from now (not re-armed by later reads, so a drip cannot extend it). Armed here
        # rather than at the message's start: most heads arrive whole.
        self._head_begun = False
        if self._in_message and self._parsing is None and not self._closing:
            self._arm(self.limits.header_timeout_s)

    def _parse_failed(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            self._fail(501, b"protocol upgrade is not supported\n")
            return
        # A callback's Refusal stops llhttp on the spot; it arrives as the context.
        refusal = exc.__context__
        if isinstance(refusal, Refusal):
            self._fail(refusal.status, refusal.text)
        else:
            self._fail(400, b"malformed request\n")

    def eof_received(self) -> bool:
        """The client half-closed: answer the complete requests it sent, then close."""
        self._eof = True
        if self._closing:
            return False  # an error answer is out (lingering close): nothing more to say
        if self._in_message:
            # A request cut short can never be served: forget it (and cancel it if it runs).
            req, self._parsing = self._parsing, None
            self._in_message = False
            if req is not None and req is self._current:
                return False  # its body will never end: close (which cancels it)
            if req is not None and req in self._queue:
                self._queue.remove(req)
        if self.active is None and self._refusal is None:
            return False
        # TLS cannot stay half-open (asyncio closes it anyway, with a warning): the client
        # of an mTLS listener that half-closes loses its answers, as with Envoy.
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is None

    def pause_writing(self) -> None:
        """The client reads slower than the upstream sends: stop reading the upstream."""
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    def interim(self, status: int, headers: Headers) -> None:
        """A 1xx from upstream, for the current request: passed on to an HTTP/1.1 client,
        never to an HTTP/1.0 one (RFC 9110 section 15.2). It is not the response: a local
        error answer may still follow it."""
        req, transport = self._current, self.transport
        if req is not None and req.version == b"1.1" and transport is not None:
            transport.write(interim_head(status, headers))

    # -- httptools -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._length = None
        self._te = None
        self._request_id = None
        self._hosts = 0
        self._head_bytes = 0
        self._in_message = True
        self._head_begun = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            raise Refusal(431, b"request header fields too large\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            raise Refusal(431, b"request header fields too large\n")
        if len(headers) > self.limits.max_headers:
            raise Refusal(431, b"too many header fields\n")
        # Three names matter for framing and routing; their lengths filter cheaply. Repeated
        # fields are joined with commas, so that request_body sees (and refuses) a list.
        n = len(name)
        if n == 4:
            if name == b"Host" or name.lower() == b"host":  # (the usual spelling: no lower())
                self._hosts += 1
        elif n == 14:
            if name.lower() == b"content-length":
                self._length = value if self._length is None else self._length + b"," + value
        elif n == 17 and name.lower() == b"transfer-encoding":
            self._te = value if self._te is None else self._te + b"," + value
        elif n == 12 and self._request_id is None and name.lower() == b"x-request-id":
            self._request_id = value  # the first one, as request_id_of reads it

    def on_headers_complete(self) -> None:
        if self._closing or self._refusal is not None:
            return
        parser = self.parser
        if parser.should_upgrade():
            # Refused before it is queued: llhttp stops after this head, and the request
            # must not have been forwarded by then.
            raise Refusal(501, b"protocol upgrade is not supported\n")
        version = parser.get_http_version()
        if (
            self._length is None
            and self._te is None
            and self._hosts < 2
            and (version == "1.1" or version == "1.0")
        ):
            framing = None  # (request_body's answer for a bodyless head, without the call)
        else:
            framing = request_body(
                version,
                self._length,
                self._te,
                self._hosts,
                self.limits.max_body_bytes,
            )
        # The head is whole: _arm_head, after this read, has nothing to arm for it.
        self._head_begun = False
        if framing is None:
            body = NO_BODY
        else:
            chunked = framing == CHUNKED
            body = Body(
                chunked=chunked,
                expected=None if chunked else framing,
                pause=self._pause_reading,
                resume=self._resume_reading,
            )
        req = Request(
            parser.get_method(),
            self._url,
            _VERSIONS.get(version) or version.encode(),
            self._headers,
            parser.should_keep_alive(),
            body,
        )
        rid = self._request_id
        # (newrequest_id_of, inline: once per request)
        req.request_id = rid if rid is not None else b"%s-%012x" % (ID_PREFIX, next(REQUEST_SEQ))
        if framing == CHUNKED:
            # llhttp reports a chunked body's trailer fields as headers: they must not join
            # this request's (a queued request is forwarded later). They are dropped.
            # (Only a chunked body has trailers: other heads keep the list until the next
            # message begins with a new one.)
            self._headers = []
        if self._sampling:
            req.sampled = True
            req.cpu_s = self._cpu_s
            self._cpu_s = 0.0
            self._read_req = req
        self._parsing = req
        if body.eof:
            self._deadline = 0.0  # (_disarm)
        else:
            self._arm(self.limits.body_timeout_s)
        if self.active is None and not self._queue:
            # Nothing before it: served without a trip through the queue (as _next would,
            # resuming a read that an earlier request's body paused).
            if self._read_paused and self._refusal is None:
                self._resume_reading()
            if body is not NO_BODY and holds_whole(req, self.route.fast):
                self._whole_body = req  # served from on_message_complete
                return
            # (_serve_next, inline: once per request)
            self._current = req
            self.responded = False
            self.state.in_flight += 1
            if not try_fast(self, req):
                self.active = self.loop.create_task(self._serve(req))
            return
        self._queue.append(req)
        if self.active is None:
            self._next()
        elif len(self._queue) >= _MAX_QUEUED:
            self._pause_reading()

    def on_chunk_header(self) -> None:
        req, size = self._parsing, self._chunk_size
        if size is None and CHUNK_SIZES_READABLE:
            size = self._chunk_size = chunk_size_reader(self.parser)
        if (
            req is not None
            and size is not None
            and (req.body.total + size() > self.limits.max_body_bytes)
        ):
            raise Refusal(413, b"request body too large\n")

    def on_body(self, piece: bytes) -> None:
        req = self._parsing
        if req is None or self._closing:
            return
        if req.body.total + len(piece) > self.limits.max_body_bytes:
            raise Refusal(413, b"request body too large\n")
        req.body.feed(piece)
        self._arm(self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        self._in_message = False
        self._head_bytes = 0
        if req is not None and req.body is not NO_BODY:
            req.body.finish()
            if req is self._whole_body:
                self._whole_body = None
                self._serve_next(req)
        if self.active is None and not self._queue:
            self._arm(self.limits.idle_timeout_s)
        else:
            self._deadline = 0.0  # (_disarm)

    # -- serving ---------------------------------------------------------------------
    def _next(self) -> None:
        req = self._queue.popleft()
        if self._read_paused and len(self._queue) < _MAX_QUEUED // 2 and self._refusal is None:
            self._resume_reading()
        self._serve_next(req)

    def _serve_next(self, req: Request) -> None:
        self._current = req
        self.responded = False
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
        state = self.state
        state.in_flight -= 1
        self.active = None
        self._current = None
        if self._closing:  # already closing (or lingering after an error answer)
            state.maybe_drained()
            return
        if not keep_alive or state.draining:
            self.close()
            state.maybe_drained()
            return
        if self._queue:
            self._next()
        elif self._refusal is not None:
            # Every request before the broken one is answered: now its answer.
            assert self.transport is not None
            refusal, self._refusal = self._refusal, None  # from now on, _closing says it
            self.transport.write(refusal)
            self._linger_close()
        elif self._eof:
            self.close()  # the client half-closed and has nothing more to ask
        elif self._parsing is None:
            at = self.loop.time() + self.limits.idle_timeout_s  # (_arm, inline)
            self._deadline = at
            if self._timer is None or self._timer_at > at:
                self._set_timer(at)

    def write(self, data: bytes) -> None:
        self.responded = True
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
            raise Refusal(431, b"request header fields too large\n")

    def _fail(self, status: int, text: bytes) -> None:
        """Refuse the request being parsed, after answering the ones before it; then close.

        Pipelined requests before the broken one were complete and may already be running
        upstream: they get their answers first (HAProxy does the same), so the client
        never loses the response to a request that was executed.
        """
        if self._closing or self.transport is None or self._refusal is not None:
            return
        self.route.count_status(status)
        self.route.metrics.refused.labels(self.route.name, f"http_{status}").inc()
        answer = simple_response(status, text, keep_alive=False)
        broken, self._parsing = self._parsing, None
        self._in_message = False
        if broken is not None and broken is not self._current and broken in self._queue:
            self._queue.remove(broken)  # queued on its head, broken in its body
        if self.active is not None and broken is not self._current:
            self._refusal = answer  # sent by finish() once the queue is answered
            self._pause_reading()
            return
        if not self.responded:
            self.transport.write(answer)
            self.responded = True
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
            self._set_timer(at)

    def _set_timer(self, at: float) -> None:
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
        if self._in_message:
            self._fail(408, b"request timed out\n")
        elif self.active is None:
            self.close()  # idle keep-alive connection
