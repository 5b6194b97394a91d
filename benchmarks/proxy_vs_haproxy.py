"""Benchmark: the meshsim proxy against HAProxy, same echo upstream, same load, one run.

    .venv/bin/python benchmarks/proxy_vs_haproxy.py [--connections 16] [--duration-s 5]
        [--rate 1000] [--trials 5] [--pin]

Three targets share one echo server (``meshsim echo``, a separate process) and one load
generator (:mod:`meshsim.proxy.loadgen`, in this process): the echo server directly, HAProxy
in front of it, the meshsim proxy in front of it. Each trial visits every target, in an
order rotated from trial to trial (so slow drifts of a shared machine hit all alike), and
gives each a warm-up, then (1) a closed-loop throughput run (as fast as answers come back)
and (2) an open-loop run at ``--rate`` Poisson for latency, measured from the intended send
time. "Added" latency is the target's minus the direct path's in the same trial. The proxy
processes' CPU time (from /proc) per request answered in the throughput run is printed too:
it is what a proxy costs, whatever else shares the machine.

HAProxy runs single-threaded (``nbthread 1``), like the meshsim proxy; it is started only
when the ``haproxy`` binary is present. ``--pin`` gives the proxy under test the last CPU to
itself and the echo server and load generator the others (os.sched_setaffinity); without
it, the scheduler places everything (the setting of issue 5's figures). Medians over the
trials are printed with their min-max spread. The goal from issue 5: meshsim >= 0.5 x
HAProxy's throughput at 16 connections, added p50 <= 2 x HAProxy's. Figures only; nothing
here asserts on wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshsim.proxy.loadgen import LoadSpec, run_load  # noqa: E402
from meshsim.proxy.runner import wait_for_port  # noqa: E402

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

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_s(pid: int | None) -> float:
    """User plus system CPU time of a process, from /proc (0 when there is no process)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def measure(
    port: int, pid: int | None, connections: int, duration_s: float, rate: float
) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/?size=64"
    run_load(LoadSpec(url, 0, connections, 1.0))  # warm-up: connections, pools, caches
    cpu0 = cpu_s(pid)
    thr = run_load(LoadSpec(url, 0, connections, duration_s))
    cpu1 = cpu_s(pid)
    lat = run_load(LoadSpec(url, rate, connections, duration_s, poisson=True, seed=1))
    ok = lat.ret_codes.get(200, 0) == lat.completed and thr.ret_codes.get(200, 0) == thr.completed
    return {
        "rps": thr.actual_rps,
        "cpu_us": (cpu1 - cpu0) / max(thr.completed, 1) * 1e6,
        "p50_ms": lat.corrected.get_value_at_percentile(50) / 1000,
        "p99_ms": lat.corrected.get_value_at_percentile(99) / 1000,
        "ok": float(ok),
    }


def pin(pid: int, cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop rate for latency")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--pin", action="store_true", help="give the proxy under test its own CPU")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ncpu = os.cpu_count() or 1
    proxy_cpus = {ncpu - 1} if args.pin and ncpu > 1 else set()
    rest_cpus = set(range(ncpu)) - proxy_cpus if proxy_cpus else set()
    procs: list[subprocess.Popen[bytes]] = []
    trials: dict[str, list[dict[str, float]]] = {}
    try:
        pin(0, rest_cpus)  # the load generator (this process)
        echo_port = free_port()
        echo = subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], env=env)
        procs.append(echo)
        pin(echo.pid, rest_cpus)
        wait_for_port(echo_port)
        targets: dict[str, tuple[int, int | None]] = {"direct": (echo_port, None)}

        haproxy = shutil.which("haproxy")
        if haproxy:
            hport = free_port()
            cfg = Path(tempfile.mkdtemp()) / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(port=hport, echo=echo_port))
            hap = subprocess.Popen([haproxy, "-f", str(cfg)])
            procs.append(hap)
            pin(hap.pid, proxy_cpus)
            wait_for_port(hport)
            targets["haproxy"] = (hport, hap.pid)
        else:
            print("haproxy not found: skipping it (apt-get install haproxy)")

        mport = free_port()
        mesh = subprocess.Popen([sys.executable, "-c", PROXY, str(mport), str(echo_port)], env=env)
        procs.append(mesh)
        pin(mesh.pid, proxy_cpus)
        wait_for_port(mport)
        targets["meshsim"] = (mport, mesh.pid)

        names = list(targets)
        for trial in range(args.trials):
            order = names[trial % len(names) :] + names[: trial % len(names)]
            for name in order:
                port, pid = targets[name]
                r = measure(port, pid, args.connections, args.duration_s, args.rate)
                trials.setdefault(name, []).append(r)
                print(
                    f"trial {trial + 1} {name:<8} {r['rps']:>8.0f} rps  "
                    f"{r['cpu_us']:>6.1f} us CPU/req  p50 {r['p50_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)

    n = args.trials
    base = trials["direct"]
    added = {
        name: [r["p50_ms"] - b["p50_ms"] for r, b in zip(rs, base, strict=True)]
        for name, rs in trials.items()
    }
    added99 = {
        name: [r["p99_ms"] - b["p99_ms"] for r, b in zip(rs, base, strict=True)]
        for name, rs in trials.items()
    }
    print(
        f"\n{args.connections} connections, {args.duration_s:g}s runs, {n} trials, latency at "
        f"{args.rate:g} rps Poisson (corrected), {ncpu} CPUs, loopback"
        + (f", proxy pinned to CPU {sorted(proxy_cpus)}" if proxy_cpus else ", unpinned")
    )
    print("median [min-max] over trials")
    print(
        f"{'target':<9}{'rps':>24}{'CPU us/req':>22}{'p50 ms':>24}"
        f"{'added p50 ms':>26}{'added p99 ms':>24}{'all 200':>8}"
    )
    for name, rs in trials.items():
        cpu = spread([r["cpu_us"] for r in rs], ".1f") if name != "direct" else "-"
        print(
            f"{name:<9}{spread([r['rps'] for r in rs], '.0f'):>24}{cpu:>22}"
            f"{spread([r['p50_ms'] for r in rs], '.3f'):>24}"
            f"{spread(added[name], '.3f'):>26}{spread(added99[name], '.3f'):>24}"
            f"{'yes' if all(r['ok'] for r in rs) else 'NO':>8}"
        )
    if "haproxy" in trials:
        ratio = [
            m["rps"] / h["rps"] for m, h in zip(trials["meshsim"], trials["haproxy"], strict=True)
        ]
        print(
            f"\nmeshsim / haproxy throughput: {spread(ratio, '.2f')} (goal >= 0.5), "
            f"ratio of medians {statistics.median(r['rps'] for r in trials['meshsim']) / statistics.median(r['rps'] for r in trials['haproxy']):.2f}"  # noqa: E501
        )
        ha50 = statistics.median(added["haproxy"])
        me50 = statistics.median(added["meshsim"])
        if ha50 > 0.005:
            print(
                f"meshsim / haproxy added p50: {me50 / ha50:.2f} (goal <= 2): "
                f"{me50:.3f} ms vs {ha50:.3f} ms"
            )
        else:
            print(f"haproxy added p50 {ha50:.3f} ms is within noise; meshsim adds {me50:.3f} ms")


if __name__ == "__main__":
    main()
