"""Mutated requests against the proxy: it answers or closes, and never smuggles.

A seeded generator (so every run tries the same inputs) mutates valid requests: bytes that
matter to framing (CR, LF, space, tab, colon, comma, NUL, hex digits) inserted or deleted,
framing and routing fields repeated, renamed or named in ``Connection``, lengths off by one,
requests pipelined. Each input is sent on a fresh connection, then the client half-closes.
The properties, per input:

- the proxy closes the connection within ``WAIT_S`` (no hang), after answering only with
  statuses the proxy gives for client input;
- the upstream (which answers every request it parses with 200) saw exactly as many
  requests as the client got 200s: a request the proxy did not answer, or one hidden in a
  body, would show as an extra one; and none with two Host fields or a trailer's field;
- the proxy still serves a plain request afterwards.
"""

from __future__ import annotations

import asyncio
import random

import httptools
import pytest

from .helpers import arun
from .lab import proxy_for
from .test_conformance import (  # noqa: F401 - event_loop_kind: each case on both loops
    GOOD,
    event_loop_kind,
    exchange,
    recording_proxy,
    upstream,
)

pytestmark = pytest.mark.integration

INPUTS = 400
RESPONSE_INPUTS = 300
SEED = 20261202
WAIT_S = 5.0
CLIENT_STATUSES = {200, 400, 413, 431, 501, 505}

BASE = [
    b"GET /a HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
]
FRAMING_LINES = [
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: 12",
    b"Content-Length:5",
    b"Content-Length: 5 ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: chunked ",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: gzip, chunked",
    b"Host: other",
    b"Connection: Content-Length",
    b"Connection: Transfer-Encoding",
    b"Connection: Host",
    b"Connection: close",
    b"Upgrade: h2c",
    b"Expect: 100-continue",
    b" folded",
]
SPECIAL = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b",", b"\x00", b"0", b"f", b"-", b";"]


def mutate(rng: random.Random) -> bytes:
    data = bytearray(rng.choice(BASE))
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if op == 0:  # a byte that matters to framing
            data[at:at] = rng.choice(SPECIAL)
        elif op == 1 and data:
            del data[min(at, len(data) - 1)]
        elif op == 2:  # a framing or routing line before the end of the head
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                data[end + 2 : end + 2] = rng.choice(FRAMING_LINES) + b"\r\n"
        elif op == 3:  # a length off by one
            data = bytearray(data.replace(b"Length: 5", b"Length: %d" % rng.choice((4, 6))))
        elif op == 4:  # another request pipelined behind
            data += rng.choice(BASE)
        elif op == 5:  # case of a field name
            data = bytearray(data.replace(b"Content-Length", b"content-LENGTH"))
        else:  # a trailer field, which must never reach the upstream as a header
            trailer = rng.choice((b"X-Injected: 1", b"Host: evil", b"Content-Length: 3"))
            data = bytearray(data.replace(b"0\r\n\r\n", b"0\r\n%s\r\n\r\n" % trailer, 1))
    return bytes(data)


def test_mutated_requests_are_answered_or_refused_and_never_smuggled() -> None:
    rng = random.Random(SEED)
    inputs = [mutate(rng) for _ in range(INPUTS)]

    async def main() -> None:
        async with recording_proxy() as (rec, port):
            ok_total = 0
            for data in inputs:
                before = len(rec.seen)
                got = await exchange(port, data, expect=0, half_close=True, wait_s=WAIT_S)
                assert got.closed, data  # within WAIT_S: no hang
                assert set(got.statuses) <= CLIENT_STATUSES, (data, got.statuses)
                ok = got.statuses.count(200)
                ok_total += ok
                await asyncio.sleep(0)  # let the upstream parse anything still in flight
                assert len(rec.seen) - before == ok, (data, got.statuses, rec.seen[before:])
            assert len(rec.seen) == ok_total
            for seen in rec.seen:
                assert [n.lower() for n, _ in seen.headers].count(b"host") <= 1, seen
                assert seen.header(b"x-injected") is None, seen
            assert 0 < ok_total < len(inputs)  # the mutations both pass and fail
            assert (await exchange(port, GOOD)).statuses == [200]

    arun(main, timeout=120)


# -- upstream responses ---------------------------------------------------------------------
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
]
RESPONSE_LINES = [
    b"Content-Length: 5",
    b"Content-Length: 4",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Connection: Content-Length",
    b"Connection: Transfer-Encoding",
    b"Connection: close",
    b" folded",
]


def mutate_response(rng: random.Random) -> bytes:
    data = bytearray(rng.choice(RESPONSES))
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if op == 0:
            data[at:at] = rng.choice(SPECIAL)
        elif op == 1 and data:
            del data[min(at, len(data) - 1)]
        elif op == 2:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                data[end + 2 : end + 2] = rng.choice(RESPONSE_LINES) + b"\r\n"
        else:
            data = bytearray(data.replace(b"Length: 5", b"Length: %d" % rng.choice((4, 6))))
    return bytes(data)


class _Reference:
    """What llhttp reads from the upstream's bytes (the first message) when the upstream
    then closes."""

    def __init__(self, raw: bytes) -> None:
        self.status = 0
        self.body = b""
        self.framed = False
        self.head_done = self.complete = False
        self.parser = httptools.HttpResponseParser(self)
        try:
            self.parser.feed_data(raw)
        except httptools.HttpParserError:
            return  # what came after a complete first message does not matter to it
        if self.head_done and not self.complete and not self.framed:
            self.complete = True  # no length and no chunks: ends with the connection

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:
            self.framed |= name.lower() in (b"content-length", b"transfer-encoding")

    def on_headers_complete(self) -> None:
        if not self.head_done:
            self.head_done = True
            self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def test_mutated_upstream_responses_reach_the_client_whole_or_not_at_all() -> None:
    """The client gets what llhttp reads from the upstream's bytes, byte for byte, or a 502
    or a cut; never another body, never a hang."""
    rng = random.Random(SEED + 1)
    responses = [mutate_response(rng) for _ in range(RESPONSE_INPUTS)]
    answers = iter(responses)

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(next(answers))
        await writer.drain()  # then the lab closes the connection

    async def main() -> None:
        async with upstream(respond) as up, proxy_for([up]) as proxy:
            port = proxy.port("test")
            for raw in responses:
                got = await exchange(port, GOOD, expect=1, half_close=True, wait_s=WAIT_S)
                assert got.closed, raw
                assert len(got.responses) <= 1, raw
                if got.responses and got.responses[0].status != 502:
                    ref = _Reference(raw)
                    assert ref.complete, raw
                    response = got.responses[0]
                    assert (response.status, response.body) == (ref.status, ref.body), raw

    arun(main, timeout=120)
