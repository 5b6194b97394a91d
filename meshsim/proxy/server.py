"""The sidecar proxy: listeners, their routes and pools, the admin port, graceful drain.

Each listener forwards to its upstream hosts. A sidecar has two: ``inbound`` (mTLS from
other sidecars, to the local app) and ``outbound`` (the local app, to other sidecars over
mTLS). Stopping is graceful: listeners stop accepting, ``/ready`` turns 503, idle keep-alive
connections close, in-flight requests finish (up to ``drain_s``), then everything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from meshsim.errors import MeshsimError
from meshsim.proxy.admin import AdminProtocol
from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.downstream import DownstreamProtocol
from meshsim.proxy.forward import Route
from meshsim.proxy.httpcore import Limits
from meshsim.proxy.metrics import ProxyMetrics
from meshsim.proxy.policies import policy_for
from meshsim.proxy.seam import RoutePolicy
from meshsim.proxy.tls import Rotator, client_context, server_context, trust_domain_from_dir
from meshsim.proxy.upstream import ConnectionLimits, HostPool


class ListenerState:
    def __init__(self, route: Route, limits: Limits, trust_domain: str | None) -> None:
        self.route = route
        self.limits = limits
        self.trust_domain = trust_domain
        """Set on mTLS server listeners: peers must present an id in this domain."""
        self.connections: set[DownstreamProtocol] = set()
        self.in_flight = 0
        self.draining = False
        self.drained = asyncio.Event()

    def maybe_drained(self) -> None:
        if self.draining and self.in_flight == 0:
            self.drained.set()


PolicyFactory = Callable[[ListenerConfig], RoutePolicy]


class Proxy:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        policy_factory: PolicyFactory | None = None,
        access_log: Callable[[str], None] | None = None,
        rotator_ca: object | None = None,
    ) -> None:
        self.config = config
        self.metrics = ProxyMetrics()
        self.policy_factory = policy_factory or (
            lambda lc: policy_for(lc.traffic, len(lc.upstreams), lc.subsets, lc.mesh)
        )
        self.access_log = access_log if access_log is not None else _log_sink(config.access_log)
        self.states: dict[str, ListenerState] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.admin_server: asyncio.Server | None = None
        self.rotator: Rotator | None = None
        self.ready = False
        self._contexts: list[ssl.SSLContext] = []

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        if not cfg.listeners:
            raise MeshsimError("the proxy has no listeners (give --listen and --upstream)")
        trust_domain = cfg.trust_domain
        if cfg.tls_dir is not None and trust_domain is None:
            try:
                trust_domain = trust_domain_from_dir(cfg.tls_dir)
            except OSError as exc:
                raise MeshsimError(f"cannot read {cfg.tls_dir}/ca.pem: {exc}") from None
        seeds = np.random.SeedSequence(cfg.seed).spawn(len(cfg.listeners))
        loop = asyncio.get_running_loop()
        try:
            for lc, seed in zip(cfg.listeners, seeds, strict=True):
                await self._start_listener(loop, lc, seed, trust_domain)
            if cfg.admin is not None:
                ready = lambda: self.ready  # noqa: E731
                self.admin_server = await loop.create_server(
                    lambda: AdminProtocol(self.metrics.registry, ready),
                    *cfg.admin,
                    reuse_address=True,
                )
        except OSError as exc:
            await self.stop(0)
            raise MeshsimError(f"cannot listen: {exc.strerror or exc}") from None
        if self._contexts and cfg.tls_dir is not None:
            self.rotator = Rotator(cfg.tls_dir, self._contexts)
            self.rotator.start()
        if isinstance(self.access_log, AccessLog):
            self.access_log.start(loop)
        self.ready = True

    async def _start_listener(
        self,
        loop: asyncio.AbstractEventLoop,
        lc: ListenerConfig,
        seed: np.random.SeedSequence,
        trust_domain: str | None,
    ) -> None:
        cfg = self.config
        if lc.tls != "none" and cfg.tls_dir is None:
            raise MeshsimError(f"listener {lc.name!r} uses tls: {lc.tls} but no --tls-dir given")
        up_ctx = client_context(cfg.tls_dir) if lc.tls == "client" and cfg.tls_dir else None
        down_ctx = server_context(cfg.tls_dir) if lc.tls == "server" and cfg.tls_dir else None
        self._contexts.extend(c for c in (up_ctx, down_ctx) if c is not None)
        policy = self.policy_factory(lc)
        limits: ConnectionLimits | None = getattr(policy, "connection_limits", None)
        pools = [
            HostPool(
                host,
                port,
                listener=lc.name,
                metrics=self.metrics,
                ssl_context=up_ctx,
                trust_domain=trust_domain,
                limits=limits,
                identities=lc.upstream_identities,
                connect_timeout_s=policy.connect_timeout_s,
            )
            for host, port in lc.upstreams
        ]
        for pool in pools:
            pool.siblings = pools
        route = Route(
            name=lc.name,
            pools=pools,
            metrics=self.metrics,
            policy=policy,
            rng=np.random.Generator(np.random.PCG64(seed)),
            access_log=self.access_log,
            allowed_principals=lc.allowed_principals,
            cpu_sample_every=cfg.cpu_sample_every,
        )
        state = ListenerState(route, cfg.limits, trust_domain if down_ctx else None)
        self.states[lc.name] = state
        self.servers[lc.name] = await loop.create_server(
            lambda: DownstreamProtocol(state),
            *lc.listen,
            ssl=down_ctx,
            backlog=1024,
            reuse_address=True,
            ssl_handshake_timeout=cfg.limits.header_timeout_s if down_ctx else None,
        )

    def port(self, listener: str) -> int:
        port: int = self.servers[listener].sockets[0].getsockname()[1]
        return port

    @property
    def admin_port(self) -> int | None:
        if self.admin_server is None:
            return None
        port: int = self.admin_server.sockets[0].getsockname()[1]
        return port

    async def stop(self, drain_s: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_s``), close all."""
        drain = self.config.drain_s if drain_s is None else drain_s
        self.ready = False
        for server in self.servers.values():
            server.close()
        for state in self.states.values():
            state.draining = True
            for conn in list(state.connections):
                conn.close_if_idle()
            state.maybe_drained()
        waits = [s.drained.wait() for s in self.states.values() if s.in_flight]
        if waits and drain > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), drain)
        for state in self.states.values():
            for conn in list(state.connections):
                conn.close()
            for pool in state.route.pools:
                pool.close()
        if self.rotator is not None:
            await self.rotator.stop()
        if isinstance(self.access_log, AccessLog):
            self.access_log.close()
        if self.admin_server is not None:
            self.admin_server.close()
        for server in self.servers.values():
            await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run before the loop ends


