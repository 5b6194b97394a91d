"""The proxy's HTTP/1.1 framing and header building, without sockets (in the manner of h11's
own tests): which request heads are refused, and the exact heads forwarded each way."""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools
import pytest

from meshsim.proxy.body import Body
from meshsim.proxy.framing import (
    CHUNKED,
    LAST_CHUNK,
    PROTECTED,
    Refusal,
    chunk,
    downstream_head,
    interim_head,
    request_body,
    response_codings_ok,
    transfer_codings,
    upstream_head,
)
from meshsim.proxy.httpcore import CHUNK_SIZES_READABLE, chunk_size_reader

LIMIT = 1000


@dataclass
class Framing:
    chunked: bool = False
    expected: int | None = None


@dataclass
class Head:
    method: bytes = b"GET"
    url: bytes = b"/"
    version: bytes = b"1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: Framing = field(default_factory=Framing)


# -- request_body: the framing of a request, or a refusal ------------------------------------
@pytest.mark.parametrize(
    ("version", "length", "te", "hosts", "expected"),
    [
        ("1.1", None, None, 1, None),
        ("1.1", None, None, 0, None),  # a missing Host is forwarded as is (HAProxy too)
        ("1.0", None, None, 0, None),
        ("1.1", b"0", None, 1, 0),
        ("1.1", b"1000", None, 1, 1000),
        ("1.1", b"0001000", None, 1, 1000),
        ("1.0", b"12", None, 0, 12),
        ("1.1", None, b"chunked", 1, CHUNKED),
        ("1.1", None, b"Chunked ", 1, CHUNKED),
        ("1.1", None, b",chunked,", 1, CHUNKED),  # empty list elements are allowed
    ],
)
def test_request_body_framing(
    version: str, length: bytes | None, te: bytes | None, hosts: int, expected: int | None
) -> None:
    assert request_body(version, length, te, hosts, LIMIT) == expected


@pytest.mark.parametrize(
    ("version", "length", "te", "hosts", "status", "text"),
    [
        ("0.9", None, None, 0, 400, b"HTTP/0.9"),
        ("2.0", None, None, 1, 505, b"version"),
        ("1.1", None, None, 2, 400, b"Host"),
        ("1.1", b"5", b"chunked", 1, 400, b"both"),
        ("1.0", None, b"chunked", 1, 400, b"HTTP/1.0"),
        ("1.1", None, b"identity", 1, 400, b"end in chunked"),
        ("1.1", None, b"chunked, gzip", 1, 400, b"end in chunked"),
        ("1.1", None, b"chunked,chunked", 1, 400, b"end in chunked"),
        ("1.1", None, b"", 1, 400, b"end in chunked"),
        ("1.1", None, b"xchunked", 1, 400, b"end in chunked"),
        ("1.1", None, b"gzip, chunked", 1, 501, b"other than chunked"),
        ("1.1", None, b"gzip,chunked", 1, 501, b"other than chunked"),
        ("1.1", b"5,5", None, 1, 400, b"Content-Length"),
        ("1.1", b"5,6", None, 1, 400, b"Content-Length"),
        ("1.1", b"+5", None, 1, 400, b"Content-Length"),
        ("1.1", b"-1", None, 1, 400, b"Content-Length"),
        ("1.1", b"", None, 1, 400, b"Content-Length"),
        ("1.1", b"0x10", None, 1, 400, b"Content-Length"),
        ("1.1", "٣".encode(), None, 1, 400, b"Content-Length"),  # not ASCII digits
        ("1.1", b"1001", None, 1, 413, b"too large"),
        ("1.1", b"9" * 5000, None, 1, 413, b"too large"),  # no int() of 5,000 digits
    ],
)
def test_request_heads_that_are_refused(
    version: str, length: bytes | None, te: bytes | None, hosts: int, status: int, text: bytes
) -> None:
    with pytest.raises(Refusal) as refused:
        request_body(version, length, te, hosts, LIMIT)
    assert refused.value.status == status
    assert text in refused.value.text
    assert refused.value.text.endswith(b"\n")


