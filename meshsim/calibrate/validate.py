"""Predicted versus measured: the simulator on the lab topology, at the held-out points.

The lab topology is a scenario (:mod:`meshsim.calibrate.lab_scenario`), simulated at every
held-out point with the calibrated model.

Errors are ``(predicted - measured) / measured`` in percent. The goals apply to held-out
points below 80% measured utilisation (p50, p99) and to the saturation point (throughput).
Utilisation is that of the busier core, every process pinned to it counted: a sidecar can use
only what the load generator or the echo beside it leaves, and the lab's latency collapses
when the core saturates, whatever the sidecar's own share.

Each held-out point is predicted twice: as the model stands (raw), and speed-adjusted, with
every CPU cost scaled to the machine's speed at the point (:func:`speed_scales`,
:mod:`meshsim.calibrate.speed`): the model's CPU costs are microseconds of the lab's host at
the time of the fit, and that host's speed drifts over minutes. Where the record has the
probe, the goals are checked on the speed-adjusted errors; the raw ones are kept beside them.
The speed-adjusted prediction also replays the host the lab traced around the point: where
its passes each traced their own, it is the median of one run per pass, as the measured
figure is the median of the passes (:func:`per_pass_hosts`). A CPU-limited point, whose tail
turns on whether a pass met a slow spell, is the median of several pass-long runs under each
pass's host (:func:`pass_long_runs`), with the same at each end of the sidecars' CPU band
(:func:`cpu_band`), since near its quota a few per cent of CPU decides how often it throttles,
and the same without the limit, whose p99 over theirs is the limit's effect in the model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from meshsim.calibrate import host_phases, host_spells, speed, throttle, wake_latency
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.lab_scenario import LAB_WARMUP_S
from meshsim.calibrate.lab_scenario import baseline_for as baseline_for
from meshsim.calibrate.lab_scenario import colocated_cpu as colocated_cpu
from meshsim.calibrate.lab_scenario import lab_scenario as lab_scenario
from meshsim.calibrate.lab_scenario import predict as predict
from meshsim.calibrate.lab_scenario import release_tick_ms as release_tick_ms
from meshsim.models import load_model

UTIL_LIMIT = 0.8
NO_PROBE = "no speed probe in this record"


@dataclass
class Comparison:
    point: dict[str, Any]
    measured: dict[str, float]
    predicted: dict[str, float]
    error_pct: dict[str, float]
    utilisation: float
    """The busier sidecar's own CPU share (process CPU per request x throughput)."""
    saturation: bool
    checked: list[str] = field(default_factory=list)
    core_utilisation: float = float("nan")
    """The busier of the two cores, all processes on it (each sidecar shares its core)."""
    spread: dict[str, list[float]] = field(default_factory=dict)
    """Each measured figure's range over the point's passes (the lab's own noise)."""
    passes: int = 1
    predicted_speed_adjusted: dict[str, float] = field(default_factory=dict)
    """The prediction with every CPU cost scaled to the machine's speed at the point (empty:
    the record has no speed probe)."""
    error_pct_speed_adjusted: dict[str, float] = field(default_factory=dict)
    speed_factors: dict[str, Any] = field(default_factory=dict)
    """:func:`speed_scales`: the point's probe time over the fit's, per core and as applied."""
    speed_note: str = ""
    cpu_limit_m: float | None = None
    """``throttled`` points: the server sidecar's CPU limit (median over the passes); the
    measured and predicted figures then include ``throttled_share`` (throttled periods over
    periods) and ``throttled_ms_per_s``."""
    simulated_runs: dict[str, list[float]] = field(default_factory=dict)
    """``throttled`` points: each latency percentile of the pass-long simulated runs whose
    median is the speed-adjusted prediction (:func:`pass_long_runs`), set beside the passes'
    own range."""
    cpu_band: dict[str, Any] = field(default_factory=dict)
    """``throttled`` points: the speed-adjusted prediction with the sidecars' CPU at each
    end of its 95 % prediction band (:func:`cpu_band`): ``share`` (the band's half-width
    over the CPU), ``low`` and ``high`` (p50, p99, throttled_share). Empty: no band."""
    without_limit: dict[str, float] = field(default_factory=dict)
    """``throttled`` points: the median p50 and p99 of the same pass-long runs, seed for seed
    and host for host, with no limit: over it, the speed-adjusted prediction's p99 is the
    limit's own effect in the model (:func:`pass_long_runs`). Empty: not simulated."""

    @property
    def checked_against(self) -> str:
        """Which prediction the goals judge: ``speed_adjusted`` where the point was probed."""
        return "speed_adjusted" if self.error_pct_speed_adjusted else "raw"

    def checked_error(self, key: str) -> float:
        """The error the goal for ``key`` is judged on (see :attr:`checked_against`)."""
        return (self.error_pct_speed_adjusted or self.error_pct)[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.point["config"],
            "payload_bytes": self.point["payload_bytes"],
            "rps": self.point["rps"],
            "cpu_limit_m": self.cpu_limit_m,
            "saturation": self.saturation,
            "measured_proxy_utilisation": round(self.utilisation, 3),
            "measured_core_utilisation": round(self.core_utilisation, 3),
            "measured": self.measured,
            "measured_range_over_passes": self.spread,
            "passes": self.passes,
            "predicted": self.predicted,
            "error_pct": self.error_pct,
            "checked": self.checked,
            "predicted_speed_adjusted": self.predicted_speed_adjusted,
            "error_pct_speed_adjusted": self.error_pct_speed_adjusted,
            "speed_factors": self.speed_factors,
            "speed_note": self.speed_note,
            "checked_against": self.checked_against,
            "simulated_runs": self.simulated_runs,
            "cpu_band": self.cpu_band,
            "predicted_without_limit": self.without_limit,
        }

    def spread_pct(self, key: str) -> float | None:
        """The lab's own spread of ``key`` at the point: its range over the passes, in
        percent of the median the prediction is judged against (None for a single pass)."""
        lo_hi = self.spread.get(key)
        if self.passes < 2 or not lo_hi or not self.measured.get(key):
            return None
        return 100.0 * (lo_hi[1] - lo_hi[0]) / self.measured[key]

    def within_spread(self, key: str) -> bool:
        """Is the prediction inside the range the lab measured over its passes?"""
        lo_hi = self.spread.get(key)
        if not lo_hi:
            return False
        return lo_hi[0] <= self.predicted[key] <= lo_hi[1]