class AccessLog:
    """Buffered JSON-lines access log: one ``write`` per batch, not per request.

    Lines are gathered in memory and written when ``max_lines`` have accumulated, every
    ``interval_s`` (a timer on the proxy's loop) and when the proxy stops, so a crash loses
    at most the last second's lines.
    """

    def __init__(self, stream: TextIO, *, owned: bool, max_lines: int = 256) -> None:
        self.stream = stream
        self.owned = owned
        self.max_lines = max_lines
        self.lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, line: str) -> None:
        lines = self.lines
        lines.append(line)
        if len(lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.lines.append("")
            self.stream.write("\n".join(self.lines))
            self.lines.clear()
            self.stream.flush()

    def start(self, loop: asyncio.AbstractEventLoop, interval_s: float = 1.0) -> None:
        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(interval_s, tick)

        self._timer = loop.call_later(interval_s, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.owned:
            self.stream.close()


def _log_sink(target: str | None) -> Callable[[str], None] | None:
    if target is None or target in ("off", "none"):
        return None
    if target == "-":
        return AccessLog(sys.stdout, owned=False)
    try:
        stream = Path(target).open("a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
    except OSError as exc:
        raise MeshsimError(f"cannot open access log {target}: {exc.strerror or exc}") from None
    return AccessLog(stream, owned=True)
