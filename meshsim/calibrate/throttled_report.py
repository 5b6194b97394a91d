"""The validation report's CPU-limited points: the throttled table, the CPU per period beside
the model's, and the host's slow spells the simulated lab runs with.

The lab measures these points and the validation predicts them (:mod:`meshsim.calibrate.throttle`,
:mod:`meshsim.calibrate.validate`); this module only says what they came to, for ``report.md``
(:mod:`meshsim.calibrate.validation_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshsim.calibrate import lab_scenario
from meshsim.calibrate.period_cpu import period_table
from meshsim.calibrate.throttle import unlimited_twin
from meshsim.calibrate.validate import RUNS_PER_PASS, Comparison, load_label


def throttled_lines(fit: dict[str, Any], rows: list[Comparison]) -> list[str]:
    """The CPU-limited points' section, or why the record has none."""
    head = ["## CPU-limited points", ""]
    text = throttled_table(rows)
    if text:
        return [
            *head,
            "The plain held-out loads again, each right after its unlimited pass, with the "
            "server sidecar in a CPU cgroup of its own limited to a multiple of the CPU it "
            "had just used (CFS bandwidth control, 100 ms periods; `cpu.stat` over the "
            "load), predicted with the same limit under the unlimited points' scheduler "
            f"({lab_scenario.LAB_SCHEDULER}, with CFS bandwidth control of the limit), so "
            "that the limit is all that differs from their unlimited twins. As the lab's "
            "figures are the medians of its "
            f"passes, the speed-adjusted prediction is the median of pass-long runs, "
            f"{RUNS_PER_PASS} under each pass's host; the raw one is one run as long as the "
            "passes together "
            "(meshsim/calibrate/throttle.py, meshsim/calibrate/validate.py).",
            "",
            "```",
            text,
            "```",
            "",
            *period_lines(fit, rows),
        ]
    limits = fit.get("cpu_limits")
    if limits and not limits.get("shares"):
        why = f"skipped: no writable CPU cgroup on the lab's host ({limits['reason']})"
    else:
        why = "none in this record: its lab did not measure the sidecar under a CPU limit"
    return [*head, f"- {why}", ""]


def period_lines(fit: dict[str, Any], rows: list[Comparison]) -> list[str]:
    """How much the server sidecar's CPU varies from one CFS period to the next, which is
    what decides how often a limit near its average is reached (records from 2026-12-03),
    the simulated lab's beside it."""
    simulated: dict[tuple[float, float], tuple[float, float, float]] = {}
    for r in rows:
        pred = r.predicted_speed_adjusted or r.predicted
        if r.point["config"] == "plain-ka-f0" and "period_cpu_cv" in pred:
            key = (float(r.point["rps"]), float(r.point.get("cpu_limit") or 0.0))
            residual = pred.get("period_residual_cv", float("nan"))
            simulated[key] = (pred["period_cpu_cv"], pred["period_lag1"], residual)
    text = period_table(fit.get("points", []), simulated)
    if not text:
        return []
    drift = (fit.get("estimates") or {}).get("cpu_drift")
    counted = sum(
        1 for p in fit.get("points", []) if p.get("role") == "fit" and p.get("period_cpu")
    )
    if drift:
        model = (
            f"The model's sidecar CPU drifts with cv {drift['cv']['value']:.3f} and a time "
            f"constant of {drift['time_constant_ms']['value']:.0f} ms (cpu_drift_cv, "
            "cpu_drift_ms: fitted at the fit points' periods, meshsim/calibrate/cpu_drift.py)."
        )
    elif counted:
        model = (
            "The model has no drift of the sidecar's CPU between periods: at the "
            f"{counted} fit points whose periods the lab counted, the requests' own noise "
            "and the host's spells explained all of their variance (meshsim/calibrate/"
            "cpu_drift.py)."
        )
    else:
        model = (
            "The model has no drift of the sidecar's CPU between periods: its record "
            "predates the lab's CPU per period at the fit points."
        )
    model += " " + spell_sentence(fit)
    return [
        "How often a limit near the sidecar's average is reached depends on how much its CPU "
        "varies between periods: the lab's sidecar CPU per 100 ms period at these loads "
        "(meshsim/calibrate/period_cpu.py), and the simulated lab's (the prediction checked). "
        + model,
        "",
        "```",
        text,
        "```",
        "",
    ]


def spell_sentence(fit: dict[str, Any]) -> str:
    """The host's slow spells the simulated lab runs each node with (records from
    2026-12-03 evening), or that there are none."""
    cores = fit.get("host_spells")
    if not cores:
        return (
            "The simulated lab has no slow spells of the host (the record keeps no periods "
            "to fit them from)."
        )
    parts = []
    for core, sp in sorted(cores.items()):
        if not sp["spells"]:
            parts.append(f"core {core} none in {sp['periods']} periods")
            continue
        f, sh, d = sp["factor"], sp["share"], sp["dwell_ms"]
        parts.append(
            f"core {core} {f['value']:.2f}x (95% CI {f['ci95'][0]:.2f}..{f['ci95'][1]:.2f}) "
            f"for {d['value']:.0f} ms ({d['ci95'][0]:.0f}..{d['ci95'][1]:.0f}), "
            f"{100 * sh['value']:.1f} % of the time ({100 * sh['ci95'][0]:.1f}.."
            f"{100 * sh['ci95'][1]:.1f}), {sp['spells']} spells in {sp['periods']} periods"
        )
    return (
        "The host's slow spells at the fit points' periods (meshsim/calibrate/host_spells.py): "
        + "; ".join(parts)
        + ". They come and go: each speed-adjusted prediction runs the spells of its own "
        "point's passes (a CPU-limited point's too), the raw ones none."
    )


