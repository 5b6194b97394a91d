"""The proxy against hostile and careless HTTP/1.1 clients and upstreams, over raw sockets.

Smuggling (CL.TE, TE.CL, duplicate lengths, framing fields named in ``Connection``,
obs-fold), versions, pipelining, half-close, oversized heads and chunks, and upstream
responses whose framing the proxy cannot pass on. Flow control under a client that does not
read is in ``test_conformance_flow.py``.

HAProxy 2.6.12 was given the same inputs by hand (not by these tests). It answers the
pipelining and half-close cases exactly as here, and refuses most of the same heads; where
it differs it is more lenient (it unfolds obs-fold, accepts bare LF, merges equal duplicate
lengths, serves an ``HTTP/2.0`` request line) or takes RFC 9112's other option (CL with TE:
it drops the length and closes after the answer). The notes per case say where.

Each refused request must also never reach the upstream: a request the proxy refuses but
forwards anyway is the smuggling it is meant to prevent.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import cast

import httptools
import pytest

from meshsim.proxy.httpcore import Limits

from .helpers import Response, arun
from .lab import Handler, echo_and_proxy, proxy_for, read_head, scripted

pytestmark = pytest.mark.integration

LIMITS = Limits(max_header_bytes=4096, max_headers=20, max_body_bytes=4096)


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every case on both loops: tests default to asyncio's, the proxy runs on uvloop
    (their transports differ, e.g. in what a half-close or a reset looks like)."""
    before = asyncio.get_event_loop_policy()
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    yield request.param
    asyncio.set_event_loop_policy(before)


# -- a raw client and a recording upstream ----------------------------------------------
class _Responses:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self.current = Response()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.current.status = self.parser.get_status_code()
        self.current.keep_alive = self.parser.should_keep_alive()
        self.current.complete = True
        self.done.append(self.current)


@dataclass
class Exchange:
    responses: list[Response]
    closed: bool
    """The proxy closed the connection (EOF or reset) within the wait."""

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


async def exchange(
    port: int,
    data: bytes,
    *,
    expect: int = 1,
    half_close: bool = False,
    wait_s: float = 5.0,
) -> Exchange:
    """Send ``data`` raw, then read until ``expect`` responses arrived (and, if the last
    says ``connection: close`` or we half-closed, until the proxy closes), or ``wait_s``
    passed. ``half_close`` shuts our sending side after ``data``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if half_close:
        writer.write_eof()
    got = _Responses()
    closed = False
    loop = asyncio.get_running_loop()
    until = loop.time() + wait_s
    try:
        while True:
            left = until - loop.time()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            got.parser.feed_data(chunk)
            if len(got.done) >= expect and not half_close and got.done[-1].keep_alive:
                break  # all answers in, and the proxy means to keep the connection
    except ConnectionResetError:
        closed = True
    except httptools.HttpParserError:
        pass  # whatever came after the last complete response was not HTTP
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
    return Exchange(got.done, closed)


@dataclass
class Seen:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)


@dataclass
class Recorder:
    """An upstream that records every request llhttp reads from it and answers 200."""

    seen: list[Seen] = field(default_factory=list)


class _RecordingProtocol(asyncio.Protocol):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        seen = Seen(self.parser.get_method(), self.url, self.headers, self.body)
        self.rec.seen.append(seen)
        answer = b"%s %s %d" % (seen.method, seen.url, len(seen.body))
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer)
        )


@asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[int]:
    """A scripted upstream's port, closed even when the test fails (a server left open
    makes uvloop's loop close hang under pytest)."""
    server, port = await scripted(handler)
    try:
        yield port
    finally:
        server.close()


@asynccontextmanager
async def recording_proxy(limits: Limits = LIMITS) -> AsyncIterator[tuple[Recorder, int]]:
    rec = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RecordingProtocol(rec), "127.0.0.1", 0)
    try:
        async with proxy_for([server.sockets[0].getsockname()[1]], limits=limits) as proxy:
            yield rec, proxy.port("test")
    finally:
        server.close()


