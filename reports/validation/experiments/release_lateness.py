"""What if the simulated load generator's releases came when its timer fires, not on a grid?

The simulated lab releases the load generator's requests on a grid of timer ticks
(``release_tick_ms``, :meth:`meshsim.sim.workload.WorkloadDriver._ticked_open_loop`): every
release one tick after the last, each sending the requests due within half a tick. The lab's
load generator (:func:`meshsim.proxy.loadgen._schedule`) sleeps until its next request is due
and sends it when the timer fires, early or late by the loop's millisecond clock, with
everything due within half a millisecond: its releases are as irregular as its timer. The
workload's ``release_lateness_ms`` releases that way; this gives the point's baseline a
lateness drawn uniformly from LO..HI ms (or none: the grid), which the simulated lab then
uses. Prints, for the model's held-out point at RPS, the simulated legs (way there, server
span, way back, client span, load generator: p50 / p90 / p99 ms) and the deciles of the
client sidecar's longer gaps between parsed requests (over 30 us), on the grid and with each
HI.

    python reports/validation/experiments/release_lateness.py MODEL RPS HI[,HI...] [LO]

MODEL is a calibration's lab.yaml (its lab.fit.json beside it); LO defaults to 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import meshsim.calibrate.sim_trace as sim_trace
from meshsim.calibrate.decomposition import trace_lab
from meshsim.calibrate.lab_scenario import baseline_for
from meshsim.calibrate.point_record import LATENESS_QUANTILES
from meshsim.calibrate.validate import held_out_points, merge_passes


def uniform_quantiles(lo_ms: float, hi_ms: float) -> list[float]:
    """A uniform lateness from LO to HI ms as the record keeps one (quantiles (i + 0.5) / N)."""
    u = (np.arange(LATENESS_QUANTILES) + 0.5) / LATENESS_QUANTILES
    return [float(v) for v in lo_ms + (hi_ms - lo_ms) * u]


def main(argv: Sequence[str]) -> None:
    model, rps = Path(argv[0]), float(argv[1])
    his = [float(x) for x in argv[2].split(",")]
    lo = float(argv[3]) if len(argv) > 3 else 0.0
    fit = json.loads((model.parent / "lab.fit.json").read_text())
    rows = fit["points"]
    held = [i for i, r in enumerate(rows) if r["role"] == "held_out"]
    points = [merge_passes(g) for g in held_out_points(rows, held)]
    (point,) = [
        p
        for p in points
        if p["config"] == "plain-ka-f0" and abs(p["rps"] - rps) < 50 and not p.get("cpu_limit")
    ]
    lat = point["latency_ms"]
    print(f"lab: load generator {lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ms, "
          f"{point.get('requests_per_release')} requests per release")  # fmt: skip
    legs: list[tuple[float, ...]] = []
    finish = sim_trace.Tracer.finish

    def keep(self: sim_trace.Tracer, started_at: float, finished_at: float) -> None:
        frame = sim_trace._request_frame()
        acc = self._open.get(frame) if frame is not None else None
        if acc is not None and self.sim.warmup_s <= started_at < self.sim.end_s:
            marks = (acc.client_start, acc.server_start, acc.server_end, acc.client_end)
            if None not in marks:
                c0, s0, s1, c1 = (float(m) for m in marks)  # type: ignore[arg-type]
                legs.append((s0 - c0, s1 - s0, c1 - s1, c1 - c0, finished_at - started_at, c0))
        finish(self, started_at, finished_at)

    sim_trace.Tracer.finish = keep  # type: ignore[method-assign]
    base = baseline_for(fit, point)
    assert base is not None, "the record has no baseline for the point"
    base.pop("release_lateness_ms", None)  # the grid first, then each lateness
    for lateness in [None, *((lo, hi) for hi in his)]:
        if lateness is not None:
            base["release_lateness_ms"] = uniform_quantiles(*lateness)
        legs.clear()
        trace_lab(model, fit, point)
        a = np.array(legs)
        parts = []
        for i, label in enumerate(("there", "server", "back", "client", "load generator")):
            q = np.percentile(a[:, i], [50, 90, 99]) * 1e3
            parts.append(f"{label} {q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}")
        gaps = np.diff(np.sort(a[:, 5])) * 1e6
        deciles = " ".join(f"{v:.0f}" for v in np.percentile(gaps[gaps > 30], [10, 30, 50, 70, 90]))
        name = "grid" if lateness is None else f"late {lateness[0]}..{lateness[1]} ms"
        print(f"{name}: {' | '.join(parts)} | long gaps {deciles}")


if __name__ == "__main__":
    main(sys.argv[1:])
