"""What the lab's CPU sampler did to the latency it sat beside: the old reader against the new.

Until run Z the period sampler (a thread of the load generator's process) read every thread's
``/proc`` files of both sidecars every 10 ms, 0.48 ms of the load generator's core and
interpreter lock each time (``sched_trace.py``); it now reads their process CPU clocks
(``procstat.CpuReader``). This runs the same plain keep-alive load (1 KiB) at RPS for SECONDS
with each reader in turn, PASSES times (old, new, old, new, ...: the host's drift falls on
both), and prints each pass's load generator p50 / p90 / p99 and the medians per reader.

    python reports/validation/experiments/sampler_cost.py [RPS [SECONDS [PASSES]]]

About 15 s a pass; the lab's cores must be otherwise quiet.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence

from meshsim.calibrate import period_cpu
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Point
from meshsim.calibrate.procstat import CpuReader, tree_sched


class FullReader:
    """The reader before run Z: every thread's schedstat and status, read afresh."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def cpu_s(self) -> float:
        return tree_sched(self.pids).cpu_s


def main(argv: Sequence[str]) -> None:
    rps = float(argv[0]) if argv else 7741.0
    seconds = float(argv[1]) if len(argv) > 1 else 5.0
    passes = int(argv[2]) if len(argv) > 2 else 3
    readers = {"old": FullReader, "new": CpuReader}
    got: dict[str, list[dict[str, float]]] = {k: [] for k in readers}
    lab = Lab(workdir())
    try:
        for k in range(passes):
            for name, reader in readers.items():
                setattr(period_cpu, "CpuReader", reader)  # noqa: B010
                m = lab.measure(Point(LabConfig(), 1024, rps, 32, True, seconds, "held_out"), 7 + k)
                got[name].append(m.latency_ms)
                lat = " / ".join(f"{q} {m.latency_ms[q]:.3f}" for q in ("p50", "p90", "p99"))
                print(f"pass {k} {name}: {lat} ms", flush=True)
    finally:
        setattr(period_cpu, "CpuReader", CpuReader)  # noqa: B010
        lab.close()
    for name, rows in got.items():
        med = {q: statistics.median(r[q] for r in rows) for q in ("p50", "p90", "p99")}
        print(f"{name}: medians " + " / ".join(f"{q} {v:.3f}" for q, v in med.items()) + " ms")


if __name__ == "__main__":
    main(sys.argv[1:])
