"""Pure plot functions: ``plot_x(frame, *, ax=None) -> Axes``.

Each takes a tidy frame (see :mod:`meshsim.report.comparison`), draws on ``ax``
(a new figure when None) with object-oriented matplotlib, and returns the Axes.
Nothing is shown or saved here; :func:`to_svg` turns a figure into SVG text with
the Agg-family SVG backend, deterministically (fixed hash salt, no date).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

MESH_COLOURS = {
    "none": "#7f7f7f",
    "istio": "#466bb0",
    "linkerd": "#2bb3a0",
    "istio-ambient": "#e08a2c",
}
_FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def colour(mesh: str, meshes: Sequence[str] = ()) -> str:
    if mesh in MESH_COLOURS:
        return MESH_COLOURS[mesh]
    others = [m for m in meshes if m not in MESH_COLOURS]
    i = others.index(mesh) if mesh in others else 0
    return _FALLBACK[i % len(_FALLBACK)]


def new_axes(width_in: float = 7.0, height_in: float = 3.2) -> Axes:
    """A fresh Axes on a figure not registered with pyplot (no global state)."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    return fig.add_subplot()


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else new_axes()


def _unique(values: pd.Series) -> list[str]:
    return [str(v) for v in dict.fromkeys(values.tolist())]


def _empty(ax: Axes, message: str) -> Axes:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return ax


