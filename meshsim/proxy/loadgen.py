"""An open-loop HTTP/1.1 load generator that measures latency without coordinated omission.

Requests are *scheduled* at a constant or Poisson rate, independently of how fast the system
answers. Each request's latency is measured twice: from its **intended** send time
(``corrected``: what a user arriving on schedule would see, queueing behind busy connections
included, as wrk2 does) and from its actual send time (``uncorrected``: what a closed-loop
tool would report). Both go into HDR histograms in microseconds.

:func:`measure` is the reusable core (calibration calls it in-process); the CLI only renders.
With ``rps=0`` every connection sends as fast as answers come back (closed loop, fortio's
``-qps 0``), for throughput runs; then the two latencies coincide.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import numpy as np
from hdrh.histogram import HdrHistogram

from meshsim.errors import MeshsimError

# Histogram range in microseconds: 1 us .. 1 hour, 3 significant digits (0.1 % resolution).
HIST_LOW_US = 1
HIST_HIGH_US = 3_600_000_000
HIST_DIGITS = 3
# A status code recorded for a request that got no HTTP answer (fortio uses -1 too).
NO_ANSWER = -1


TIMER_TICK_S = 0.001
"""The event loop's timer resolution: libuv (uvloop) and ``epoll_wait`` count whole
milliseconds, so a sleep ends on a millisecond tick and requests leave in clumps (the
simulator's ``release_tick_ms`` models this)."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOW_US, HIST_HIGH_US, HIST_DIGITS)


@dataclass(frozen=True)
class LoadSpec:
    url: str
    rps: float
    """Total target rate over all connections; 0 means as fast as possible (closed loop)."""
    connections: int = 4
    duration_s: float = 5.0
    poisson: bool = False
    seed: int | None = None
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drain_s: float = 5.0
    """After the schedule ends, wait this long for queued and in-flight requests."""


@dataclass
class LoadResult:
    spec: LoadSpec
    corrected: HdrHistogram = field(default_factory=new_histogram)
    uncorrected: HdrHistogram = field(default_factory=new_histogram)
    sizes: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 1 << 34, 2))
    ret_codes: Counter[int] = field(default_factory=Counter)
    start_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    scheduled: int = 0
    sent: int = 0
    completed: int = 0
    errors: int = 0
    unsent: int = 0
    """Scheduled but never sent, because every connection stayed busy until the end."""
    actual_duration_s: float = 0.0
    late_at_end: int = 0
    """Requests still waiting for a connection when the schedule ended."""
    sent_on_time: int = 0
    connect_failures: int = 0
    releases: int = 0
    """Open loop: the scheduler's wake-ups that released requests (requests leave in clumps,
    one per wake-up of its timer: ``scheduled / releases`` of them on average)."""
    release_lateness_s: list[float] = field(default_factory=list)
    """Open loop: for each wake-up of the scheduler's timer, when it ran less the intended
    time of the request it slept for (negative: the timer fired early; the event loop counts
    whole milliseconds, and its own work delays a timer that is due)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def actual_rps(self) -> float:
        return self.completed / self.actual_duration_s if self.actual_duration_s > 0 else 0.0


def parse_url(url: str) -> tuple[str, int, bytes]:
    """``http://host:port/path?query`` into host, port and request target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MeshsimError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise MeshsimError(f"bad URL {url!r}: expected http://HOST[:PORT]/PATH")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port or 80, target.encode("latin-1")


