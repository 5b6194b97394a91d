"""Saved runs: a directory with summary.json, meta.json, the scenario, histograms
and series. Every file is written atomically (temporary file, then rename) and
summary.json last, so an interrupted run never leaves a half-written file, nor a
directory that reads as a complete run.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from meshsim.errors import MeshsimError
from meshsim.files import write_atomic, write_error
from meshsim.results.histogram import LogHistogram
from meshsim.results.run import RunResult
from meshsim.results.schema import Summary
from meshsim.results.summary import SCHEMA_VERSION
from meshsim.scenario.yaml_input import dump_yaml

if TYPE_CHECKING:
    import pandas as pd


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
    summary: Summary,
    scenario_data: dict[str, Any],
    out_dir: Path,
    *,
    argv: list[str] | None = None,
) -> Path:
    """Write a run directory; returns it.

    A directory used before loses the files of the earlier run first (only those: any
    other file is left alone), so no stale ``records.parquet`` or ``series.parquet``
    sits beside the new summary. ``summary.json`` is written last and marks the run
    complete: a write that fails half way (a full disk) leaves a directory that
    :func:`load_run` refuses, never one that mixes two runs or misses a file.

    Raises:
        OutputError: a file could not be written.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # The completion marker goes first, so a failure below leaves no complete run.
        for name in ("summary.json", *OUTPUT_FILES):
            (out_dir / name).unlink(missing_ok=True)
        _write_run(result, summary, scenario_data, out_dir, argv)
    except OSError as exc:
        raise write_error(out_dir, exc) from None
    return out_dir


OUTPUT_FILES = ("meta.json", "scenario.yaml", "histograms.json", "series.parquet",
                "records.parquet")  # fmt: skip
"""What a run directory holds besides summary.json (the last one written)."""


def _write_run(
    result: RunResult,
    summary: Summary,
    scenario_data: dict[str, Any],
    out_dir: Path,
    argv: list[str] | None,
) -> None:
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
        dump_yaml(scenario_data, sort_keys=False).encode("utf-8"),
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
    write_json(out_dir / "summary.json", summary)


def _write_parquet(frame: Any, path: Path) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------- loading

RUN_FILES = ("summary.json", "meta.json", "scenario.yaml", "histograms.json")
"""Files every run directory has; series.parquet is absent when nothing was measured."""


@dataclass
class LoadedRun:
    """A saved run directory read back: the inputs of reports and notebooks."""

    path: Path
    summary: Summary
    """``summary.json`` (results contract, version 1)."""
    meta: dict[str, Any]
    scenario: dict[str, Any]
    """The scenario as run (``scenario.yaml``), after command-line overrides."""
    histograms: dict[str, list[dict[str, dict[str, LogHistogram]]]]
    """``[mesh][replication][kind][subject]``, kind in workloads, services, edges."""
    series: pd.DataFrame
    """Per-second series (see :func:`meshsim.results.frames.series_frame`); may be empty."""

    @property
    def meshes(self) -> list[str]:
        return list(self.summary["runs"])

    @property
    def scenario_sha256(self) -> str:
        return str(self.summary["scenario_sha256"])

    def merged(self, mesh: str, kind: str, name: str) -> LogHistogram:
        """One subject's histogram merged over replications."""
        h = LogHistogram()
        for rep in self.histograms.get(mesh, []):
            if name in rep.get(kind, {}):
                h.merge(rep[kind][name])
        return h


def load_run(directory: str | Path) -> LoadedRun:
    """Read a run directory written by :func:`save_run`.

    Raises:
        MeshsimError: the directory is missing, is not a run directory, a file is
            corrupt, or it was written with another results schema.
    """
    import pandas as pd

    path = Path(directory)
    if not path.is_dir():
        raise MeshsimError(f"{path}: no such run directory")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise MeshsimError(
            f"{path}: not a meshsim run directory (missing {', '.join(missing)}); "
            "run directories are written by `meshsim run --out DIR` (summary.json last: "
            "without it, the run that wrote the directory did not finish)"
        )
    summary = _read_json(path / "summary.json")
    meta = _read_json(path / "meta.json")
    for name, data in (("summary.json", summary), ("meta.json", meta)):
        if not isinstance(data, dict):
            raise MeshsimError(f"{path / name}: expected a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise MeshsimError(
                f"{path / name}: results schema {schema!r}, but this meshsim reads schema "
                f"{SCHEMA_VERSION}; re-run the scenario with this version"
            )
    for key in ("scenario", "scenario_sha256", "seed", "runs"):
        if key not in summary:
            raise MeshsimError(f"{path / 'summary.json'}: missing the field '{key}'")
    if not isinstance(summary["runs"], dict) or not summary["runs"]:
        raise MeshsimError(f"{path / 'summary.json'}: 'runs' must be a non-empty object")
    if meta.get("scenario_sha256") != summary["scenario_sha256"]:
        raise MeshsimError(
            f"{path}: meta.json and summary.json describe different scenarios "
            "(scenario_sha256 differs); the directory mixes two runs"
        )
    try:
        scenario = yaml.safe_load((path / "scenario.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MeshsimError(f"{path / 'scenario.yaml'}: unreadable ({exc})") from None
    if not isinstance(scenario, dict):
        raise MeshsimError(f"{path / 'scenario.yaml'}: expected a mapping")
    histograms = _load_histograms(path / "histograms.json", summary)
    series_path = path / "series.parquet"
    if series_path.is_file():
        try:
            series = pd.read_parquet(series_path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise MeshsimError(f"{series_path}: unreadable Parquet ({exc})") from None
        missing_cols = {"mesh", "replication", "kind", "subject", "second", "requests"} - set(
            series.columns
        )
        if missing_cols:
            raise MeshsimError(f"{series_path}: missing columns {', '.join(sorted(missing_cols))}")
    else:
        series = pd.DataFrame()
    return LoadedRun(path, cast(Summary, summary), meta, scenario, histograms, series)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeshsimError(f"{path}: corrupt JSON ({exc})") from None


def _load_histograms(
    path: Path, summary: dict[str, Any]
) -> dict[str, list[dict[str, dict[str, LogHistogram]]]]:
    data = _read_json(path)
    if not isinstance(data, dict) or set(data) != set(summary["runs"]):
        raise MeshsimError(f"{path}: its meshes do not match summary.json's runs")
    out: dict[str, list[dict[str, dict[str, LogHistogram]]]] = {}
    try:
        for mesh, reps in data.items():
            out[mesh] = [
                {
                    kind: {name: LogHistogram.from_dict(h) for name, h in subjects.items()}
                    for kind, subjects in rep.items()
                }
                for rep in reps
            ]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise MeshsimError(f"{path}: corrupt histogram ({exc})") from None
    return out
