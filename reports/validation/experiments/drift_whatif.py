"""What a drift of the CPU cost between 100 ms periods does to the simulated throttled points.

Run O's held-out loads of 1190 and 2976 rps, unlimited and at their two measured limits,
simulated 10 s each under fcfs, without and with a two-state drift of both simulated nodes'
CPU costs around 1 (``cluster.host_speed``: 0.9 and 1.1, half the time each, phases of
150 ms on average): p50, p99 and the share of periods throttled, and the lab's p50 and p99
on the unlimited rows (reports/validation/cpu-limits.md).

    tar xzf reports/validation/passes/2026-12-03-run-o.model.tar.gz -C DIR
    python reports/validation/experiments/drift_whatif.py DIR/lab.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshsim.api import run_scenario
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.lab_scenario import throttling
from meshsim.calibrate.throttle import lab_point, scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict

DRIFT = {"fast_factor": 0.9, "slow_factor": 1.1, "slow_share": 0.5, "slow_dwell_ms": 150}
LOADS = ((1190.3, (None, 227.0, 167.0)), (2975.8, (None, 467.0, 342.0)))


def simulate(model: Path, fit: dict[str, Any], point: dict[str, Any], limit: float | None,
             drift: dict[str, float] | None) -> tuple[float, float, float]:  # fmt: skip
    doc = scenario(model, fit, point, limit, duration_s=10.0)
    if drift:
        doc["cluster"]["host_speed"] = drift
    run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    lat = run["workloads"]["load"]["latency_ms"]
    t = throttling(run, doc)
    share = t["nr_throttled"] / t["nr_periods"] if t["nr_periods"] else 0.0
    return round(lat["p50"], 3), round(lat["p99"], 2), round(share, 3)


def main(model: Path) -> None:
    fit = load_fit(model)
    print("rps limit_m | without: p50 p99 throttled | with: p50 p99 throttled | lab p50 p99")
    for rps, limits in LOADS:
        point = lab_point(fit, rps)
        lab = point["latency_ms"]
        for limit in limits:
            without = simulate(model, fit, point, limit, None)
            with_drift = simulate(model, fit, point, limit, DRIFT)
            measured = f"{lab['p50']:.3f} {lab['p99']:.2f}" if limit is None else ""
            print(rps, limit, "|", *without, "|", *with_drift, "|", measured, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
