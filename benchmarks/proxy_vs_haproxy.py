"""Benchmark: meshsim's Python proxy against HAProxy and the Rust sidecar, nginx upstream.

    .venv/bin/python benchmarks/proxy_vs_haproxy.py [--connections 16] [--duration-s 6]
        [--trials 5] [--pin] [--json OUT]

The upstream is nginx (Debian ``nginx-light``: one worker, ``return 200``, its configuration
generated into a temporary prefix, run as the current user), so that the upstream is never
what limits a proxy: a Python echo upstream served 12.7k rps alone and 12.8k behind HAProxy,
which made "x times HAProxy" a figure about the echo (issue 17). The client is ``wrk -t1
-c16 -d6s --latency`` (Debian ``wrk``), or without wrk the project's load generator in this
process (closed loop).

Targets, side by side in one run: nginx directly, HAProxy (``nbthread 1``, through
``proxies/haproxy/haproxy-sidecar``, keep-alive to nginx), meshsim's proxy (one asyncio event
loop, access log off), and the Rust reference sidecar (``proxies/rust-sidecar``, tokio
current-thread; built with ``make rust-sidecar``). Each trial visits every target in an
order rotated from trial to trial, so a slow drift of a shared machine hits all alike; the
figures are medians of the trials with their min-max. "Added p50" is the target's p50 minus
nginx's in the same trial (wrk's latency is a closed loop's: at full throughput it is
mostly the time a request waits for its connection's turn). The proxies' CPU per request
is their process tree's (schedstat) over the wrk run. With ``--pin`` the proxy under test
gets the last CPU and nginx and the client the others.

Goals (issue 17, not asserted: figures only): meshsim >= 0.5x HAProxy's throughput and
<= 2x its added p50 at 16 connections.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshsim.calibrate.procstat import tree_sched  # noqa: E402
from meshsim.calibrate.proxycmd import free_port, process_tree, stop_process  # noqa: E402
from meshsim.proxy.loadgen import LoadSpec, run_load  # noqa: E402
from meshsim.proxy.runner import wait_for_port  # noqa: E402

RUST_BIN = ROOT / "proxies" / "rust-sidecar" / "target" / "release" / "meshsim-rust-sidecar"
HAPROXY_SIDECAR = ROOT / "proxies" / "haproxy" / "haproxy-sidecar"

NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
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

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/sec, p50/p99 (ms), non-2xx/3xx responses and socket errors from ``wrk
    --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    out = {"rps": float(rps.group(1)), "bad": 0.0}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        out[f"p{q}_ms"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["bad"] = float(bad.group(1)) if bad else 0.0
    if errs:
        out["bad"] += sum(float(g) for g in errs.groups())
    return out


def run_wrk(
    wrk: str | None, port: int, connections: int, duration_s: float, cpus: set[int]
) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/"
    if wrk is None:  # the project's load generator, closed loop
        r = run_load(LoadSpec(url, 0, connections, duration_s))
        h = r.corrected
        return {
            "rps": r.actual_rps,
            "p50_ms": h.get_value_at_percentile(50) / 1000,
            "p99_ms": h.get_value_at_percentile(99) / 1000,
            "bad": float(r.completed - r.ret_codes.get(200, 0) + r.errors),
        }
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", url]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    return parse_wrk(proc.stdout)


class Target:
    """A server under test: its port and the process tree whose CPU is measured."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        cpus: set[int],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            wait_for_port(port, 15.0)
        except TimeoutError:
            self.stop()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"{name} did not start: {err[-2000:]}") from None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        tree = self.pids() if self.proc.poll() is None else []
        stop_process(self.proc, grace_s=10.0)
        for pid in tree[1:]:  # workers that outlived their master
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def start_nginx(nginx: str, prefix: Path, cpus: set[int]) -> Target:
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    # As root, nginx's worker would switch to nobody; run it as the user who runs this.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, user=user))
    return Target(
        "nginx",
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        port,
        cpus,
    )


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration-s", type=float, default=6.0)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--pin", action="store_true", help="give the proxy under test its own CPU")
    ap.add_argument("--json", type=Path, default=None, help="write every trial here")
    ap.add_argument(
        "--update-baseline",
        action="store_true",
        help="store this run's figures as benchmarks/baselines/proxy_vs_haproxy.json",
    )
    args = ap.parse_args()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        sys.exit(
            "nginx not found (apt-get install nginx-light): the upstream must be a C "
            "server, not the Python echo"
        )
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found (apt-get install wrk): using meshsim's load generator, closed loop")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ncpu = os.cpu_count() or 1
    proxy_cpus = {ncpu - 1} if args.pin and ncpu > 1 else set()
    rest_cpus = set(range(ncpu)) - proxy_cpus if proxy_cpus else set()
    if rest_cpus:
        os.sched_setaffinity(0, rest_cpus)  # our own load generator, without wrk
    work = Path(tempfile.mkdtemp(prefix="meshsim-bench-"))
    targets: dict[str, Target] = {}
    trials: dict[str, list[dict[str, float]]] = {}
    try:
        up = start_nginx(nginx, work / "nginx", rest_cpus)
        targets["nginx"] = up
        upstream = f"127.0.0.1:{up.port}"
        if shutil.which("haproxy"):
            port = free_port()
            (work / "haproxy").mkdir()
            targets["haproxy"] = Target(
                "haproxy",
                [
                    str(HAPROXY_SIDECAR),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--upstream",
                    upstream,
                    "--workdir",
                    str(work / "haproxy"),
                ],
                port,
                proxy_cpus,
            )
        else:
            print("haproxy not found: skipping it (apt-get install haproxy)")
        port = free_port()
        targets["meshsim"] = Target(
            "meshsim", [sys.executable, "-c", PROXY, str(port), str(up.port)], port, proxy_cpus, env
        )
        if RUST_BIN.exists():
            port = free_port()
            targets["rust"] = Target(
                "rust",
                [str(RUST_BIN), "--listen", f"127.0.0.1:{port}", "--upstream", upstream],
                port,
                proxy_cpus,
            )
        else:
            print(f"{RUST_BIN} not built: skipping the Rust sidecar (make rust-sidecar)")
        names = list(targets)
        for trial in range(args.trials):
            order = names[trial % len(names) :] + names[: trial % len(names)]
            for name in order:
                t = targets[name]
                run_wrk(wrk, t.port, args.connections, 1.0, rest_cpus)  # warm-up
                pids = t.pids()
                before = tree_sched(pids)
                r = run_wrk(wrk, t.port, args.connections, args.duration_s, rest_cpus)
                used = tree_sched(pids) - before
                r["cpu_us"] = used.cpu_s * 1e6 / max(r["rps"] * args.duration_s, 1.0)
                trials.setdefault(name, []).append(r)
                print(
                    f"trial {trial + 1} {name:<8} {r['rps']:>9.0f} rps  "
                    f"{r['cpu_us']:>6.1f} us CPU/req  p50 {r['p50_ms']:.3f} ms  "
                    f"p99 {r['p99_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        for t in targets.values():
            t.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(trials, args, ncpu, proxy_cpus, wrk is not None)


def report(
    trials: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    ncpu: int,
    proxy_cpus: set[int],
    have_wrk: bool,
) -> None:
    base = trials["nginx"]
    added = {
        name: [r["p50_ms"] - b["p50_ms"] for r, b in zip(rs, base, strict=True)]
        for name, rs in trials.items()
    }
    client = (
        f"wrk -t1 -c{args.connections} -d{args.duration_s:g}s"
        if have_wrk
        else f"meshsim load generator, {args.connections} connections, closed loop"
    )
    print(
        f"\n{client}, {args.trials} trials, nginx upstream (1 worker, return 200), "
        f"{ncpu} CPUs, loopback"
        + (f", proxies pinned to CPU {sorted(proxy_cpus)}" if proxy_cpus else ", unpinned")
    )
    print("median [min-max] over trials")
    print(
        f"{'target':<9}{'rps':>26}{'CPU us/req':>22}{'p50 ms':>24}{'added p50 ms':>26}"
        f"{'p99 ms':>24}{'errors':>8}"
    )
    for name, rs in trials.items():
        cpu = spread([r["cpu_us"] for r in rs], ".1f") if name != "nginx" else "-"
        print(
            f"{name:<9}{spread([r['rps'] for r in rs], '.0f'):>26}{cpu:>22}"
            f"{spread([r['p50_ms'] for r in rs], '.3f'):>24}"
            f"{spread(added[name], '.3f') if name != 'nginx' else '-':>26}"
            f"{spread([r['p99_ms'] for r in rs], '.3f'):>24}"
            f"{int(sum(r['bad'] for r in rs)):>8}"
        )
    summary: dict[str, Any] = {"trials": trials, "relative_to_haproxy": {}}
    if "haproxy" in trials:
        h_rps = statistics.median(r["rps"] for r in trials["haproxy"])
        h_add = statistics.median(added["haproxy"])
        print("\nrelative to HAProxy (ratio of medians; per-trial min-max in brackets)")
        for name in trials:
            if name in ("nginx", "haproxy"):
                continue
            per_trial = [
                m["rps"] / h["rps"] for m, h in zip(trials[name], trials["haproxy"], strict=True)
            ]
            rps_ratio = statistics.median(r["rps"] for r in trials[name]) / h_rps
            add = statistics.median(added[name])
            add_ratio = add / h_add if h_add > 0.005 else float("nan")
            goal = "  (goals: >= 0.50x throughput, <= 2x added p50)" if name == "meshsim" else ""
            print(
                f"{name:<9} throughput {rps_ratio:.2f}x [{min(per_trial):.2f}-"
                f"{max(per_trial):.2f}], added p50 {add:.3f} ms vs {h_add:.3f} ms = "
                + (
                    f"{add_ratio:.2f}x"
                    if add_ratio == add_ratio
                    else "n/a (HAProxy's is within noise)"
                )
                + goal
            )
            summary["relative_to_haproxy"][name] = {"throughput": rps_ratio, "added_p50": add_ratio}
        if "meshsim" in summary["relative_to_haproxy"]:
            from _baseline import compare  # benchmarks/_baseline.py

            rel = summary["relative_to_haproxy"]["meshsim"]
            print("\nmeshsim relative to HAProxy, against the stored baseline:")
            compare(
                "proxy_vs_haproxy",
                {
                    "meshsim_throughput_x_haproxy": round(rel["throughput"], 3),
                    "meshsim_added_p50_x_haproxy": round(rel["added_p50"], 3),
                    "meshsim_cpu_us_per_request": round(
                        statistics.median(r["cpu_us"] for r in trials["meshsim"]), 1
                    ),
                    "haproxy_cpu_us_per_request": round(
                        statistics.median(r["cpu_us"] for r in trials["haproxy"]), 1
                    ),
                },
                update=args.update_baseline,
            )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
