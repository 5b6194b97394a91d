"""The lab's measurements outside the load grid: what a sidecar costs with no traffic, per
idle connection held open (memory), per full mTLS handshake (in memory, only the TLS work),
and per accepted connection, full and resumed handshake (a black box's process CPU).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any

from meshsim.calibrate.lab import Lab, Sidecar
from meshsim.calibrate.points import LabConfig
from meshsim.calibrate.procstat import CLK_TCK, HAVE_SCHEDSTAT, proc_rss_kib, tree_sched
from meshsim.errors import MeshsimError
from meshsim.proxy.loadgen import LoadSpec, run_load


def idle_cpu_ms_per_s(lab: Lab, seconds: float = 3.0) -> dict[str, float]:
    """CPU per second of the base configuration's components with no traffic, measured
    after a short load: what a fixed background cost (timers, polling) would show."""
    lab.reconfigure(LabConfig())
    assert lab.client is not None
    assert lab.server is not None
    with lab.pinned():
        run_load(
            LoadSpec(
                url=f"http://127.0.0.1:{lab.client.port}/echo",
                rps=0,
                connections=8,
                duration_s=0.3,
                method="POST",
                body=b"x" * 1024,
            )
        )
    time.sleep(0.2)
    nodes: dict[str, Sidecar] = {
        "client_sidecar": lab.client,
        "server_sidecar": lab.server,
        "echo": lab.echo,
    }
    pids = {k: n.pids() for k, n in nodes.items()}
    before = {k: tree_sched(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt_s = time.monotonic() - t0
    after = {k: tree_sched(p) for k, p in pids.items()}
    out = {k: (after[k] - before[k]).cpu_s * 1e3 / dt_s for k in nodes}
    out["resolution_ms_per_s"] = (1e-6 if HAVE_SCHEDSTAT else 1e3 / CLK_TCK) / dt_s
    return out


# ------------------------------------------------------------------ per-connection costs


def connection_memory(lab: Lab, counts: tuple[int, ...] = (0, 100, 200, 300)) -> dict[str, Any]:
    """RSS of a sidecar against idle connections held open to it, plain and mTLS.

    Plain: connections to the client sidecar of a plain configuration. mTLS: connections
    with full handshakes to the server sidecar of an mTLS configuration.
    """
    out: dict[str, Any] = {}
    for tls in (False, True):
        lab.reconfigure(LabConfig(mtls=tls))
        node = lab.server if tls else lab.client
        assert node is not None
        ctx = None
        if tls:
            from meshsim.proxy.tls import client_context

            ctx = client_context(lab.tls_dir)
        rows: list[tuple[int, float]] = []
        with lab.pinned():
            for k in counts:
                rows.append((k, _rss_with_connections(node, k, ctx)))
        out["tls" if tls else "plain"] = rows
    return out


def handshakes(lab: Lab, n: int = 200) -> dict[str, list[float]]:
    """CPU microseconds per side of full mTLS handshakes with the proxy's own contexts.

    Driven in memory (``ssl.MemoryBIO``), so only the TLS work is timed; each side's
    ``thread_time`` is summed over its handshake steps.
    """
    from meshsim.proxy.tls import client_context, server_context

    cctx, sctx = client_context(lab.tls_dir), server_context(lab.tls_dir)
    client_us: list[float] = []
    server_us: list[float] = []
    with lab.pinned():
        for _ in range(n):
            c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
            cli = cctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
            srv = sctx.wrap_bio(s_in, s_out, server_side=True)
            tc = ts = 0.0
            done_c = done_s = False
            for _step in range(10):
                if not done_c:
                    done_c, dt = _handshake_step(cli)
                    tc += dt
                s_in.write(c_out.read())
                if not done_s:
                    done_s, dt = _handshake_step(srv)
                    ts += dt
                c_in.write(s_out.read())
                if done_c and done_s:
                    break
            if not (done_c and done_s):
                raise MeshsimError("in-memory TLS handshake did not complete")
            client_us.append(tc * 1e6)
            server_us.append(ts * 1e6)
    return {"client": client_us, "server": server_us}


def connection_costs(lab: Lab, n: int = 200, *, tls: bool = True) -> dict[str, Any]:
    """The server sidecar's process CPU and wake-ups per request, one request at a time
    from this process, in four ways: all on one kept-alive connection; a new plain
    connection each (``Connection: close``); a new mTLS connection each, full
    handshake; and the same resuming the previous connection's TLS session.

    The differences are what a connection costs a black-box proxy, with everything else
    equal: an accepted TCP connection (new plain - kept alive), a full server-side
    handshake (new mTLS - new plain) and a resumed one (``resumed_fraction`` says how
    many the proxy did resume). The upstream connection to the echo stays pooled.
    """
    from meshsim.proxy.tls import client_context

    out: dict[str, Any] = {"requests": n}
    modes: list[tuple[str, LabConfig, ssl.SSLContext | None]] = [
        ("keepalive", LabConfig(), None),
        ("plain_connection", LabConfig(), None),
    ]
    if tls:
        ctx = client_context(lab.tls_dir)
        modes += [
            ("tls_full", LabConfig(mtls=True), ctx),
            ("tls_resumed", LabConfig(mtls=True), ctx),
        ]
    for mode, cfg, mode_ctx in modes:
        lab.reconfigure(cfg)
        node = lab.server
        assert node is not None
        with lab.pinned():
            _sequential_requests(node.port, 20, mode, mode_ctx)  # warm up
            pids = node.pids()
            before = tree_sched(pids)
            t0 = time.monotonic()
            reused = _sequential_requests(node.port, n, mode, mode_ctx)
            seconds = time.monotonic() - t0
            used = tree_sched(pids) - before
        out[mode] = {
            "cpu_us": used.cpu_s * 1e6 / n,
            "wakeups": used.voluntary / n,
            # The n requests' wall time, from which the sidecar's mean sleep follows.
            "seconds": seconds,
        }
        if mode == "tls_resumed":
            out["resumed_fraction"] = reused / n
    return out


def _sequential_requests(port: int, n: int, mode: str, ctx: ssl.SSLContext | None) -> int:
    """``n`` GETs to ``port``, one after another (see :func:`connection_costs`);
    returns how many TLS connections resumed a session."""
    keep = mode == "keepalive"
    request = (
        b"GET /echo HTTP/1.1\r\nHost: lab\r\n"
        + (b"" if keep else b"Connection: close\r\n")
        + b"\r\n"
    )
    reused = 0
    session: ssl.SSLSession | None = None
    conn: socket.socket | None = None
    try:
        for _ in range(n):
            if conn is None:
                conn = socket.create_connection(("127.0.0.1", port), 5.0)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ctx is not None:
                    conn = ctx.wrap_socket(
                        conn,
                        server_hostname="127.0.0.1",
                        session=session if mode == "tls_resumed" else None,
                    )
            conn.sendall(request)
            _read_response(conn)
            if isinstance(conn, ssl.SSLSocket):
                reused += bool(conn.session_reused)
                session = conn.session
            if not keep:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return reused


def _read_response(conn: socket.socket) -> None:
    """Read one HTTP/1.1 response with a Content-Length body (what the echo sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise MeshsimError("the proxy closed the connection before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise MeshsimError("the proxy closed the connection mid-response")
        body += chunk


def _handshake_step(side: ssl.SSLObject) -> tuple[bool, float]:
    """One round of one side's handshake: whether it completed, and the thread CPU it took."""
    t0 = time.thread_time()
    try:
        side.do_handshake()
        done = True
    except ssl.SSLWantReadError:
        done = False
    return done, time.thread_time() - t0


def _rss_with_connections(node: Sidecar, k: int, ctx: ssl.SSLContext | None) -> float:
    async def hold() -> float:
        loop = asyncio.get_running_loop()
        transports = []
        for _ in range(k):
            tr, _p = await loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                node.port,
                ssl=ctx,
                server_hostname="127.0.0.1" if ctx else None,
            )
            transports.append(tr)
        await asyncio.sleep(0.3)
        rss = sum(proc_rss_kib(pid) for pid in node.pids())
        for tr in transports:
            tr.close()
        await asyncio.sleep(0.2)
        return rss

    return asyncio.run(hold())
