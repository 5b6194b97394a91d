"""Calibration helpers for ``notebooks/calibration.ipynb``: a calibrated model and its fit record
as frames and figures.

What is read: the model (``NAME.yaml``), its fit record (``NAME.fit.json``, written by
:func:`meshsim.calibrate.calibration.write_model`) and, when present, the raw lab record
(``NAME.measurements.json``) whose per-request CPU samples the service-time fit used. The
held-out comparison simulates the held-out points with :func:`meshsim.calibrate.validate.
validate_model` (a simulation, not a measurement). Nothing here runs the lab.

Frames in, Axes out: the plot functions are pure (``(frame, *, ax=None) -> Axes``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.fit import gamma_cdf, gamma_mle, lognormal_cdf, lognormal_mle
from meshsim.calibrate.validation_report import GOALS
from meshsim.models import load_model

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from meshsim.calibrate.validate import Comparison
    from meshsim.models import ProxyCostModel

BASE_CONFIG = "plain-ka-f0"
"""The lab's base configuration (``LabConfig()``: plain, keep-alive, no filters)."""

PARAMETER_OF = {
    "filter_cpu_us.slope": "l7_filter_us",
    "handshake_cpu_us_per_side": "tls_handshake_overhead_cpu_us",
    "process_cpu_us_vs_kib_and_wakeups.kib": "payload_cpu_us_per_kib",
    "process_cpu_us_vs_kib_and_wakeups.wakeups": "wakeup_cpu_us",
    "process_cpu_us_vs_kib_and_wakeups.preemptions": "preemption_cpu_us",
    "streamed_request_cpu_us": "streamed_request_cpu_us",
    "memory_kib_plain.slope": "connection_kb",
    "tls_extra_cpu_us_vs_kib.slope": "tls_record_cpu_us_per_kib",
    "tls_extra_cpu_us_vs_kib.intercept": "tls_request_cpu_us",
    "tcp_connection_cpu_us": "tcp_connection_cpu_us",
}
"""Estimates that become a model parameter directly (as ``fit_model`` sets them; clipped at 0)."""


@dataclass
class Calibration:
    path: Path
    model: ProxyCostModel
    fit: dict[str, Any]
    measurements: dict[str, Any] | None
    """The raw lab record, or None when ``NAME.measurements.json`` is absent."""


def measurements_path(model_path: Path) -> Path:
    return model_path.with_suffix(".measurements.json")


def load_calibration(model_path: str | Path) -> Calibration:
    """The model, its fit record and (if kept) the raw measurements."""
    p = Path(model_path)
    raw = measurements_path(p)
    data = json.loads(raw.read_text()) if raw.exists() else None
    return Calibration(p, load_model(p), load_fit(p), data)


def service_time_samples(measurements: dict[str, Any]) -> np.ndarray:
    """The per-request callback CPU samples (us) the service-time fit used.

    Both sidecars' samples at the fit points of the base configuration, proxied, at the
    smallest payload (the selection of :func:`meshsim.calibrate.calibration.fit_model`).
    """
    base = [
        d for d in measurements["points"]
        if d["point"]["role"] == "fit" and d["point"]["proxied"]
        and d["point"]["config"].get("name") == BASE_CONFIG
    ]  # fmt: skip
    if not base:
        return np.asarray([], dtype=float)
    pay = min(d["point"]["payload"] for d in base)
    xs = [
        s
        for d in base
        if d["point"]["payload"] == pay
        for s in (*d["client_cpu_us"], *d["server_cpu_us"])
    ]
    return np.asarray([s for s in xs if s > 0], dtype=float)