def head(*lines: str, version: str = "HTTP/1.1", method: str = "POST") -> bytes:
    return (f"{method} / {version}\r\n" + "".join(f"{line}\r\n" for line in lines)).encode() + (
        b"\r\n"
    )


# -- refused heads: the answer, the close, and nothing upstream ---------------------------
REFUSED: list[tuple[str, bytes, int]] = [
    # CL.TE and TE.CL: RFC 9112 6.1 lets a server reject (Envoy, llhttp: 400) or drop the
    # length and close after (HAProxy: 200, closed).
    (
        "cl-te",
        head("Host: t", "Content-Length: 6", "Transfer-Encoding: chunked") + b"0\r\n\r\nG",
        400,
    ),
    (
        "te-cl",
        head("Host: t", "Transfer-Encoding: chunked", "Content-Length: 3")
        + b"8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-cl-connection",
        head(
            "Host: t",
            "Connection: Content-Length",
            "Transfer-Encoding: chunked",
            "Content-Length: 3",
        )
        + b"0\r\n\r\n",
        400,
    ),
    (
        "duplicate-cl-equal",
        head("Host: t", "Content-Length: 5", "Content-Length: 5") + b"hello",
        400,
    ),
    (
        "duplicate-cl-differ",
        head("Host: t", "Content-Length: 5", "Content-Length: 6") + b"hello!",
        400,
    ),
    ("cl-list", head("Host: t", "Content-Length: 5, 5") + b"hello", 400),
    ("cl-plus", head("Host: t", "Content-Length: +5") + b"hello", 400),
    ("cl-hex", head("Host: t", "Content-Length: 0x5") + b"hello", 400),
    ("cl-negative", head("Host: t", "Content-Length: -1"), 400),
    ("cl-huge", head("Host: t", "Content-Length: 99999999999999999999999"), 400),
    ("te-identity", head("Host: t", "Transfer-Encoding: identity") + b"hello", 400),
    ("te-not-last", head("Host: t", "Transfer-Encoding: chunked, identity") + b"0\r\n\r\n", 400),
    (
        "te-twice-lines",
        head("Host: t", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
        400,
    ),
    ("te-xchunked", head("Host: t", "Transfer-Encoding: xchunked") + b"0\r\n\r\n", 400),
    ("te-space-before-colon", head("Host: t", "Transfer-Encoding : chunked") + b"0\r\n\r\n", 400),
    (
        "te-in-http10",
        head("Host: t", "Transfer-Encoding: chunked", version="HTTP/1.0") + b"0\r\n\r\n",
        400,
    ),
    # A coding before chunked: Envoy answers 501, HAProxy 422; see framing.py.
    ("te-gzip-chunked", head("Host: t", "Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", 501),
    ("obs-fold", head("Host: t", "X-A: 1", "  folded", method="GET"), 400),  # HAProxy unfolds
    ("obs-fold-te", head("Host: t", "Transfer-Encoding: gzip,", " chunked") + b"0\r\n\r\n", 400),
    ("two-hosts", head("Host: a", "Host: b", method="GET"), 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("nul-in-value", head("Host: t", "X-A: a\x00b", method="GET"), 400),
    ("cr-in-value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
    ("http-0.9", b"GET /\r\n\r\n", 400),
    ("http-2.0", head("Host: t", version="HTTP/2.0", method="GET"), 505),  # HAProxy: 200
    ("http-3.0", head("Host: t", version="HTTP/3.0", method="GET"), 400),  # llhttp: 400
    ("http-1.2", head("Host: t", version="HTTP/1.2", method="GET"), 400),
    ("lowercase-version", head("Host: t", version="http/1.1", method="GET"), 400),
    ("upgrade", head("Host: t", "Connection: Upgrade", "Upgrade: h2c", method="GET"), 501),
    # Chunks: sizes that overflow, that no limit allows, or are not hex.
    (
        "chunk-2^64-16",
        head("Host: t", "Transfer-Encoding: chunked") + b"fffffffffffffff0\r\n" + b"a" * 100,
        413,
    ),
    ("chunk-over-limit", head("Host: t", "Transfer-Encoding: chunked") + b"1001\r\n", 413),
    (
        "chunk-overflow",
        head("Host: t", "Transfer-Encoding: chunked") + b"1ffffffffffffffff0\r\n",
        400,
    ),
    ("chunk-negative", head("Host: t", "Transfer-Encoding: chunked") + b"-5\r\nhello\r\n", 400),
    ("chunk-0x", head("Host: t", "Transfer-Encoding: chunked") + b"0x5\r\nhello\r\n", 400),
    (
        "chunk-no-crlf",
        head("Host: t", "Transfer-Encoding: chunked") + b"5\r\nhelloXX0\r\n\r\n",
        400,
    ),
    (
        "trailer-cl",
        head("Host: t", "Transfer-Encoding: chunked") + b"0\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),  # llhttp: CL with TE
    # Sizes past the limits.
    ("header-too-large", head("Host: t", "X-Big: " + "a" * 5000, method="GET"), 431),
    ("too-many-headers", head("Host: t", *["X-H: 1"] * 30, method="GET"), 431),
    ("url-too-long", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 431),
    ("cl-over-limit", head("Host: t", "Content-Length: 4097"), 413),
    (
        "chunked-over-limit",
        head("Host: t", "Transfer-Encoding: chunked")
        + b"800\r\n"
        + b"a" * 2048
        + b"\r\n800\r\n"
        + b"a" * 2048
        + b"\r\n1\r\n",
        413,
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [(r, s) for _, r, s in REFUSED],
    ids=[name for name, _, _ in REFUSED],
)
def test_ambiguous_or_invalid_requests_are_refused_and_never_forwarded(
    request_bytes: bytes, status: int
) -> None:
    async def main() -> None:
        async with recording_proxy() as (rec, port):
            got = await exchange(port, request_bytes)
            assert got.statuses == [status]
            assert not got.responses[0].keep_alive
            assert got.closed
            assert rec.seen == []
            after = await exchange(port, head("Host: t", method="GET"))
            assert after.statuses == [200]  # the proxy lives on

    arun(main)


# -- what reaches the upstream: framing by the proxy, not by the client -------------------
def test_connection_cannot_remove_framing_or_routing_headers() -> None:
    async def main() -> None:
        async with recording_proxy() as (rec, port):
            got = await exchange(
                port,
                head(
                    "Host: h1",
                    "Connection: Content-Length, Host, X-Hop",
                    "X-Hop: 1",
                    "Content-Length: 5",
                )
                + b"hello"
                + head("Host: h2", "Connection: Transfer-Encoding", "Transfer-Encoding: chunked")
                + b"3\r\nabc\r\n0\r\n\r\n",
                expect=2,
                wait_s=1.0,
            )
            assert got.statuses == [200, 200]
            assert [r.body for r in got.responses] == [b"POST / 5", b"POST / 3"]
            first, second = rec.seen
            assert (first.header(b"content-length"), first.header(b"host")) == (b"5", b"h1")
            assert first.header(b"x-hop") is None
            assert first.body == b"hello"
            assert second.header(b"transfer-encoding") == b"chunked"
            assert second.body == b"abc"
            assert len(rec.seen) == 2  # no third request hid in a body

    arun(main)


@pytest.mark.parametrize(
    ("request_bytes", "content_length", "body"),
    [
        (head("Host: t", "Content-Length: 0"), b"0", b""),
        (head("Host: t", "Content-Length: 005") + b"hello", b"5", b"hello"),
        (head("Host: t", "Content-Length:\t5") + b"hello", b"5", b"hello"),
        (
            head("Host: t", "Transfer-Encoding: CHUNKED") + b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            None,
            b"hello",
        ),
        (
            head("Host: t", "Transfer-Encoding: chunked") + b"2\r\nhe\r\n3\r\nllo\r\n"
            b"0\r\nX-Trailer: 1\r\n\r\n",
            None,
            b"hello",
        ),
        (head("Host: t", method="GET"), None, b""),
    ],
    ids=[
        "cl-0",
        "cl-leading-zeros",
        "cl-tabs",
        "chunked-uppercase-ext",
        "chunked-trailer",
        "no-body",
    ],
)
def test_bodies_are_reframed_by_the_proxy(
    request_bytes: bytes, content_length: bytes | None, body: bytes
) -> None:
    async def main() -> None:
        async with recording_proxy() as (rec, port):
            got = await exchange(port, request_bytes, wait_s=1.0)
            assert got.statuses == [200]
            (seen,) = rec.seen
            assert seen.header(b"content-length") == content_length
            chunked = request_bytes.lower().find(b"transfer-encoding") >= 0
            assert seen.header(b"transfer-encoding") == (b"chunked" if chunked else None)
            assert seen.body == body

    arun(main)


def test_the_smuggling_reproduction_of_issue_12() -> None:
    """A body named hop-by-hop through Connection must stay a body.

    The attack: ``Connection: Content-Length`` made the proxy drop the length but forward
    the body, which the upstream read as a second request (a 418 after 300 ms); its answer
    waited on the pooled upstream connection for the next client, the victim. The victim
    must get its own response, ten times out of ten.
    """
    smuggled = b"GET /?status=418&delay=300ms HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = (
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
    )

    async def main() -> None:
        async with echo_and_proxy() as (_, port):
            for _ in range(10):
                got = await exchange(port, attack, wait_s=0.5)
                assert got.statuses == [200]
                assert got.responses[0].body == smuggled  # the echo returns the body
                victim = await exchange(
                    port, b"GET /?size=5 HTTP/1.1\r\nHost: x\r\n\r\n", wait_s=0.5
                )
                assert victim.statuses == [200]
                assert victim.responses[0].body == b"xxxxx"

    arun(main)


# -- pipelining and half-close --------------------------------------------------------------
GOOD = b"GET /?size=3 HTTP/1.1\r\nHost: t\r\n\r\n"
SLOW = b"GET /?size=4&delay=200ms HTTP/1.1\r\nHost: t\r\n\r\n"
POST = b"POST /?delay=50ms HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
BAD = b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "statuses", "bodies"),
    [
        (GOOD + GOOD + GOOD, [200, 200, 200], [b"xxx"] * 3),
        (SLOW + GOOD, [200, 200], [b"xxxx", b"xxx"]),
        (GOOD + BAD, [200, 400], [b"xxx", b"malformed request\n"]),
        (SLOW + BAD, [200, 400], [b"xxxx", b"malformed request\n"]),
        (POST + BAD, [200, 400], [b"hi", b"malformed request\n"]),
        (
            SLOW + GOOD + head("Host: a", "Host: b", method="GET"),
            [200, 200, 400],
            [b"xxxx", b"xxx", b"more than one Host header\n"],
        ),
        (
            SLOW + head("Host: t", "X-Big: " + "a" * 5000, method="GET"),
            [200, 431],
            [b"xxxx", b"request header fields too large\n"],
        ),
        (
            SLOW + head("Host: t", "Content-Length: 1", "Transfer-Encoding: chunked"),
            [200, 400],
            [b"xxxx", b"malformed request\n"],
        ),  # llhttp refuses this one itself
    ],
    ids=[
        "three-good",
        "slow-then-fast",
        "good-then-bad",
        "slow-then-bad",
        "post-then-bad",
        "two-then-two-hosts",
        "slow-then-431",
        "slow-then-cl-te",
    ],
)
def test_pipelined_requests_are_answered_in_order_before_an_error(
    data: bytes, statuses: list[int], bodies: list[bytes]
) -> None:
    async def main() -> None:
        async with echo_and_proxy(limits=LIMITS) as (_, port):
            got = await exchange(port, data, expect=len(statuses), wait_s=3.0)
            assert got.statuses == statuses
            assert [r.body for r in got.responses] == bodies
            if statuses[-1] >= 400:
                assert got.closed

    arun(main)


@pytest.mark.parametrize(
    ("data", "statuses"),
    [
        (SLOW, [200]),
        (SLOW + GOOD, [200, 200]),
        (POST, [200]),
        (b"GET /?delay=200ms HTTP/1.0\r\n\r\n", [200]),
        (SLOW + b"GET / HTTP/1.1\r\nHo", [200]),  # the cut request is dropped
        (b"GET / HTTP/1.1\r\nHo", []),
        (head("Host: t", "Content-Length: 10") + b"abc", []),  # a body that never ends
    ],
    ids=["slow", "slow-then-fast", "post", "http10", "then-partial", "partial", "partial-body"],
)
def test_half_closed_clients_still_get_their_answers(data: bytes, statuses: list[int]) -> None:
    async def main() -> None:
        async with echo_and_proxy() as (_, port):
            got = await exchange(port, data, expect=len(statuses), half_close=True, wait_s=3.0)
            assert got.statuses == statuses
            assert all(r.complete for r in got.responses)
            assert got.closed  # and then the proxy closes: nothing more will come

    arun(main)


# -- upstream responses whose framing cannot be passed on ---------------------------------
def _answering(raw: bytes):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.1)

    return handler


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 502, None),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            502,
            None,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            502,
            None,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", 502, None),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 3\r\n\r\nabc", 502, None),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc",
            200,
            b"abc",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            200,
            b"abc",
        ),
    ],
    ids=[
        "duplicate-cl",
        "cl-te",
        "gzip-chunked",
        "gzip-close",
        "obs-fold",
        "connection-cl",
        "chunked",
    ],
)
def test_upstream_framing_the_proxy_cannot_pass_on_is_a_502(
    raw: bytes, status: int, body: bytes | None
) -> None:
    async def main() -> None:
        async with upstream(_answering(raw)) as up, proxy_for([up]) as proxy:
            got = await exchange(proxy.port("test"), head("Host: t", method="GET"), wait_s=1.0)
            assert got.statuses == [status]
            if body is not None:
                response = got.responses[0]
                assert response.body == body
                assert response.header(b"content-length") in (b"3", None)

    arun(main)


