"""Does the speed-adjusted prediction count the host's slowness twice?

The validation replays two things measured around a held-out point: the host's phases,
traced on each core around the load (tens of milliseconds, ``meshsim/calibrate/host_phases.py``),
and its slow spells, read from the sidecars' CPU per 100 ms period during the load (hundreds
of milliseconds, ``meshsim/calibrate/host_spells.py``). This predicts the plain points at one
load (the unlimited one and those under a CPU limit) with both, with the phases only and with
the spells only: one pass-long run under each pass's host (seed 1), their p99s and median
beside the lab's.

    python reports/validation/experiments/spells_and_phases.py MODEL RPS

MODEL is a calibrated lab model with its fit record beside it (a stored pass's archive
unpacked, say); simulation only, about a minute a point.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshsim.calibrate import host_spells
from meshsim.calibrate import validate as v
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.lab_scenario import LAB_WARMUP_S

PASS_S = 5.0


def main(argv: Sequence[str]) -> None:
    model, rps = Path(argv[0]), float(argv[1])
    fit = load_fit(model)
    rows = fit["points"]
    groups = v.held_out_points(rows, fit["held_out"])
    groups += v.held_out_points(rows, fit.get("throttled") or [])
    scratch = Path(tempfile.mkdtemp(prefix="meshsim-spells-"))
    for passes in groups:
        p = v.merge_passes(passes)
        if p["config"] != "plain-ka-f0" or abs(float(p["rps"]) - rps) > 0.5:
            continue
        limit = (p.get("cgroup") or {}).get("limit_m")
        label = f"{rps:g} rps" + (f" under {limit:g}m" if limit else "")
        scales, note = v.speed_scales(fit, passes, v.baseline_for(fit, p))
        hosts = v.per_pass_hosts(passes)
        if not scales or not hosts:
            print(f"{label}: not probed, or its passes not traced each ({note})")
            continue
        model_at = v.scaled_model(model, scales["sidecars"], scratch, f"{rps}-{limit}")
        spells = host_spells.point_spells(fit.get("placement") or {}, passes)
        for name, with_spells, with_phases in (
            ("spells and phases", True, True),
            ("phases only", False, True),
            ("spells only", True, False),
        ):
            p99s = []
            for host in hosts:
                replay: dict[str, Any] = dict(host)
                if not with_phases:
                    replay.update(phases=None, trace=None)
                run = v.predict(
                    model_at,
                    fit,
                    p,
                    duration_s=PASS_S + LAB_WARMUP_S,
                    seed=1,
                    cpu_scale=scales,
                    cpu_limit_m=limit,
                    spells=spells if with_spells else None,
                    **replay,
                )
                p99s.append(float(run["p99"]))
            lo, hi = p["passes_range"]["p99"]
            print(
                f"{label:>22}  {name:<18} p99 {', '.join(f'{x:.2f}' for x in p99s)} "
                f"(median {statistics.median(p99s):.2f}); lab {p['latency_ms']['p99']:.2f} "
                f"({lo:.2f}-{hi:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
