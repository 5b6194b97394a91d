"""Saved runs: a directory with summary.json, meta.json, the scenario, histograms
and series. Every file is written atomically (temporary file, then rename), so an
interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from meshsim.results.run import RunResult


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def environment() -> dict[str, Any]:
    """Versions and machine, so numbers can be reproduced and runs never mixed blindly."""
    import numpy
    import simpy

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "simpy": simpy.__version__,
        "numpy": numpy.__version__,
    }


def save_run(
    result: RunResult,
    summary: dict[str, Any],
    scenario_data: dict[str, Any],
    out_dir: Path,
    *,
    argv: list[str] | None = None,
) -> Path:
    """Write a run directory; returns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    meta = {
        "schema": summary["schema"],
        "meshsim_version": result.meshsim_version,
        "scenario": result.scenario_name,
        "scenario_sha256": result.scenario_sha256,
        "seed": result.seed,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": argv,
        "environment": environment(),
    }
    write_json(out_dir / "meta.json", meta)
    write_atomic(
        out_dir / "scenario.yaml",
        yaml.safe_dump(scenario_data, sort_keys=False).encode("utf-8"),
    )
    histograms = {
        mesh: [
            {
                kind: {name: s.histogram.to_dict() for name, s in getattr(rep, kind).items()}
                for kind in ("workloads", "services", "edges")
            }
            for rep in mr.replications
        ]
        for mesh, mr in result.meshes.items()
    }
    write_json(out_dir / "histograms.json", histograms)
    series = result.timeseries()
    if not series.empty:
        _write_parquet(series, out_dir / "series.parquet")
    if any(rep.records is not None for mr in result.meshes.values() for rep in mr.replications):
        _write_parquet(result.records(), out_dir / "records.parquet")
    return out_dir


def _write_parquet(frame: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
