"""What varies a sidecar's CPU from one 100 ms period to the next, beyond its requests' count.

The model fits a drift of the sidecars' CPU cost (``cpu_drift_cv``, ``cpu_drift_ms``) from
the residual of each period's CPU on its line on the requests per period, less the
per-request noise ``request_cpu_cv`` averaged over a period's requests
(meshsim/calibrate/cpu_drift.py). Two kinds of noise leave that residual: one per request
(its variance relative to the mean CPU squared falls as 1/n with the n requests a period)
and a drift of the whole cost (relative variance the same at every load). This splits them
by a line of each sidecar-point's relative residual variance on
``(c_request / c)^2 / n`` (``c`` the point's CPU per request, ``c_request`` the part the
simulator scales per request, wake-ups left out): the slope is the per-request cv squared
that the period data ask for, the intercept the drift's per-period variance. It prints the
split (Theil-Sen, with its slope's 95 % interval) at the fit points alone and with the
held-out ones, and each load's residual relative and in ms beside what a drift alone, as
fitted, would give.

    python reports/validation/experiments/period_noise.py [MODEL]

Reads MODEL's fit record only (defaults to models/calibrated/lab.yaml); a second.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import theilslopes

from meshsim.calibrate import host_spells
from meshsim.calibrate.calibration import load_fit
from meshsim.models import load_model


def main(argv: list[str]) -> None:
    path = Path(argv[0] if argv else "models/calibrated/lab.yaml")
    model, fit = load_model(path), load_fit(path)
    cv_model = float(model.request_cpu_cv or 0.0)
    rows: list[tuple[str, float, float, float, float]] = []
    for r in fit["points"]:
        usable = r.get("period_cpu") and r["proxied"] and r["keep_alive"] and r["rps"] > 0
        if not usable or r["filters"]:
            continue
        pay = int(r["payload_bytes"])
        c_request = sum(model.request_cpu_us(pay, pay, mtls=bool(r["mtls"])))
        for f in host_spells.without_spells(r["period_cpu"]).values():
            if "residual_cv" not in f or f["poisson_cv"] > 0.12 or f["periods"] < 20:
                continue
            n = 1.0 / f["poisson_cv"] ** 2
            c = f["cpu_ms_mean"] / n * 1e3
            x = (c_request / c) ** 2 / n
            rows.append((r["role"], float(r["rps"]), x, f["residual_cv"] ** 2, f["cpu_ms_mean"]))
    print(f"model {path}: request_cpu_cv {cv_model:.3f}, drift {model.cpu_drift}")
    for roles in (("fit",), ("fit", "held_out", "throttled")):
        sel = [q for q in rows if q[0] in roles]
        x = np.array([q[2] for q in sel])
        y = np.array([q[3] for q in sel])
        slope, intercept, lo, hi = theilslopes(y, x)
        drift = np.sign(intercept) * np.sqrt(abs(intercept))
        print(
            f"{'+'.join(roles):>24}: {len(sel)} sidecar-points; per-request cv "
            f"{np.sqrt(max(slope, 0)):.2f} (95 % {np.sqrt(max(lo, 0)):.2f}.."
            f"{np.sqrt(max(hi, 0)):.2f}), drift {drift:+.3f} per period"
        )
    by_load: dict[tuple[str, float], list[tuple[float, float, float]]] = defaultdict(list)
    for role, rps, _x, y, mean in rows:
        by_load[(role, rps)].append((np.sqrt(y), np.sqrt(y) * mean, mean))
    print(f"{'role':>10} {'load':>8}  residual/mean  residual ms  CPU ms a period  (medians)")
    for (role, rps), v in sorted(by_load.items(), key=lambda kv: kv[0][1]):
        a = np.array(v)
        print(
            f"{role:>10} {rps:8.1f}  {np.median(a[:, 0]):13.3f}  {np.median(a[:, 1]):11.2f}  "
            f"{np.median(a[:, 2]):15.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
