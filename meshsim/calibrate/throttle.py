"""The calibration lab with a CPU limit on the proxy under test, measured and predicted.

Every calibration measures ``throttled`` points (:data:`CPU_LIMITS`): in each pass over the
held-out loads, right after an unlimited point, the same load again with the server
sidecar's CPU cgroup (each lab component runs in one of its own, as a pod's containers do:
:meth:`meshsim.calibrate.lab.Lab.container`) limited to a multiple of the CPU it just used
(:mod:`meshsim.calibrate.cgroup`: ``cpu.max``, or the v1 controller's quota;
:func:`limit_m`, :func:`measure_point`), with the cgroup's ``cpu.stat`` over the load:
periods, throttled periods, throttled time. The validation predicts them with the same
limit under the unlimited points' scheduler
(:func:`meshsim.calibrate.lab_scenario.limit_server_sidecar`), so that the limit is all
that differs from their unlimited twins; under ``cfs`` every container gets the same
(smallest) CPU request, as in the lab every process weighs what a plain process does.

:func:`study` does the same by hand for any (load, limit) against a calibrated model, and
:func:`compare_schedulers` predicts the unlimited points under both schedulers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from meshsim.calibrate.cgroup import CpuStat, Support, probe
from meshsim.calibrate.points import Measured, Point
from meshsim.errors import MeshsimError

T = TypeVar("T")

if TYPE_CHECKING:
    from meshsim.calibrate.lab import Lab


def lab_point(fit: dict[str, Any], rps: float, config: str = "plain-ka-f0") -> dict[str, Any]:
    """The fit record's held-out point at ``rps`` (passes merged), for ``config``."""
    from meshsim.calibrate.validate import held_out_points, merge_passes

    for passes in held_out_points(fit["points"], fit["held_out"]):
        p = merge_passes(passes)
        if p["config"] == config and abs(float(p["rps"]) - rps) < 1e-6:
            return p
    raise KeyError(f"no held-out point {config} at {rps} rps")


CPU_LIMITS = (1.5, 1.1)
"""The lab's CPU limits on the server sidecar (``throttled`` points), as multiples of the
CPU it used at the same load without one: a generous limit, spent only in periods that cost
half again the average (a burst of arrivals, the host's slow phases), and a tight one, spent
in about every period above the average. Both leave the sidecar enough on average, so their
p50 and p99 are latencies to judge, not a backlog that grows with the run: at 0.85x, run H's
lab fell behind at 7538 rps (p50 278 ms, reports/validation/cpu-limits.md)."""


def unlimited_twin(
    point: Mapping[str, Any], candidates: Iterable[T], point_of: Callable[[T], Mapping[str, Any]]
) -> T | None:
    """The first of ``candidates`` that is the throttled ``point``'s unlimited twin: no CPU
    cgroup, the same configuration, payload and load (``point_of``: a candidate's point)."""
    for c in candidates:
        q = point_of(c)
        if not q.get("cgroup") and all(
            q[k] == point[k] for k in ("config", "payload_bytes", "rps")
        ):
            return c
    return None


def limit_m(unlimited: Measured, share: float) -> float:
    """``share`` of the server sidecar's CPU at an unlimited point, in millicores."""
    cores = unlimited.achieved_rps * unlimited.process_cpu_us_per_request["server_sidecar"] / 1e6
    return round(1000.0 * cores * share, 1)


def measure_point(lab: Lab, point: Point, limit: float | None, *, seed: int = 1) -> Measured:
    """``lab.measure(point)`` with the server sidecar's CPU cgroup (:meth:`Lab.container`)
    limited to ``limit`` millicores for the point, in :attr:`Measured.cgroup` its
    ``cpu.stat`` over the load (``window`` "load": what the latency was measured over and
    what the simulator counts) and over the whole point (``whole_point``: with the warm-up,
    which throttles a limited sidecar by itself).

    Its weight is a plain nice-0 process's, like every other lab component's, and it is the
    cgroup the sidecar ran in at the unlimited points: only the limit differs."""
    lab.reconfigure(point.config)
    cg = lab.container("server_sidecar")
    if cg is None:
        raise MeshsimError(f"the lab's components have no CPU cgroups of their own: {lab.cgroups}")
    cg.set_limit(limit)
    try:
        before = cg.stat()
        m, load = lab.measure_counted(point, cg, seed=seed)
        whole = cg.stat() - before
    finally:
        cg.set_limit(None)
    m.cgroup = {
        "limit_m": limit,
        "period_ms": cg.period_us / 1000.0,
        "version": cg.version,
        **_counters(load),
        "window_s": point.duration_s,
        "window": "load",
        "whole_point": _counters(whole),
    }
    return m


