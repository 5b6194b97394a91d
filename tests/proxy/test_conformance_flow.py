"""Flow control: a peer that does not read must cost the proxy socket buffers, not bodies.

Responses: the issue 12 measurement, four clients each pipelining eight 16 MiB GETs and
never reading, took the proxy from 64 MB to 580 MB of RSS in one second (HAProxy: 18 MB
flat). The proxy runs in its own process here so that its RSS is its own; the bound is
``RSS_GROWTH_LIMIT_BYTES`` over its RSS after warm-up, a tenth of one response per client.
Requests: an upstream that stops reading a request body must stop the proxy reading the
client, which the in-process test checks on the proxy's own buffers.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshsim.calibrate.procstat import proc_rss_kib
from meshsim.proxy.body import HIGH_WATER
from meshsim.proxy.httpcore import Limits
from meshsim.proxy.runner import wait_for_port

from .helpers import arun
from .lab import proxy_for, read_head, scripted
from .test_cli import free_port

pytestmark = pytest.mark.integration

SIZE = 16 * 1024 * 1024
CLIENTS = 4
PIPELINED = 8
WATCH_S = 2.0
RSS_GROWTH_LIMIT_BYTES = 24 * 1024 * 1024

ECHO = """
import sys
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.echo import start_echo
async def main():
    await start_echo('127.0.0.1', int(sys.argv[1]), seed=1)
    await wait_for_stop_signal()
run(main)
"""

PROXY = """
import sys
from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.server import Proxy
async def main():
    lc = ListenerConfig('flow', ('127.0.0.1', int(sys.argv[1])),
                        (('127.0.0.1', int(sys.argv[2])),))
    proxy = Proxy(ProxyConfig(listeners=(lc,), access_log=None))
    await proxy.start()
    await wait_for_stop_signal()
    await proxy.stop(1)
run(main)
"""


def _read_responses(sock: socket.socket, count: int, size: int, timeout_s: float) -> int:
    """Read ``count`` responses of ``size`` body bytes (content-length framed); their number."""
    sock.settimeout(timeout_s)
    buf = b""
    done = 0
    while done < count:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(1 << 20)
            if not data:
                return done
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:80]
        assert b"content-length: %d" % size in head.lower(), head
        need = size
        while need:
            if not buf:
                buf = sock.recv(1 << 20)
                if not buf:
                    return done
            take = min(need, len(buf))
            need -= take
            buf = buf[take:]
        done += 1
    return done


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_clients_that_do_not_read_leave_the_proxy_rss_bounded() -> None:
    echo_port, proxy_port = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)])]
    socks: list[socket.socket] = []
    try:
        wait_for_port(echo_port, timeout_s=15.0)
        proxy = subprocess.Popen([sys.executable, "-c", PROXY, str(proxy_port), str(echo_port)])
        procs.append(proxy)
        wait_for_port(proxy_port, timeout_s=15.0)
        # Warm up: one full 16 MiB answer, read, so the baseline has the code paths loaded.
        with socket.create_connection(("127.0.0.1", proxy_port)) as warm:
            warm.sendall(b"GET /?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % SIZE)
            assert _read_responses(warm, 1, SIZE, 30.0) == 1
        time.sleep(0.2)
        base = proc_rss_kib(proxy.pid) * 1024
        request = b"GET /?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % SIZE
        for _ in range(CLIENTS):
            sock = socket.create_connection(("127.0.0.1", proxy_port))
            sock.sendall(request * PIPELINED)
            socks.append(sock)
        peak = base
        until = time.monotonic() + WATCH_S
        while time.monotonic() < until:
            peak = max(peak, proc_rss_kib(proxy.pid) * 1024)
            time.sleep(0.02)
        print(
            f"proxy RSS: base {base / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB "
            f"with {CLIENTS} clients x {PIPELINED} x {SIZE >> 20} MiB unread"
        )
        assert peak - base <= RSS_GROWTH_LIMIT_BYTES, (base, peak)
        # Nothing was lost meanwhile: once read, every answer arrives whole, in order.
        assert _read_responses(socks[0], PIPELINED, SIZE, 30.0) == PIPELINED
    finally:
        for sock in socks:
            sock.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_upstream_that_does_not_read_stops_the_proxy_reading_the_client(loop: str) -> None:
    """The body goes no faster than the upstream reads; the proxy holds at most its
    high-water marks of it (the kernel's socket buffers hold the rest)."""
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    else:
        policy = asyncio.DefaultEventLoopPolicy()
    body_size = 48 * 1024 * 1024
    stalled = asyncio.Event()
    release = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        stalled.set()
        await release.wait()

    async def main() -> None:
        server, up = await scripted(never_reads)
        limits = Limits(max_body_bytes=body_size)
        async with proxy_for([up], limits=limits) as proxy:
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port("test"))
            writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % body_size)
            piece = b"b" * (1 << 20)
            sent = 0
            # Send until the proxy stops taking bytes (our buffer stays full for 0.5 s).
            while sent < body_size:
                writer.write(piece)
                sent += len(piece)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    break
            await stalled.wait()
            assert sent < body_size  # the client was held back
            (down,) = proxy.states["test"].connections
            req = down._current
            assert req is not None
            upstream = down.upstream
            assert upstream is not None
            assert upstream.transport is not None
            assert upstream.write_paused
            assert req.body.buffered <= HIGH_WATER + (1 << 20)
            assert upstream.transport.get_write_buffer_size() <= 2 * (1 << 20)
            writer.transport.abort()
            release.set()
        server.close()

    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(policy)
    try:
        arun(main, timeout=60)
    finally:
        asyncio.set_event_loop_policy(before)


def test_a_refused_answer_read_before_a_retry_is_not_buffered() -> None:
    """Before a retry the proxy reads the refused (503) answer to the end, to keep the
    connection; its body goes nowhere, so it must not pile up in the proxy."""
    import tracemalloc

    size, piece = 32 * 1024 * 1024, b"n" * (1 << 20)
    calls = 0

    async def refuse_then_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal calls
        while True:
            await read_head(reader)
            calls += 1
            if calls == 1:
                writer.write(b"HTTP/1.1 503 Unavailable\r\ncontent-length: %d\r\n\r\n" % size)
                for _ in range(size // len(piece)):
                    writer.write(piece)
                    await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

    traffic = {"retries": {"attempts": 1, "retry_on": ["5xx"], "backoff_base_ms": 1}}

    async def main() -> None:
        server, up = await scripted(refuse_then_answer)
        async with proxy_for([up], traffic=traffic) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port("test"))
            tracemalloc.start()
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert head.startswith(b"HTTP/1.1 200")
            assert calls == 2
            assert peak < 8 * len(piece), peak  # not the 32 MiB refused body
            writer.close()
        server.close()

    arun(main, timeout=120)
