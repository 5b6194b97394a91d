"""One lab component in its own process, pinned to a core: ``python -m meshsim.calibrate.node``.

``echo`` runs the echo upstream; ``proxy`` runs one listener of the real sidecar proxy
(:class:`meshsim.proxy.server.Proxy`) with two calibration knobs that live here, not in the
proxy:

- ``--filters N`` wraps the route's policy in :class:`FilterChain`: N synthetic L7 filters run
  at the policy seam (``fault()``, on the request path) for every request. Each filter does
  what a cheap header/route filter does: one compiled-regex match of a request path and eight
  dictionary lookups of header rules. It is honest work (it is executed and its CPU is in the
  per-request CPU the proxy measures), and it stands for the ``l7_filter_us`` mechanism.
- ``--no-pool`` makes the proxy close every upstream connection after one exchange (its
  ``HostPool.release`` closes instead of pooling), so that with keep-alive off every request
  opens (and, with mTLS, handshakes) a new connection at every hop, as the simulator's
  ``mesh_options.keep_alive: false`` does.

The process pins itself with ``os.sched_setaffinity`` (``--cpu``), prints ``READY <port>`` on
standard output when listening, stops on SIGTERM, and gets SIGTERM from the kernel when the
lab process dies (:func:`die_with_parent`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.policies import policy_for
from meshsim.proxy.seam import Attempt, Fault, RetryTracker, RoutePolicy

_PATH_RE = re.compile(r"^/(api|v\d+)/([a-z0-9_-]+)(/.*)?$")
_RULES = {f"x-rule-{i}": f"value-{i}" for i in range(8)}
_HEADERS = {f"x-rule-{i}": f"value-{i}" for i in range(0, 8, 2)}


class FilterChain:
    """A :class:`RoutePolicy` that runs ``n`` synthetic filters per request, then delegates."""

    def __init__(self, inner: RoutePolicy, n: int) -> None:
        self.inner = inner
        self.n = n
        self.timeout_s = inner.timeout_s
        self.per_try_timeout_s = inner.per_try_timeout_s
        self.connect_timeout_s = inner.connect_timeout_s
        self.matched = 0

    def fault(self, now: float, rng: np.random.Generator) -> Fault:
        for _ in range(self.n):
            if _PATH_RE.match("/api/calibrate/echo"):
                self.matched += 1
            for name, want in _RULES.items():
                if _HEADERS.get(name) == want:
                    self.matched += 1
        return self.inner.fault(now, rng)

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        return self.inner.pick(hosts, now, rng)

    def admit(self, host: int, now: float) -> bool:
        return self.inner.admit(host, now)

    def release(self, host: int, started: float, now: float) -> None:
        self.inner.release(host, started, now)

    def record(self, attempt: Attempt, now: float) -> list[int]:
        return self.inner.record(attempt, now)

    def retry_state(self) -> RetryTracker:
        return self.inner.retry_state()


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the lab process dies (Linux ``PR_SET_PDEATHSIG``).

    The lab stops its components itself on exit, SIGTERM and SIGINT; this covers the rest
    (SIGKILL, a crash), so that no pinned component outlives the lab as an orphan.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        raise SystemExit(0)


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


async def _echo(port: int) -> None:
    from meshsim.proxy.echo import bound_port, start_echo, stop_echo
    from meshsim.proxy.runner import wait_for_stop_signal

    server, state = await start_echo("127.0.0.1", port, seed=1)
    print(f"READY {bound_port(server)}", flush=True)
    await wait_for_stop_signal()
    await stop_echo(server, state)


async def _proxy(args: argparse.Namespace) -> None:
    from meshsim.proxy.runner import wait_for_stop_signal
    from meshsim.proxy.server import Proxy

    if args.no_pool:
        from meshsim.proxy.upstream import HostPool, UpstreamConn

        def release(self: HostPool, conn: UpstreamConn, reusable: bool) -> None:
            conn.close()

        HostPool.release = release  # type: ignore[method-assign]
    host, _, port = args.upstream.rpartition(":")
    tls = args.tls
    listener = ListenerConfig(
        name=args.name, listen=("127.0.0.1", args.port), upstreams=((host, int(port)),), tls=tls
    )
    cfg = ProxyConfig(
        listeners=(listener,),
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
        access_log=args.access_log,
        drain_s=0.5,
        seed=1,
        **({} if args.cpu_sample_every is None else {"cpu_sample_every": args.cpu_sample_every}),
    )
    filters = args.filters

    def factory(lc: ListenerConfig) -> RoutePolicy:
        inner = policy_for(lc.traffic, len(lc.upstreams))
        return FilterChain(inner, filters) if filters else inner

    proxy = Proxy(cfg, policy_factory=factory)
    await proxy.start()
    print(f"READY {proxy.port(args.name)}", flush=True)
    await wait_for_stop_signal()
    await proxy.stop(0.5)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m meshsim.calibrate.node")
    ap.add_argument("role", choices=["echo", "proxy"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--name", default="outbound")
    ap.add_argument("--tls", choices=["none", "server", "client"], default="none")
    ap.add_argument("--tls-dir", default=None)
    ap.add_argument("--filters", type=int, default=0)
    ap.add_argument("--no-pool", action="store_true")
    ap.add_argument("--access-log", default=None)
    ap.add_argument("--cpu-sample-every", type=int, default=None)
    args = ap.parse_args(argv)
    die_with_parent()
    _pin(args.cpu)
    from meshsim.proxy.runner import run

    if args.role == "echo":
        run(lambda: _echo(args.port))
    else:
        run(lambda: _proxy(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