def service_time_frame(fit: dict[str, Any], samples: np.ndarray | None = None) -> pd.DataFrame:
    """Measured CDF against the lognormal and gamma fits, per sorted sample.

    Columns: cpu_us, measured_cdf, lognormal_cdf, gamma_cdf, chosen (the fit record's
    ``dist``). Without raw samples the fit record's 101 quantiles stand in (only kept for an
    empirical fit); the candidate fits are maximum likelihood on the points shown.
    """
    st = fit["service_time"]
    if samples is not None and len(samples):
        x = np.sort(np.asarray(samples, dtype=float))
        ecdf = np.arange(1, len(x) + 1) / len(x)
    elif st.get("quantiles_us"):
        x = np.asarray(st["quantiles_us"], dtype=float)
        ecdf = np.linspace(0.0, 1.0, len(x))
    else:
        raise ValueError("no samples and no quantiles in the fit record: pass the samples")
    mu, sigma = lognormal_mle(x)
    k, theta = gamma_mle(x)
    params = st.get("params") or {}
    if st["dist"] == "lognormal" and params:
        mu, sigma = params["mu"]["value"], params["sigma"]["value"]
    elif st["dist"] == "gamma" and params:
        k, theta = params["shape"]["value"], params["scale"]["value"]
    return pd.DataFrame({
        "cpu_us": x, "measured_cdf": ecdf, "lognormal_cdf": lognormal_cdf(x, mu, sigma),
        "gamma_cdf": gamma_cdf(x, k, theta), "chosen": st["dist"],
    })  # fmt: skip