def test_transfer_codings() -> None:
    assert transfer_codings(b" GZip ,, chunked") == [b"gzip", b"chunked"]
    assert transfer_codings(b"") == []
    assert response_codings_ok(b"chunked")
    assert response_codings_ok(b" Chunked ,")
    assert not response_codings_ok(b"gzip, chunked")
    assert not response_codings_ok(b"gzip")
    assert not response_codings_ok(b"chunked, chunked")


# -- upstream_head: what the upstream is sent -------------------------------------------------
def test_upstream_head_exact_bytes() -> None:
    req = Head(headers=[(b"Host", b"svc"), (b"Accept", b"*/*")])
    assert upstream_head(req, "10.0.0.9", b"rid-1") == (
        b"GET / HTTP/1.1\r\nHost: svc\r\nAccept: */*\r\n"
        b"x-forwarded-for: 10.0.0.9\r\nx-request-id: rid-1\r\n\r\n"
    )


def test_upstream_head_frames_the_body_itself() -> None:
    """The client's own framing fields never pass; the proxy writes what it parsed."""
    req = Head(
        method=b"POST",
        version=b"1.0",
        headers=[
            (b"Host", b"svc"),
            (b"Content-Length", b"005"),
            (b"Connection", b"Content-Length, Transfer-Encoding, Host, X-Hop, close"),
            (b"X-Hop", b"1"),
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"x-forwarded-for", b"2.2.2.2"),
            (b"X-Request-Id", b"client-id"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Upgrade", b"h2c"),
        ],
        body=Framing(expected=5),
    )
    assert upstream_head(req, "10.0.0.9", b"unused") == (
        b"POST / HTTP/1.1\r\nHost: svc\r\nX-Request-Id: client-id\r\n"
        b"x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\ncontent-length: 5\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("framing", "last_line"),
    [
        (Framing(chunked=True), b"transfer-encoding: chunked\r\n"),
        (Framing(expected=0), b"content-length: 0\r\n"),
        (Framing(), b"x-request-id: r\r\n"),
    ],
)
def test_upstream_head_framing_lines(framing: Framing, last_line: bytes) -> None:
    req = Head(
        method=b"PUT",
        headers=[(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"99")],
        body=framing,
    )
    out = upstream_head(req, "c", b"r")
    assert out.endswith(last_line + b"\r\n")
    assert out.lower().count(b"content-length") == (framing.expected is not None)
    assert out.lower().count(b"transfer-encoding") == framing.chunked


def test_hop_by_hop_headers_are_dropped_including_connection_tokens() -> None:
    req = Head(
        headers=[
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"h2c"),
            (b"Accept", b"*/*"),
        ]
    )
    assert upstream_head(req, "c", b"r") == (
        b"GET / HTTP/1.1\r\nAccept: */*\r\nx-forwarded-for: c\r\nx-request-id: r\r\n\r\n"
    )


def test_protected_fields() -> None:
    assert {b"content-length", b"transfer-encoding", b"host"} == PROTECTED


