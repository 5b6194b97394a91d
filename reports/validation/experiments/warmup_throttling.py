"""How much of a limited sidecar's throttling is its load's, and how much the warm-up's?

Before each point's load the lab warms the path up with a 0.2 s closed loop, as fast as the
path goes: a sidecar limited to a little more than its use at the load spends its quota in
it by itself. Until 2026-12-04 evening the calibration read the cgroup's ``cpu.stat`` around
the whole point, warm-up included, and compared it with the simulated lab's counters over
the load. This runs the calibration's throttled points at one load (the server sidecar at
1.5 and 1.1 times what it used just before, as ``meshsim/calibrate/throttle.py`` does) for
PASSES passes and prints both readings beside the latency.

    python reports/validation/experiments/warmup_throttling.py [RPS [PASSES]]

About 30 s a pass; needs a writable CPU cgroup (root on cgroup v2, or a v1 cpu hierarchy),
and the lab's cores otherwise quiet.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from meshsim.calibrate import throttle
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Measured, Point
from meshsim.errors import MeshsimError


def main(argv: Sequence[str]) -> None:
    rps = float(argv[0]) if argv else 1500.0
    passes = int(argv[1]) if len(argv) > 1 else 3
    lab = Lab(workdir())
    try:
        for repeat in range(passes):
            base = Point(LabConfig(), 1024, rps, 32, True, 5.0, "held_out", repeat=repeat)
            unlimited: dict[tuple[str, int, float, int], Measured] = {}
            m = throttle.measure_grid_point(lab, base, unlimited, seed=repeat + 1)
            print(
                f"pass {repeat}: unlimited p50 {m.latency_ms['p50']:.3f} ms, "
                f"p99 {m.latency_ms['p99']:.3f} ms, server sidecar "
                f"{m.process_cpu_us_per_request['server_sidecar']:.1f} us/request",
                flush=True,
            )
            for share in throttle.CPU_LIMITS:
                limited = replace(base, role="throttled", cpu_limit=share)
                m = throttle.measure_grid_point(lab, limited, unlimited, seed=repeat + 10)
                c, w = m.cgroup, m.cgroup["whole_point"]
                print(
                    f"  {share:g}x ({c['limit_m']:g}m): p50 {m.latency_ms['p50']:.3f}, "
                    f"p99 {m.latency_ms['p99']:.3f} ms; throttled over the load "
                    f"{c['nr_throttled']} of {c['nr_periods']} periods, "
                    f"{1e3 * c['throttled_s']:.0f} ms; over the whole point "
                    f"{w['nr_throttled']} of {w['nr_periods']}, {1e3 * w['throttled_s']:.0f} ms",
                    flush=True,
                )
    except MeshsimError as exc:
        sys.exit(f"cannot measure a limited sidecar here: {exc}")
    finally:
        lab.close()


if __name__ == "__main__":
    main(sys.argv[1:])