def build_request(spec: LoadSpec, host: str, port: int, target: bytes) -> bytes:
    lines = [f"{spec.method} ".encode() + target + b" HTTP/1.1", f"host: {host}:{port}".encode()]
    lines.append(b"user-agent: meshsim-load")
    lines.extend(f"{k}: {v}".encode("latin-1") for k, v in spec.headers)
    if spec.body or spec.method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(spec.body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + spec.body


class _Run:
    """State shared by the scheduler and the connections of one measurement."""

    def __init__(
        self, spec: LoadSpec, result: LoadResult, host: str, port: int, target: bytes
    ) -> None:
        self.host = host
        self.port = port
        self.spec = spec
        self.result = result
        self.request = build_request(spec, host, port, target)
        # A client that sends "Connection: close" closes after the answer whatever the
        # answer says (RFC 9112, 9.6: the server's own "close" is only a SHOULD).
        self.close_each = any(
            k.lower() == "connection" and v.strip().lower() == "close" for k, v in spec.headers
        )
        self.backlog: deque[float] = deque()  # intended send times not yet sent
        self.idle: list[_Conn] = []
        self.closed_loop = spec.rps <= 0
        self.deadline = 0.0
        self.stopping = False
        self.quiet = asyncio.Event()  # set when nothing is queued or in flight

    def dispatch(self, intended: float) -> None:
        self.result.scheduled += 1
        if self.idle:
            self.idle.pop().send(intended)
        else:
            self.backlog.append(intended)

    def next_for(self, conn: _Conn) -> None:
        """``conn`` is free: give it the oldest waiting request, or park it."""
        if self.backlog:
            conn.send(self.backlog.popleft())
        elif self.closed_loop and not self.stopping and time.perf_counter() < self.deadline:
            self.result.scheduled += 1
            conn.send(time.perf_counter())
        else:
            self.idle.append(conn)
            if self.stopping and not self.backlog and len(self.idle) == self.spec.connections:
                self.quiet.set()


class _Conn(asyncio.Protocol):
    """One keep-alive client connection; at most one request in flight."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.intended = 0.0
        self.sent_at = 0.0
        self.size = 0
        self.busy = False
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, intended: float) -> None:
        if self.transport is None or self.transport.is_closing():
            self.intended = intended
            self.busy = True
            self._lost()
            return
        self.intended = intended
        self.busy = True
        self.size = 0
        self.run.result.sent += 1
        self.sent_at = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        res = self.run.result
        res.corrected.record_value(max(1, int((now - self.intended) * 1e6)))
        res.uncorrected.record_value(max(1, int((now - self.sent_at) * 1e6)))
        res.sizes.record_value(max(1, self.size))
        res.ret_codes[self.parser.get_status_code()] += 1
        res.completed += 1
        self.busy = False
        if (
            self.run.close_each or not self.parser.should_keep_alive()
        ) and self.transport is not None:
            self.transport.close()  # connection_lost reconnects and frees the slot
            return
        self.run.next_for(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.connected.done():
            self.connected.set_result(None)
        self._lost()

    def _lost(self) -> None:
        """The connection is gone: fail any request on it and carry on with a new one."""
        run = self.run
        if self.busy:
            self.busy = False
            run.result.errors += 1
            run.result.ret_codes[NO_ANSWER] += 1
            run.result.completed += 1
            now = time.perf_counter()
            run.result.corrected.record_value(max(1, int((now - self.intended) * 1e6)))
        asyncio.get_running_loop().create_task(_replace(run, self))


async def _connect(run: _Run, host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    for attempt in range(50):
        try:
            _, proto = await loop.create_connection(lambda: _Conn(run), host, port)
            return proto
        except OSError as exc:
            run.result.connect_failures += 1
            if attempt == 0 and run.result.sent == 0 and not run.stopping:
                reason = exc.strerror or exc
                raise MeshsimError(f"cannot connect to {host}:{port}: {reason}") from None
            if run.stopping:
                break
            await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
    raise MeshsimError(f"cannot reconnect to {host}:{port}")


async def _replace(run: _Run, dead: _Conn) -> None:
    try:
        conn = await _connect(run, run.host, run.port)
    except MeshsimError:
        run.result.warnings.append("a connection could not be re-established")
        return
    run.next_for(conn)


async def measure(spec: LoadSpec) -> LoadResult:
    """Run one open-loop (or, with ``rps=0``, closed-loop) measurement."""
    _validate(spec)
    host, port, target = parse_url(spec.url)
    result = LoadResult(spec)
    run = _Run(spec, result, host, port, target)
    conns = [await _connect(run, host, port) for _ in range(spec.connections)]
    rng = np.random.default_rng(spec.seed)
    with _no_collection():
        await _run_and_drain(spec, run, result, conns, rng)
    for conn in conns + run.idle:
        if conn.transport is not None:
            conn.transport.close()
    _rate_warnings(result)
    return result


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection while the load runs.

    A load generator that pauses stops sending and stops reading responses, and its pause
    is measured as the proxies' latency. The lab's load generator runs in the calibration's
    own process, whose heap is large (numpy, simpy, the fit): a full collection there takes
    tens of milliseconds. The cycles a few seconds of load leave are collected after.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def _run_and_drain(
    spec: LoadSpec, run: _Run, result: LoadResult, conns: list[_Conn], rng: np.random.Generator
) -> None:
    start = time.perf_counter()
    result.start_time = dt.datetime.now(dt.UTC)
    run.deadline = start + spec.duration_s
    if run.closed_loop:
        for conn in conns:
            run.next_for(conn)
        await asyncio.sleep(spec.duration_s)
    else:
        run.idle.extend(conns)
        await _schedule(run, rng, start)
    run.stopping = True
    result.late_at_end = len(run.backlog)
    result.sent_on_time = result.sent
    if run.backlog or len(run.idle) < spec.connections:
        run.quiet.clear()
        try:
            await asyncio.wait_for(run.quiet.wait(), spec.drain_s)
        except TimeoutError:
            result.warnings.append(
                f"{len(run.backlog)} queued and "
                f"{spec.connections - len(run.idle) - len(run.backlog)} in-flight requests "
                f"did not finish within the {spec.drain_s:g}s drain"
            )
    result.unsent = len(run.backlog)
    result.actual_duration_s = time.perf_counter() - start


async def _schedule(run: _Run, rng: np.random.Generator, start: float) -> None:
    """Release requests at their intended times; a late wake-up releases all that are due."""
    spec = run.spec
    mean_gap = 1.0 / spec.rps
    total = int(spec.rps * spec.duration_s) if not spec.poisson else None
    i = 0
    offset = 0.0
    while True:
        if spec.poisson:
            offset += float(rng.exponential(mean_gap))
            if offset >= spec.duration_s:
                return
        else:
            assert total is not None
            if i >= total:
                return
            offset = i * mean_gap
        i += 1
        intended = start + offset
        now = time.perf_counter()
        due_now = intended - now <= TIMER_TICK_S / 2
        if not due_now or i == 1:
            run.result.releases += 1
        if not due_now:
            await asyncio.sleep(intended - now)
            now = time.perf_counter()
            run.result.release_lateness_s.append(now - intended)
        # Below the loop's timer resolution a sleep only adds error, so a request due within
        # half a tick goes now, and its latency counts from now: never from the future.
        run.dispatch(min(intended, now))


def _validate(spec: LoadSpec) -> None:
    if spec.rps < 0:
        raise MeshsimError(f"--rps must be >= 0 (0 = as fast as possible), not {spec.rps}")
    if spec.connections < 1:
        raise MeshsimError(f"--connections must be >= 1, not {spec.connections}")
    if not spec.duration_s > 0:
        raise MeshsimError(f"--duration-s must be > 0, not {spec.duration_s}")


def _rate_warnings(result: LoadResult) -> None:
    spec = result.spec
    # Requests still queued when the schedule ended were late by more than a service
    # time: the generator (or the system behind it) did not keep up with the plan.
    if spec.rps > 0 and (result.late_at_end > spec.connections or result.unsent):
        result.warnings.append(
            f"could not keep the requested rate: {spec.rps:g} rps requested, "
            f"{result.sent_on_time / spec.duration_s:.1f} rps sent on schedule"
            + (f", {result.unsent} never sent" if result.unsent else "")
            + f"; all {spec.connections} connections were busy (latencies include the wait; "
            "more --connections may help)"
        )
    if result.errors:
        result.warnings.append(f"{result.errors} requests got no HTTP answer")


def run_load(spec: LoadSpec) -> LoadResult:
    """Synchronous wrapper around :func:`measure` (fresh event loop, uvloop when available)."""
    from meshsim.proxy.runner import run

    return run(lambda: measure(spec))
