"""The validation's text tables and figures: held-out errors, the lab's spread over passes,
the host's speed, phases and wake-up latency at each point, and the sidecars' wake-ups
(:func:`meshsim.calibrate.validate.validate_model` makes the comparisons they show)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from meshsim.calibrate.validate import NO_PROBE, RUNS_PER_PASS, Comparison, load_label


def table(rows: list[Comparison]) -> str:
    head = (
        f"{'config':<12} {'bytes':>6} {'load':>12} {'proxy/core':>10}  "
        f"{'p50 meas/pred ms':>18} {'err%':>7}  {'p90 err%':>8}  "
        f"{'p99 meas/pred ms':>18} {'err%':>7}  {'rps meas/pred':>15} {'err%':>7}"
        f"  {'speed':>5} {'adjusted err% p50':>17} {'p99':>8} {'rps':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m, p, e = r.measured, r.predicted, r.error_pct
        load = load_label(r)

        def mark(k: str, e: dict[str, float] = e, r: Comparison = r, judged: str = "raw") -> str:
            checked = k in r.checked and r.checked_against == judged
            return f"{e[k]:+7.1f}" + ("*" if checked else " ")

        adj = r.error_pct_speed_adjusted
        speed_cells = (
            f"  {r.speed_factors['sidecars']:>5.2f} {'':>9}"
            + " ".join(mark(k, adj, judged="speed_adjusted") for k in ("p50", "p99", "rps"))
            if adj
            else f"  {'-':>5} {'(' + NO_PROBE + ')':>26}"
        )

        lines.append(
            f"{r.point['config']:<12} {r.point['payload_bytes']:>6} {load:>12} "
            f"{r.utilisation:>5.2f}/{r.core_utilisation:<4.2f}  "
            f"{m['p50']:>8.3f}/{p['p50']:<9.3f} {mark('p50')} "
            f"{e['p90']:+8.1f}  {m['p99']:>8.3f}/{p['p99']:<9.3f} {mark('p99')} "
            f"{m['rps']:>7.0f}/{p['rps']:<7.0f} {mark('rps')}" + speed_cells
        )
    lines.append(
        "* = checked against a goal (p50/p99 below 80% utilisation of the busier "
        "core, which each sidecar shares; throughput at saturation)"
    )
    lines.append(
        "speed = the sidecars' CPU costs' factor at the point (probe time over the fit's; "
        "above 1: the machine was slower); adjusted = predicted with every CPU cost scaled "
        "by it (checked where probed; the raw errors are beside it)"
    )
    return "\n".join(lines)


def spread_table(rows: list[Comparison]) -> str:
    """Each point's measured range over its passes, and where the prediction falls in it."""
    sel = [r for r in rows if r.passes > 1]
    if not sel:
        return ""
    lines = [
        f"{'config':<14} {'load':>12} {'passes':>6}  {'p50 range ms (pred)':>28}  "
        f"{'p99 range ms (pred)':>30}  {'rps range (pred)':>22}"
    ]

    def cell(r: Comparison, k: str, width: int, fmt: str) -> str:
        lo, hi = r.spread[k]
        inside = "in" if r.within_spread(k) else "out"
        text = f"{lo:{fmt}}..{hi:{fmt}} ({r.predicted[k]:{fmt}} {inside})"
        return f"{text:>{width}}"

    def runs(r: Comparison) -> str:
        sim = r.simulated_runs.get("p99")
        return f"  {min(sim):.2f}..{max(sim):.2f}" if sim else ""

    for r in sel:
        load = load_label(r)
        lines.append(
            f"{r.point['config']:<14} {load:>12} {r.passes:>6}  "
            f"{cell(r, 'p50', 28, '.3f')}  {cell(r, 'p99', 30, '.2f')}  "
            f"{cell(r, 'rps', 22, '.0f')}{runs(r)}"
        )
    if any(r.simulated_runs for r in sel):
        lines.append(
            "last column (CPU-limited points): the p99 range of the simulated runs whose "
            f"median is the speed-adjusted prediction, each a pass long ({RUNS_PER_PASS} seeds "
            "under each pass's host): a tight limit's p99 turns on whether the host had a slow "
            "spell in a pass, in the lab and the simulator alike"
        )
    return "\n".join(lines)


def speed_table(rows: list[Comparison]) -> str:
    """Each point's speed factors (probe time over the fit's) and its raw and speed-adjusted
    predictions beside the measurement."""
    sel = [r for r in rows if r.predicted_speed_adjusted]
    if not sel:
        return ""
    lines = [
        f"{'config':<14} {'load':>12}  {'cores':>15} {'sidecars':>8} {'echo':>5} {'lg':>5}  "
        f"{'p50 ms meas/raw/adj':>23}  {'p99 ms meas/raw/adj':>23}  {'rps meas/raw/adj':>20}"
    ]
    for r in sel:
        f = r.speed_factors
        cores = "/".join(f"{v:.2f}" for _, v in sorted(f["cores"].items()))

        def cell(k: str, fmt: str, width: int, r: Comparison = r) -> str:
            m, raw, adj = r.measured[k], r.predicted[k], r.predicted_speed_adjusted[k]
            return f"{f'{m:{fmt}}/{raw:{fmt}}/{adj:{fmt}}':>{width}}"

        lines.append(
            f"{r.point['config']:<14} {load_label(r):>12}  {cores:>15} {f['sidecars']:>8.2f} "
            f"{f['echo']:>5.2f} {f['load_generator']:>5.2f}  {cell('p50', '.3f', 23)}  "
            f"{cell('p99', '.2f', 23)}  {cell('rps', '.0f', 20)}"
        )
    return "\n".join(lines)


