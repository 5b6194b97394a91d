"""Benchmark: the meshsim proxy against HAProxy, same echo upstream, same load, one run.

    .venv/bin/python benchmarks/proxy_vs_haproxy.py [--connections 16] [--duration-s 5]
        [--rate 1000]

Each target (direct to the echo server, through HAProxy, through the meshsim proxy) gets
(1) a closed-loop throughput run (as fast as answers come back) and (2) an open-loop run at
``--rate`` for latency, measured from the intended send time. "Added" latency is the
target's minus the direct path's. HAProxy runs single-threaded (``nbthread 1``), like the
meshsim proxy; it is started only when the ``haproxy`` binary is present. The goal from
issue 5: meshsim >= 0.5 x HAProxy's throughput at 16 connections, added p50 <= 2 x HAProxy's.
Figures only; nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshsim.proxy.loadgen import LoadSpec, run_load  # noqa: E402

ECHO = """
import asyncio, sys
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.echo import start_echo
async def main():
    server, _ = await start_echo('127.0.0.1', int(sys.argv[1]), seed=1)
    await wait_for_stop_signal()
run(main)
"""

PROXY = """
import sys
from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.server import Proxy
async def main():
    cfg = ProxyConfig(listeners=(ListenerConfig('outbound', ('127.0.0.1', int(sys.argv[1])),
                      (('127.0.0.1', int(sys.argv[2])),)),), access_log=None)
    proxy = Proxy(cfg)
    await proxy.start()
    await wait_for_stop_signal()
    await proxy.stop(1)
run(main)
"""

HAPROXY_CFG = """
global
    maxconn 4000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    http-reuse always
    server echo 127.0.0.1:{echo}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def measure(port: int, connections: int, duration_s: float, rate: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/?size=64"
    run_load(LoadSpec(url, 0, connections, 1.0))  # warm-up: connections, pools, caches
    thr = run_load(LoadSpec(url, 0, connections, duration_s))
    lat = run_load(LoadSpec(url, rate, connections, duration_s, poisson=True, seed=1))
    ok = lat.ret_codes.get(200, 0) == lat.completed and thr.ret_codes.get(200, 0) == thr.completed
    return {
        "rps": thr.actual_rps,
        "p50_ms": lat.corrected.get_value_at_percentile(50) / 1000,
        "p99_ms": lat.corrected.get_value_at_percentile(99) / 1000,
        "ok": float(ok),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop rate for latency")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    try:
        echo_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], env=env))
        wait_port(echo_port)
        results["direct"] = measure(echo_port, args.connections, args.duration_s, args.rate)

        haproxy = shutil.which("haproxy")
        if haproxy:
            hport = free_port()
            cfg = Path(tempfile.mkdtemp()) / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(port=hport, echo=echo_port))
            procs.append(subprocess.Popen([haproxy, "-f", str(cfg)]))
            wait_port(hport)
            results["haproxy"] = measure(hport, args.connections, args.duration_s, args.rate)
        else:
            print("haproxy not found: skipping it (apt-get install haproxy)")

        mport = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", PROXY, str(mport), str(echo_port)], env=env
        ))
        wait_port(mport)
        results["meshsim"] = measure(mport, args.connections, args.duration_s, args.rate)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    base = results["direct"]
    print(f"\n{args.connections} connections, {args.duration_s:g}s runs, latency at "
          f"{args.rate:g} rps Poisson (corrected), {os.cpu_count()} CPUs, loopback")
    print(f"{'target':<10}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'added p50':>11}{'added p99':>11}{'all 200':>9}")
    for name, r in results.items():
        added50 = r["p50_ms"] - base["p50_ms"]
        added99 = r["p99_ms"] - base["p99_ms"]
        print(f"{name:<10}{r['rps']:>10.0f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{added50:>11.3f}{added99:>11.3f}{'yes' if r['ok'] else 'NO':>9}")
    if "haproxy" in results:
        h, m = results["haproxy"], results["meshsim"]
        ha50 = h["p50_ms"] - base["p50_ms"]
        me50 = m["p50_ms"] - base["p50_ms"]
        print(f"\nmeshsim / haproxy throughput: {m['rps'] / h['rps']:.2f} (goal >= 0.5)")
        if ha50 > 0:
            print(f"meshsim / haproxy added p50: {me50 / ha50:.2f} (goal <= 2)")
        else:
            print(f"haproxy added p50 {ha50:.3f} ms is within noise; meshsim adds {me50:.3f} ms")


if __name__ == "__main__":
    main()
