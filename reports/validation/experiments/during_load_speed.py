"""Is the lab's p99 the host's slow phases *during* the load?

The speed-adjusted validation replays the host's phases traced around each point's load
(reports/validation/README.md, "Machine speed"), and still under-predicts p99 by 30-80 %.
The phases during the load might differ. The sidecars' own CPU per request traces them
without disturbing the lab (a slow phase is counted as CPU time on this host): this runs plain
keep-alive loads with every request's CPU timed (``Lab(cpu_sample_every=1)``), takes each
core's speed per 10 ms bin as the median CPU per request of the sidecar on it over the load's
median, and predicts each point with the model at MODEL four ways: raw; with the phases
around the load (as the validation does); with the speed during the load; and with that
trace's samples shuffled in time (the same per-bin noise without its phases: what the noise
alone adds). Prints the measured and predicted p50/p99 and each trace's spread.

    python reports/validation/experiments/during_load_speed.py MODEL RPS[,RPS...]

MODEL is a calibration's lab.yaml (its lab.fit.json beside it), measured on this host
shortly before, so that its CPU costs are the host's current ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.lab_scenario import predict
from meshsim.calibrate.point_record import measured
from meshsim.calibrate.points import LabConfig, Point
from meshsim.calibrate.rows import point_row

BIN_S = 0.010
SECONDS = 6.0


def read_from(log: Path, offset: int) -> list[dict[str, Any]]:
    with log.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def speed_trace(
    lines: Sequence[dict[str, Any]], t0: float, t1: float, rng: np.random.Generator | None
) -> list[float]:
    """Median CPU per request per bin over the window's median, in 1 ms bins (a
    ``host_trace``'s); ``rng``: the samples shuffled in time first."""
    rows = np.array(
        [
            (x["ts"], x["cpu_us"])
            for x in lines
            if x.get("cpu_us") is not None and t0 <= x["ts"] < t1
        ]
    )
    if rng is not None:
        rows[:, 1] = rng.permutation(rows[:, 1])
    idx = ((rows[:, 0] - t0) / BIN_S).astype(int)
    median = float(np.median(rows[:, 1]))
    out: list[float] = []
    last = 1.0
    for i in range(int((t1 - t0) / BIN_S)):
        cpu = rows[idx == i, 1]
        last = float(np.median(cpu)) / median if len(cpu) >= 3 else last
        out += [last] * round(BIN_S / 0.001)
    return out


def main(model: Path, loads: list[float]) -> None:
    fit = json.loads(model.with_name("lab.fit.json").read_text())
    rng = np.random.default_rng(3)
    lab = Lab(workdir(), cpu_sample_every=1)
    points = []
    try:
        cfg = LabConfig()
        for rps in loads:
            point = Point(cfg, 1024, rps, 32, duration_s=SECONDS, role="held_out")
            lab.reconfigure(cfg)
            assert lab.client is not None
            assert lab.server is not None
            assert lab.client.log is not None
            assert lab.server.log is not None
            logs = (lab.client.log, lab.server.log)
            start = (lab.client._offset, lab.server._offset)
            run = lab._load(point, seed=7)
            client, server = (read_from(log, off) for log, off in zip(logs, start, strict=True))
            t1 = max(x["ts"] for x in server)
            t0 = t1 - SECONDS  # the last requests answered end the load
            cores = (str(lab.core_client), str(lab.core_server))
            sides = (client, server)
            during = {c: speed_trace(s, t0, t1, None) for c, s in zip(cores, sides, strict=True)}
            shuffled = {c: speed_trace(s, t0, t1, rng) for c, s in zip(cores, sides, strict=True)}
            points.append((point_row(measured(point, run, 7)), during, shuffled))
    finally:
        lab.close()
    for row, during, shuffled in points:
        wake = row.get("wake_latency_us")
        runs = {
            "raw": predict(model, fit, row),
            "around": predict(
                model, fit, row, phases=row.get("host_phases"), trace=row.get("host_trace"),
                wakeups=wake,
            ),
            "during": predict(model, fit, row, trace=during, wakeups=wake),
            "shuffled": predict(model, fit, row, trace=shuffled, wakeups=wake),
        }  # fmt: skip
        lat = row["latency_ms"]
        print(
            f"{row['rps']:8.0f} rps  measured p50/p99 {lat['p50']:.3f}/{lat['p99']:.3f} ms  "
            + "  ".join(f"{k} {v['p50']:.3f}/{v['p99']:.3f}" for k, v in runs.items())
        )
        for core, trace in during.items():
            q = [10, 50, 90, 99]
            print(
                f"    core {core} speed p10/50/90/99 during "
                f"{np.percentile(trace, q).round(2).tolist()}, shuffled "
                f"{np.percentile(shuffled[core], q).round(2).tolist()}"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), [float(x) for x in sys.argv[2].split(",")])
