"""The proxy on loopback: routing, keep-alive, bodies, headers, hardening, metrics, drain."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from meshsim.proxy.httpcore import Limits
from meshsim.proxy.seam import PassThrough

from .helpers import Client, arun, get_once, read_response
from .lab import echo_and_proxy, proxy_for, read_head, scripted

pytestmark = pytest.mark.integration


def test_routes_and_keeps_the_connection_alive() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, port):
            client = await Client.open(port)
            for size in (0, 10, 100_000):
                r = await client.get(f"/?size={size}")
                assert (r.status, len(r.body), r.complete) == (200, size, True)
            await client.close()
            assert proxy.metrics.connections.labels("test", "downstream")._value.get() == 1
            assert proxy.metrics.connections.labels("test", "upstream")._value.get() == 1

    arun(main)


def test_chunked_request_and_response_bodies() -> None:
    async def chunky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        assert b"transfer-encoding: chunked" in head.lower()
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (body, b"-and-more"):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, up = await scripted(chunky)
        async with proxy_for([up]) as proxy:
            client = await Client.open(proxy.port("test"))
            r = await client.raw(
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            assert (r.status, r.body) == (200, b"hello world-and-more")
            assert r.header(b"transfer-encoding") == b"chunked"
            await client.close()
        server.close()

    arun(main)


def test_hop_by_hop_headers_xff_and_request_id() -> None:
    seen: list[bytes] = []

    async def reflect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        seen.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n"
            b"Connection: keep-alive, X-Up-Secret\r\nX-Up-Secret: 1\r\n\r\nok"
        )
        await writer.drain()

    async def main() -> None:
        server, up = await scripted(reflect)
        async with proxy_for([up]) as proxy:
            client = await Client.open(proxy.port("test"))
            r = await client.get(
                "/",
                "Connection: X-Secret\r\nX-Secret: s\r\nTE: trailers\r\n"
                "X-Forwarded-For: 10.0.0.1\r\nUpgrade: h2c\r\n",
            )
            await client.close()
            assert r.status == 200
            assert r.body == b"ok"
            names = {n.lower() for n, _ in r.headers}
            assert not names & {b"keep-alive", b"x-up-secret"}
            head = seen[0].lower()
            for hop in (b"x-secret", b"\r\nte:", b"upgrade:", b"connection:"):
                assert hop not in head
            assert b"x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n" in head
            assert b"x-request-id: " in head
        server.close()

    arun(main)


def test_malformed_request_gets_400_and_others_are_undisturbed() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, port):
            good = await Client.open(port)
            bad = await Client.open(port)
            assert (await good.get("/")).status == 200
            r = await bad.raw(b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n")
            assert r.status == 400
            assert not r.keep_alive
            assert (await good.get("/?size=3")).body == b"xxx"
            await good.close()
            await bad.close()

    arun(main)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-H: 1\r\n" * 30 + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"a" * 4096, 413),
    ],
)
def test_limits(request_bytes: bytes, status: int) -> None:
    limits = Limits(max_header_bytes=4096, max_headers=20, max_body_bytes=2048)

    async def main() -> None:
        async with echo_and_proxy(limits=limits) as (_, port):
            client = await Client.open(port)
            r = await client.raw(request_bytes)
            assert r.status == status
            await client.close()
            assert (await get_once(port)).status == 200  # the proxy lives on

    arun(main)


def test_slowloris_times_out_and_idle_connections_close() -> None:
    limits = Limits(header_timeout_s=0.3, idle_timeout_s=0.3)

    async def main() -> None:
        async with echo_and_proxy(limits=limits) as (_, port):
            slow = await Client.open(port)
            slow.writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")
            for _ in range(10):  # one header line every 0.1 s: never finishes the head
                await asyncio.sleep(0.1)
                if slow.reader.at_eof() or len(slow.reader._buffer):  # type: ignore[attr-defined]
                    break  # the proxy answered
                try:
                    slow.writer.write(b"X-Drip: 1\r\n")
                    await slow.writer.drain()
                except ConnectionError:
                    break
            r = await read_response(slow.reader)
            assert r.status == 408
            idle = await Client.open(port)
            assert await asyncio.wait_for(idle.reader.read(), 5) == b""  # closed by the proxy
            await slow.close()
            await idle.close()

    arun(main)


def test_upstream_dying_mid_response_gives_502_and_the_proxy_lives_on() -> None:
    calls = 0

    async def dying(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_head(reader)
        if calls == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        elif calls == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, up = await scripted(dying)
        async with proxy_for([up]) as proxy:
            port = proxy.port("test")
            assert (await get_once(port)).status == 502  # died after its head
            r = await get_once(port)  # died after part of the body: the client is cut off
            assert r.status == 200
            assert not r.complete
            r = await get_once(port)
            assert (r.status, r.body) == (200, b"ok")
        server.close()

    arun(main)


def test_connect_failure_gives_503() -> None:
    async def main() -> None:
        async with proxy_for([1]) as proxy:
            assert (await get_once(proxy.port("test"))).status == 503

    arun(main)


def test_metrics_ready_live_and_access_log() -> None:
    log: list[str] = []

    async def main() -> None:
        async with echo_and_proxy(log=log) as (proxy, port):
            assert (await get_once(port, "/?status=503")).status == 503
            assert (await get_once(port, "/")).status == 200
            admin = proxy.admin_port
            assert admin is not None
            text = (await get_once(admin, "/metrics")).body.decode()
            assert 'meshsim_proxy_requests_total{listener="test",status="503"} 1.0' in text
            assert "meshsim_proxy_request_duration_seconds_bucket" in text
            assert 'meshsim_proxy_request_cpu_seconds_count{listener="test"} 2.0' in text
            assert "process_cpu_seconds_total" in text
            assert (await get_once(admin, "/ready")).status == 200
            assert (await get_once(admin, "/live")).status == 200
        entries = [json.loads(line) for line in log]
        assert [e["status"] for e in entries] == [503, 200]
        assert entries[0]["path"] == "/?status=503"
        assert entries[0]["cpu_us"] > 0

    arun(main)


def test_graceful_shutdown_drains_in_flight_requests() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, port):
            client = await Client.open(port)
            pending = asyncio.ensure_future(client.get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            idle = await Client.open(port)
            await asyncio.sleep(0.05)
            stopping = asyncio.ensure_future(proxy.stop(5))
            await asyncio.sleep(0.05)
            assert (await get_once(proxy.admin_port or 0, "/ready")).status == 503
            r = await pending
            assert r.status == 200
            assert r.complete
            assert not r.keep_alive
            await stopping
            assert await asyncio.wait_for(idle.reader.read(), 5) == b""
            await client.close()
            await idle.close()

    arun(main)


def test_access_log_is_buffered_and_flushed(tmp_path: Path) -> None:
    from meshsim.proxy.config import ListenerConfig, ProxyConfig
    from meshsim.proxy.echo import bound_port, start_echo, stop_echo
    from meshsim.proxy.server import AccessLog, Proxy

    path = tmp_path / "access.jsonl"

    async def main() -> None:
        server, state = await start_echo(seed=1)
        listener = ListenerConfig("t", ("127.0.0.1", 0), (("127.0.0.1", bound_port(server)),))
        proxy = Proxy(ProxyConfig(listeners=(listener,), access_log=str(path)))
        assert isinstance(proxy.access_log, AccessLog)
        proxy.access_log.max_lines = 4
        await proxy.start()
        client = await Client.open(proxy.port("t"))
        for _ in range(3):
            assert (await client.get("/")).status == 200
        assert path.read_text() == ""  # held in memory: no write per request
        assert (await client.get("/")).status == 200
        assert len(path.read_text().splitlines()) == 4  # a full batch, in one write
        assert (await client.get("/?status=503")).status == 503
        await client.close()
        await proxy.stop(1)
        await stop_echo(server, state)

    arun(main)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["status"] for e in entries] == [200, 200, 200, 200, 503]  # the rest at stop


class _SlowPick(PassThrough):
    """A pass-through route whose host pick burns 3 ms of the proxy thread's CPU: the
    dispatch dominates every request's CPU, so where it is counted shows."""

    def pick(self, hosts: int, now: float, rng: Any) -> int | None:
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.003:
            pass
        return super().pick(hosts, now, rng)


