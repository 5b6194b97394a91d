"""HTTP/1.1 message framing for a proxy: which heads to refuse, and the heads to forward.

Pure functions over bytes, with no sockets and no parser, so that they can be tested on
their own (``tests/proxy/test_http_framing.py``). The parser (llhttp, through httptools)
splits messages; this module decides what a proxy must add to it (RFC 9112 sections 2-7,
RFC 9110 section 7.6):

- a request head is refused when its framing is ambiguous or its version is not HTTP/1.x
  (:func:`request_body`), because a proxy and the server behind it could read a different
  message boundary from it (request smuggling);
- the body is re-framed on the way out: the proxy writes its own ``content-length`` or
  ``transfer-encoding: chunked``, never the client's, and a ``Connection`` header cannot
  remove the fields that frame or route a message (:data:`PROTECTED`).
"""

from __future__ import annotations

from typing import Protocol

from meshsim.proxy.httpcore import HOP_BY_HOP, Headers, status_line

PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host"})
"""Fields that a ``Connection`` header may name but never remove: the proxy frames and
routes with them. (Removing ``content-length`` because a client named it let the body of
one request be read upstream as a second request.)"""

CHUNKED = -1
""":func:`request_body` for a chunked body."""

_REQUEST_DROP = HOP_BY_HOP | {b"content-length", b"x-forwarded-for"}
"""Never copied into an upstream request head: re-framed or rebuilt by the proxy."""

_NO_BODY_STATUS = frozenset({204, 304})

_MAX_LENGTH_DIGITS = 18  # below 2**63: int() stays cheap and no limit is near it


class Refusal(Exception):  # noqa: N818 - an answer, not a failure of the proxy
    """A request the proxy answers itself with ``status`` and closes the connection after."""

    def __init__(self, status: int, text: bytes) -> None:
        super().__init__(text.decode("latin-1").strip())
        self.status = status
        self.text = text


class BodyFraming(Protocol):
    """How a request body was framed by the client (see :class:`meshsim.proxy.body.Body`)."""

    @property
    def chunked(self) -> bool: ...

    @property
    def expected(self) -> int | None: ...


class RequestHead(Protocol):
    """The parsed request, as :class:`meshsim.proxy.forward.Request` holds it."""

    @property
    def method(self) -> bytes: ...

    @property
    def url(self) -> bytes: ...

    @property
    def version(self) -> bytes: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def body(self) -> BodyFraming: ...


def transfer_codings(value: bytes) -> list[bytes]:
    """The codings of a (comma-joined) Transfer-Encoding value, lower-cased, in order
    (empty list elements are skipped, as RFC 9110 section 5.6.1 asks)."""
    return [c for c in (c.strip().lower() for c in value.split(b",")) if c]


def request_body(
    version: str,
    content_length: bytes | None,
    transfer_encoding: bytes | None,
    hosts: int,
    max_body_bytes: int,
) -> int | None:
    """The framing of a request body from its head: None (no body), a length, or CHUNKED.

    ``content_length`` and ``transfer_encoding`` are the values of every such field,
    joined with commas (so two fields read as a list and are refused). Raises
    :class:`Refusal` for heads that must not be forwarded:

    - HTTP/0.9 (400) and versions other than 1.0 and 1.1 (505);
    - more than one Host (RFC 9112 section 3.2: 400);
    - both Content-Length and Transfer-Encoding (section 6.1 lets a server reject it, as
      Envoy and llhttp do, or drop the length and close after, as HAProxy does: refusing
      keeps one rule for every ambiguous head); Transfer-Encoding in an HTTP/1.0 request
      (faulty framing, section 6.1);
      codings that do not end in exactly one ``chunked`` (section 6.3: 400);
    - codings before ``chunked`` (``gzip, chunked``): 501, as Envoy answers. The proxy would
      have to pass the coding on and the server to decode it; few do, and dropping it would
      hand the server a compressed body as if it were plain, so it is refused;
    - a Content-Length that is not one decimal number (400), or over the limit (413).
    """
    if version != "1.1" and version != "1.0":
        if version == "0.9":
            raise Refusal(400, b"HTTP/0.9 requests are not supported\n")
        raise Refusal(505, b"HTTP version not supported: this proxy speaks HTTP/1.1\n")
    if hosts > 1:
        raise Refusal(400, b"more than one Host header\n")
    if transfer_encoding is not None:
        if content_length is not None:
            raise Refusal(400, b"both Content-Length and Transfer-Encoding\n")
        if version == "1.0":
            raise Refusal(400, b"Transfer-Encoding in an HTTP/1.0 request\n")
        codings = transfer_codings(transfer_encoding)
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise Refusal(400, b"Transfer-Encoding must end in chunked\n")
        if len(codings) > 1:
            raise Refusal(501, b"transfer codings other than chunked are not supported\n")
        return CHUNKED
    if content_length is None:
        return None
    if not content_length.isdigit():  # ASCII digits only: no sign, space, list or hex
        raise Refusal(400, b"bad Content-Length\n")
    if len(content_length) > _MAX_LENGTH_DIGITS or int(content_length) > max_body_bytes:
        raise Refusal(413, b"request body too large\n")
    return int(content_length)