def throttled_table(rows: Sequence[Comparison]) -> str:
    """The throttled points: the limit (and its range over the passes), the share of the quota
    used, the share of periods throttled and the throttled time per second, measured and
    predicted (speed-adjusted where probed), and the latency errors the goals judge ("" without
    such points)."""
    sel = [r for r in rows if r.cpu_limit_m is not None]
    if not sel:
        return ""
    lines = [
        f"{'config':<12} {'load':>12} {'limit range m':>14}  {'quota used meas/pred':>24}"
        f"  {'throttled periods meas/pred':>28}"
        f"  {'throttled ms/s meas/pred':>25}  {'CPU us/req meas/pred':>21}"
        f"  {'p99 x limit meas/pred':>21}  {'p50 err%':>8} {'p99 err%':>8}"
        f"  {'CPU band: p99 ms, throttled':>32}"
    ]
    for r in sel:
        pred = r.predicted_speed_adjusted or r.predicted
        cg = r.point["cgroup"]
        lo, hi = cg["limit_range_m"]
        lo_s, hi_s = cg["throttled_share_range"]
        lo_u, hi_u = cg["quota_used_range"]
        used = f"{cg['quota_used']:.2f} ({lo_u:.2f}-{hi_u:.2f})/{pred['quota_used']:.2f}"
        share = f"{cg['throttled_share']:.2f} ({lo_s:.2f}-{hi_s:.2f})/{pred['throttled_share']:.2f}"
        per_s = f"{cg['throttled_ms_per_s']:.1f}/{pred['throttled_ms_per_s']:.1f}"
        cpu = f"{r.measured['server_sidecar_cpu_us']:.1f}/{pred['server_sidecar_cpu_us']:.1f}"
        by_limit = "-"
        if (u := unlimited_twin(r.point, rows, lambda c: c.point)) is not None:
            free = r.without_limit or u.predicted_speed_adjusted or u.predicted
            by_limit = (
                f"{r.measured['p99'] / u.measured['p99']:.2f}/{pred['p99'] / free['p99']:.2f}"
            )

        def err(k: str, r: Comparison = r) -> str:
            return f"{r.checked_error(k):+7.1f}" + ("*" if k in r.checked else " ")

        band = "-"
        if r.cpu_band:
            low, high = r.cpu_band["low"], r.cpu_band["high"]
            band = (
                f"+-{100 * r.cpu_band['share']:.0f}%: {low['p99']:.2f}..{high['p99']:.2f}, "
                f"{low['throttled_share']:.2f}..{high['throttled_share']:.2f}"
            )
        lines.append(
            f"{r.point['config']:<12} {load_label(r):>12} {f'{lo:.0f}-{hi:.0f}':>14}  "
            f"{used:>24}  {share:>28}  {per_s:>25}  {cpu:>21}  {by_limit:>21}  "
            f"{err('p50'):>8} {err('p99'):>8}  {band:>32}"
        )
    lines.append(
        "limit = the server sidecar's CPU limit (median over passes after the @); quota used = "
        "its CPU over the limit; throttled periods = the share of CFS periods throttled "
        "(cpu.stat nr_throttled / nr_periods); each median (range over passes) / predicted; "
        "CPU = the server sidecar's per request; p99 x limit = its p99 over the unlimited "
        "point's at the same load (the limit's effect, measured / predicted: over the same "
        "simulated runs without the limit, seed for seed); errors as in the "
        "held-out table (* = checked); CPU band = the speed-adjusted prediction's p99 and share "
        "of periods throttled with the sidecars' CPU per request at each end of its 95 % "
        "prediction band (1.96 x the CPU plane's residual sd at the fit points, over the "
        "server sidecar's CPU here): near its quota a few per cent of CPU is many times the "
        "throttled periods, so the band is the model's own uncertainty in these figures"
    )
    if any(r.point["cgroup"].get("window") != "load" for r in sel):
        lines.append(WHOLE_POINT_NOTE)
    return "\n".join(lines)


WHOLE_POINT_NOTE = (
    "The lab's throttled periods and time in this record were read around the whole point, "
    "where the simulated lab's count over the load: before the load the lab warms the path "
    "up with a closed loop as fast as it goes, which spends a limited sidecar's quota by "
    "itself (runs since 2026-12-04 evening read both: the load's are compared, the whole "
    "point's kept as whole_point). So the measured shares and times above are high by the "
    "warm-up's throttling, which the latencies never saw."
)
"""Said under the throttled table of a record whose counters span the warm-up too."""
