"""Forwarding one request: policy decisions, tries against upstream hosts, the response.

:func:`forward` is the coroutine of one exchange. It asks the route's :class:`RoutePolicy`
(fault injection, host choice, breaker admission, retry and back-off), forwards the request
with RFC 9110 hop-by-hop handling, ``x-forwarded-for`` and ``x-request-id``, and streams the
response back. The response head is held until the first body byte (or the end) arrives, so
an upstream that dies right after its head still gets a clean 502 rather than a truncation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from meshsim.proxy.body import Body
from meshsim.proxy.framing import downstream_head, upstream_head
from meshsim.proxy.httpcore import Headers, simple_response
from meshsim.proxy.metrics import ProxyMetrics
from meshsim.proxy.seam import Attempt, PassThrough, RoutePolicy
from meshsim.proxy.upstream import HostPool, PoolOverflow, UpstreamConn

if TYPE_CHECKING:
    from meshsim.proxy.downstream import DownstreamProtocol

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(6).hex()


def newrequest_id_of() -> bytes:
    # Unique per process start and cheap (uuid4 costs a syscall-sized 2 us per request).
    return f"{_ID_PREFIX}-{next(_ids):012x}".encode()


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
    require_peer: bool = False
    cpu_sample_every: int = 1
    """Measure the CPU time of one request in this many (1: all, 0: none)."""

    def __post_init__(self) -> None:
        # Prometheus label lookups cost a lock and a dict probe each: resolve them once.
        m, name = self.metrics, self.name
        self.stats = m.route(name)
        self.latency = self.stats.latency
        self.cpu = self.stats.cpu
        self._by_status = self.stats.status
        self.active_down = m.active.labels(name, "downstream")
        self.retries = m.retries.labels(name)
        self.overflows = m.overflows.labels(name)
        self.ejections = m.ejections.labels(name)
        self._cpu_countdown = 1
        self.fast = bool(getattr(self.policy, "simple", False))
        """The policy needs no timers, faults or retries: bodyless requests skip the task."""

    def count_status(self, status: int) -> None:
        by_status = self._by_status
        by_status[status] = by_status.get(status, 0) + 1

    def sample_cpu(self) -> bool:
        """Whether to measure the CPU time of the next piece of work (a counter, so unbiased)."""
        if not self.cpu_sample_every:
            return False
        self._cpu_countdown -= 1
        if self._cpu_countdown:
            return False
        self._cpu_countdown = self.cpu_sample_every
        return True


class Request:
    __slots__ = (
        "body", "cpu_s", "headers", "keep_alive", "method", "sampled", "started", "url", "version",
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
        self.sampled = False
        """Whether this request's CPU time is measured (see Route.cpu_sample_every)."""


