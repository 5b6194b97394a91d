"""A small, fast HTTP/1.1 server protocol for the echo upstream and the admin port.

Requests on one connection are answered in order (pipelined requests wait their turn); the
subclass answers each with :meth:`HttpServerProtocol.handle`, now or later (the echo server
answers after a delay), by calling :meth:`HttpServerProtocol.reply`. Bodies are buffered, up
to :attr:`Limits.max_body_bytes`: these servers are measurement tools, not the proxy.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from typing import cast

import httptools

from meshsim.proxy.httpcore import Headers, Limits, simple_response

# Pipelined requests waiting behind the one being answered; more pauses reading.
_MAX_QUEUED = 32


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(self, method: bytes, url: bytes, headers: Headers, keep_alive: bool) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = b""


class HttpServerProtocol(asyncio.Protocol, ABC):
    """Parses requests, enforces :class:`Limits`, and serialises answers per connection."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: deque[Request] = deque()
        self._busy = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._refusal: bytes | None = None
        """The answer to a broken request, sent after those to the requests before it."""

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._arm(self.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._disarm()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refusal is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(501, b"upgrade not supported\n")
        except httptools.HttpParserError:
            if not self._closing:
                self._fail(400, b"malformed request\n")

    # -- httptools callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._arm(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._count_head(len(name) + len(value) + 4)
        if len(self._headers) > self.limits.max_headers:
            self._fail(431, b"too many header fields\n")

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._fail(413, b"request body too large\n")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing or self._refusal is not None:
            return
        req = Request(
            self.parser.get_method(), self._url, self._headers, self.parser.should_keep_alive()
        )
        if self._body:
            req.body = b"".join(self._body)
        self._head_bytes = self._body_bytes = 0
        self._disarm()
        if self._busy:
            self._queue.append(req)
            if len(self._queue) >= _MAX_QUEUED and not self._paused and self.transport:
                self.transport.pause_reading()
                self._paused = True
        else:
            self._busy = True
            self.handle(req)

    # -- for subclasses --------------------------------------------------------------
    @abstractmethod
    def handle(self, req: Request) -> None: ...

    def reply(self, response: bytes, keep_alive: bool) -> None:
        """Send the answer to the oldest unanswered request and start on the next."""
        transport = self.transport
        if transport is None or self._closing:
            return
        transport.write(response)
        if not keep_alive:
            self._closing = True
            transport.close()
            return
        if not self._queue and self._refusal is not None:
            transport.write(self._refusal)
            self._closing = True
            transport.close()
            return
        if self._queue:
            nxt = self._queue.popleft()
            if self._paused and len(self._queue) < _MAX_QUEUED // 2:
                transport.resume_reading()
                self._paused = False
            self.handle(nxt)
        else:
            self._busy = False
            self._arm(self.limits.idle_timeout_s)

    # -- internals -------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_header_bytes:
            self._fail(431, b"request header too large\n")

    def _fail(self, status: int, body: bytes) -> None:
        """Answer a broken request and close this connection only, after answering the
        (pipelined) requests before it."""
        if self._closing or self.transport is None or self._refusal is not None:
            return
        self._disarm()
        answer = simple_response(status, body, keep_alive=False)
        if self._busy:
            self._refusal = answer  # reply() sends it when the queue is answered
            if not self._paused:
                self.transport.pause_reading()
                self._paused = True
            return
        self._closing = True
        self.transport.write(answer)
        self.transport.close()

    def _arm(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay_s, self._timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self) -> None:
        self._timer = None
        if self.transport is None or self._closing:
            return
        if self._busy:
            return  # the server is slow, not the client: never time out our own work
        if self._head_bytes or self._body_bytes:
            self._fail(408, b"request timed out\n")
        else:
            self._closing = True
            self.transport.close()