def test_each_sampled_request_is_charged_its_own_read_and_dispatch_once() -> None:
    # Sequential keep-alive GETs, every read sampled (the test lab's cpu_sample_every=1):
    # each request's cpu_us holds its own parse and its 3 ms dispatch, once; not the
    # previous request's read as well (which would put 6 ms on every request but the first).
    log: list[str] = []

    async def main() -> None:
        async with echo_and_proxy(log=log, policy=_SlowPick()) as (_proxy, port):
            client = await Client.open(port)
            for _ in range(5):
                assert (await client.get("/")).status == 200
            await client.close()

    arun(main)
    cpu = [json.loads(line)["cpu_us"] for line in log]
    assert len(cpu) == 5
    assert all(3000 <= c < 4500 for c in cpu), cpu


def test_a_small_whole_body_goes_upstream_with_its_head_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The coroutine path (forward) streams bodies; a small Content-Length body is held
    # until whole and sent with its head from the socket callbacks, even when it arrives
    # in a later read than its head. Bodies that must stream still take the coroutine:
    # chunked, larger than WHOLE_BODY_BYTES, or a client waiting for 100 Continue.
    from meshsim.proxy import downstream, fastpath

    streamed: list[bytes] = []
    real_forward = downstream.forward

    async def counting_forward(down: Any, req: Any) -> bool:
        streamed.append(req.url)
        return await real_forward(down, req)

    monkeypatch.setattr(downstream, "forward", counting_forward)
    big = b"y" * (fastpath.WHOLE_BODY_BYTES + 1)

    async def main() -> None:
        async with echo_and_proxy() as (_proxy, port):
            client = await Client.open(port)
            one = await client.raw(
                b"POST /one HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            )
            assert (one.status, one.body) == (200, b"hello")
            client.writer.write(b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
            await client.writer.drain()
            await asyncio.sleep(0.05)
            two = await client.raw(b"abc")
            assert (two.status, two.body) == (200, b"abc")
            chunked = await client.raw(
                b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nxyz\r\n0\r\n\r\n"
            )
            assert (chunked.status, chunked.body) == (200, b"xyz")
            large = await client.raw(
                b"POST /large HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(big), big)
            )
            assert (large.status, len(large.body)) == (200, len(big))
            expect = await client.raw(
                b"POST /expect HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\n\r\nok"
            )
            assert (expect.status, expect.body) == (200, b"ok")
            await client.close()

    arun(main)
    assert streamed == [b"/chunked", b"/large", b"/expect"]