class Sink:
    """Receives one try's response events from an :class:`UpstreamConn` (general path).

    Output is gathered during one upstream read and written once at its end (``flush``):
    a head and a small body leave in one ``write`` call.
    """

    __slots__ = (
        "chunked_down",
        "done_wait",
        "down",
        "forwarding",
        "head",
        "head_sent",
        "head_wait",
        "keep_alive",
        "lost",
        "out",
        "pending",
        "pending_headers",
        "request_sent",
        "status",
    )

    def __init__(self, down: DownstreamProtocol) -> None:
        loop = asyncio.get_running_loop()
        self.down = down
        self.head_wait: asyncio.Future[None] = loop.create_future()
        self.done_wait: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.keep_alive = False
        self.head = b""
        self.pending: list[bytes] | None = []
        """Body held before the decision to forward; None while a refused answer is read
        and dropped (it may be large, and nobody will read it)."""
        self.out: list[bytes] = []
        self.pending_headers: Headers = []
        self.forwarding = False
        self.head_sent = False
        self.chunked_down = False
        self.lost = False
        self.request_sent = False
        """The whole request (head and body) went upstream: the connection is between
        exchanges once the response ends, so it may be pooled."""

    def on_head(self, status: int, headers: Headers, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.pending_headers = headers
        if not self.head_wait.done():
            self.head_wait.set_result(None)

    def on_body(self, chunk: bytes) -> None:
        if not self.forwarding:
            if self.pending is not None:
                self.pending.append(chunk)  # held until the coroutine decides (retry or not)
            return
        self._send_head()
        self._send(chunk)

    def on_done(self) -> None:
        if self.forwarding:
            self._send_head()
            if self.chunked_down:
                self.out.append(b"0\r\n\r\n")
            self.flush()
        if not self.head_wait.done():
            self.head_wait.set_result(None)
        if not self.done_wait.done():
            self.done_wait.set_result(None)

    def on_lost(self) -> None:
        self.lost = True
        for fut in (self.head_wait, self.done_wait):
            if not fut.done():
                fut.set_result(None)

    def flush(self) -> None:
        out = self.out
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- forwarding --------------------------------------------------------------------
    def start_forwarding(self, head: bytes, chunked: bool, done: bool) -> None:
        self.head = head
        self.chunked_down = chunked
        self.forwarding = True
        if self.pending or done:
            self._send_head()
            for chunk in self.pending or ():
                self._send(chunk)
            self.pending = []
            if done and self.chunked_down:
                self.out.append(b"0\r\n\r\n")
            self.flush()

    def _send_head(self) -> None:
        if not self.head_sent:
            self.head_sent = True
            self.out.append(self.head)

    def _send(self, chunk: bytes) -> None:
        if self.chunked_down:
            self.out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.out.append(chunk)


class LocalReply(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, status: int, text: str, flag: str, extra: Headers | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.flag = flag
        self.extra = extra or []


def request_id_of(req: Request) -> bytes:
    for name, value in req.headers:
        if len(name) == 12 and name.lower() == b"x-request-id":
            return value
    return newrequest_id_of()


def no_clock() -> float:
    return 0.0


async def forward(down: DownstreamProtocol, req: Request) -> bool:
    """Serve ``req``; True when the downstream connection may carry another request."""
    route = down.route
    policy = route.policy
    metrics = route.metrics
    clock = time.thread_time if req.sampled else no_clock
    cpu_mark = clock()
    status = 0
    tries = 0
    host_used: int | None = None
    flag = "-"
    request_id = next((v for n, v in req.headers if n.lower() == b"x-request-id"), None)
    request_id = request_id or newrequest_id_of()
    keep_alive = req.keep_alive and not down.draining
    sink: Sink | None = None
    conn: UpstreamConn | None = None
    retry = policy.retry_state()
    try:
        now = time.monotonic()
        if route.allowed_principals is not None and down.peer_id not in route.allowed_principals:
            metrics.refused.labels(route.name, "authz").inc()
            raise LocalReply(403, "RBAC: access denied", "RBAC")
        fault = policy.fault(now, route.rng)
        if fault.delay_s > 0:
            req.cpu_s += clock() - cpu_mark
            await asyncio.sleep(fault.delay_s)
            cpu_mark = clock()
        if fault.abort_status is not None:
            raise LocalReply(fault.abort_status, "fault filter abort", "FI")
        head = upstream_head(req, down.client_ip, request_id)
        head_only = req.method == b"HEAD"
        deadline = None if policy.timeout_s is None else time.monotonic() + policy.timeout_s
        while True:
            now = time.monotonic()
            host = policy.pick(len(route.pools), now, route.rng)
            if host is None:
                raise LocalReply(503, "no healthy upstream", "UH")
            if not policy.admit(host, now):
                route.overflows.inc()
                raise LocalReply(503, "upstream overflow", "UO", [(b"x-envoy-overloaded", b"true")])
            host_used = host
            tries += 1
            pool = route.pools[host]
            t_try = time.monotonic()
            sink = Sink(down)
            conn = None
            failure: str | None = None
            try:
                req.cpu_s += clock() - cpu_mark
                conn = await pool.acquire()
                cpu_mark = clock()
                conn_cpu0 = conn.cpu_s
                failure = await _send_and_wait_head(
                    conn, sink, req, head, head_only, policy, deadline
                )
                cpu_mark = clock()
            except ConnectionError:
                cpu_mark = clock()
                failure = "connect_failure"
            except PoolOverflow:
                route.overflows.inc()
                raise LocalReply(
                    503, "upstream overflow", "UO", [(b"x-envoy-overloaded", b"true")]
                ) from None
            finally:
                policy.release(host, time.monotonic())
            attempt = Attempt(
                host, None if failure else sink.status, failure, time.monotonic() - t_try
            )
            ejected = policy.record(attempt, time.monotonic())
            if ejected:
                route.ejections.inc(len(ejected))
            if failure == "route_timeout":
                if conn is not None:
                    conn.close()
                raise LocalReply(504, "upstream request timeout", "UT")
            backoff = None
            if req.body.replayable and (deadline is None or time.monotonic() < deadline):
                backoff = retry.decide(attempt, time.monotonic(), route.rng)
            if backoff is not None:
                route.retries.inc()
                if conn is not None:
                    if failure is None and not sink.lost:
                        # Read and drop the refused answer so that the connection stays usable.
                        sink.pending = None
                        req.cpu_s += clock() - cpu_mark
                        await sink.done_wait
                        cpu_mark = clock()
                        req.cpu_s += conn.cpu_s - conn_cpu0
                        pool.release(
                            conn, sink.keep_alive and not sink.lost and sink.request_sent
                        )
                    else:
                        conn.close()
                if backoff > 0:
                    req.cpu_s += clock() - cpu_mark
                    await asyncio.sleep(backoff)
                    cpu_mark = clock()
                continue
            if failure is not None or conn is None:
                if conn is not None:
                    conn.close()
                if failure == "per_try_timeout":
                    raise LocalReply(504, "upstream request timeout", "UT")
                flag = "UF" if failure == "connect_failure" else "UC"
                raise LocalReply(
                    503 if failure == "connect_failure" else 502,
                    "upstream connect error or disconnect/reset before headers",
                    flag,
                )
            # Forward this response.
            status = sink.status
            done = sink.done_wait.done()
            if done and sink.lost:
                conn.close()
                raise LocalReply(502, "upstream reset before response body", "UC")
            keep_alive = keep_alive and not down.draining  # a drain may have begun meanwhile
            head_bytes, chunked, keep_alive = downstream_head(
                status, sink.pending_headers, req, keep_alive
            )
            sink.start_forwarding(head_bytes, chunked, done and not sink.lost)
            req.cpu_s += clock() - cpu_mark
            await sink.done_wait
            cpu_mark = clock()
            req.cpu_s += conn.cpu_s - conn_cpu0
            if sink.lost:
                conn.close()
                if not sink.head_sent:
                    raise LocalReply(502, "upstream reset before response body", "UC")
                # Part of the body went out: all we can do is cut the client off too.
                flag = "UPE"
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
            break
    except asyncio.CancelledError:
        # The client left or its request broke a limit: the upstream exchange is abandoned
        # half-way, so its connection cannot be reused.
        if conn is not None:
            conn.close()
        raise
    except LocalReply as reply:
        status = reply.status
        flag = reply.flag
        if sink is None or not sink.head_sent:
            if not req.body.eof:
                keep_alive = False
            down.write(
                simple_response(
                    status, reply.text.encode() + b"\n", keep_alive=keep_alive, extra=reply.extra
                )
            )
        else:
            keep_alive = False
            down.abort()
    finally:
        retry.close()
    req.cpu_s += clock() - cpu_mark
    account(down, req, status, tries, host_used, flag, request_id)
    return keep_alive


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
    route.count_status(status)
    route.latency.observe(elapsed)
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
