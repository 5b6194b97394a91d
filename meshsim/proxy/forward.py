"""Forwarding one request: policy decisions, tries against upstream hosts, the response.

:func:`forward` is the coroutine of one exchange. It walks the steps of
:mod:`meshsim.policy.chain` through the route's :class:`RoutePolicy` and the request's
:class:`~meshsim.proxy.seam.Exchange` (fault injection, host choice, breaker admission,
record, retry and back-off; the simulator takes the same steps), forwards the request
with RFC 9110 hop-by-hop handling, ``x-forwarded-for`` and ``x-request-id``, and streams the
response back. The response head is held until the first body byte (or the end) arrives, so
an upstream that dies right after its head still gets a clean 502 rather than a truncation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TypeVar

import numpy as np

from meshsim.proxy.body import Body
from meshsim.proxy.framing import downstream_head, upstream_head
from meshsim.proxy.httpcore import Headers, grpc_status_of, simple_response
from meshsim.proxy.metrics import ProxyMetrics
from meshsim.proxy.seam import Attempt, Exchange, PassThrough, RoutePolicy
from meshsim.proxy.sink import Sink
from meshsim.proxy.upstream import HostPool, PoolOverflow, UpstreamConn

if TYPE_CHECKING:
    from meshsim.proxy.downstream import DownstreamProtocol

_T = TypeVar("_T")
REQUEST_SEQ = itertools.count(1)
ID_PREFIX = os.urandom(6).hex().encode()
"""A request id is ``ID_PREFIX-<REQUEST_SEQ, 12 hex digits>``: unique per process start and
cheap (uuid4 costs a syscall-sized 2 us per request)."""


def newrequest_id_of() -> bytes:
    return b"%s-%012x" % (ID_PREFIX, next(REQUEST_SEQ))


@dataclass
class Route:
    """Everything a listener's exchanges share."""

    name: str
    pools: list[HostPool]
    metrics: ProxyMetrics
    policy: RoutePolicy = field(default_factory=PassThrough)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng())
    access_log: Callable[[str], None] | None = None
    allowed_principals: frozenset[str] | None = None
    """SPIFFE ids allowed to call (inbound mTLS listeners); None allows the trust domain."""
    cpu_sample_every: int = 1
    """Measure the CPU time of one request in this many (1: all, 0: none)."""

    def __post_init__(self) -> None:
        # Prometheus label lookups cost a lock and a dict probe each: resolve them once.
        m, name = self.metrics, self.name
        self.stats = m.route(name)
        self.latency = self.stats.latency
        self.cpu = self.stats.cpu
        self.by_status = self.stats.status
        """Requests answered, by status (exported by the metrics' collector)."""
        self.active_down = m.active.labels(name, "downstream")
        self.retries = m.retries.labels(name)
        self.overflows = m.overflows.labels(name)
        self.ejections = m.ejections.labels(name)
        self.cpu_countdown = 1 if self.cpu_sample_every else -1
        """Reads until the next measured one (counting down to 0; negative: never). The
        downstream reads it inline (:meth:`sample_cpu`'s test, without the call)."""
        self.fast = bool(getattr(self.policy, "simple", False))
        """The policy needs no timers, faults or retries: bodyless requests skip the task."""
        self.inert = type(self.policy) is PassThrough
        """No traffic policy at all: admission, release and outcome records are no-ops, and
        the fast path skips them."""

    def count_status(self, status: int) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1

    def sample_cpu(self) -> bool:
        """Whether to measure the CPU time of the next piece of work (a counter, so unbiased)."""
        self.cpu_countdown -= 1
        if self.cpu_countdown:
            return False
        self.cpu_countdown = self.cpu_sample_every
        return True


class Request:
    __slots__ = (
        "body",
        "cpu_s",
        "headers",
        "keep_alive",
        "method",
        "request_id",
        "sampled",
        "started",
        "url",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        url: bytes,
        version: bytes,
        headers: Headers,
        keep_alive: bool,
        body: Body,
    ) -> None:
        self.method = method
        self.url = url
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.started = time.perf_counter()
        self.cpu_s = 0.0
        self.request_id: bytes | None = None
        """The client's ``x-request-id``, or one made for it (set by the downstream
        parser); None: not known yet (:func:`request_id_of` searches the headers)."""
        self.sampled = False
        """Whether this request's CPU time is measured (see Route.cpu_sample_every)."""