def core_utilisation(point: dict[str, Any], placement: dict[str, Any]) -> float:
    """The busiest core's measured utilisation: the CPU per request of every process pinned
    to it, times the throughput (nan when the fit record has no placement)."""
    by_core: dict[Any, float] = {}
    for name, us in point["process_cpu_us_per_request"].items():
        core = placement.get(name)
        if core is not None:
            by_core[core] = by_core.get(core, 0.0) + us
    if not by_core:
        return float("nan")
    return float(point["achieved_rps"]) * max(by_core.values()) / 1e6


def held_out_points(rows: list[dict[str, Any]], held: list[int]) -> list[list[dict[str, Any]]]:
    """The held-out (or throttled) rows grouped by point (configuration, payload, load, CPU
    limit), passes together, in the order first measured."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for i in held:
        r = rows[i]
        key = (r["config"], r["payload_bytes"], r["rps"], r.get("cpu_limit"))
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def merge_passes(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One held-out point from its passes: the median of each measured figure, and each
    latency's and the throughput's range over the passes (``passes_range``)."""

    def med(values: list[float]) -> float:
        return float(np.median(values))

    first = passes[0]
    merged = dict(first)
    merged["passes"] = len(passes)
    merged["latency_ms"] = {
        k: med([p["latency_ms"][k] for p in passes]) for k in first["latency_ms"]
    }
    merged["achieved_rps"] = med([p["achieved_rps"] for p in passes])
    per_release = [p["requests_per_release"] for p in passes if p.get("requests_per_release")]
    merged["requests_per_release"] = med(per_release) if per_release else None
    for field_name in (
        "process_cpu_us_per_request",
        "wakeups_per_request",
        "preemptions_per_request",
        "run_delay_us_per_request",
    ):
        keys = set.intersection(*(set(p.get(field_name) or {}) for p in passes))
        merged[field_name] = {k: med([p[field_name][k] for p in passes]) for k in sorted(keys)}
    sends = [p["latency_from_send_ms"] for p in passes if p.get("latency_from_send_ms")]
    merged["latency_from_send_ms"] = (
        {k: med([s[k] for s in sends]) for k in sends[0]} if len(sends) == len(passes) else None
    )
    # Each sidecar's access-log durations, statistic by statistic; the parts are recomputed
    # from these medians (meshsim.calibrate.decomposition), so a pass's own are dropped.
    sides = set.intersection(*(set(p.get("sidecar_duration_ms") or {}) for p in passes))
    merged["sidecar_duration_ms"] = {
        side: {
            k: med([p["sidecar_duration_ms"][side][k] for p in passes])
            for k in first["sidecar_duration_ms"][side]
        }
        for side in sorted(sides)
    }
    merged["host_phases"] = host_phases.merge(p.get("host_phases") for p in passes) or None
    merged["host_trace"] = host_phases.merge_traces(p.get("host_trace") for p in passes) or None
    for kind in ("wake_latency_us", "wake_latency_cross_us"):
        merged[kind] = wake_latency.merge(p.get(kind) for p in passes) or None
    merged.pop("latency_parts_ms", None)
    if first.get("cgroup"):
        merged["cgroup"] = throttle.merge_cgroups(passes)
    merged["passes_range"] = {
        **{
            k: [min(p["latency_ms"][k] for p in passes), max(p["latency_ms"][k] for p in passes)]
            for k in ("p50", "p90", "p99")
        },
        "rps": [min(p["achieved_rps"] for p in passes), max(p["achieved_rps"] for p in passes)],
    }
    return merged


