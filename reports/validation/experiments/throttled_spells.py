"""A throttled point's prediction under the run's spells rather than its own passes'.

The validation draws a CPU-limited point's host spells from a process fitted to its own
passes' periods (``meshsim/calibrate/host_spells.py``, ``point_spells``; until 2026-12-04
evening its unlimited twin's). Spells come and go between passes minutes apart, so this
predicts the same points with the spells fitted at the fit points over the whole run (the
fit record's ``host_spells``) and prints both beside the lab: the share of periods throttled
and p99, speed-adjusted, each the median over the simulated runs.

    python reports/validation/experiments/throttled_spells.py [MODEL]

Simulation only (about 10 minutes for the committed model); MODEL defaults to
models/calibrated/lab.yaml and its fit record.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshsim.calibrate import host_spells, validate
from meshsim.calibrate.calibration import load_fit


def throttled_rows(model: Path) -> dict[str, Any]:
    return {validate.load_label(r): r for r in validate.validate_model(model) if r.cpu_limit_m}


def main(argv: Sequence[str]) -> None:
    model = Path(argv[0] if argv else "models/calibrated/lab.yaml")
    fit = load_fit(model)
    own = throttled_rows(model)
    run_wide = fit.get("host_spells") or {}
    original = host_spells.point_spells

    def whole_run(
        placement: Mapping[str, Any], passes: Sequence[Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        if passes[0].get("cgroup"):
            return dict(run_wide)
        return original(placement, passes)

    host_spells.point_spells = whole_run  # type: ignore[assignment]
    try:
        wide = throttled_rows(model)
    finally:
        host_spells.point_spells = original  # type: ignore[assignment]
    print(f"spells over the whole run (fit points): {run_wide}")
    print(
        f"{'point':>14}  {'throttled periods lab / own / run':>36}  "
        f"{'p99 ms lab / own / run':>26}  {'p99 err% own / run':>20}"
    )
    for label, r in own.items():
        w = wide[label]
        share = "throttled_share"
        print(
            f"{label:>14}  {r.measured.get(share, float('nan')):>12.3f} / "
            f"{r.predicted_speed_adjusted.get(share, float('nan')):.3f} / "
            f"{w.predicted_speed_adjusted.get(share, float('nan')):.3f}      "
            f"{r.measured['p99']:>8.3f} / {r.predicted_speed_adjusted['p99']:.3f} / "
            f"{w.predicted_speed_adjusted['p99']:.3f}  "
            f"{r.error_pct_speed_adjusted['p99']:>+9.1f} / {w.error_pct_speed_adjusted['p99']:+.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