def plot_latency_percentiles(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Grouped bars: latency per percentile for each mesh and workload, with 95 % CIs.

    ``frame``: mesh, workload, percentile, latency_ms, ci_low_ms, ci_high_ms.
    """
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no workload latencies")
    meshes = _unique(frame["mesh"])
    groups = list(dict.fromkeys(zip(frame["workload"], frame["percentile"], strict=True)))
    width = 0.8 / len(meshes)
    x = np.arange(len(groups))
    for i, mesh in enumerate(meshes):
        part = frame[frame["mesh"] == mesh].set_index(["workload", "percentile"])
        values = [float(part["latency_ms"].get(g, math.nan)) for g in groups]
        low = [float(part["ci_low_ms"].get(g, math.nan)) for g in groups]
        high = [float(part["ci_high_ms"].get(g, math.nan)) for g in groups]
        err = np.array(
            [
                [v - lo if not math.isnan(lo) else 0.0 for v, lo in zip(values, low, strict=True)],
                [h - v if not math.isnan(h) else 0.0 for v, h in zip(values, high, strict=True)],
            ]
        ).clip(min=0.0)
        ax.bar(
            x + (i - (len(meshes) - 1) / 2) * width, values, width, yerr=err, capsize=2,
            label=mesh, color=colour(mesh, meshes),
        )  # fmt: skip
    multi = len({g[0] for g in groups}) > 1
    ax.set_xticks(x, [f"{w}\n{p}" if multi else p for w, p in groups])
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("latency (ms)")
    ax.set_title("Client latency by percentile (error bars: 95 % CI over replications)")
    ax.legend(frameon=False, ncols=min(4, len(meshes)))
    return ax


def plot_added_latency(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Bars of latency added over the `none` baseline per mesh and percentile.

    ``frame``: mesh, workload, percentile, added_ms, and optionally ci_low_ms/ci_high_ms (drawn
    as black error bars: the simulation CI) and band_low_ms/band_high_ms (drawn as a thick
    translucent bar behind them: the model band).
    """
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no baseline: run mesh 'none' too")
    meshes = _unique(frame["mesh"])
    groups = list(dict.fromkeys(zip(frame["workload"], frame["percentile"], strict=True)))
    width = 0.8 / len(meshes)
    x = np.arange(len(groups))
    for i, mesh in enumerate(meshes):
        part = frame[frame["mesh"] == mesh].set_index(["workload", "percentile"])

        def column(name: str, part: pd.DataFrame = part) -> np.ndarray:
            if name not in part.columns:
                return np.full(len(groups), math.nan)
            return np.array([float(part[name].get(g, math.nan)) for g in groups])

        values = column("added_ms")
        xs = x + (i - (len(meshes) - 1) / 2) * width
        ax.bar(xs, values, width, label=mesh, color=colour(mesh, meshes))
        for low_col, high_col, line_width, alpha, cap in (
            ("band_low_ms", "band_high_ms", 6.0, 0.35, 0.0),
            ("ci_low_ms", "ci_high_ms", 1.2, 1.0, 3.0),
        ):
            low, high = column(low_col), column(high_col)
            ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
            if ok.any():
                err = np.vstack([values[ok] - low[ok], high[ok] - values[ok]]).clip(min=0)
                ax.errorbar(
                    xs[ok], values[ok], yerr=err, fmt="none", ecolor="black",
                    elinewidth=line_width, alpha=alpha, capsize=cap,
                )  # fmt: skip
    ax.axhline(0.0, color="black", linewidth=0.8)
    multi = len({g[0] for g in groups}) > 1
    ax.set_xticks(x, [f"{w}\n{p}" if multi else p for w, p in groups])
    ax.set_ylabel("added latency (ms)")
    ax.set_title("Latency added over the no-mesh baseline")
    ax.legend(frameon=False, ncols=min(4, len(meshes)))
    return ax


def plot_latency_vs_load(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Latency against offered load, one line per mesh and metric (p50, p99, phase means).

    ``frame``: mesh, workload, offered_rps, metric, latency_ms.
    """
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no load levels")
    meshes = _unique(frame["mesh"])
    styles = {"p50": "--", "p99": "-", "mean (phase)": ":"}
    multi = frame["workload"].nunique() > 1
    for (mesh, workload, metric), part in frame.groupby(["mesh", "workload", "metric"], sort=False):
        part = part.sort_values("offered_rps")
        label = f"{mesh} {workload} {metric}" if multi else f"{mesh} {metric}"
        ax.plot(
            part["offered_rps"], part["latency_ms"], styles.get(str(metric), "-"), marker="o",
            markersize=3, label=label, color=colour(str(mesh), meshes),
        )  # fmt: skip
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency versus load")
    ax.legend(frameon=False, fontsize="small", ncols=2)
    return ax


def plot_proxy_resources(
    frame: pd.DataFrame, *, metric: str = "cpu_vcpu_per_1000rps", ax: Axes | None = None
) -> Axes:
    """One bar per mesh for a resource column of the resources frame, with the model band
    (``<metric>_band_low``/``_band_high`` columns, when present) as an error bar.

    ``metric``: cpu_vcpu_per_1000rps, cpu_vcpu_total, memory_mb_total,
    memory_mb_per_proxy or handshakes.
    """
    labels = {
        "cpu_vcpu_per_1000rps": ("vCPU per 1000 rps", "Proxy CPU per 1000 requests/s"),
        "cpu_vcpu_total": ("vCPU", "Proxy CPU in total"),
        "memory_mb_total": ("MB", "Proxy memory in total"),
        "memory_mb_per_proxy": ("MB", "Memory per proxy"),
        "handshakes": ("TLS handshakes", "mTLS handshakes in the window"),
    }
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no meshes")
    meshes = _unique(frame["mesh"])
    values = [float(v) for v in frame[metric]]
    bars = ax.bar(meshes, values, color=[colour(m, meshes) for m in meshes])
    ax.bar_label(bars, fmt="%.3g", fontsize="small", padding=2)
    low_col, high_col = f"{metric}_band_low", f"{metric}_band_high"
    if low_col in frame.columns:
        low = frame[low_col].to_numpy(dtype=float)
        high = frame[high_col].to_numpy(dtype=float)
        mid = np.array(values)
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            err = np.vstack([mid[ok] - low[ok], high[ok] - mid[ok]]).clip(min=0)
            ax.errorbar(
                np.arange(len(meshes))[ok], mid[ok], yerr=err, fmt="none", ecolor="black",
                elinewidth=1.2, capsize=4, label="model band",
            )  # fmt: skip
            ax.legend(frameon=False, fontsize="small")
    ylabel, title = labels.get(metric, (metric, metric))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_timeline(
    frame: pd.DataFrame,
    *,
    column: str = "success_rate",
    events: Sequence[tuple[float, str]] = (),
    warmup_s: float = 0.0,
    ax: Axes | None = None,
) -> Axes:
    """A per-second series per mesh, with the scenario's events as vertical lines.

    ``frame``: mesh, second, success_rate, mean_latency_ms (see ``timeline_frame``).
    """
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no per-second series")
    meshes = _unique(frame["mesh"])
    for mesh, part in frame.groupby("mesh", sort=False):
        ax.plot(
            part["second"] + 0.5, part[column], label=str(mesh), linewidth=1.2,
            color=colour(str(mesh), meshes),
        )  # fmt: skip
    if warmup_s > 0:
        ax.axvspan(0, warmup_s, color="0.9", label="warm-up (not in statistics)")
    for i, (at_s, what) in enumerate(events):
        ax.axvline(at_s, color="#c0392b", linewidth=0.8, linestyle="--")
        ax.annotate(
            what, (at_s, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top",
            ha="right", fontsize="x-small", color="#c0392b", xytext=(-2, -2 - 0 * i),
            textcoords="offset points",
        )  # fmt: skip
    ax.set_xlabel("simulated time (s)")
    if column == "success_rate":
        ax.set_ylabel("success rate")
        ax.set_title("Success rate over time, all workloads")
        ax.yaxis.set_major_formatter(mpl.ticker.PercentFormatter(1.0))
    else:
        ax.set_ylabel("mean latency (ms)")
        ax.set_title("Mean latency over time, all workloads")
    ax.legend(frameon=False, fontsize="small", loc="lower left")
    return ax


def plot_convergence(frame: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Control-plane convergence time per mesh and percentile.

    ``frame``: mesh, percentile, convergence_s.
    """
    ax = _axes(ax)
    if frame.empty:
        return _empty(ax, "no control plane modelled")
    meshes = _unique(frame["mesh"])
    percentiles = _unique(frame["percentile"])
    width = 0.8 / len(meshes)
    x = np.arange(len(percentiles))
    for i, mesh in enumerate(meshes):
        part = frame[frame["mesh"] == mesh].set_index("percentile")["convergence_s"]
        ax.bar(
            x + (i - (len(meshes) - 1) / 2) * width,
            [float(part.get(p, math.nan)) for p in percentiles], width, label=mesh,
            color=colour(mesh, meshes),
        )  # fmt: skip
    ax.set_xticks(x, percentiles)
    ax.set_ylabel("seconds")
    ax.set_title("Time for a config change to reach every proxy")
    ax.legend(frameon=False)
    return ax


_SVG_START = re.compile(r"^.*?(<svg\b)", re.DOTALL)


def to_svg(ax: Axes, *, id_prefix: str = "") -> str:
    """The Axes' figure as standalone SVG text (no XML prologue), deterministic.

    ``id_prefix`` is put before every element id (and reference to one), so that
    several figures inlined in one HTML page never share an id.
    """
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    buf = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": "meshsim", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _SVG_START.sub(r"\1", buf.getvalue(), count=1)
    if id_prefix:
        svg = re.sub(r'(\bid="|url\(#|href="#)', rf"\g<1>{id_prefix}", svg)
    return svg
