"""The echo upstream: a fast HTTP/1.1 server with fortio-like knobs (see :mod:`knobs`).

``concurrency`` bounds the requests being served at once, across all connections; the rest
wait in FIFO order. With ``concurrency=1`` and ``delay=exp:...`` the server is an M/M/1
queue, which is how the load generator is checked against theory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools
import numpy as np

from meshsim.errors import MeshsimError
from meshsim.proxy.httpcore import Limits, simple_response
from meshsim.proxy.httpserver import HttpServerProtocol, Request
from meshsim.proxy.knobs import parse_query

_FILLER = b"x" * 65536


def payload(size: int) -> bytes:
    if size <= len(_FILLER):
        return _FILLER[:size]
    return (_FILLER * (size // len(_FILLER) + 1))[:size]


@dataclass
class EchoState:
    """Shared by every connection of one server."""

    rng: np.random.Generator
    concurrency: int | None = None
    in_service: int = 0
    waiting: deque[tuple[EchoProtocol, Request]] = field(default_factory=deque)
    served: int = 0
    connections: set[EchoProtocol] = field(default_factory=set)
    default_query: str = ""
    """Knobs applied to every request; the request's own query overrides them key by key."""

    def close_connections(self) -> None:
        """Close every open connection (``Server.close`` leaves accepted ones open)."""
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.close()


class EchoProtocol(HttpServerProtocol):
    def __init__(self, state: EchoState, limits: Limits) -> None:
        super().__init__(limits)
        self.state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.state.connections.add(self)

    def handle(self, req: Request) -> None:
        state = self.state
        if state.concurrency is not None and state.in_service >= state.concurrency:
            state.waiting.append((self, req))
            return
        state.in_service += 1
        self._serve(req)

    def _serve(self, req: Request) -> None:
        try:
            url = httptools.parse_url(req.url)
            query = url.query.decode("latin-1") if url.query else ""
            default = self.state.default_query
            if default:
                query = f"{default}&{query}" if query else default
            knobs = parse_query(query)
        except (httptools.HttpParserInvalidURLError, MeshsimError, UnicodeDecodeError) as exc:
            text = str(exc) if isinstance(exc, MeshsimError) else "bad url"
            self._finish(simple_response(400, text.encode() + b"\n"), req.keep_alive)
            return
        rng = self.state.rng
        status = knobs.pick_status(rng)
        grpc = knobs.pick_grpc_status(rng) if status == 200 and knobs.grpc_statuses else None
        if grpc is not None:
            # A gRPC server's error without a message: the status ends the response head.
            extra = ((b"grpc-status", str(grpc).encode()),)
            response = simple_response(200, b"", content_type=b"application/grpc",
                                       keep_alive=req.keep_alive, extra=extra)  # fmt: skip
        else:
            body = payload(knobs.size) if knobs.size is not None else req.body
            ctype = b"application/octet-stream" if body else b"text/plain; charset=utf-8"
            response = simple_response(status, body, content_type=ctype, keep_alive=req.keep_alive)
        delay = knobs.pick_delay_s(rng)
        if delay > 0.0:
            self.loop.call_later(delay, self._finish, response, req.keep_alive)
        else:
            self._finish(response, req.keep_alive)

    def _finish(self, response: bytes, keep_alive: bool) -> None:
        state = self.state
        state.served += 1
        # Hand the service slot to the oldest waiter before answering, so FIFO holds.
        if state.waiting:
            proto, nxt = state.waiting.popleft()
            proto._serve(nxt)
        else:
            state.in_service -= 1
        self.reply(response, keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.state.connections.discard(self)
        # Requests of a closed connection no longer need a slot.
        waiting = self.state.waiting
        if any(p is self for p, _ in waiting):
            self.state.waiting = deque((p, r) for p, r in waiting if p is not self)


async def start_echo(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    concurrency: int | None = None,
    seed: int | None = None,
    limits: Limits | None = None,
    default_query: str = "",
) -> tuple[asyncio.Server, EchoState]:
    """Start an echo server on the running loop; ``port=0`` picks a free port.

    ``default_query`` holds knobs for every request (``delay=exp:2ms&size=400``); a
    request's own knobs override them.
    """
    if concurrency is not None and concurrency < 1:
        raise MeshsimError(f"concurrency must be at least 1 (not {concurrency})")
    if default_query:
        parse_query(default_query)  # a bad default is the caller's error, reported now
    state = EchoState(np.random.default_rng(seed), concurrency, default_query=default_query)
    lim = limits or Limits()
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: EchoProtocol(state, lim), host, port, backlog=1024, reuse_address=True
        )
    except OSError as exc:
        raise MeshsimError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server, state


async def stop_echo(server: asyncio.Server, state: EchoState) -> None:
    server.close()
    state.close_connections()
    await server.wait_closed()
    await asyncio.sleep(0)  # let connection_lost callbacks run before the loop ends


def bound_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port