class LocalReply(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, status: int, text: str, flag: str, extra: Headers | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.flag = flag
        self.extra = extra or []


def request_id_of(req: Request) -> bytes:
    known = req.request_id
    if known is not None:
        return known
    for name, value in req.headers:
        if len(name) == 12 and name.lower() == b"x-request-id":
            return value
    return newrequest_id_of()


def no_clock() -> float:
    return 0.0


class CpuMeter:
    """A sampled request's own CPU time: the time it spends waiting is left out.

    ``await meter.wait(x)`` pauses the meter around an await; :meth:`skip` drops the time
    since the last mark (work that the upstream connection accounts for itself).
    """

    __slots__ = ("clock", "mark", "req")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.clock: Callable[[], float] = time.thread_time if req.sampled else no_clock
        self.mark = self.clock()

    def add(self) -> None:
        """Count the time since the last mark (and move the mark)."""
        now = self.clock()
        self.req.cpu_s += now - self.mark
        self.mark = now

    def skip(self) -> None:
        self.mark = self.clock()

    async def wait(self, awaitable: Awaitable[_T]) -> _T:
        self.req.cpu_s += self.clock() - self.mark
        try:
            return await awaitable
        finally:
            self.mark = self.clock()


class Forwarding:
    """One exchange's state while :func:`forward` walks the policy chain's steps."""

    __slots__ = ("conn", "conn_cpu0", "cpu", "down", "flag", "host", "keep_alive", "pool", "req",
                 "request_id", "route", "sink", "status", "tries")  # fmt: skip

    def __init__(self, down: DownstreamProtocol, req: Request) -> None:
        self.down = down
        self.req = req
        self.route: Route = down.route
        self.cpu = CpuMeter(req)
        self.request_id = request_id_of(req)
        self.status = 0
        self.tries = 0
        self.host: int | None = None
        self.flag = "-"
        self.keep_alive = req.keep_alive and not down.draining
        self.sink: Sink | None = None
        self.conn: UpstreamConn | None = None
        self.conn_cpu0 = 0.0
        self.pool: HostPool | None = None


_UO = [(b"x-envoy-overloaded", b"true")]


async def forward(down: DownstreamProtocol, req: Request) -> bool:
    """Serve ``req``; True when the downstream connection may carry another request.

    The steps of :mod:`meshsim.policy.chain`, in order: authorization, the fault filter,
    then per try pick, admit, try, record and decide (:func:`_tries`), and the response.
    """
    x = Forwarding(down, req)
    exchange: Exchange | None = None
    try:
        _authorize(x)
        await _fault(x)
        exchange = x.route.policy.retry_state()
        await _tries(x, exchange)
    except asyncio.CancelledError:
        # The client left or its request broke a limit: the upstream exchange is abandoned
        # half-way, so its connection cannot be reused.
        if x.conn is not None:
            x.conn.close()
        raise
    except LocalReply as reply:
        _local_reply(x, reply)
    finally:
        if exchange is not None:
            exchange.close()
    x.cpu.add()
    account(down, req, x.status, x.tries, x.host, x.flag, x.request_id)
    return x.keep_alive


def _authorize(x: Forwarding) -> None:
    route = x.route
    if route.allowed_principals is not None and x.down.peer_id not in route.allowed_principals:
        route.metrics.refused.labels(route.name, "authz").inc()
        raise LocalReply(403, "RBAC: access denied", "RBAC")


async def _fault(x: Forwarding) -> None:
    """Step 0: the fault filter's delay, then its abort (a local reply, never retried)."""
    route = x.route
    fault = route.policy.fault(time.monotonic(), route.rng)
    if fault.delay_s > 0:
        await x.cpu.wait(asyncio.sleep(fault.delay_s))
    if fault.abort_status is not None:
        raise LocalReply(fault.abort_status, "fault filter abort", "FI")


async def _tries(x: Forwarding, ex: Exchange) -> None:
    """Steps 1 to 5, once per try, until a try's outcome stands; then the response."""
    req, route = x.req, x.route
    head = upstream_head(req, x.down.client_ip, x.request_id)
    head_only = req.method == b"HEAD"
    deadline = None if ex.deadline == math.inf else ex.deadline
    while True:
        host = _pick(x, ex)
        t_try = time.monotonic()
        failure = await _try(x, ex, host, head, head_only, deadline)
        sink = x.sink
        assert sink is not None
        if failure:
            attempt = Attempt(host, None, failure, time.monotonic() - t_try)
        else:
            grpc = grpc_status_of(sink.pending_headers)
            attempt = Attempt(host, sink.status, None, time.monotonic() - t_try, grpc)
        ejected = ex.record(attempt, time.monotonic())
        if ejected:
            route.ejections.inc(len(ejected))
        if failure == "route_timeout":
            if x.conn is not None:
                x.conn.close()
            raise LocalReply(504, "upstream request timeout", "UT")
        backoff = _decide(x, ex, attempt)
        if backoff is not None:
            await _drop_answer(x, failure)
            if backoff > 0:
                now = time.monotonic()
                if ex.backoff_overruns(now, backoff):
                    await x.cpu.wait(asyncio.sleep(ex.deadline - now))
                    raise LocalReply(504, "upstream request timeout", "UT")
                await x.cpu.wait(asyncio.sleep(backoff))
            continue
        if failure is not None or x.conn is None:
            _failed(x, failure)
        await _respond(x)
        return


def _pick(x: Forwarding, ex: Exchange) -> int:
    """Step 1: a healthy host (else a local 503)."""
    route = x.route
    host = ex.pick(len(route.pools), time.monotonic(), route.rng)
    if host is None:
        raise LocalReply(503, "no healthy upstream", "UH")
    return host


async def _try(
    x: Forwarding, ex: Exchange, host: int, head: bytes, head_only: bool, deadline: float | None
) -> str | None:
    """Steps 2 and 3: a connection, the breaker's admission, the request, the response
    head; the failure's name, or None.

    The ``max_requests`` unit is taken once the pool hands over a connection, as Envoy
    attaches a request to one (``attachStreamToClient``): a request waiting for a
    connection holds only its pending unit, and one that fails to connect none. The route
    deadline bounds the wait for a connection and the connect (§1.1: only the per-try
    timer leaves them out); past it the request ends with 504 UT, as the simulator's
    pending queue does."""
    route = x.route
    x.host = host
    x.tries += 1
    x.pool = pool = route.pools[host]
    x.sink = sink = Sink(x.down)
    x.conn = None
    try:
        if deadline is None:
            conn = await x.cpu.wait(pool.acquire())
        else:
            left = max(deadline - time.monotonic(), 0.0)
            conn = await x.cpu.wait(asyncio.wait_for(pool.acquire(), left))
    except TimeoutError:
        raise LocalReply(504, "upstream request timeout", "UT") from None
    except ConnectionError:
        ex.connect_failed(host, time.monotonic())
        return "connect_failure"
    except PoolOverflow:
        route.overflows.inc()
        raise LocalReply(503, "upstream overflow", "UO", _UO) from None
    if not ex.admit(host, time.monotonic()):
        pool.release(conn, True)  # the connection stays pooled; the request overflows
        route.overflows.inc()
        raise LocalReply(503, "upstream overflow", "UO", _UO)
    x.conn = conn
    try:
        x.conn_cpu0 = conn.cpu_s
        failure = await _send_and_wait_head(
            conn, sink, x.req, head, head_only, route.policy, deadline
        )
        x.cpu.skip()  # the connection accounts for its own reads and writes
        return failure
    except ConnectionError:
        return "connect_failure"
    finally:
        ex.release(host, time.monotonic())


def _decide(x: Forwarding, ex: Exchange, attempt: Attempt) -> float | None:
    """Step 5: the back-off before another try, or None when this try's outcome stands.

    A body that cannot be replayed, or a passed deadline, ends the retries; a back-off that
    would reach the deadline ends the request there (504), as in the simulator.
    """
    now = time.monotonic()
    if not x.req.body.replayable or now >= ex.deadline:
        return None
    verdict = ex.decide(attempt, now, x.route.rng)
    if not verdict.retry:
        return None
    x.route.retries.inc()
    return verdict.delay_s


async def _drop_answer(x: Forwarding, failure: str | None) -> None:
    """Before a retry: read and drop the refused answer so that the connection stays
    usable, or close a connection whose try failed."""
    conn, sink, pool = x.conn, x.sink, x.pool
    if conn is None:
        return
    assert sink is not None
    assert pool is not None
    if failure is None and not sink.lost:
        sink.pending = None  # nobody reads this body: drop it, however large, as it comes
        await x.cpu.wait(sink.done_wait)
        x.req.cpu_s += conn.cpu_s - x.conn_cpu0
        pool.release(conn, sink.keep_alive and not sink.lost and sink.request_sent)
    else:
        conn.close()


def _failed(x: Forwarding, failure: str | None) -> NoReturn:
    """The last try failed without a response: Envoy's local reply for it."""
    if x.conn is not None:
        x.conn.close()
    if failure == "per_try_timeout":
        raise LocalReply(504, "upstream request timeout", "UT")
    connect = failure == "connect_failure"
    raise LocalReply(
        503 if connect else 502,
        "upstream connect error or disconnect/reset before headers",
        "UF" if connect else "UC",
    )


async def _respond(x: Forwarding) -> None:
    """Forward the try's response to the client."""
    down, req, conn, sink, pool = x.down, x.req, x.conn, x.sink, x.pool
    assert conn is not None
    assert sink is not None
    assert pool is not None
    x.status = status = sink.status
    done = sink.done_wait.done()
    if done and sink.lost:
        conn.close()
        raise LocalReply(502, "upstream reset before response body", "UC")
    keep_alive = x.keep_alive and not down.draining  # a drain may have begun meanwhile
    head_bytes, chunked, keep_alive = downstream_head(status, sink.pending_headers, req, keep_alive)
    sink.start_forwarding(head_bytes, chunked, done and not sink.lost)
    await x.cpu.wait(sink.done_wait)
    req.cpu_s += conn.cpu_s - x.conn_cpu0
    if sink.lost:
        conn.close()
        if not sink.head_sent:
            raise LocalReply(502, "upstream reset before response body", "UC")
        # Part of the body went out: all we can do is cut the client off too.
        x.flag = "UPE"
        keep_alive = False
        down.abort()
    else:
        # Pooled only between exchanges: a body cut short leaves the upstream
        # mid-request. (This tested ``not req.body.pieces``, which is never true
        # for a buffered body sent whole, so every request with a body closed its
        # upstream connection: a new connection, with mTLS a full handshake, each.)
        pool.release(conn, sink.keep_alive and sink.request_sent)
    if not req.body.eof:
        keep_alive = False  # the client is still sending a body nobody will read
    x.keep_alive = keep_alive


def _local_reply(x: Forwarding, reply: LocalReply) -> None:
    x.status = reply.status
    x.flag = reply.flag
    sink, req = x.sink, x.req
    if sink is None or not sink.head_sent:
        if not req.body.eof:
            x.keep_alive = False
        x.down.write(
            simple_response(
                reply.status,
                reply.text.encode() + b"\n",
                keep_alive=x.keep_alive,
                extra=reply.extra,
            )
        )
    else:
        x.keep_alive = False
        x.down.abort()


async def _send_and_wait_head(
    conn: UpstreamConn,
    sink: Sink,
    req: Request,
    head: bytes,
    head_only: bool,
    policy: RoutePolicy,
    deadline: float | None,
) -> str | None:
    """Send the request and wait for the response head; a failure name, or None."""
    body = req.body
    if body.empty:
        conn.start(sink, head, head_only, req.sampled)
        sink.request_sent = True
    elif body.eof and body.retained is not None:
        # The whole body is buffered: it goes out from ``retained`` (its ``pieces`` are
        # left unread, so they cannot tell whether the body was sent).
        conn.start(sink, head + body.replay(), head_only, req.sampled)
        sink.request_sent = True
    else:
        conn.start(sink, head, head_only, req.sampled)
        while (piece := await body.next_piece()) is not None:
            conn.write(body.frame(piece))
            if conn.write_paused:
                await conn.drain()  # the upstream reads slowly: so does the client, then
            if sink.head_wait.done():
                break  # the upstream answered early (e.g. 413): stop sending
        else:
            if body.chunked:
                conn.write(b"0\r\n\r\n")
            sink.request_sent = True
    timeout = policy.per_try_timeout_s
    kind = "per_try_timeout"
    if deadline is not None:
        left = deadline - time.monotonic()
        if timeout is None or left < timeout:
            timeout, kind = max(left, 0.0), "route_timeout"
    if not sink.head_wait.done():
        try:
            await asyncio.wait_for(asyncio.shield(sink.head_wait), timeout)
        except TimeoutError:
            conn.detach()
            conn.close()
            return kind
    if sink.lost and not sink.status:
        return "reset"
    return None


def account(
    down: DownstreamProtocol,
    req: Request,
    status: int,
    tries: int,
    host: int | None,
    flag: str,
    request_id: bytes,
) -> None:
    route = down.route
    elapsed = time.perf_counter() - req.started
    by_status = route.by_status  # (count_status, inline: once per request)
    by_status[status] = by_status.get(status, 0) + 1
    latency = route.latency  # (FastHistogram.observe, inline: once per request)
    latency.counts[bisect_left(latency.bounds, elapsed)] += 1
    latency.sum += elapsed
    if req.sampled:
        route.cpu.observe(req.cpu_s)
    if route.access_log is not None:
        route.access_log(
            json.dumps(
                {
                    "ts": time.time(),
                    "listener": route.name,
                    "method": req.method.decode("latin-1"),
                    "path": req.url.decode("latin-1"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "tries": tries,
                    "upstream": None
                    if host is None
                    else f"{route.pools[host].host}:{route.pools[host].port}",
                    "flags": flag,
                    "request_id": request_id.decode("latin-1"),
                    "client": down.client_ip,
                    "peer": down.peer_id,
                    "request_bytes": req.body.total,
                    "cpu_us": round(req.cpu_s * 1e6, 1) if req.sampled else None,
                },
                separators=(",", ":"),
            )
        )
