"""Which saved runs can be compared, and the tidy frames a report is drawn from.

Rule (documented in reports/README.md): runs are compared only when they simulate
the same scenario, i.e. their ``scenario_sha256`` is equal; their meshes are then
put side by side (one run directory per mesh is fine, the same mesh twice is not).
The one exception is a *load series*: runs whose scenarios are identical except for
the workloads' offered load (``rate_rps``, ``phases``, ``clients``). A load series
feeds the latency-versus-load curves; every other section describes the *primary*
load level, the one of the first run directory given.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from meshsim.errors import MeshsimError
from meshsim.report.verdict import added_latency_cell
from meshsim.results.schema import MeshRun
from meshsim.results.store import LoadedRun

LOAD_KEYS = ("rate_rps", "phases", "clients")
"""Workload keys that may differ between the runs of a load series."""
PERCENTILES: tuple[Literal["p50", "p90", "p99", "p999"], ...] = ("p50", "p90", "p99", "p999")


def full_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    """The saved scenario with its defaults filled in (scenario.yaml omits them).

    Falls back to the file's own data when this meshsim cannot validate it (a run
    saved by another version); comparisons then rely on the hashes alone.
    """
    from meshsim.scenario import from_dict

    try:
        return from_dict(scenario).model_dump(mode="json", by_alias=True)
    except MeshsimError:
        return scenario


def load_key(scenario: dict[str, Any]) -> str:
    """A hash of the scenario with the workloads' offered load removed."""
    masked = json.loads(json.dumps(full_scenario(scenario)))
    for workload in masked.get("workloads", []) or []:
        if isinstance(workload, dict):
            for key in LOAD_KEYS:
                workload.pop(key, None)
    canonical = json.dumps(masked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def offered_rps(summary_run: Mapping[str, Any]) -> float:
    """Total requested rate of a mesh's workloads (achieved when none was requested)."""
    total = 0.0
    for sig in summary_run.get("workloads", {}).values():
        rate = sig.get("requested_rps")
        total += float(rate if rate is not None else sig.get("achieved_rps", sig.get("rps", 0)))
    return total


@dataclass
class LoadLevel:
    """Runs of one scenario (same scenario_sha256), merged into one set of meshes."""

    sha256: str
    runs: list[LoadedRun]
    mesh_runs: dict[str, LoadedRun] = field(default_factory=dict)

    def summary(self, mesh: str) -> MeshRun:
        return self.mesh_runs[mesh].summary["runs"][mesh]

    @property
    def offered_rps(self) -> float:
        mesh = next(iter(self.mesh_runs))
        return offered_rps(self.summary(mesh))


@dataclass
class Comparison:
    """Saved runs checked for comparability; see the module's docstring for the rule."""

    levels: list[LoadLevel]
    """Load levels, the primary (first given) one first."""

    @classmethod
    def of(cls, runs: list[LoadedRun]) -> Comparison:
        if not runs:
            raise MeshsimError("no run directories to report on")
        levels: dict[str, LoadLevel] = {}
        for run in runs:
            level = levels.setdefault(run.scenario_sha256, LoadLevel(run.scenario_sha256, []))
            level.runs.append(run)
            for mesh in run.meshes:
                if mesh in level.mesh_runs:
                    raise MeshsimError(
                        f"mesh '{mesh}' appears in both {level.mesh_runs[mesh].path} and "
                        f"{run.path} for the same scenario; give one run directory per mesh"
                    )
                level.mesh_runs[mesh] = run
        first = runs[0]
        base_key = load_key(first.scenario)
        for level in levels.values():
            other = level.runs[0]
            if load_key(other.scenario) != base_key:
                raise MeshsimError(
                    f"{other.path} ('{other.summary['scenario']}', scenario_sha256 "
                    f"{other.scenario_sha256[:12]}) and {first.path} "
                    f"('{first.summary['scenario']}', {first.scenario_sha256[:12]}) simulate "
                    "different scenarios and cannot be compared; only runs of one scenario, "
                    "or a load series of it (differing only in the workloads' rate_rps, "
                    "phases or clients), go in one report"
                )
        ordered = list(levels.values())
        if len(ordered) > 1:
            meshes = [set(level.mesh_runs) for level in ordered]
            if any(m != meshes[0] for m in meshes):
                raise MeshsimError(
                    "the runs of a load series must cover the same meshes at every rate; got "
                    + "; ".join(
                        f"{lv.offered_rps:g} rps: {', '.join(sorted(lv.mesh_runs))}"
                        for lv in ordered
                    )
                )
        return cls(ordered)

    @property
    def primary(self) -> LoadLevel:
        return self.levels[0]

    @property
    def meshes(self) -> list[str]:
        """Meshes in a stable order: `none` first, then as first seen."""
        seen = list(self.primary.mesh_runs)
        return sorted(seen, key=lambda m: (m != "none", seen.index(m)))

    @property
    def scenario_name(self) -> str:
        return str(self.primary.runs[0].summary["scenario"])

    @property
    def scenario(self) -> dict[str, Any]:
        """The primary level's scenario, defaults filled in."""
        return full_scenario(self.primary.runs[0].scenario)

    def runs_summary(self) -> dict[str, MeshRun]:
        """``summary["runs"]`` of the primary load level, meshes in report order."""
        return {m: self.primary.summary(m) for m in self.meshes}

    def replications(self) -> int:
        return min(int(r.get("replications", 1)) for r in self.runs_summary().values())

    def events(self) -> list[tuple[float, str]]:
        """The scenario's timeline as it happened (from the first mesh's summary)."""
        run = self.primary.summary(self.meshes[0])
        return [(float(e["at_s"]), str(e["event"])) for e in run.get("timeline", [])]

    # ------------------------------------------------------------------ frames

    def latency_frame(self) -> pd.DataFrame:
        """mesh, workload, percentile, latency_ms, ci_low_ms, ci_high_ms (client side)."""
        rows = []
        for mesh, run in self.runs_summary().items():
            for name, sig in run["workloads"].items():
                ci = sig.get("latency_ci95_ms")
                for p in PERCENTILES:
                    low, high = (ci.get(p) if ci else None) or (math.nan, math.nan)
                    value = sig["latency_ms"].get(p)
                    rows.append(
                        (mesh, name, p, _num(value), _num(low), _num(high))
                    )  # fmt: skip
        return pd.DataFrame(
            rows,
            columns=["mesh", "workload", "percentile", "latency_ms", "ci_low_ms", "ci_high_ms"],
        )

    def added_latency_frame(self) -> pd.DataFrame:
        """mesh, workload, percentile, added_ms over the `none` run's, with its CI and band.

        ``ci_low_ms``/``ci_high_ms`` are the paired CI of the difference (conservative
        for summaries saved before they had it) and
        ``band_low_ms``/``band_high_ms`` give the model band (NaN when the runs have none);
        see :mod:`meshsim.report.verdict`.
        """
        cols = [
            "mesh", "workload", "percentile", "added_ms",
            "ci_low_ms", "ci_high_ms", "band_low_ms", "band_high_ms",
        ]  # fmt: skip
        runs = self.runs_summary()
        base = runs.get("none")
        if base is None:
            return pd.DataFrame(columns=cols)
        rows = []
        for mesh, run in runs.items():
            if mesh == "none":
                continue
            for name, sig in run["workloads"].items():
                base_sig = base["workloads"].get(name)
                if base_sig is None:
                    continue
                for p in PERCENTILES:
                    cell = added_latency_cell(sig, base_sig, p)
                    ci = cell.ci or (math.nan, math.nan)
                    band = cell.band or (math.nan, math.nan)
                    rows.append((mesh, name, p, _num(cell.value), *ci, *band))
        return pd.DataFrame(rows, columns=cols)

    def resources_frame(self) -> pd.DataFrame:
        """One row per mesh: proxy count, vCPU, memory, handshakes, control plane."""
        rows = []
        for mesh, run in self.runs_summary().items():
            p, cp = run.get("proxies", {}), run.get("control_plane", {})
            rows.append(
                {
                    "mesh": mesh,
                    "offered_rps": offered_rps(run),
                    "proxies": int(p.get("count", 0)),
                    "cpu_vcpu_total": float(p.get("cpu_vcpu_total", 0.0)),
                    "cpu_vcpu_per_1000rps": float(p.get("cpu_vcpu_per_1000rps", 0.0)),
                    "memory_mb_per_proxy": float(p.get("memory_mb_per_proxy", 0.0)),
                    "memory_mb_total": float(p.get("memory_mb_total", 0.0)),
                    "handshakes": int(p.get("handshakes", 0)),
                    "control_plane_vcpu": float(cp.get("cpu_vcpu", 0.0) or 0.0),
                    "control_plane_memory_mb": float(cp.get("memory_mb", 0.0) or 0.0),
                    "app_vcpu": float(sum(run.get("app_cpu_vcpu", {}).values())),
                    **_band_columns(p.get("band")),
                }
            )
        return pd.DataFrame(rows)

    def convergence_frame(self) -> pd.DataFrame:
        """mesh, percentile, convergence_s; empty when no mesh models a control plane."""
        rows = []
        for mesh, run in self.runs_summary().items():
            cp: Mapping[str, Any] = run.get("control_plane") or {}
            conv = cp.get("convergence_s")
            if isinstance(conv, dict):
                for p, value in conv.items():
                    if value is not None:
                        rows.append((mesh, p, float(value)))
        return pd.DataFrame(rows, columns=["mesh", "percentile", "convergence_s"])

    def load_frame(self) -> pd.DataFrame:
        """mesh, workload, offered_rps, metric, latency_ms: latency against offered load.

        Each load level of a load series gives p50 and p99 points from its summary.
        A run whose workloads have ``phases`` also gives one mean-latency point per
        phase, from the per-second series after the warm-up (only means are kept per
        second, so phases give no percentiles).
        """
        rows: list[tuple[str, str, float, str, float]] = []
        for level in self.levels:
            for mesh in self.meshes:
                run = level.summary(mesh)
                for name, sig in run["workloads"].items():
                    rate = sig.get("requested_rps")
                    rate = float(rate if rate is not None else sig.get("achieved_rps", 0.0))
                    for p in ("p50", "p99"):
                        rows.append((mesh, name, rate, p, _num(sig["latency_ms"].get(p))))
        rows.extend(self._phase_points())
        frame = pd.DataFrame(
            rows, columns=["mesh", "workload", "offered_rps", "metric", "latency_ms"]
        )
        order = {m: i for i, m in enumerate(self.meshes)}
        frame = frame.assign(_order=frame["mesh"].map(order))
        frame = frame.sort_values(["_order", "workload", "metric", "offered_rps"], kind="stable")
        return frame.drop(columns="_order").reset_index(drop=True)

    def _phase_points(self) -> list[tuple[str, str, float, str, float]]:
        rows: list[tuple[str, str, float, str, float]] = []
        for level in self.levels:
            scenario = full_scenario(level.runs[0].scenario)
            warmup = float(scenario.get("warmup_s", 0.0))
            duration = float(scenario.get("duration_s", 0.0))
            for workload in scenario.get("workloads", []) or []:
                phases = workload.get("phases")
                if not phases:
                    continue
                bounds = [float(p["at_s"]) for p in phases] + [duration]
                for mesh in self.meshes:
                    series = level.mesh_runs[mesh].series
                    if series.empty:
                        continue
                    mine = series[
                        (series["mesh"] == mesh)
                        & (series["kind"] == "workload")
                        & (series["subject"] == workload["name"])
                    ]
                    for i, phase in enumerate(phases):
                        lo, hi = max(bounds[i], warmup), bounds[i + 1]
                        part = mine[(mine["second"] >= lo) & (mine["second"] < hi)]
                        n = float(part["requests"].sum())
                        if n:
                            mean_ms = float(part["latency_sum_s"].sum()) / n * 1e3
                            rate = float(phase["rate_rps"])
                            rows.append((mesh, workload["name"], rate, "mean (phase)", mean_ms))
        return rows

    def timeline_frame(self) -> pd.DataFrame:
        """mesh, second, requests, success_rate, mean_latency_ms of all workloads together.

        Summed over workloads, averaged over replications (request-weighted).
        """
        cols = ["mesh", "second", "requests", "success_rate", "mean_latency_ms"]
        frames = []
        for mesh in self.meshes:
            series = self.primary.mesh_runs[mesh].series
            if series.empty:
                continue
            mine = series[(series["mesh"] == mesh) & (series["kind"] == "workload")]
            grouped = mine.groupby("second", sort=True)[
                ["requests", "errors", "latency_sum_s"]
            ].sum()
            n = grouped["requests"].where(grouped["requests"] > 0)
            frames.append(
                pd.DataFrame(
                    {
                        "mesh": mesh,
                        "second": grouped.index.astype(float),
                        "requests": grouped["requests"].to_numpy(),
                        "success_rate": (1.0 - grouped["errors"] / n).to_numpy(),
                        "mean_latency_ms": (grouped["latency_sum_s"] / n * 1e3).to_numpy(),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=cols)
        return pd.concat(frames, ignore_index=True)[cols]


RESOURCE_BANDS = (
    "cpu_vcpu_total", "cpu_vcpu_per_1000rps", "memory_mb_per_proxy", "memory_mb_total",
)  # fmt: skip


def _band_columns(band: Any) -> dict[str, float]:
    """``<metric>_band_low`` / ``_band_high`` columns from a proxies block's model band."""
    out = {}
    for metric in RESOURCE_BANDS:
        pair = band.get(metric) if isinstance(band, Mapping) else None
        low, high = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
        out[f"{metric}_band_low"] = _num(low)
        out[f"{metric}_band_high"] = _num(high)
    return out


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def event_windows(
    timeline: pd.DataFrame, events: list[tuple[float, str]], *, warmup_s: float, end_s: float
) -> pd.DataFrame:
    """Success rate and mean latency per mesh in the window after each event.

    A window runs from an event to the next event (or the end); the first row,
    "before any event", is the steady state from the warm-up to the first event.
    ``timeline`` is :meth:`Comparison.timeline_frame`.
    """
    cols = ["window", "start_s", "end_s", "mesh", "success_rate", "mean_latency_ms"]
    if timeline.empty:
        return pd.DataFrame(columns=cols)
    starts = sorted({t for t, _ in events if warmup_s <= t < end_s})
    windows: list[tuple[str, float, float]] = []
    first = starts[0] if starts else end_s
    if first > warmup_s:
        windows.append(("before any event", warmup_s, first))
    for i, t in enumerate(starts):
        label = "; ".join(what for at, what in events if at == t)
        windows.append((label, t, starts[i + 1] if i + 1 < len(starts) else end_s))
    rows = []
    frame = timeline.assign(
        errors=(1.0 - timeline["success_rate"].fillna(1.0)) * timeline["requests"],
        latency_sum=timeline["mean_latency_ms"].fillna(0.0) * timeline["requests"],
    )
    for label, lo, hi in windows:
        part = frame[(frame["second"] >= lo) & (frame["second"] < hi)]
        for mesh, m in part.groupby("mesh", sort=False):
            n = float(m["requests"].sum())
            rows.append(
                (label, lo, hi, str(mesh),
                 1.0 - float(m["errors"].sum()) / n if n else math.nan,
                 float(m["latency_sum"].sum()) / n if n else math.nan)
            )  # fmt: skip
    return pd.DataFrame(rows, columns=cols)
