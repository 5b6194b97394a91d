"""What the fitted drift of the sidecar's CPU cost does to run O's throttled points.

Run O (2026-12-03, a steady host) predates the CPU per period in the fit record, so its
model has no drift. This gives it the drift that `meshsim calibrate` fits from run P's fit
points (the first record with them; ``meshsim.calibrate.cpu_drift.fit_drift``), and sets
the validation of the plain held-out and CPU-limited points with and without it side by
side: p50, p99, the share of periods throttled, and the simulated server sidecar's CPU cv
per 100 ms period (reports/validation/cpu-limits.md). About 8 minutes on two cores.

    python reports/validation/experiments/drift_whatif.py
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from meshsim.calibrate.calibration import fit_path, load_fit
from meshsim.calibrate.cpu_drift import fit_drift
from meshsim.calibrate.model_document import drift_parameters
from meshsim.calibrate.validate import Comparison, validate_model

PASSES = Path(__file__).resolve().parents[1] / "passes"


def unpack(run: str, into: Path) -> Path:
    into.mkdir(parents=True)
    with tarfile.open(PASSES / f"2026-12-03-run-{run}.model.tar.gz") as tar:
        tar.extractall(into, filter="data")
    return into / "lab.yaml"


def with_drift(model: Path, donor: Path) -> dict[str, Any]:
    """``model`` given the drift fitted at ``donor``'s fit points; the drift's figures."""
    doc = yaml.safe_load(model.read_text())
    params = doc["parameters"]
    points = [p["period_cpu"] for p in load_fit(donor)["points"]
              if p["role"] == "fit" and p.get("period_cpu")]  # fmt: skip
    drift = fit_drift(points, params["request_cpu_cv"]["value"], seed=7)
    assert drift is not None, "the donor's record gives no drift"
    params.update(drift_parameters(f"what-if: run P's fit points ({donor})", drift))
    model.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    fit = load_fit(model)
    fit["estimates"]["cpu_drift"] = drift.to_json()
    fit_path(model).write_text(json.dumps(fit))
    return drift.to_json()


def point(r: Comparison) -> str:
    limit = "-" if r.cpu_limit_m is None else f"{r.cpu_limit_m:.0f}m"
    return f"{r.point['rps']:7.1f} {limit:>5}"


def predicted(r: Comparison) -> str:
    pred = r.predicted_speed_adjusted or r.predicted
    share = pred.get("throttled_share", float("nan"))
    return (f"p50 {pred['p50']:.3f} p99 {pred['p99']:.2f} throttled {share:.3f} "
            f"cv {pred['period_cpu_cv']:.3f}")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        without = unpack("o", Path(tmp) / "o")
        drifting = unpack("o", Path(tmp) / "o-drift")
        print("drift:", with_drift(drifting, unpack("p", Path(tmp) / "p")), flush=True)
        runs = [validate_model(m) for m in (without, drifting)]
    print("load limit | without the drift | with it | lab p50 p99 throttled")
    for a, b in zip(*runs, strict=True):
        if a.point["config"] != "plain-ka-f0":
            continue
        lab = a.measured
        share = lab.get("throttled_share", float("nan"))
        print(point(a), "|", predicted(a), "|", predicted(b), "|",
              f"{lab['p50']:.3f} {lab['p99']:.2f} {share:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