def test_a_closed_socket_is_not_a_hang() -> None:
    """Resets and abrupt closes, mid-head and mid-body: the proxy stays up."""

    async def main() -> None:
        async with echo_and_proxy() as (_, port):
            for data in (b"GET / HT", head("Host: t", "Content-Length: 100") + b"abc"):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                sock.sendall(data)
                sock.close()  # RST
            await asyncio.sleep(0.05)
            assert (await exchange(port, GOOD)).statuses == [200]

    arun(main)


def test_the_echo_upstream_also_answers_pipelined_requests_before_an_error() -> None:
    from meshsim.proxy.echo import bound_port, start_echo, stop_echo

    async def main() -> None:
        server, state = await start_echo(seed=1)
        got = await exchange(bound_port(server), SLOW + GOOD + BAD, expect=3)
        assert got.statuses == [200, 200, 400]
        assert got.closed
        await stop_echo(server, state)

    arun(main)


def _close_delimited(reset: bool):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(0.05)
        if reset:  # the upstream dies: RST, not the FIN that ends such a body
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    return handler


@pytest.mark.parametrize(("version", "reset"), [(b"1.1", False), (b"1.0", False), (b"1.1", True)])
def test_a_body_delimited_by_the_upstream_closing(version: bytes, reset: bool) -> None:
    """RFC 9112 6.3 rule 8: the FIN ends the body; a reset is a truncation, never an end."""

    async def main() -> None:
        async with upstream(_close_delimited(reset)) as up, proxy_for([up]) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port("test"))
            writer.write(b"GET / HTTP/%s\r\nHost: t\r\n\r\n" % version)
            raw = b""
            with suppress(ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(65536), 5):
                    raw += chunk
                    if raw.endswith(b"0\r\n\r\n"):
                        break
            writer.close()
            head_bytes, _, body = raw.partition(b"\r\n\r\n")
            assert head_bytes.startswith(b"HTTP/1.1 200 OK")
            if version == b"1.0":
                assert body == b"hello"  # delimited by our close in turn
            elif reset:
                assert body == b"5\r\nhello\r\n"  # no last chunk: the client sees a cut
            else:
                assert body == b"5\r\nhello\r\n0\r\n\r\n"

    arun(main)


