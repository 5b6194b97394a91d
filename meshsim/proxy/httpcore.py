"""HTTP/1.1 pieces shared by the echo server, the admin server and the proxy.

Parsing is httptools (llhttp); this module adds what llhttp leaves to its user: limits on
header size and count and on body size, the hop-by-hop header names, the size of a chunk
being parsed, and the reason phrases and canned responses a server needs. What a proxy must
refuse and how it re-frames messages is in :mod:`meshsim.proxy.framing`.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

from meshsim.errors import MeshsimError

# RFC 9110 section 7.6.1: fields that apply to one connection only. A proxy removes them,
# and any field named in Connection (except those it frames and routes with: see
# meshsim.proxy.framing), before forwarding. Proxy-Connection and Keep-Alive are the common
# non-standard spellings that section tells intermediaries to drop as well.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one bad client from hurting the others."""

    max_header_bytes: int = 16 * 1024
    """Request line plus all header lines (llhttp itself has no such bound)."""
    max_headers: int = 100
    max_body_bytes: int = 8 * 1024 * 1024
    idle_timeout_s: float = 60.0
    """A keep-alive connection with no request in progress is closed after this long."""
    header_timeout_s: float = 10.0
    """A request's head must arrive within this long of its first byte (slowloris)."""
    body_timeout_s: float = 30.0
    """Between two pieces of a request body."""


def grpc_status_of(headers: Headers) -> int | None:
    """The ``grpc-status`` field of a response head, or None (no field, or not a number).

    A gRPC server's error without a message is a Trailers-Only response: its status is in
    the head, where Envoy's retry conditions read it (a status in trailers comes after the
    proxy's decision, and only HTTP/2 has trailers that carry it)."""
    for name, value in headers:
        if len(name) == 11 and name.lower() == b"grpc-status":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"


def status_line(status: int, version: bytes = b"1.1") -> bytes:
    return b"HTTP/" + version + b" " + str(status).encode() + b" " + reason(status) + b"\r\n"


def simple_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    keep_alive: bool = True,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length body."""
    parts = [status_line(status)]
    parts.append(b"content-type: " + content_type + b"\r\n")
    parts.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


ChunkSize = Callable[[], int]

_KNOWN_LAYOUT = tuple(int(x) for x in httptools.__version__.split(".")[:2]) in {
    (0, 6),
    (0, 7),
    (0, 8),
    (0, 9),
}
"""httptools releases whose parser layout (object header, vtable, ``llhttp_t *``) was read."""


def chunk_size_reader(parser: object) -> ChunkSize | None:
    """A function giving the size of the chunk whose header ``parser`` has just parsed.

    llhttp knows it (``llhttp_t.content_length`` when ``on_chunk_header`` runs) but
    httptools does not expose it, and a proxy that streams bodies needs it to refuse a
    chunk larger than the body limit when its size line arrives (HAProxy does) rather than
    after forwarding the limit's worth of it. This reads the field through the parser
    object's C layout (httptools 0.6 to 0.9: the ``llhttp_t *`` follows the object header
    and the vtable pointer; the size is at offset 64 of ``llhttp_t``). The layout is
    checked, not assumed: ``llhttp_t.data`` must point back at the parser and a known
    chunked body must read back its sizes; on any mismatch this returns None and the
    caller counts body bytes as they arrive instead.
    """
    parsers = (httptools.HttpRequestParser, httptools.HttpResponseParser)
    if not isinstance(parser, parsers) or type(parser).__basicsize__ < 32:
        return None  # only read inside an object known to hold the pointer
    if not _KNOWN_LAYOUT:
        # Following a pointer read from an unknown layout could crash the process rather
        # than fail the check below: only the versions whose layout was read are probed.
        return None
    try:
        struct = ctypes.c_void_p.from_address(id(parser) + 24).value
        if not struct or ctypes.c_void_p.from_address(struct + 48).value != id(parser):
            return None
    except (ValueError, OSError):  # pragma: no cover - a layout we do not know
        return None
    field = ctypes.c_uint64.from_address(struct + 64)

    def size() -> int:
        _ = parser  # the field lives inside the parser: keep it alive as long as we are
        return field.value

    return size


def _chunk_sizes_readable() -> bool:
    """Whether :func:`chunk_size_reader` reads the right field (checked once per process)."""

    class Probe:
        def __init__(self) -> None:
            self.size: ChunkSize | None = None
            self.seen: list[int] = []

        def on_chunk_header(self) -> None:
            self.seen.append(self.size() if self.size is not None else -1)

    probe = Probe()
    parser = httptools.HttpRequestParser(probe)
    probe.size = chunk_size_reader(parser)
    if probe.size is None:
        return False
    parser.feed_data(
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1A\r\n"
        + b"x" * 26
        + b"\r\nfffffffffffffff0\r\n"
    )
    return probe.seen == [5, 26, 2**64 - 16]


CHUNK_SIZES_READABLE = _chunk_sizes_readable()


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float:
    """A Go-style duration (``10ms``, ``1.5s``, ``250us``) in seconds; a bare number is seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise MeshsimError(f"bad duration {text!r}: expected a number and a unit, e.g. 10ms, 1.5s")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) into a pair, with a clear error otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not (0 <= int(port_text) <= 65535):
        raise MeshsimError(f"bad {what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def install_fast_loop() -> str:
    """Use uvloop when it is installed; say which loop runs (results record it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