def _counters(d: CpuStat) -> dict[str, Any]:
    return {
        "nr_periods": d.nr_periods,
        "nr_throttled": d.nr_throttled,
        "throttled_s": round(d.throttled_s, 4),
    }


def measure_grid_point(
    lab: Lab,
    point: Point,
    unlimited: dict[tuple[str, int, float, int], Measured],
    *,
    seed: int,
) -> Measured:
    """One point of the calibration grid. A ``throttled`` point is limited to its multiple
    of what the server sidecar used at the unlimited point of its load in its pass, measured
    just before it; ``unlimited`` holds those, by load and pass, and this keeps it current."""
    key = (point.config.name, point.payload, point.rps, point.repeat)
    if point.role == "throttled" and point.cpu_limit is not None:
        limit = limit_m(unlimited[key], point.cpu_limit)
        return measure_point(lab, point, limit, seed=seed)
    m = lab.measure(point, seed=seed)
    if point.role == "held_out":
        unlimited[key] = m
    return m


def _share(throttled: float, periods: float) -> float:
    return throttled / periods if periods else 0.0


def quota_used(cpu_us_per_request: float, rps: float, limit_m: float) -> float:
    """The share of its CPU limit that the server sidecar used: its CPU per request times the
    request rate, over the quota. How often periods are throttled follows from it and from how
    much the sidecar's CPU varies from one period to the next (:mod:`meshsim.calibrate.
    period_cpu`); the first is the CPU model's level, so the table shows it."""
    return cpu_us_per_request * rps / 1000.0 / limit_m if limit_m else float("nan")