def response_codings_ok(transfer_encoding: bytes) -> bool:
    """Whether an upstream response's Transfer-Encoding is exactly ``chunked``.

    Anything else (``gzip, chunked``, or ``gzip`` on a body delimited by the connection's
    close) carries a coding the proxy would lose when it re-frames the body: it treats such
    a response as an upstream protocol error (502), as Envoy does.
    """
    return transfer_codings(transfer_encoding) == [b"chunked"]


def _connection_drop(headers: Headers, drop: frozenset[bytes]) -> frozenset[bytes]:
    """``drop`` plus the fields named in Connection headers, except :data:`PROTECTED`."""
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            drop = _with_named(drop, value)
    return drop


_NAMED: dict[bytes, frozenset[bytes]] = {}
"""Connection header values already split (``keep-alive`` on every upstream response)."""


def _with_named(drop: frozenset[bytes], connection: bytes) -> frozenset[bytes]:
    """``drop`` plus the fields one Connection header names, except :data:`PROTECTED`."""
    named = _NAMED.get(connection)
    if named is None:
        named = frozenset(t.strip().lower() for t in connection.split(b",")) - PROTECTED
        if len(_NAMED) < 64:  # bounded: values are the peers' choice
            _NAMED[connection] = named
    return drop if named <= drop else drop | named


_XFF: dict[str, bytes] = {}
"""Client address -> its ``x-forwarded-for`` line, for requests that carry none."""


def _xff_line(client_ip: str) -> bytes:
    line = b"x-forwarded-for: " + client_ip.encode() + b"\r\n"
    if len(_XFF) < 1024:
        _XFF[client_ip] = line
    return line


def upstream_head(req: RequestHead, client_ip: str, request_id: bytes) -> bytes:
    """The head the proxy sends upstream for ``req``.

    Hop-by-hop fields are dropped (RFC 9110 section 7.6.1); the body is framed by the proxy
    from what it parsed (``content-length`` or ``transfer-encoding: chunked``), never by the
    client's own fields; ``x-forwarded-for`` gets the client appended and ``x-request-id``
    is added when absent.
    """
    # One pass over the fields. A Connection header that names a field not dropped yet
    # restarts it with the larger set (the named field may come before it); rare, since
    # clients name only hop-by-hop fields, and one pass is the common cost.
    drop = _REQUEST_DROP
    while True:
        parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
        xff = b""
        has_id = False
        for name, value in req.headers:
            low = name.lower()
            if low in drop:
                if len(low) == 10 and low == b"connection":
                    wider = _with_named(drop, value)
                    if wider is not drop:
                        drop = wider
                        break
                elif low == b"x-forwarded-for":
                    xff = value if not xff else xff + b", " + value
                continue
            if len(low) == 12 and low == b"x-request-id":
                has_id = True
            parts += (name, b": ", value, b"\r\n")
        else:
            break
    if xff:
        parts.append(b"x-forwarded-for: " + xff + b", " + client_ip.encode() + b"\r\n")
    else:
        parts.append(_XFF.get(client_ip) or _xff_line(client_ip))
    if not has_id:
        parts.append(b"x-request-id: " + request_id + b"\r\n")
    body = req.body
    if body.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif body.expected is not None:
        parts.append(b"content-length: %d\r\n" % body.expected)
    parts.append(b"\r\n")
    return b"".join(parts)