def test_an_upstream_that_accepts_and_resets_gets_a_502_not_a_hang() -> None:
    class Resetting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            cast(asyncio.Transport, transport).abort()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Resetting, "127.0.0.1", 0)
        try:
            async with proxy_for([server.sockets[0].getsockname()[1]]) as proxy:
                for _ in range(5):
                    got = await exchange(proxy.port("test"), GOOD, wait_s=5.0)
                    assert got.statuses == [502]
        finally:
            server.close()

    arun(main)


# -- trailers: never headers ------------------------------------------------------------------
def test_request_trailers_never_become_headers_of_a_queued_request() -> None:
    """llhttp reports trailer fields as headers; a request queued behind another must not
    be forwarded with them (a trailer Host would make two)."""

    async def main() -> None:
        async with recording_proxy() as (rec, port):
            got = await exchange(
                port,
                head("Host: t", method="GET")
                + head("Host: t", "Transfer-Encoding: chunked")
                + b"3\r\nabc\r\n0\r\nHost: evil\r\nX-Injected: 1\r\n\r\n"
                + head("Host: t", method="GET"),
                expect=3,
                wait_s=2.0,
            )
            assert got.statuses == [200, 200, 200]
            posted = rec.seen[1]
            assert posted.body == b"abc"
            assert [v for n, v in posted.headers if n.lower() == b"host"] == [b"t"]
            assert posted.header(b"x-injected") is None
            assert posted.header(b"content-length") is None
            assert len(rec.seen) == 3

    arun(main)


