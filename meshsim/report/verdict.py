"""The report's first screen: one verdict table per workload.

Each mesh gets one row with the numbers a platform team decides on: the latency it adds over
the no-mesh baseline at p50 and p99, its proxies' vCPU per 1000 rps and MB per proxy, and its
control plane's size. Every number is shown with the two intervals that bound what it can be
trusted for:

* the **simulation CI**: the 95 % confidence interval of the simulator's own noise (batch means
  within each run for client latencies; over replications otherwise), which longer runs or
  more replications shrink;
* the **model band**: the range of the number over the cost-model parameter sets drawn from
  the models' ranges (``--model-samples``), which no amount of simulation shrinks; only
  better evidence for the parameters does.

The added-latency CI is the summary's paired one (``added_latency_ci95_ms`` per workload:
batch means of the differences between the mesh's and the baseline's batches, which share
random numbers, :func:`meshsim.results.run.paired_difference_ci`). A summary saved before it
had them gets the conservative difference of the two runs' intervals,
``[a_low - base_high, a_high - base_low]``, wider than the paired one.

Bands are read from the summary when it has them (``latency_band_ms`` and
``added_latency_band_ms`` per workload, ``proxies.band`` and ``control_plane.band``, each
``{metric: [low, high]}``); a run without model samples shows none and the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Interval = tuple[float, float]

COLUMNS: tuple[str, ...] = (
    "mesh",
    "added p50 (ms)",
    "added p99 (ms)",
    "proxy vCPU per 1000 rps",
    "MB per proxy",
    "control plane vCPU",
    "control plane MB",
)


@dataclass(frozen=True)
class Cell:
    """A number with its simulation CI and model band (either may be unknown)."""

    value: float | None
    ci: Interval | None = None
    band: Interval | None = None

    def text(self, digits: int = 3) -> str:
        if self.value is None or not math.isfinite(self.value):
            return "-"
        out = _num(self.value, digits)
        parts = []
        if self.ci is not None:
            parts.append(f"CI {_num(self.ci[0], digits)}..{_num(self.ci[1], digits)}")
        if self.band is not None:
            parts.append(f"model {_num(self.band[0], digits)}..{_num(self.band[1], digits)}")
        return f"{out} ({'; '.join(parts)})" if parts else out


@dataclass(frozen=True)
class VerdictTable:
    workload: str
    columns: tuple[str, ...]
    rows: list[list[Cell | str]]
    has_ci: bool
    has_band: bool

    def text_rows(self) -> list[list[str]]:
        return [[c if isinstance(c, str) else c.text() for c in row] for row in self.rows]


def _num(value: float, digits: int) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    text = f"{value:.{digits}g}"
    if "e" in text:  # tiny (a control plane's vCPU): readers scan columns of decimals
        exponent = -math.floor(math.log10(abs(value)))
        text = f"{value:.{exponent + digits - 1}f}".rstrip("0")  # as g trims zeros
    return text


def _interval(raw: Any) -> Interval | None:
    if not isinstance(raw, Sequence) or len(raw) != 2:
        return None
    try:
        low, high = float(raw[0]), float(raw[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


def _get(block: Mapping[str, Any] | None, *keys: str) -> Any:
    node: Any = block
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def added_latency_cell(sig: Mapping[str, Any], base: Mapping[str, Any], p: str) -> Cell:
    """The latency a mesh adds over the baseline at percentile ``p``, with its intervals."""
    a, b = _get(sig, "latency_ms", p), _get(base, "latency_ms", p)
    if a is None or b is None:
        return Cell(None)
    ci = _interval(_get(sig, "added_latency_ci95_ms", p))
    if ci is None:
        ci_a = _interval(_get(sig, "latency_ci95_ms", p))
        ci_b = _interval(_get(base, "latency_ci95_ms", p))
        ci = None if ci_a is None or ci_b is None else (ci_a[0] - ci_b[1], ci_a[1] - ci_b[0])
    band = _interval(_get(sig, "added_latency_band_ms", p))
    if band is None:
        # The baseline runs no proxy, so no model parameter moves it: the mesh's band less
        # the baseline's value is the band of the difference.
        own = _interval(_get(sig, "latency_band_ms", p))
        band = None if own is None else (own[0] - float(b), own[1] - float(b))
    return Cell(float(a) - float(b), ci, band)


def _block_cell(block: Mapping[str, Any] | None, key: str) -> Cell:
    value = _get(block, key)
    if value is None:
        return Cell(None)
    return Cell(
        float(value),
        _interval(_get(block, "ci95", key)),
        _interval(_get(block, "band", key)),
    )


def verdict_tables(runs: Mapping[str, Mapping[str, Any]]) -> list[VerdictTable]:
    """One table per workload from ``summary["runs"]`` (meshes in the order given)."""
    base = runs.get("none")
    workloads = list(dict.fromkeys(w for r in runs.values() for w in r.get("workloads", {})))
    tables = []
    for workload in workloads:
        rows: list[list[Cell | str]] = []
        base_sig = _get(base, "workloads", workload)
        for mesh, run in runs.items():
            if mesh == "none":
                continue
            sig = _get(run, "workloads", workload)
            if sig is None:
                continue
            row: list[Cell | str] = [mesh + (" (saturated)" if run.get("saturated") else "")]
            for p in ("p50", "p99"):
                row.append(Cell(None) if base_sig is None else added_latency_cell(sig, base_sig, p))
            proxies = run.get("proxies")
            row.append(_block_cell(proxies, "cpu_vcpu_per_1000rps"))
            row.append(_block_cell(proxies, "memory_mb_per_proxy"))
            control = run.get("control_plane")
            row.append(_block_cell(control, "cpu_vcpu"))
            row.append(_block_cell(control, "memory_mb"))
            rows.append(row)
        if not rows:
            continue
        cells = [c for row in rows for c in row if isinstance(c, Cell)]
        tables.append(
            VerdictTable(
                workload,
                COLUMNS,
                rows,
                has_ci=any(c.ci is not None for c in cells),
                has_band=any(c.band is not None for c in cells),
            )
        )
    return tables


def verdict_note(tables: Sequence[VerdictTable], replications: int) -> str:
    """What the intervals in the tables are, and which are missing and why."""
    notes = [
        "Added latency is the mesh's client-side latency minus the 'none' baseline's; "
        "CI is the 95 % simulation confidence interval (batch means within each run; for an "
        "added latency, of the differences between the mesh's batches and the baseline's, "
        "which share random numbers); 'model' is the range over the cost models' "
        "parameter sets."
    ]
    if not any(t.has_ci for t in tables):
        notes.append(
            f"No simulation CI: {replications} replication(s) and runs too short for batch "
            "means; rerun longer or with replications >= 3."
        )
    if not any(t.has_band for t in tables):
        notes.append(
            "No model band: these runs used each model's central values only, so the table "
            "hides the models' own uncertainty; rerun with --model-samples N (e.g. 8) to see "
            "whether a difference between meshes survives it."
        )
    return " ".join(notes)
