"""A steady CPU demand under a CFS quota: is a process that never needs more than its quota
in a period throttled on this host anyway (a stalled vCPU charging the cgroup)?

A child pinned to core 1 works ``WORK_MS`` of CPU in every 1 ms tick (about 0.31 of a core)
for 10 s in a CPU cgroup of its own at each limit; prints cpu.stat's periods, throttled
periods and throttled time (reports/validation/cpu-limits.md).

    python reports/validation/experiments/steady_quota.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from meshsim.calibrate.cgroup import CpuCgroup, probe

WORK_MS = 0.3
SECONDS = 10.0
CHILD = """
import os, sys, time
os.sched_setaffinity(0, {{1}})
sys.stdin.readline()
start = time.monotonic()
n = 0
while time.monotonic() - start < {seconds}:
    n += 1
    t0 = time.process_time()
    while time.process_time() - t0 < {work}:
        pass
    wait = start + n * 0.001 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
print(time.process_time(), flush=True)
"""


def run(limit_m: float) -> dict[str, float]:
    support = probe()
    if support.path is None:
        raise SystemExit(f"no writable CPU cgroup: {support.reason}")
    child = CHILD.format(seconds=SECONDS, work=WORK_MS / 1e3)
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        name = f"meshsim-steady-{proc.pid}"
        with CpuCgroup(name, limit_m=limit_m, request_m=1000, support=support) as cg:
            cg.add([proc.pid])
            before = cg.stat()
            began = time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            cpu_s = float(proc.stdout.readline())
            wall = time.monotonic() - began
            d = cg.stat() - before
    finally:
        proc.kill()
        proc.wait()
    return {
        "limit_m": limit_m,
        "quota_used": round(cpu_s / wall * 1e3 / limit_m, 3),
        "nr_periods": d.nr_periods,
        "nr_throttled": d.nr_throttled,
        "throttled_ms": round(d.throttled_s * 1e3, 1),
    }


if __name__ == "__main__":
    for limit in (1000, 450, 400, 340, 320):
        print(json.dumps(run(limit)), flush=True)