def merge_cgroups(passes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A throttled point's cgroup over its passes (the points measured): the medians of the
    limit, of the share of its quota used, of the share of periods throttled and of the
    throttled time per second of load, with their ranges (each pass sets its own limit from
    its own unlimited point), and over what the counters were read (``window``: "load",
    or "point" for records that read them around the whole point, warm-up included)."""
    cgroups = [p["cgroup"] for p in passes]
    window = "load" if all(c.get("window") == "load" for c in cgroups) else "point"
    limits = [float(c["limit_m"]) for c in cgroups]
    used = [
        quota_used(
            p["process_cpu_us_per_request"]["server_sidecar"], p["achieved_rps"], c["limit_m"]
        )
        for p, c in zip(passes, cgroups, strict=True)
    ]
    shares = [_share(c["nr_throttled"], c["nr_periods"]) for c in cgroups]
    per_s = [1000.0 * c["throttled_s"] / c["window_s"] for c in cgroups]
    return {
        "limit_m": round(float(np.median(limits)), 1),
        "limit_range_m": [min(limits), max(limits)],
        "quota_used": round(float(np.median(used)), 3),
        "quota_used_range": [round(min(used), 3), round(max(used), 3)],
        "throttled_share": round(float(np.median(shares)), 4),
        "throttled_share_range": [round(min(shares), 4), round(max(shares), 4)],
        "throttled_ms_per_s": round(float(np.median(per_s)), 2),
        "throttled_ms_per_s_range": [round(min(per_s), 2), round(max(per_s), 2)],
        "window": window,
    }


def simulated_s(passes: Sequence[Mapping[str, Any]], duration_s: float) -> float:
    """How long the validation simulates a throttled point: ``duration_s``, or as long as
    the lab measured it over all its passes if that is longer, so that the measured and the
    predicted shares of throttled periods rest on as many periods (a 4 s run has about 35,
    a resolution of 0.03 in the share, where the lab's three passes of 5 s have 150)."""
    measured = sum(float(p["cgroup"]["window_s"]) for p in passes if p.get("cgroup"))
    return max(duration_s, measured)


def measured_throttling(point: Mapping[str, Any]) -> dict[str, float]:
    """The figures a throttled point's prediction is set beside: from its merged passes'
    cgroup (:func:`merge_cgroups`) and the server sidecar's CPU per request."""
    cg = point["cgroup"]
    return {
        "throttled_share": cg["throttled_share"],
        "throttled_ms_per_s": cg["throttled_ms_per_s"],
        "server_sidecar_cpu_us": point["process_cpu_us_per_request"]["server_sidecar"],
        "quota_used": cg["quota_used"],
    }


def predicted_throttling(predicted: Mapping[str, Any], limit_m: float) -> dict[str, float]:
    """The same figures from a simulated run (:func:`meshsim.calibrate.lab_scenario.throttling`)
    under a limit of ``limit_m`` millicores."""
    cpu_us = predicted["server_sidecar_cpu_us"]
    return {
        "throttled_share": round(_share(predicted["nr_throttled"], predicted["nr_periods"]), 4),
        "throttled_ms_per_s": round(1000.0 * predicted["throttled_s"] / predicted["window_s"], 2),
        "server_sidecar_cpu_us": round(cpu_us, 2),
        "quota_used": round(quota_used(cpu_us, predicted["rps"], limit_m), 3),
    }


def scenario(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    limit_m: float | None,
    *,
    duration_s: float,
    period_ms: float = 100.0,
    seed: int = 1,
    scheduler: Literal["fcfs", "cfs"] | None = None,
) -> dict[str, Any]:
    """The validation's lab scenario under ``scheduler`` (None: the simulated lab's own,
    ``LAB_SCHEDULER``), the server sidecar limited
    (:func:`meshsim.calibrate.lab_scenario.limit_server_sidecar`)."""
    from meshsim.calibrate.lab_scenario import lab_base_slice_ms, lab_scenario, limit_server_sidecar

    doc = lab_scenario(model_path, fit, point, duration_s=duration_s, seed=seed)
    return limit_server_sidecar(
        doc,
        limit_m,
        period_ms=period_ms,
        scheduler=scheduler,
        base_slice_ms=lab_base_slice_ms(fit),
    )


def predict(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    limit_m: float | None,
    *,
    duration_s: float = 5.0,
    scheduler: Literal["fcfs", "cfs"] | None = None,
) -> dict[str, Any]:
    from meshsim.api import run_scenario
    from meshsim.calibrate.lab_scenario import throttling
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    doc = scenario(model_path, fit, point, limit_m, duration_s=duration_s, scheduler=scheduler)
    run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    load = run["workloads"]["load"]
    lat = load["latency_ms"]
    return {
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "rps": load["achieved_rps"],
        **throttling(run, doc),
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
        if lab.container("server_sidecar") is None:
            return {"skipped": f"no CPU cgroups for the lab's components: {lab.cgroups}"}
        m = measure_point(lab, p, limit_m)
    finally:
        lab.close()
    return {
        "p50_ms": m.latency_ms["p50"],
        "p99_ms": m.latency_ms["p99"],
        "rps": m.achieved_rps,
        **{k: m.cgroup[k] for k in ("nr_periods", "nr_throttled", "throttled_s")},
        "cgroup": f"v{support.version}",
        "server_sidecar_cpu_us_per_request": m.process_cpu_us_per_request.get("server_sidecar"),
    }


def study(
    model_path: Path,
    rps_limits: list[tuple[float, float | None]],
    *,
    workdir: Path,
    duration_s: float = 5.0,
    scheduler: Literal["fcfs", "cfs"] | None = None,
) -> list[dict[str, Any]]:
    """Each (load, limit) measured in the lab and predicted under ``scheduler``, side by
    side."""
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
            "predicted": predict(model_path, fit, point, limit, duration_s=duration_s,
                                 scheduler=scheduler),
        })  # fmt: skip
    return rows


def compare_schedulers(model_path: Path, *, duration_s: float = 4.0) -> list[dict[str, Any]]:
    """The validation's held-out points predicted raw (no replay of the host) under
    ``fcfs`` and under ``cfs`` (every lab process at equal weight, no limit), with each
    one's error against the measurement: which discipline validates better on the same
    model (the validation itself runs ``LAB_SCHEDULER``, and a fair comparison refits the
    model under each: reports/validation/cpu-limits.md)."""
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
        fcfs = predict_fcfs(model_path, fit, point, duration_s=duration_s, scheduler="fcfs")
        doc = scenario(model_path, fit, point, None, duration_s=duration_s, scheduler="cfs")
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
