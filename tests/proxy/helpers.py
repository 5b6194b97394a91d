"""Loopback helpers for the proxy tests: run a coroutine with a bound, read one response."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httptools

T = TypeVar("T")
LOOP_TIMEOUT_S = 30.0


def arun(main: Callable[[], Awaitable[T]], timeout: float = LOOP_TIMEOUT_S) -> T:
    """Run ``main()`` on a fresh loop, bounded in time (a hang fails, it does not block)."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    keep_alive: bool = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


class _Reader:
    def __init__(self) -> None:
        self.resp = Response()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.resp.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.resp.body += body

    def on_message_complete(self) -> None:
        self.resp.status = self.parser.get_status_code()
        self.resp.keep_alive = self.parser.should_keep_alive()
        self.resp.complete = True


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> Response:
    """One response from ``reader``; ``complete`` is False if the peer closed early."""
    r = _Reader()
    while not r.resp.complete:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            break
        try:
            r.parser.feed_data(data)
        except httptools.HttpParserError:
            break
    if not r.resp.status:
        with contextlib.suppress(httptools.HttpParserError):
            r.resp.status = r.parser.get_status_code()
    return r.resp


class Client:
    """One keep-alive connection for issuing raw requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, ssl_ctx: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_ctx, server_hostname="127.0.0.1" if ssl_ctx else None
        )
        return cls(reader, writer)

    async def raw(self, data: bytes) -> Response:
        self.writer.write(data)
        await self.writer.drain()
        return await read_response(self.reader)

    async def get(self, path: str = "/", headers: str = "") -> Response:
        return await self.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())

    def reset(self) -> None:
        """Leave abruptly (RST, not FIN): the proxy must abandon what it does for us.

        A FIN alone may be a half-close, after which the proxy still answers."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def get_once(port: int, path: str = "/", **kw: Any) -> Response:
    client = await Client.open(port, **kw)
    try:
        return await client.get(path)
    finally:
        await client.close()


class ServerThread:
    """Runs ``start()`` (returning objects with ``close()``) on a loop in a thread, so that
    synchronous code (click's CliRunner) can talk to it; stops cleanly on exit."""

    def __init__(self, start: Callable[[], Awaitable[tuple[int, list[Any]]]]) -> None:
        import threading

        self._start = start
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.port, closables = await self._start()
            self._ready.set()
            await self._stop.wait()
            for item in closables:
                result = item.close()
                if asyncio.iscoroutine(result):
                    await result
            for item in closables:
                if isinstance(item, asyncio.AbstractServer):
                    await item.wait_closed()

        asyncio.run(main())

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server thread did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
