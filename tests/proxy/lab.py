"""An in-process lab for proxy tests: echo upstreams, scripted upstreams and a proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.echo import bound_port, start_echo, stop_echo
from meshsim.proxy.httpcore import Limits
from meshsim.proxy.seam import RoutePolicy
from meshsim.proxy.server import Proxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def scripted(handler: Handler) -> tuple[asyncio.Server, int]:
    """A server running ``handler`` per connection; the connection is closed after it."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@contextlib.asynccontextmanager
async def proxy_for(
    upstream_ports: list[int],
    *,
    limits: Limits | None = None,
    tls: str = "none",
    tls_dir: Path | None = None,
    policy: RoutePolicy | None = None,
    traffic: dict[str, Any] | None = None,
    log: list[str] | None = None,
    allowed: frozenset[str] | None = None,
    drain_s: float = 5.0,
    subsets: tuple[str, ...] | None = None,
) -> AsyncIterator[Proxy]:
    listener = ListenerConfig(
        "test",
        ("127.0.0.1", 0),
        tuple(("127.0.0.1", p) for p in upstream_ports),
        tls=tls,
        allowed_principals=allowed,
        traffic=traffic or {},
        subsets=subsets,
    )
    cfg = ProxyConfig(
        listeners=(listener,),
        admin=("127.0.0.1", 0),
        limits=limits or Limits(),
        tls_dir=tls_dir,
        access_log=None,
        drain_s=drain_s,
        seed=1,
        cpu_sample_every=1,
    )
    proxy = Proxy(
        cfg,
        policy_factory=(lambda lc: policy) if policy is not None else None,
        access_log=log.append if log is not None else None,
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop(0.5)


@contextlib.asynccontextmanager
async def echo_and_proxy(**kw: Any) -> AsyncIterator[tuple[Proxy, int]]:
    server, state = await start_echo(seed=1)
    try:
        async with proxy_for([bound_port(server)], **kw) as proxy:
            yield proxy, proxy.port("test")
    finally:
        await stop_echo(server, state)
