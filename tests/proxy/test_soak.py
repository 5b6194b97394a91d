"""Soak: the proxy's memory stays flat under a long-ish run of mixed traffic.

The proxy runs in its own process (so its RSS is its own), in front of an echo process,
and this process drives it for ``ROUNDS`` rounds of closed-loop load: bodyless GETs (the
callback path), POSTs with bodies (the task path), some 503s, new connections each round.
RSS is sampled after every round; the median of the last third may exceed the median of
the second third (after warm-up) by at most ``GROWTH_LIMIT_BYTES``. A leak of even 100
bytes a request would add tens of MB over the run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from meshsim.calibrate.procstat import proc_rss_kib
from meshsim.proxy.loadgen import LoadSpec, run_load
from meshsim.proxy.runner import wait_for_port

from .test_cli import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROUNDS = 12
ROUND_S = 2.0  # 24 s of load
GROWTH_LIMIT_BYTES = 2 * 1024 * 1024

ECHO = """
import sys
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.echo import start_echo
async def main():
    await start_echo('127.0.0.1', int(sys.argv[1]), seed=1)
    await wait_for_stop_signal()
run(main)
"""

PROXY = """
import sys
from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.runner import run, wait_for_stop_signal
from meshsim.proxy.server import Proxy
async def main():
    lc = ListenerConfig('soak', ('127.0.0.1', int(sys.argv[1])),
                        (('127.0.0.1', int(sys.argv[2])),))
    proxy = Proxy(ProxyConfig(listeners=(lc,), access_log=sys.argv[3]))
    await proxy.start()
    await wait_for_stop_signal()
    await proxy.stop(1)
run(main)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_proxy_memory_stays_flat(tmp_path: Path) -> None:
    echo_port, proxy_port = free_port(), free_port()
    log = tmp_path / "access.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)])]
    try:
        wait_for_port(echo_port, timeout_s=15.0)
        proxy = subprocess.Popen(
            [sys.executable, "-c", PROXY, str(proxy_port), str(echo_port), str(log)]
        )
        procs.append(proxy)
        wait_for_port(proxy_port, timeout_s=15.0)
        base = f"http://127.0.0.1:{proxy_port}"
        specs = [
            LoadSpec(f"{base}/?size=256", 0, 16, ROUND_S),
            LoadSpec(f"{base}/", 0, 8, ROUND_S, method="POST", body=b"b" * 2048),
            LoadSpec(f"{base}/?status=503:20&size=64", 0, 16, ROUND_S),
        ]
        samples, answered = [], 0
        for i in range(ROUNDS):
            result = run_load(specs[i % len(specs)])
            assert result.completed > 0
            assert result.errors == 0
            answered += result.completed
            samples.append(proc_rss_kib(proxy.pid) * 1024)
        third = ROUNDS // 3
        middle = statistics.median(samples[third : 2 * third])
        last = statistics.median(samples[2 * third :])
        mib = [round(s / 2**20, 2) for s in samples]
        print(f"{answered} requests; proxy RSS per round (MiB): {mib}")
        assert last - middle <= GROWTH_LIMIT_BYTES, mib
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    with log.open() as lines:
        logged = sum(1 for _ in lines)
    assert logged == answered  # every request logged, none lost at stop