# -- downstream_head: what the client is sent -------------------------------------------------
@pytest.mark.parametrize(
    ("status", "headers", "method", "version", "keep_alive", "head", "chunked", "kept"),
    [
        (
            200,
            [(b"Content-Length", b"2")],
            b"GET",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            False,
            True,
        ),
        (
            200,
            [(b"Transfer-Encoding", b"chunked")],
            b"GET",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            True,
            True,
        ),
        (
            200,
            [],
            b"GET",
            b"1.0",
            True,  # close-delimited for an HTTP/1.0 client
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            False,
            False,
        ),
        (
            200,
            [(b"Content-Length", b"7")],
            b"HEAD",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            False,
            True,
        ),
        (204, [], b"GET", b"1.1", True, b"HTTP/1.1 204 No Content\r\n\r\n", False, True),
        (
            304,
            [],
            b"GET",
            b"1.1",
            False,
            b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n",
            False,
            False,
        ),
        (
            200,
            [
                (b"Connection", b"content-length, x-up"),
                (b"X-Up", b"1"),
                (b"Content-Length", b"3"),
                (b"Keep-Alive", b"timeout=5"),
            ],
            b"GET",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            False,
            True,
        ),
        (
            503,
            [(b"content-length", b"0")],
            b"GET",
            b"1.1",
            False,
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            False,
            False,
        ),
        (
            200,
            [(b"X-Hop", b"1"), (b"Connection", b"X-Hop"), (b"Content-Length", b"3")],
            b"GET",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            False,
            True,
        ),
        (
            200,
            [(b"Server", b"nginx"), (b"Content-Length", b"3"), (b"Connection", b"keep-alive")],
            b"GET",
            b"1.1",
            True,
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\n",
            False,
            True,
        ),
    ],
    ids=[
        "length",
        "chunked",
        "http10-close",
        "head",
        "204",
        "304-close",
        "connection-cannot-drop-length",
        "503-close",
        "connection-names-an-earlier-field",
        "keep-alive-dropped",
    ],
)
def test_downstream_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    method: bytes,
    version: bytes,
    keep_alive: bool,
    head: bytes,
    chunked: bool,
    kept: bool,
) -> None:
    req = Head(method=method, version=version)
    assert downstream_head(status, headers, req, keep_alive) == (head, chunked, kept)
    # Again, with the field names and Connection values now in the caches.
    assert downstream_head(status, headers, req, keep_alive) == (head, chunked, kept)


# -- bodies ----------------------------------------------------------------------------------
def test_chunks() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


def _body(chunked: bool, expected: int | None) -> Body:
    return Body(chunked=chunked, expected=expected, pause=lambda: None, resume=lambda: None)


def test_body_reframes_and_replays() -> None:
    body = _body(True, None)
    body.feed(b"abc")
    body.feed(b"de")
    body.finish()
    assert body.frame(b"abc") == b"3\r\nabc\r\n"
    assert body.replay() == b"5\r\nabcde\r\n0\r\n\r\n"
    plain = _body(False, 5)
    plain.feed(b"hello")
    plain.finish()
    assert plain.frame(b"hello") == b"hello"
    assert plain.replay() == b"hello"
    assert _body(False, None).empty
    assert _body(False, 0).empty


def test_body_pauses_its_source_over_the_high_water_mark() -> None:
    from meshsim.proxy.body import HIGH_WATER

    events: list[str] = []
    body = Body(
        chunked=False,
        expected=4 * HIGH_WATER,
        pause=lambda: events.append("pause"),
        resume=lambda: events.append("resume"),
    )
    piece = b"x" * (HIGH_WATER // 4)
    for _ in range(4):
        body.feed(piece)
    assert events == []
    body.feed(piece)
    assert events == ["pause"]
    assert body.retained is None  # over RETAIN_BYTES: not replayable


# -- the chunk size read from llhttp --------------------------------------------------------
def test_chunk_sizes_are_read_from_the_parser() -> None:
    assert CHUNK_SIZES_READABLE  # else the proxy falls back to counting bytes as they come
    sizes: list[int] = []

    class Protocol:
        def on_chunk_header(self) -> None:
            assert read is not None
            sizes.append(read())

    parser = httptools.HttpRequestParser(Protocol())
    read = chunk_size_reader(parser)
    parser.feed_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    parser.feed_data(b"3\r\nabc\r\n1000;name=value\r\n")
    parser.feed_data(b"y" * 4096 + b"\r\n0\r\n\r\n")
    assert sizes == [3, 4096, 0]


def test_the_chunk_size_reader_refuses_what_is_not_a_parser() -> None:
    assert chunk_size_reader(object()) is None
    assert chunk_size_reader(httptools.HttpResponseParser(object())) is not None


def test_interim_head() -> None:
    headers = [(b"Link", b"</a.css>; rel=preload"), (b"Connection", b"x-hop"), (b"X-Hop", b"1")]
    assert interim_head(103, headers) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    )
    assert interim_head(100, []) == b"HTTP/1.1 100 Continue\r\n\r\n"
