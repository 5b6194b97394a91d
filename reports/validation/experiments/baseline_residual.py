"""How much of the lab's baseline delay the simulated lab makes itself: for each baseline of
the committed record (load generator -> echo, no proxies), the measured delay (from each send,
less the two processes' CPU), the simulated baseline's with nothing drawn, and the residual
the simulated lab now draws (meshsim/calibrate/baseline_residual.py), in ms.

    python reports/validation/experiments/baseline_residual.py

(About 10 s a baseline.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meshsim.calibrate.baseline_residual import (
    residual_applies,
    residual_delay_ms,
    simulated_baseline_ms,
)
from meshsim.calibrate.calibration import load_fit

MODEL = Path("models/calibrated/lab.yaml")


def main() -> None:
    fit = load_fit(MODEL)
    rows = sorted(
        (b for b in fit["client_delay"]["baselines"] if b["rps"] > 0 and residual_applies(b)),
        key=lambda b: (b["payload_bytes"], not b.get("keep_alive", True), b["rps"]),
    )
    print(f"{'payload':>8s} {'ka':>3s} {'rps':>8s}   measured p50/mean   simulated p50/mean"
          "   residual p50/mean")  # fmt: skip
    for b in rows:
        measured = np.asarray(b["delay_ms"])
        simulated = simulated_baseline_ms(MODEL, fit, b)
        residual = np.asarray(residual_delay_ms(MODEL, fit, b))
        cells = [f"{np.median(x):.3f} / {x.mean():.3f}" for x in (measured, simulated, residual)]
        ka = "on" if b.get("keep_alive", True) else "off"
        print(f"{b['payload_bytes']:8d} {ka:>3s} {b['rps']:8.0f}   " + "      ".join(cells))


if __name__ == "__main__":
    main()
