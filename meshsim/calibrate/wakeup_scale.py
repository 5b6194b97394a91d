"""The wake-up cost in the simulator's own count of wake-ups.

The lab fits ``wakeup_cpu_us`` per *voluntary context switch*: the times a sidecar's event
loop went to sleep with nothing to do (:mod:`meshsim.calibrate.model_fit`). The simulator
charges it per burst that finds the proxy's worker idle (:mod:`meshsim.sim.dataplanes.proxy`).
The two counts differ by a mechanism the simulator does not see: a process on the same core
that the proxy's own write wakes (the echo behind the server sidecar, the load generator in
front of the client sidecar) preempts the proxy before its loop reaches ``epoll_wait``, and
by the time the proxy runs again the answer it waits for is ready, so it never sleeps. The
lab's server sidecar sleeps about once per request at low load, where the simulator's finds
its worker idle twice.

Charged per simulated wake-up at the per-switch cost, the simulated sidecars would spend more
CPU than the lab's at every load. So the cost is rescaled: at the fit points, simulated on the
lab's topology, the wake-up CPU the simulator charges equals what the fit attributes to the
lab's wake-ups, ``w' = w * sum(lab switches) / sum(simulated idle bursts)``. The simulated
count depends a little on the cost itself (CPU changes how often a worker is idle), so the
rescaling is repeated until it moves less than 2 %.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from meshsim.calibrate.calibration import fit_path, load_fit, write_model

TOLERANCE = 0.02
MAX_ROUNDS = 3


def fit_points(fit: dict[str, Any]) -> list[dict[str, Any]]:
    """The open-loop, keep-alive, plaintext proxied fit points without filters: where the
    wake-up cost was fitted (``process_cpu_us_vs_kib_and_wakeups``)."""
    return [
        r
        for r in fit["points"]
        if r["role"] == "fit"
        and r["proxied"]
        and r["rps"] > 0
        and r["keep_alive"]
        and not r["mtls"]
        and not r["filters"]
        and {"client_sidecar", "server_sidecar"} <= set(r.get("wakeups_per_request") or {})
    ]


def lab_wakeups(row: dict[str, Any]) -> float:
    """The lab's voluntary switches per request at a point, the two sidecars' mean."""
    w = row["wakeups_per_request"]
    return float((w["client_sidecar"] + w["server_sidecar"]) / 2.0)


def rescale(
    model_path: Path, *, duration_s: float = 3.0, log: Callable[[str], None] = print
) -> dict[str, Any] | None:
    """Rescale ``wakeup_cpu_us`` of the model at ``model_path`` in place (model and fit
    record) and return what was done; None when the model has no wake-up cost to rescale."""
    from meshsim.calibrate.validate import predict

    doc = yaml.safe_load(model_path.read_text())
    param = doc["parameters"].get("wakeup_cpu_us")
    fit = load_fit(model_path)
    rows = fit_points(fit)
    if param is None or not param.get("value") or not rows:
        return None
    per_switch = float(param["value"])
    lab = [lab_wakeups(r) for r in rows]
    cost = per_switch
    rounds: list[dict[str, float]] = []
    simulated: list[float] = []
    for _ in range(MAX_ROUNDS):
        # Passes of the same point are the same simulation (same scenario, same seed).
        by_point: dict[tuple[Any, ...], float] = {}
        for r in rows:
            key = (r["config"], r["payload_bytes"], r["rps"], r["connections"])
            if key not in by_point:
                pred = predict(model_path, fit, r, duration_s=duration_s)
                by_point[key] = float(pred["wakeups_per_request"])
        simulated = [
            by_point[(r["config"], r["payload_bytes"], r["rps"], r["connections"])] for r in rows
        ]
        new = per_switch * float(np.sum(lab)) / float(np.sum(simulated))
        rounds.append(
            {"cost_us": round(cost, 3), "simulated_sum": round(float(np.sum(simulated)), 4)}
        )
        moved = abs(new - cost) / cost
        cost = new
        _write_cost(model_path, doc, fit, cost, per_switch)
        log(f"wake-up cost: {cost:.1f} us per simulated wake-up (moved {moved:.1%})")
        if moved < TOLERANCE:
            break
    record = {
        "method": "wakeup_cpu_us per voluntary context switch (the fit's slope), times the lab's "
        "switches over the simulator's idle-worker bursts at the fit points, simulated on the "
        "lab's topology (meshsim/calibrate/wakeup_scale.py); repeated until it moved < 2 %",
        "per_switch_us": round(per_switch, 3),
        "per_simulated_wakeup_us": round(cost, 3),
        "scale": round(cost / per_switch, 4),
        "rounds": rounds,
        "points": [
            {
                "payload_bytes": r["payload_bytes"],
                "rps": r["rps"],
                "lab_switches": round(lw, 4),
                "simulated_idle_bursts": round(sw, 4),
            }
            for r, lw, sw in zip(rows, lab, simulated, strict=True)
        ],
    }
    fit["wakeup_scale"] = record
    _write_cost(model_path, doc, fit, cost, per_switch)
    return record


def _write_cost(
    model_path: Path, doc: dict[str, Any], fit: dict[str, Any], cost: float, per_switch: float
) -> None:
    param = doc["parameters"]["wakeup_cpu_us"]
    param["value"] = round(cost, 3)
    param["note"] = (
        f"{per_switch:.1f} us per voluntary context switch (the slope of the sidecars' process "
        "CPU per request against their switches per request, fitted jointly with KiB), "
        f"rescaled by {cost / per_switch:.3f} to the simulator's idle-worker bursts at the fit "
        "points (fit record: wakeup_scale)"
    )
    write_model({**doc, "fit": fit}, model_path)
    assert fit_path(model_path).exists()