_STATUS_LINES: dict[int, bytes] = {}


def cached_status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = status_line(status)
    return line


_KEEP, _HOP, _CONNECTION, _LENGTH = 1, 2, 3, 4
_RESPONSE_FIELDS: dict[bytes, int] = {}
"""Response field names as received -> what the client's head does with them. The same few
names come on every response: one dict probe per field instead of lower-casing it."""


def _response_field(name: bytes) -> int:
    low = name.lower()
    if low == b"connection":
        kind = _CONNECTION
    elif low in HOP_BY_HOP:
        kind = _HOP
    elif low == b"content-length":
        kind = _LENGTH
    else:
        kind = _KEEP
    if len(_RESPONSE_FIELDS) < 512:  # bounded: names are the peers' choice
        _RESPONSE_FIELDS[name] = kind
    return kind


def downstream_head(
    status: int, headers: Headers, req: RequestHead, keep_alive: bool
) -> tuple[bytes, bool, bool]:
    """The response head for the client, whether its body must be chunked, and whether the
    client connection stays open after it.

    ``headers`` are the upstream's, whose framing the upstream parser has checked (one
    Content-Length of digits, or Transfer-Encoding exactly ``chunked``, never both). A
    Content-Length is kept: the body forwarded is exactly that long. Otherwise the body is
    re-chunked for an HTTP/1.1 client, or delimited by closing for an HTTP/1.0 one.
    """
    # One pass over the fields. A Connection header that names a field not hop-by-hop
    # already takes the general pass (upstreams send ``Connection: keep-alive``, which
    # names nothing new).
    parts = [_STATUS_LINES.get(status) or cached_status_line(status)]
    has_length = False
    kinds = _RESPONSE_FIELDS
    for name, value in headers:
        kind = kinds.get(name) or _response_field(name)
        if kind == _KEEP:
            parts += (name, b": ", value, b"\r\n")
        elif kind == _LENGTH:
            has_length = True
            parts += (name, b": ", value, b"\r\n")
        elif kind == _CONNECTION:
            named = _NAMED.get(value)  # (_with_named's cache, inline)
            if named is None or not named <= HOP_BY_HOP:
                return _downstream_head_named(status, headers, req, keep_alive)
    # (_response_framing, inline: once per response)
    bodyless = req.method == b"HEAD" or status in _NO_BODY_STATUS or status < 200
    chunked = not has_length and not bodyless and req.version == b"1.1"
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not has_length and not bodyless and not chunked:
        keep_alive = False  # HTTP/1.0 client: the body ends when the connection does
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked, keep_alive


def _downstream_head_named(
    status: int, headers: Headers, req: RequestHead, keep_alive: bool
) -> tuple[bytes, bool, bool]:
    """:func:`downstream_head` for a response whose Connection header names more fields to
    drop: one pass, restarted with the larger set (the named field may come before it)."""
    drop = HOP_BY_HOP
    while True:
        parts = [cached_status_line(status)]
        has_length = False
        for name, value in headers:
            low = name.lower()
            if low in drop:
                if len(low) == 10 and low == b"connection":
                    wider = _with_named(drop, value)
                    if wider is not drop:
                        drop = wider
                        break
                continue
            if len(low) == 14 and low == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        else:
            break
    return _response_framing(parts, has_length, status, req, keep_alive)


def _response_framing(
    parts: list[bytes], has_length: bool, status: int, req: RequestHead, keep_alive: bool
) -> tuple[bytes, bool, bool]:
    """The head's framing lines after the upstream's fields (see :func:`downstream_head`)."""
    bodyless = req.method == b"HEAD" or status in _NO_BODY_STATUS or status < 200
    chunked = not has_length and not bodyless and req.version == b"1.1"
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not has_length and not bodyless and not chunked:
        keep_alive = False  # HTTP/1.0 client: the body ends when the connection does
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked, keep_alive


def interim_head(status: int, headers: Headers) -> bytes:
    """A 1xx interim response as passed on to the client, without hop-by-hop fields."""
    parts = [cached_status_line(status)]
    drop = _connection_drop(headers, HOP_BY_HOP)
    for name, value in headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(piece: bytes) -> bytes:
    """``piece`` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(piece), piece)


LAST_CHUNK = b"0\r\n\r\n"
