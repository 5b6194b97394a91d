"""Baselines and the gate: compare measured metrics with a stored baseline.

A baseline is JSON, written atomically::

    {"schema": 1, "suite": "...", "suite_sha256": "...", "meshsim_version": "...",
     "metrics": {"bookinfo/istio/workloads.users.latency_ms.p99":
                 {"mean": 4.2, "ci95": [4.1, 4.3], "n": 3, "values": [...],
                  "better": "lower"}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshsim import __version__
from meshsim.bench.measure import Measured
from meshsim.bench.noise import FAILING, Sample, Status, compare
from meshsim.bench.suite import Suite
from meshsim.errors import MeshsimError
from meshsim.results.store import environment, write_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Row:
    key: str
    status: Status
    base: Sample | None
    current: Sample | None
    change_pct: float | None
    tolerance_pct: float


@dataclass(frozen=True)
class Gate:
    rows: list[Row]
    notes: list[str]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status in FAILING]

    def count(self, status: Status) -> int:
        return sum(1 for r in self.rows if r.status == status)


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MeshsimError(f"no baseline at {path}; create it with --update-baseline") from None
    except (OSError, ValueError) as exc:
        raise MeshsimError(f"{path}: not a readable baseline ({exc})") from None
    if data.get("schema") != SCHEMA_VERSION or not isinstance(data.get("metrics"), dict):
        raise MeshsimError(f"{path}: not a meshsim bench baseline (schema {SCHEMA_VERSION})")
    return data


def write_baseline(
    path: Path,
    suite: Suite,
    measured: dict[str, Measured],
    *,
    keep: dict[str, Any] | None = None,
) -> None:
    """Store ``measured`` (over ``keep``, the metrics of entries not run this time)."""
    metrics: dict[str, Any] = dict(keep or {})
    for key, m in measured.items():
        metrics[key] = {**Sample.of(m.values).to_dict(), "values": m.values, "better": m.better}
    write_json(
        path,
        {
            "schema": SCHEMA_VERSION,
            "suite": suite.spec.name,
            "suite_sha256": suite.sha256(),
            "meshsim_version": __version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
            "metrics": dict(sorted(metrics.items())),
        },
    )


def gate(
    suite: Suite,
    baseline: dict[str, Any],
    measured: dict[str, Measured],
    *,
    tolerance_pct: float | None = None,
    only: list[str] | None = None,
) -> Gate:
    """Compare every metric with the baseline (``tolerance_pct`` overrides the suite's)."""
    default = suite.spec.tolerance_pct if tolerance_pct is None else tolerance_pct
    notes: list[str] = []
    if baseline.get("suite_sha256") != suite.sha256():
        notes.append(
            "the suite (scenarios, overrides, meshes or replications) changed since the "
            "baseline was written; refresh it with --update-baseline if that was intended"
        )
    stored: dict[str, Any] = baseline["metrics"]
    rows: list[Row] = []
    for key, m in measured.items():
        tol = m.tolerance_pct if m.tolerance_pct is not None else default
        current = Sample.of(m.values)
        if key not in stored:
            rows.append(Row(key, "new", None, current, None, tol))
            continue
        base = Sample.from_dict(stored[key])
        v = compare(base, current, better=m.better, tolerance_pct=tol)
        rows.append(Row(key, v.status, base, current, v.change_pct, tol))
    for key, data in stored.items():
        entry = key.split("/", 1)[0]
        if key not in measured and (only is None or entry in only):
            rows.append(Row(key, "missing", Sample.from_dict(data), None, None, default))
    return Gate(sorted(rows, key=lambda r: r.key), notes)