def speed_scales(
    fit: Mapping[str, Any], passes: list[dict[str, Any]], base: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """How much slower (above 1) the machine ran at a held-out point than when its costs were
    measured, for each part of the simulated lab; ``({}, note)`` when it cannot be said.

    The point's probe time per core is the median over its passes (as its measured figures
    are). The sidecars' model was fitted at the fit record's ``speed_reference``: its factor
    is the mean of the two sidecars' cores' (one model serves both). The echo's and the load
    generator's CPU come from the baseline measured beside the point in the same passes,
    already at about its speed: they are scaled by the point's probe time over the
    baseline's, on their own cores (core 1 and core 0 in the lab's placement); taken from the
    fit points instead (no baseline), by the fit's factor.

    Where the record traced the host's phases around every point
    (:mod:`meshsim.calibrate.host_phases`), the times are the traces' time-averages instead
    of the probe's: the validation replays the phases around a mean of 1, so the level they
    spread around must count the slow phases as the fit's CPU costs did.
    """
    level_ref = host_phases.fit_level_us(fit)
    traced = bool(level_ref) and all(p.get("host_phases") for p in passes)
    if traced:
        # The host's time-averaged speed around the point, slow phases included, over the
        # fit points': the level the replayed phases (mean 1) spread around.
        seconds = host_phases.level_us(p.get("host_phases") for p in passes)
        cores = speed.factors(seconds, {"seconds": level_ref})
    else:
        ref = speed.fit_reference(fit)
        if not ref:
            return {}, NO_PROBE
        seconds = speed.median_probe_s(p.get("speed") for p in passes)
        cores = speed.factors(seconds, ref)
    placement = fit.get("placement") or {}
    where = {
        name: str(placement.get(name))
        for name in ("client_sidecar", "server_sidecar", "echo", "load_generator")
    }
    if not cores or not set(where.values()) <= set(cores):
        return {}, "the point was not probed on every lab core"
    base_s = (base or {}).get("host_level_us" if traced else "speed_probe_s") or {}
    if colocated_cpu(fit, passes[0]) is not None:
        base_s = {}  # the echo's and load generator's CPU are the fit points' (lab_scenario)

    def beside_the_point(name: str, from_base: bool) -> float:
        core = where[name]
        if from_base and core in base_s:
            return float(seconds[core] / base_s[core])
        return cores[core]

    return {
        "cores": cores,
        "sidecars": (cores[where["client_sidecar"]] + cores[where["server_sidecar"]]) / 2.0,
        "echo": beside_the_point("echo", bool((base or {}).get("echo_cpu_us"))),
        "load_generator": beside_the_point(
            "load_generator", bool((base or {}).get("load_generator_cpu_us"))
        ),
    }, ""


def scaled_model(model_path: Path, factor: float, directory: Path, index: int | str) -> Path:
    """A copy of the model file in ``directory`` with its CPU costs times ``factor``
    (:func:`meshsim.calibrate.speed.scale_model`); a new name each time (``index``), since
    models are cached by path and modification time."""
    doc = yaml.safe_load(model_path.read_text())
    path = directory / f"{model_path.stem}-speed-{index}.yaml"
    path.write_text(yaml.safe_dump(speed.scale_model(doc, factor), sort_keys=False))
    return path


def _rounded(scales: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _rounded(v) if isinstance(v, Mapping) else round(float(v), 4) for k, v in scales.items()
    }


def load_label(r: Comparison) -> str:
    """A held-out point's load as the tables show it: its rate, or ``sat`` (closed loop);
    with the server sidecar's CPU limit after an ``@`` on a throttled point."""
    load = "sat" if r.saturation else f"{r.point['rps']:g}"
    return load if r.cpu_limit_m is None else f"{load}@{r.cpu_limit_m:.0f}m"


def per_pass_hosts(passes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pass's own host (``phases``, ``trace``, ``wakeups`` for
    :func:`meshsim.calibrate.lab_scenario.predict`) where there are several passes and each
    traced its cores; empty otherwise (the merged point's host is then replayed)."""
    if len(passes) < 2 or not all(q.get("host_trace") for q in passes):
        return []
    return [
        {
            "phases": q.get("host_phases"),
            "trace": q["host_trace"],
            "wakeups": q.get("wake_latency_us"),
            "idle_wakeups": q.get("wake_latency_cross_us"),
        }
        for q in passes
    ]


RUNS_PER_PASS = 3
"""Simulated runs under each pass's host at a CPU-limited point (:func:`pass_long_runs`)."""


def pass_long_runs(
    run: Callable[..., dict[str, float]],
    hosts: list[dict[str, Any]],
    passes: list[dict[str, Any]],
) -> list[dict[str, float]]:
    """A CPU-limited point's speed-adjusted runs, each as long as one of the lab's passes:
    :data:`RUNS_PER_PASS` seeds under each pass's host (the merged point's where the passes
    did not each trace theirs).

    The lab's figure is the median of its passes' figures, and under a tight limit a pass's
    p99 turns on whether a slow spell came in its 5 s (run AB at 8368 rps under 376m: 41.6,
    2.7 and 2.8 ms). A run as long as all the passes together meets about as many spells as
    all of them, and its p99 is the pooled one, which one spell in three passes moves where
    the passes' median does not. The median of pass-long runs estimates the same statistic as
    the lab's (the median of three draws has the draws' median), and more runs than passes
    make the estimate steadier; their counters, like the lab's, are read over a pass."""
    window_s = float(passes[0]["cgroup"]["window_s"])
    return [
        run(duration_s=window_s + LAB_WARMUP_S, seed=seed, **host)
        for host in (hosts or [{}])
        for seed in range(1, RUNS_PER_PASS + 1)
    ]


BAND_Z = 1.96
"""A two-sided 95 % band, in standard deviations."""
PLANE_PARAMETERS = 3
"""The CPU plane's fitted parameters (intercept, KiB, wake-ups; one more where the fit kept
the preemptions): its residuals' degrees of freedom are the points less these."""


def cpu_band(fit: Mapping[str, Any], point: Mapping[str, Any]) -> float | None:
    """The 95 % prediction band of the sidecars' CPU per request at ``point``, as a share of
    the server sidecar's measured CPU there: :data:`BAND_Z` times the residual sd of the CPU
    plane at the fit points (None where the record has no plane, or too few points).

    How often a limit near a sidecar's use throttles turns on how near: with a period's CPU
    around u of the quota with a coefficient of variation c, z = (1 - u) / (u c) of them pass
    it. Run AB's sidecar at 3347 rps under 194m ran at 0.91 of its quota (z 1.65, 5 % of
    periods), the model's at 0.85 (z 2.9, 0.2 %): 6 % of CPU, a residual the plane's band
    allows (+-7 % there), is thirty times the throttled periods, and a prediction that hides
    it is surer than the model is."""
    residuals = (fit.get("residuals") or {}).get("process_cpu_us_vs_kib_and_wakeups") or []
    cpu = float((point.get("process_cpu_us_per_request") or {}).get("server_sidecar") or 0.0)
    preemptions = (fit.get("estimates") or {}).get("preemption_cpu_us") or {}
    parameters = PLANE_PARAMETERS + int(bool(preemptions.get("kept")))
    if len(residuals) <= parameters + 1 or cpu <= 0.0:
        return None
    sd = float(np.std(np.asarray(residuals, dtype=float), ddof=parameters))
    return BAND_Z * sd / cpu


def band_figures(
    share: float,
    ends: Mapping[str, Callable[..., dict[str, float]]],
    hosts: list[dict[str, Any]],
    passes: list[dict[str, Any]],
    limit_m: float,
) -> dict[str, Any]:
    """:attr:`Comparison.cpu_band`: at each end of the band (``ends``: a run with the
    sidecars' CPU there), the median of the same pass-long runs as the prediction's, seed
    for seed: with fewer, whether a spell came would set the band, not the CPU (run AB at
    8368 rps under 372m: seed 1 met one under every pass's host, the median of nine did
    not)."""
    band: dict[str, Any] = {"share": round(share, 4)}
    for end, run in ends.items():
        figures = median_figures(pass_long_runs(run, hosts, passes))
        figures.update(throttle.predicted_throttling(figures, limit_m))
        band[end] = {k: round(float(figures[k]), 4) for k in ("p50", "p99", "throttled_share")}
    return band


def median_figures(runs: list[dict[str, float]]) -> dict[str, float]:
    """Figure by figure, the median over simulated runs (the keys all of them have)."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: float(np.median([float(r[k]) for r in runs])) for k in keys}


def _err(pred: float, meas: float) -> float:
    return round(100.0 * (pred - meas) / meas, 2) if meas else float("nan")


def validate_model(model_path: Path, *, duration_s: float = 4.0) -> list[Comparison]:
    load_model(model_path)  # checks the file (raises ModelError with line and field)
    fit = load_fit(model_path)
    with tempfile.TemporaryDirectory(prefix="meshsim-speed-") as scratch:
        return _compare(model_path, fit, duration_s, Path(scratch))


def _compare(
    model_path: Path, fit: dict[str, Any], duration_s: float, scratch: Path
) -> list[Comparison]:
    rows = fit["points"]
    out: list[Comparison] = []
    groups = held_out_points(rows, fit["held_out"])
    groups += held_out_points(rows, fit.get("throttled") or [])
    for passes in groups:
        p = merge_passes(passes)
        if p["filters"]:
            continue  # the Istio data plane has no native-filter knob (only wasm_filters)
        limit = (p.get("cgroup") or {}).get("limit_m")
        sim_s = duration_s if limit is None else throttle.simulated_s(passes, duration_s)
        pred = predict(model_path, fit, p, duration_s=sim_s, cpu_limit_m=limit)
        scales, speed_note = speed_scales(fit, passes, baseline_for(fit, p))
        adjusted: dict[str, float] = {}
        runs: dict[str, list[float]] = {}
        band: dict[str, Any] = {}
        free: dict[str, float] = {}
        if scales:
            replay: dict[str, Any] = {
                "cpu_scale": scales,
                "phases": p.get("host_phases"),
                "trace": p.get("host_trace"),
                "wakeups": p.get("wake_latency_us"),
                "idle_wakeups": p.get("wake_latency_cross_us"),
                "cpu_limit_m": limit,
                "spells": host_spells.point_spells(fit.get("placement") or {}, passes),
            }
            scaled = scaled_model(model_path, scales["sidecars"], scratch, len(out))
            adjusted_run = partial(predict, scaled, fit, p, **replay)
            hosts = per_pass_hosts(passes)
            if limit is not None and len(passes) > 1:
                each = pass_long_runs(adjusted_run, hosts, passes)
                adjusted = median_figures(each)
                runs = {q: [round(float(e[q]), 4) for e in each] for q in ("p50", "p99")}
                # The limit's effect in the model: the same runs without it. Set beside the
                # unlimited twin's prediction instead, it would carry the difference
                # between nine pass-long runs and that point's own (run AB: 0.94-0.98).
                no_limit = partial(predict, scaled, fit, p, **{**replay, "cpu_limit_m": None})
                free_runs = median_figures(pass_long_runs(no_limit, hosts, passes))
                free = {q: round(free_runs[q], 4) for q in ("p50", "p99")}
                if (share := cpu_band(fit, p)) is not None:
                    ends = {}
                    for end, sign in (("low", -1.0), ("high", 1.0)):
                        factor = scales["sidecars"] * (1.0 + sign * share)
                        model = scaled_model(model_path, factor, scratch, f"{len(out)}-{end}")
                        ends[end] = partial(predict, model, fit, p, **replay)
                    band = band_figures(share, ends, hosts, passes, float(limit))
            elif hosts:
                # The lab's figure is the median over its passes, each under its own host:
                # so is the prediction, one run replaying each pass's host. Replayed one
                # after another, a pass whose host stalled around it (once, 21x for a few
                # ms, its latency unmoved) set the tail of the whole prediction.
                adjusted = median_figures([adjusted_run(duration_s=sim_s, **h) for h in hosts])
            else:
                adjusted = adjusted_run(duration_s=sim_s)
        lat = p["latency_ms"]
        meas = {"p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"], "rps": p["achieved_rps"]}
        if limit is not None:
            meas.update(throttle.measured_throttling(p))
            for figures_ in (pred, adjusted):
                if figures_:
                    figures_.update(throttle.predicted_throttling(figures_, limit))
        wake = p.get("wakeups_per_request") or {}
        if "client_sidecar" in wake and "server_sidecar" in wake:
            meas["wakeups_per_request"] = (wake["client_sidecar"] + wake["server_sidecar"]) / 2
        preempted = p.get("preemptions_per_request") or {}
        if "client_sidecar" in preempted and "server_sidecar" in preempted:
            meas["preemptions_per_request"] = (
                preempted["client_sidecar"] + preempted["server_sidecar"]
            ) / 2
        if p.get("requests_per_release"):
            meas["requests_per_release"] = p["requests_per_release"]
        cpu = p["process_cpu_us_per_request"]
        util = (
            p["achieved_rps"]
            * max(cpu.get("client_sidecar", 0.0), cpu.get("server_sidecar", 0.0))
            / 1e6
        )
        core = core_utilisation(p, fit.get("placement") or {})
        # A sidecar can use only what its core's other process leaves: "below 80 %
        # utilisation" is judged on the busier core (the proxy's own share where the record
        # has no placement).
        busy = util if core != core else core
        sat = p["rps"] == 0
        errs = {k: _err(pred[k], meas[k]) for k in ("p50", "p90", "p99", "rps")}
        adjusted_errs = {k: _err(adjusted[k], meas[k]) for k in errs} if adjusted else {}
        checked = ["rps"] if sat else (["p50", "p99"] if busy < UTIL_LIMIT else [])
        out.append(
            Comparison(
                p,
                meas,
                {k: round(float(v), 4) for k, v in pred.items()},
                errs,
                util,
                sat,
                checked,
                core,
                p.get("passes_range", {}),
                p.get("passes", 1),
                predicted_speed_adjusted={k: round(float(v), 4) for k, v in adjusted.items()},
                error_pct_speed_adjusted=adjusted_errs,
                speed_factors=_rounded(scales),
                speed_note=speed_note,
                cpu_limit_m=limit,
                simulated_runs=runs,
                cpu_band=band,
                without_limit=free,
            )
        )
    return out


def failures(rows: list[Comparison], max_p50: float, max_p99: float, max_rps: float) -> list[str]:
    limits = {"p50": max_p50, "p99": max_p99, "rps": max_rps}
    bad = []
    for r in rows:
        adjusted = r.checked_against == "speed_adjusted"
        limit = "" if r.cpu_limit_m is None else f" under a {r.cpu_limit_m:.0f}m CPU limit"
        for k in r.checked:
            e = r.checked_error(k)
            if not abs(e) <= limits[k]:
                spread = r.spread_pct(k)
                lo_hi = r.spread.get(k)
                # The goal stays; beside it, how far the lab's own passes were apart.
                own = (
                    f"; the lab's {r.passes} passes spanned {lo_hi[0]:.4g}..{lo_hi[1]:.4g}, "
                    f"{spread:.0f}% of their median"
                    + (", wider than the goal" if spread > limits[k] else "")
                    if spread is not None and lo_hi
                    else ""
                )
                bad.append(
                    f"{r.point['config']} {r.point['payload_bytes']}B "
                    f"{'saturation' if r.saturation else r.point['rps']}{limit}: "
                    f"{'speed-adjusted ' if adjusted else ''}{k} error "
                    f"{e:+.1f}% exceeds {limits[k]:g}%"
                    + (f" (raw {r.error_pct[k]:+.1f}%)" if adjusted else "")
                    + own
                )
    return bad
