"""How long the load generator waits to run after its sidecar answers it, in the lab's kept
scheduler traces and in the simulated lab under ``cfs``.

    python reports/validation/experiments/response_reads.py            # both
    python reports/validation/experiments/response_reads.py --lab      # the traces only

Lab: for each response the client sidecar wrote (its access log's end) in the load window,
the time until the load generator next ran on core 0 (it never runs then: one core). The
traces are this repository's (passes/2026-12-05-sched-trace-*.json.gz, the AMD host, whose
processes take 1.75-2x the Intel record's CPU). Simulated: for each response reaching the
load generator, the time until its next burst starts on its node, at the committed record's
1 KiB keep-alive points nearest 5858 and 10878 rps (matched by busyness to the traces'
3347 and 5336).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TRACES = sorted((HERE.parent / "passes").glob("2026-12-05-sched-trace-*.json.gz"))
MODEL = Path("models/calibrated/lab.yaml")


def _stats(us: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"median {p50:6.1f}  mean {us.mean():6.1f}  p90 {p90:6.1f}  p99 {p99:7.1f} us"


def lab(path: Path) -> np.ndarray:
    sys.path.insert(0, str(HERE))
    from sched_replay import load
    from sched_trace import SWITCH, load_window

    dump = load(path)
    names = dump["names"]
    lo, hi = load_window(dump["client"])
    starts: list[float] = []
    for ts, cpu, ev, rest in dump["events"]:
        if ev == "sched_switch" and cpu == 0:
            m = SWITCH.search(rest)
            assert m is not None
            if names.get(int(m["next"])) == "load_generator":
                starts.append(ts)
    runs = np.asarray(starts)
    ends = np.sort([e for s, e in dump["client"].values() if lo <= s <= hi])
    k = np.searchsorted(runs, ends, side="right")
    ok = k < len(runs)
    return np.asarray((runs[k[ok]] - ends[ok]) * 1e6)


def simulated(rps: float) -> np.ndarray:
    import meshsim.calibrate.lab_scenario as lab_scenario
    import meshsim.sim.cpu.fair as fair
    import meshsim.sim.workload as workload
    from meshsim.calibrate.calibration import load_fit
    from meshsim.rng import replication_seeds
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    starts: list[float] = []
    arrivals: list[float] = []
    start, call = fair.FairScheduler._start, workload.WorkloadDriver._client_burst

    def traced_start(self: Any, task: Any, slice_end: Any = None) -> None:
        if task.group.name == "client/load":
            starts.append(self.env.now)
        start(self, task, slice_end)

    def traced_burst(self: Any, host: Any, cpu_s: float) -> Any:
        if "status" in sys._getframe(1).f_locals:  # the read, after the response came
            arrivals.append(self.env.now)
        return call(self, host, cpu_s)

    fit = load_fit(MODEL)
    points = [
        p
        for p in fit["points"]
        if p["config"] == "plain-ka-f0" and p["rps"] and p["payload_bytes"] == 1024
    ]
    point = min(points, key=lambda p: abs(p["rps"] - rps))
    fair.FairScheduler._start = traced_start  # type: ignore[method-assign]
    workload.WorkloadDriver._client_burst = traced_burst  # type: ignore[method-assign]
    try:
        doc = lab_scenario.lab_scenario(MODEL, fit, point, duration_s=4.0, scheduler="cfs")
        scenario = from_dict(doc)
        Simulation(scenario, "istio", replication_seeds(scenario.seed, 1)[0]).run()
    finally:
        fair.FairScheduler._start = start  # type: ignore[method-assign]
        workload.WorkloadDriver._client_burst = call  # type: ignore[method-assign]
    runs = np.asarray(starts)
    got = np.asarray([t for t in arrivals if t >= scenario.warmup_s])
    k = np.searchsorted(runs, got, side="left")
    ok = k < len(runs)
    return np.asarray((runs[k[ok]] - got[ok]) * 1e6)


def main() -> None:
    for path in TRACES:
        print(f"lab {path.name.split('-')[-1].split('.')[0]:>5s} rps: {_stats(lab(path))}")
    if "--lab" not in sys.argv:
        for rps in (5858.0, 10878.0):
            print(f"simulated cfs {rps:.0f} rps: {_stats(simulated(rps))}")


if __name__ == "__main__":
    main()
