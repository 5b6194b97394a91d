"""The calibration lab with a CPU limit on the proxy under test, measured and predicted.

:func:`measure` puts the lab's server sidecar in a cgroup with a CPU limit
(:mod:`meshsim.calibrate.cgroup`: ``cpu.max``, or the v1 controller's quota) and measures a
held-out point as the validation does (latency from the intended send time, throughput),
plus the cgroup's ``cpu.stat`` over the run: periods, throttled periods, throttled time.
:func:`predict` simulates the same point with the calibrated model under the fair scheduler,
with the server sidecar given the same limit, and returns the same figures, so the two can
be set side by side (:func:`study`). In the lab every process is a plain process of equal
weight, so the simulated lab gives every container the same (smallest) CPU request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshsim.calibrate.cgroup import CpuCgroup, Support, probe


def lab_point(fit: dict[str, Any], rps: float, config: str = "plain-ka-f0") -> dict[str, Any]:
    """The fit record's held-out point at ``rps`` (passes merged), for ``config``."""
    from meshsim.calibrate.validate import held_out_points, merge_passes

    for passes in held_out_points(fit["points"], fit["held_out"]):
        p = merge_passes(passes)
        if p["config"] == config and abs(float(p["rps"]) - rps) < 1e-6:
            return p
    raise KeyError(f"no held-out point {config} at {rps} rps")


def scenario(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    limit_m: float | None,
    *,
    duration_s: float,
    period_ms: float = 100.0,
    seed: int = 1,
) -> dict[str, Any]:
    """The validation's lab scenario under the fair scheduler, the server sidecar limited."""
    from meshsim.calibrate.lab_scenario import lab_scenario

    doc = lab_scenario(model_path, fit, point, duration_s=duration_s, seed=seed)
    doc["cluster"] = {**doc["cluster"], "scheduler": "cfs", "cfs_period_ms": period_ms}
    equal = {"requests": {"cpu": "2m"}}
    server = dict(equal)
    if limit_m is not None:
        server = {**equal, "limits": {"cpu": f"{limit_m:g}m"}}
    for svc in doc["services"]:
        svc["resources"] = equal
        svc["proxy_resources"] = server
    istio = {**doc["mesh_options"]["istio"], "proxy_resources": equal}
    doc["mesh_options"] = {**doc["mesh_options"], "istio": istio}
    return doc


def predict(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    limit_m: float | None,
    *,
    duration_s: float = 5.0,
) -> dict[str, Any]:
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    doc = scenario(model_path, fit, point, limit_m, duration_s=duration_s)
    run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    load = run["workloads"]["load"]
    lat = load["latency_ms"]
    group: Mapping[str, Any] = run.get("cgroups", {}).get("echo-v1-0/sidecar", {})
    return {
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "rps": load["achieved_rps"],
        "nr_periods": group.get("nr_periods", 0),
        "nr_throttled": group.get("nr_throttled", 0),
        "throttled_s": group.get("throttled_s", 0.0),
        "window_s": doc["duration_s"] - doc["warmup_s"],
    }


def measure(
    point: dict[str, Any],
    limit_m: float | None,
    *,
    workdir: Path,
    duration_s: float = 5.0,
    support: Support | None = None,
) -> dict[str, Any]:
    """The lab's figures for ``point`` with the server sidecar limited to ``limit_m``
    (``{"skipped": reason}`` where no CPU cgroup can be made)."""
    from meshsim.calibrate.lab import Lab
    from meshsim.calibrate.points import LabConfig, Point

    support = support or probe()
    if support.path is None:
        return {"skipped": f"no writable CPU cgroup: {support.reason}"}
    cfg = LabConfig(mtls=bool(point["mtls"]), keep_alive=bool(point["keep_alive"]))
    p = Point(
        cfg,
        int(point["payload_bytes"]),
        float(point["rps"]),
        int(point["connections"]),
        duration_s=duration_s,
        role="held_out",
    )
    lab = Lab(workdir)
    try:
        lab.reconfigure(cfg)
        assert lab.server is not None
        # Weight of a plain nice-0 process (cpu.shares 1024), like every other lab process:
        # only the limit differs from the unlimited lab.
        with CpuCgroup(
            f"meshsim-lab-{os.getpid()}", limit_m=limit_m, request_m=1000.0, support=support
        ) as cg:
            cg.add(lab.server.pids())
            before = cg.stat()
            m = lab.measure(p)
            d = cg.stat() - before
    finally:
        lab.close()
    return {
        "p50_ms": m.latency_ms["p50"],
        "p99_ms": m.latency_ms["p99"],
        "rps": m.achieved_rps,
        "nr_periods": d.nr_periods,
        "nr_throttled": d.nr_throttled,
        "throttled_s": round(d.throttled_s, 4),
        "cgroup": f"v{support.version}",
        "server_sidecar_cpu_us_per_request": m.process_cpu_us_per_request.get("server_sidecar"),
    }


def study(
    model_path: Path,
    rps_limits: list[tuple[float, float | None]],
    *,
    workdir: Path,
    duration_s: float = 5.0,
) -> list[dict[str, Any]]:
    """Each (load, limit) measured in the lab and predicted, side by side."""
    from meshsim.calibrate.calibration import load_fit

    fit = load_fit(model_path)
    support = probe()
    rows = []
    for rps, limit in rps_limits:
        point = lab_point(fit, rps)
        rows.append({
            "rps": rps, "limit_m": limit,
            "measured": measure(point, limit, workdir=workdir, duration_s=duration_s,
                                support=support),
            "predicted": predict(model_path, fit, point, limit, duration_s=duration_s),
        })  # fmt: skip
    return rows


def compare_schedulers(model_path: Path, *, duration_s: float = 4.0) -> list[dict[str, Any]]:
    """The validation's held-out points predicted under ``fcfs`` (the validation's own
    scenario) and under ``cfs`` (every lab process at equal weight, no limit), with each
    one's error against the measurement: which discipline validates better."""
    from meshsim.api import run_scenario
    from meshsim.calibrate.calibration import load_fit
    from meshsim.calibrate.lab_scenario import predict as predict_fcfs
    from meshsim.calibrate.validate import held_out_points, merge_passes
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    fit = load_fit(model_path)
    rows: list[dict[str, Any]] = []
    for passes in held_out_points(fit["points"], fit["held_out"]):
        point = merge_passes(passes)
        if point["filters"]:
            continue
        fcfs = predict_fcfs(model_path, fit, point, duration_s=duration_s)
        doc = scenario(model_path, fit, point, None, duration_s=duration_s)
        w = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]["workloads"]["load"]
        cfs = {
            "p50": w["latency_ms"]["p50"],
            "p99": w["latency_ms"]["p99"],
            "rps": w["achieved_rps"],
        }
        measured = {
            "p50": point["latency_ms"]["p50"],
            "p99": point["latency_ms"]["p99"],
            "rps": point["achieved_rps"],
        }

        def err(pred: dict[str, Any], key: str, measured: dict[str, Any] = measured) -> float:
            m, p = measured[key], pred[key]
            return float("nan") if not m or p is None else round(100.0 * (p - m) / m, 1)

        rows.append({
            "config": point["config"], "rps": point["rps"], "measured": measured,
            "error_pct": {s: {k: err(pred, k) for k in ("p50", "p99", "rps")}
                          for s, pred in (("fcfs", fcfs), ("cfs", cfs))},
        })  # fmt: skip
    return rows