def residual_frame(fit: dict[str, Any]) -> pd.DataFrame:
    """Every line fit's points: estimate, x, y (measured), fitted, residual, residual_pct.

    A two-regressor fit (CPU against KiB and wake-ups) is listed against its wake-ups, named
    ``"<estimate> (x = wakeups)"``."""
    rows = []
    for name, est in fit["estimates"].items():
        if not isinstance(est, dict) or "points" not in est:
            continue
        for p in est["points"]:
            fitted = p["y"] - p["residual"]
            regressors = sorted(k for k in p if k not in ("y", "residual"))
            if "x" in p:
                label, x = name, p["x"]
            else:
                key = "wakeups" if "wakeups" in regressors else regressors[0]
                label, x = f"{name} (x = {key})", p[key]
            rows.append({
                "estimate": label, "x": x, "y": p["y"], "fitted": fitted,
                "residual": p["residual"],
                "residual_pct": 100.0 * p["residual"] / fitted if fitted else math.nan,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["estimate", "x", "y", "fitted", "residual", "residual_pct"])


def ci_frame(fit: dict[str, Any]) -> pd.DataFrame:
    """Every estimate with a 95 % CI: quantity, value, ci_low, ci_high, rel_half_width_pct,
    parameter (the model parameter it sets directly, see :data:`PARAMETER_OF`, else '')."""
    rows = []

    def add(name: str, e: dict[str, Any]) -> None:
        lo, hi = e["ci95"]
        v = e["value"]
        rows.append({
            "quantity": name, "value": v, "ci_low": lo, "ci_high": hi,
            "rel_half_width_pct": 100.0 * (hi - lo) / 2.0 / abs(v) if v else math.nan,
            "parameter": PARAMETER_OF.get(name, ""),
        })  # fmt: skip

    st = fit["service_time"]
    for key in ("mean", "cv", "p50", "p99"):
        add(f"service_time.{key}", st[key])
    for key, e in (st.get("params") or {}).items():
        add(f"service_time.{key}", e)
    for name, est in fit["estimates"].items():
        if not isinstance(est, dict):
            continue
        if "ci95" in est:
            add(name, est)
        for part in ("intercept", "slope"):
            if isinstance(est.get(part), dict) and "ci95" in est[part]:
                add(f"{name}.{part}", est[part])
        for key, e in (est.get("slopes") or {}).items():  # a two-regressor fit
            if isinstance(e, dict) and "ci95" in e:
                add(f"{name}.{key}", e)
    return pd.DataFrame(
        rows, columns=["quantity", "value", "ci_low", "ci_high", "rel_half_width_pct", "parameter"]
    )


def held_out(model_path: str | Path, *, duration_s: float = 4.0) -> list[Comparison]:
    """Simulate the held-out points (:func:`meshsim.calibrate.validate.validate_model`)."""
    from meshsim.calibrate.validate import validate_model

    return validate_model(Path(model_path), duration_s=duration_s)


HELD_OUT_COLUMNS = [
    "config",
    "payload_bytes",
    "offered_rps",
    "saturation",
    "utilisation",
    "metric",
    "measured",
    "predicted",
    "error_pct",
    "checked",
    "goal_pct",
]


def held_out_frame(rows: list[Comparison] | list[dict[str, Any]]) -> pd.DataFrame:
    """Tidy predicted-versus-measured: one row per held-out point and metric (p50, p90, p99,
    rps). Takes :class:`Comparison` objects or their ``to_json()`` (``validation.json``)."""
    out = []
    for r in rows:
        d = r if isinstance(r, dict) else r.to_json()
        for metric in ("p50", "p90", "p99", "rps"):
            out.append({
                "config": d["config"], "payload_bytes": d["payload_bytes"],
                "offered_rps": d["rps"], "saturation": d["saturation"],
                "utilisation": d["measured_proxy_utilisation"], "metric": metric,
                "measured": float(d["measured"][metric]),
                "predicted": float(d["predicted"][metric]),
                "error_pct": float(d["error_pct"][metric]), "checked": metric in d["checked"],
                "goal_pct": GOALS.get(metric, math.nan),
            })  # fmt: skip
    return pd.DataFrame(out, columns=HELD_OUT_COLUMNS)


def goals_frame(held: pd.DataFrame) -> pd.DataFrame:
    """Per goal (:data:`meshsim.calibrate.validation_report.GOALS`): checked points, worst
    |error|, met."""
    rows = []
    for metric, goal in GOALS.items():
        sel = held[(held["metric"] == metric) & held["checked"]]
        worst = float(sel["error_pct"].abs().max()) if len(sel) else math.nan
        rows.append(
            {
                "metric": metric,
                "goal_pct": goal,
                "points": len(sel),
                "worst_error_pct": worst,
                "met": bool(len(sel)) and worst <= goal,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- plots


def _axes(ax: Axes | None, w: float = 6.0, h: float = 4.0) -> Axes:
    from meshsim.report.figures import new_axes

    return ax if ax is not None else new_axes(w, h)


def plot_service_time(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Measured CDF of per-request CPU with the lognormal and gamma fits (chosen: solid)."""
    ax = _axes(ax)
    chosen = str(frame["chosen"].iloc[0]) if len(frame) else ""
    ax.step(
        frame["cpu_us"],
        frame["measured_cdf"],
        where="post",
        color="black",
        label=f"measured ({len(frame)} points)" + (" = chosen" if chosen == "empirical" else ""),
    )
    for dist, colour in (("lognormal", "#466bb0"), ("gamma", "#e08a2c")):
        ax.plot(
            frame["cpu_us"],
            frame[f"{dist}_cdf"],
            color=colour,
            linestyle="-" if dist == chosen else "--",
            label=f"{dist} fit" + (" (chosen)" if dist == chosen else ""),
        )
    ax.set_xlabel("per-request CPU of the sidecar callbacks (us)")
    ax.set_ylabel("cumulative fraction")
    ax.set_title("Fitted per-request CPU distribution against the measurements")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_residuals(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Residual of every line-fit point in % of the fitted value, one column per estimate."""
    ax = _axes(ax, 7.0, 4.0)
    names = list(dict.fromkeys(frame["estimate"]))
    for i, name in enumerate(names):
        g = frame[frame["estimate"] == name]
        jitter = np.linspace(-0.15, 0.15, len(g)) if len(g) > 1 else np.zeros(1)
        ax.plot(i + jitter, g["residual_pct"], "o", color="#466bb0")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("residual (% of fitted)")
    ax.set_title("Line-fit residuals (measured - fitted)")
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_predicted_vs_measured(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Held-out latency percentiles: predicted against measured (log-log, y = x, goal bands).

    ``frame``: :func:`held_out_frame`; hollow markers are points no goal is checked on.
    """
    ax = _axes(ax, 5.5, 5.0)
    lat = frame[frame["metric"].isin(["p50", "p90", "p99"])]
    for metric, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        g = lat[lat["metric"] == metric]
        for checked, face in ((True, None), (False, "none")):
            part = g[g["checked"] == checked]
            if len(part):
                ax.plot(
                    part["measured"],
                    part["predicted"],
                    marker,
                    linestyle="none",
                    markerfacecolor=face,
                    color={"p50": "#466bb0", "p90": "#2bb3a0", "p99": "#e08a2c"}[metric],
                    label=metric + ("" if checked else " (not checked)"),
                )
    if len(lat):
        lo = float(min(lat["measured"].min(), lat["predicted"].min())) * 0.8
        hi = float(max(lat["measured"].max(), lat["predicted"].max())) * 1.25
        xs = np.array([lo, hi])
        ax.plot(xs, xs, "k-", linewidth=0.8, label="y = x")
        ax.fill_between(xs, xs * 0.8, xs * 1.2, color="grey", alpha=0.15, label="±20 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title("Held-out latency: predicted vs measured")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    return ax


def plot_throughput(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Held-out throughput: measured and predicted rps per point (saturation point labelled)."""
    ax = _axes(ax, 6.0, 3.5)
    g = frame[frame["metric"] == "rps"].reset_index(drop=True)
    x = np.arange(len(g))
    ax.bar(x - 0.2, g["measured"], 0.4, label="measured", color="#7f7f7f")
    ax.bar(x + 0.2, g["predicted"], 0.4, label="predicted", color="#466bb0")
    labels = [
        f"{r.config}\n{'saturation' if r.saturation else f'{r.offered_rps:g} rps'}\n"
        f"{r.error_pct:+.1f}%"
        for r in g.itertuples()
    ]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("throughput (rps)")
    ax.set_title("Held-out throughput (error: predicted vs measured)")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_cis(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Each estimate's 95 % CI relative to its value (value = 1); wide bars = poorly pinned.

    Estimates whose value is 0 are left out (no relative scale).
    """
    ax = _axes(ax, 7.0, max(3.0, 0.28 * len(frame) + 1.0))
    f = frame[frame["value"] != 0].reset_index(drop=True)
    y = np.arange(len(f))
    v = f["value"].abs()
    lo = (f["ci_low"] / f["value"]).where(f["value"] > 0, f["ci_high"] / f["value"])
    hi = (f["ci_high"] / f["value"]).where(f["value"] > 0, f["ci_low"] / f["value"])
    ax.errorbar(
        np.ones(len(f)),
        y,
        xerr=[(1 - lo).clip(lower=0), (hi - 1).clip(lower=0)],
        fmt="o",
        color="#466bb0",
        capsize=3,
    )
    ax.axvline(1.0, color="black", linewidth=0.8)
    names = [
        f"{q}" + (f" -> {p}" if p else "")
        for q, p in zip(f["quantity"], f["parameter"], strict=True)
    ]
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("95 % CI / estimate (negative estimates mirrored)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_title(f"Bootstrap 95 % CIs, {int((v > 0).sum())} estimates (symlog)")
    ax.grid(alpha=0.3, axis="x")
    return ax


__all__ = [
    "BASE_CONFIG", "HELD_OUT_COLUMNS", "PARAMETER_OF", "Calibration", "ci_frame", "goals_frame",
    "held_out", "held_out_frame", "load_calibration", "measurements_path", "plot_cis",
    "plot_predicted_vs_measured", "plot_residuals", "plot_service_time", "plot_throughput",
    "residual_frame", "service_time_frame", "service_time_samples",
]  # fmt: skip