def _per_core_table(
    rows: list[Comparison],
    key: str,
    title: str,
    cell: Callable[[Comparison, str], str],
) -> str:
    """A table of the held-out points that recorded ``key``, one column per lab core:
    ``cell(row, core)`` under the heading ``core N <title>``."""
    sel = [r for r in rows if r.point.get(key)]
    if not sel:
        return ""
    cores = sorted({c for r in sel for c in r.point[key]})
    width = len(title) + 7
    head = "  ".join(f"{'core ' + c + ' ' + title:>{width}}" for c in cores)
    lines = [f"{'config':<14} {'load':>12}  {head}"]
    for r in sel:
        cells = "  ".join(f"{cell(r, c):>{width}}" for c in cores)
        lines.append(f"{r.point['config']:<14} {load_label(r):>12}  {cells}")
    return "\n".join(lines)


def phases_table(rows: list[Comparison]) -> str:
    """Each point's host phases per lab core (:mod:`meshsim.calibrate.host_phases`): the
    share of time slow, how much slower, and a slow phase's mean length."""

    def cell(r: Comparison, core: str) -> str:
        f = r.point["host_phases"].get(core)
        if not f:
            return "-"
        return f"{f['slow_share']:.2f}/{f['slow_factor']:.2f}/{f['slow_dwell_ms']:.0f}"

    return _per_core_table(rows, "host_phases", "slow share/x/ms", cell)


def wake_latency_table(rows: list[Comparison]) -> str:
    """Each point's wake-up latency per lab core (:mod:`meshsim.calibrate.wake_latency`):
    p50 and p99 of the one-way hops to a sleeping process from the same core (the
    simulator's) and from the other, in µs."""

    def cell(r: Comparison, core: str) -> str:
        kinds = [
            (r.point.get(k) or {}).get(core) for k in ("wake_latency_us", "wake_latency_cross_us")
        ]
        return " / ".join(f"{q['p50']:.0f},{q['p99']:.0f}" if q else "-" for q in kinds)

    return _per_core_table(rows, "wake_latency_us", "same/cross p50,p99 us", cell)


def wakeup_table(rows: list[Comparison]) -> str:
    """Measured and predicted sidecar wake-ups per request, and preemptions where the lab
    counted them: direct checks of the two mechanisms."""
    sel = [r for r in rows if "wakeups_per_request" in r.measured]
    if not sel:
        return ""
    nan = float("nan")
    preempted = any("preemptions_per_request" in r.measured for r in sel)
    lines = [
        f"{'config':<14} {'load':>12}  {'wake-ups/request meas/pred':>27}"
        + (f"  {'preemptions/request meas/pred':>30}" if preempted else "")
    ]
    for r in sel:
        load = load_label(r)
        line = (
            f"{r.point['config']:<14} {load:>12}  "
            f"{r.measured['wakeups_per_request']:>13.3f}/"
            f"{r.predicted.get('wakeups_per_request', nan):<13.3f}"
        )
        if preempted:
            line += (
                f"  {r.measured.get('preemptions_per_request', nan):>15.3f}/"
                f"{r.predicted.get('preemptions_per_request', nan):<14.3f}"
            )
        lines.append(line.rstrip())
    return "\n".join(lines)


def figures(rows: list[Comparison], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key in zip(axes, ("p50", "p90", "p99"), strict=True):
        # One line per configuration over its loads; a CPU-limited point is not on it.
        free = [r for r in rows if r.cpu_limit_m is None]
        for cfg in sorted({r.point["config"] for r in free}):
            sel = sorted(
                (r for r in free if r.point["config"] == cfg), key=lambda r: r.measured["rps"]
            )
            xs = [r.measured["rps"] for r in sel]
            ax.plot(xs, [r.measured[key] for r in sel], "o", label=f"{cfg} measured")
            ax.plot(xs, [r.predicted[key] for r in sel], "x--", label=f"{cfg} predicted")
        ax.set_xlabel("throughput (rps)")
        ax.set_ylabel(f"{key} latency (ms)")
        ax.set_title(f"{key}: predicted vs measured (held out)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "latency_vs_load.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(5, 5))
    for key, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        ax.loglog(
            [r.measured[key] for r in rows], [r.predicted[key] for r in rows], marker, label=key
        )
    lo = min(min(r.measured["p50"], r.predicted["p50"]) for r in rows) * 0.8
    hi = max(max(r.measured["p99"], r.predicted["p99"]) for r in rows) * 1.2
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title("held-out latency percentiles")
    ax.legend()
    fig.tight_layout()
    p = out_dir / "predicted_vs_measured.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
