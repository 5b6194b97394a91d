"""Where the simulated lab's time goes under each scheduler (``fcfs`` and ``cfs``), at one
fit or held-out point of the committed record: the per-request parts and spans of
meshsim.calibrate.decomposition and each process's mean wait for its core, side by side.

    python reports/validation/experiments/lab_parts_by_scheduler.py [RPS] [--payload 128]

RPS: the point's load (default: the lowest open-loop load of the base configuration at the
payload), run under each scheduler (``trace_lab``'s ``scheduler``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.decomposition import (
    simulated_core_wait_us,
    simulated_parts,
    simulated_spans,
    trace_lab,
)

MODEL = Path("models/calibrated/lab.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rps", nargs="?", type=float)
    ap.add_argument("--payload", type=int, default=128)
    args = ap.parse_args()
    fit = load_fit(MODEL)
    points = sorted(
        (
            p
            for p in fit["points"]
            if p["payload_bytes"] == args.payload and p["config"] == "plain-ka-f0" and p["rps"]
        ),
        key=lambda p: p["rps"],
    )
    if not points:
        raise SystemExit(f"no open-loop base point at {args.payload} B in {MODEL}")
    point = points[0] if args.rps is None else min(points, key=lambda p: abs(p["rps"] - args.rps))
    print(f"{point['rps']:.1f} rps, {args.payload} B: measured p50 {point['latency_ms']['p50']} ms")
    out: dict[str, dict[str, Any]] = {}
    for scheduler in ("fcfs", "cfs"):
        parts = trace_lab(MODEL, fit, point, scheduler=scheduler)
        out[scheduler] = {
            "parts": simulated_parts(parts),
            "spans": simulated_spans(parts),
            "wait": simulated_core_wait_us(parts),
        }
    print(f"{'ms (p50 / mean)':28s} {'fcfs':>16s} {'cfs':>16s}")
    for kind in ("parts", "spans"):
        for name, a in out["fcfs"][kind].items():
            b = out["cfs"][kind].get(name, {})
            cells = [
                f"{x['p50']:.4f} / " + (f"{x['mean']:.4f}" if "mean" in x else "-") for x in (a, b)
            ]
            print(f"{kind[:-1] + ' ' + name:28s} {cells[0]:>16s} {cells[1]:>16s}")
    print("core wait per request (us)")
    for name, us in out["fcfs"]["wait"].items():
        print(f"  {name:26s} {us:16.1f} {out['cfs']['wait'].get(name, float('nan')):16.1f}")


if __name__ == "__main__":
    main()