@pytest.mark.parametrize(
    "traffic",
    [None, {"retries": {"attempts": 1, "retry_on": ["5xx"]}}],
    ids=["fast-path", "task-path"],
)
def test_response_trailers_never_become_headers(traffic: dict[str, object] | None) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        b"0\r\nContent-Type: text/evil\r\nX-Trailer: 1\r\n\r\n"
    )

    async def main() -> None:
        async with upstream(_answering(raw)) as up, proxy_for([up], traffic=traffic) as proxy:
            got = await exchange(proxy.port("test"), head("Host: t", method="GET"), wait_s=1.0)
            assert got.statuses == [200]
            response = got.responses[0]
            assert response.body == b"abc"
            assert response.header(b"content-type") is None
            assert response.header(b"x-trailer") is None
            assert response.header(b"transfer-encoding") == b"chunked"

    arun(main)


# -- interim (1xx) responses ---------------------------------------------------------------
def _interim_then_final(interim: bytes, body_bytes: int):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(interim)
        await writer.drain()
        body = await reader.readexactly(body_bytes)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.1)

    return handler


@pytest.mark.parametrize(
    ("interim", "request_bytes", "body_bytes", "seen_first"),
    [
        (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            5,
            b"HTTP/1.1 100 Continue\r\n\r\n",
        ),
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nConnection: x-hop\r\n"
            b"X-Hop: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
            0,
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            5,
            b"",
        ),
    ],
    ids=["100-continue", "103-early-hints-fast-path", "http10-client-gets-none"],
)
def test_interim_responses_are_passed_on_before_the_final_one(
    interim: bytes, request_bytes: bytes, body_bytes: int, seen_first: bytes
) -> None:
    async def main() -> None:
        handler = _interim_then_final(interim, body_bytes)
        async with upstream(handler) as up, proxy_for([up]) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port("test"))
            writer.write(request_bytes)
            if seen_first:  # before the body is sent: the client waits for it
                got = await asyncio.wait_for(reader.readexactly(len(seen_first)), 5)
                assert got == seen_first
            writer.write(b"hello"[:body_bytes])
            final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert final.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await reader.readexactly(body_bytes) == b"hello"[:body_bytes]
            writer.close()

    arun(main)


def test_an_unasked_switch_of_protocols_is_a_502() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"

    async def main() -> None:
        async with upstream(_answering(raw)) as up, proxy_for([up]) as proxy:
            got = await exchange(proxy.port("test"), head("Host: t", method="GET"), wait_s=2.0)
            assert got.statuses == [502]

    arun(main)
