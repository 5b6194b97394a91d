"""Does the server sidecar wake more often in a cgroup of its own even without a limit?

Before the lab gave each component a CPU cgroup of its own, its CPU-limited points put only
the server sidecar in one, and there it woke 0.31-0.38 times per request at 5773 rps against
0.17-0.20 beside the echo in the shared one (run S, reports/validation/cpu-limits.md). This
measures the same load three ways in the old lab (every component in this process's cgroup),
interleaved over passes: the shared cgroup, a cgroup of its own for the server sidecar with
no limit (a plain process's weight), and the same with a generous limit (1.5x the CPU just
used). If the wake-ups rise in the second as in the third, the cgroup (the scheduler's group
entities), not the quota, makes them. Prints per arm the server sidecar's wake-ups and CPU
per request, p50 and p99.

    python reports/validation/experiments/cgroup_wakeups.py [RPS ...]
"""

from __future__ import annotations

import os
import statistics
import sys

from meshsim.calibrate import throttle
from meshsim.calibrate.cgroup import CpuCgroup, probe
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Measured, Point

PASSES = 3
SECONDS = 4.0


def figures(m: Measured) -> tuple[float, float, float, float]:
    return (
        m.wakeups_per_request["server_sidecar"],
        m.process_cpu_us_per_request["server_sidecar"],
        m.latency_ms["p50"],
        m.latency_ms["p99"],
    )


def own_cgroup(lab: Lab, point: Point, limit: float | None, seed: int) -> Measured:
    """The point with the server sidecar alone in a CPU cgroup limited to ``limit``."""
    lab.reconfigure(point.config)
    assert lab.server is not None
    name = f"meshsim-wakeups-{os.getpid()}"
    with CpuCgroup(name, limit_m=limit, task_weight=True) as cg:
        cg.add(lab.server.pids())
        return lab.measure(point, seed=seed)


def main(loads: list[float]) -> None:
    support = probe()
    if support.path is None:
        sys.exit(f"no writable CPU cgroup: {support.reason}")
    lab = Lab(workdir(), containers=False)
    arms: dict[tuple[float, str], list[tuple[float, float, float, float]]] = {}
    try:
        seed = 0
        for _ in range(PASSES):
            for rps in loads:
                point = Point(LabConfig(), 1024, rps, 8, True, SECONDS)
                seed += 1
                shared = lab.measure(point, seed=seed)
                arms.setdefault((rps, "shared"), []).append(figures(shared))
                own = own_cgroup(lab, point, None, seed)
                arms.setdefault((rps, "own, no limit"), []).append(figures(own))
                limit = throttle.limit_m(shared, 1.5)
                limited = own_cgroup(lab, point, limit, seed)
                arms.setdefault((rps, "own, 1.5x"), []).append(figures(limited))
    finally:
        lab.close()
    head = ("rps", "cgroup", "wake-ups/req (range)", "CPU us/req", "p50 ms", "p99 ms")
    print(f"{head[0]:>7} {head[1]:<14} {head[2]:<22} {head[3]:>6} {head[4]:>7} {head[5]:>7}")
    for (rps, arm), rows in arms.items():
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        spread = f"({min(r[0] for r in rows):.3f}-{max(r[0] for r in rows):.3f})"
        print(
            f"{rps:>7.0f} {arm:<14} {med[0]:>6.3f} {spread:<15} {med[1]:>6.1f} "
            f"{med[2]:>7.3f} {med[3]:>7.2f}"
        )


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [2300.0, 5700.0])
