"""The point function, and the rows it gives: one per mesh, replication and subject.

:func:`run_point` is the same on every executor (it is what a process pool or a Dask
worker calls), so a sweep's numbers do not depend on where its points ran. Its table
has a fixed schema for a given sweep (the axes' columns have one type each), so the
per-point files read back as one Parquet dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import pyarrow as pa

from meshsim.results.frames import SIGNAL_COLUMNS
from meshsim.sweep.points import SAMPLE, Point
from meshsim.sweep.spec import Choice, Integers, Sweep

PROXY_FIELDS = (
    "count", "cpu_vcpu_total", "cpu_vcpu_per_1000rps", "memory_mb_per_proxy",
    "memory_mb_total", "handshakes",
)  # fmt: skip
"""Proxy fields of the results contract, one column each (``proxies.<field>``)."""

_SIGNAL_TYPES: dict[str, pa.DataType] = {
    "mesh": pa.string(), "replication": pa.int64(), "kind": pa.string(),
    "subject": pa.string(), "requests": pa.int64(), "errors": pa.int64(),
}  # fmt: skip
_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (plain, picklable data)."""

    point: Point
    axis_types: dict[str, str]
    """Axis path -> column type ("bool", "int64", "float64", "string" or "json")."""


def axis_types(sweep: Sweep) -> dict[str, str]:
    """One column type per axis, from all of its values (ints and floats make floats)."""
    out = {axis: _type_of(values) for axis, values in sweep.spec.grid.items()}
    if sweep.spec.random is not None:
        for axis, spec in sweep.spec.random.axes.items():
            if isinstance(spec, Choice):
                out[axis] = _type_of(spec.choice)
            else:
                out[axis] = "int64" if isinstance(spec, Integers) else "float64"
        out[SAMPLE] = "int64"
    return out


def _type_of(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float64"
    if all(isinstance(v, str) for v in values):
        return "string"
    return "json"


def schema(types: dict[str, str]) -> pa.Schema:
    """The dataset's columns: point, parameters, seed, signals, proxies, saturation."""
    fields = [pa.field("point_id", pa.string())]
    fields += [pa.field(axis, _TYPES.get(t, pa.string())) for axis, t in types.items()]
    fields.append(pa.field("seed", pa.int64()))
    fields += [pa.field(c, _SIGNAL_TYPES.get(c, pa.float64())) for c in SIGNAL_COLUMNS]
    # Null for the central runs; k for the runs under drawn cost-model parameter set k.
    fields.append(pa.field("model_set", pa.int64()))
    fields += [
        pa.field(f"proxies.{f}", pa.int64() if f == "count" else pa.float64()) for f in PROXY_FIELDS
    ]
    fields.append(pa.field("saturated", pa.bool_()))
    return pa.schema(fields)


def run_point(task: PointTask) -> pa.Table:
    """Simulate one point (all its meshes and replications) and tabulate it."""
    from meshsim.api import run_and_summarise
    from meshsim.results.frames import signals_frame
    from meshsim.scenario import from_dict

    point = task.point
    outcome = run_and_summarise(from_dict(point.scenario))
    result, summary = outcome.result, outcome.summary
    # The central runs, then each drawn cost-model parameter set's runs (model_set k),
    # so a sweep with model_samples gives each point's model band as rows to aggregate.
    parts: list[tuple[int | None, dict[str, Any]]] = [(None, result.meshes)]
    if result.model_sampling is not None:
        parts += list(enumerate(result.model_sampling.runs))
    frames, sets, proxies_of = [], [], []
    for model_set, meshes in parts:
        part = signals_frame(replace(result, meshes=meshes, model_sampling=None))
        frames.append(part)
        sets += [model_set] * len(part)
        by_key = {(m, r.index): r.proxies for m, mr in meshes.items() for r in mr.replications}
        proxies_of += [
            by_key[key]
            for key in zip(part["mesh"].tolist(), part["replication"].tolist(), strict=True)
        ]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    columns: dict[str, list[Any]] = {"point_id": [point.id] * len(frame)}
    for axis, kind in task.axis_types.items():
        value = point.params[axis]
        if kind == "json":
            value = json.dumps(value, sort_keys=True)
        elif kind == "float64":
            value = float(value)
        columns[axis] = [value] * len(frame)
    columns["seed"] = [point.seed] * len(frame)
    for c in SIGNAL_COLUMNS:
        columns[c] = [None if _nan(v) else v for v in frame[c].tolist()]
    columns["model_set"] = sets
    for f in PROXY_FIELDS:
        values = [p.get(f) for p in proxies_of]
        columns[f"proxies.{f}"] = [
            None if v is None else (round(v) if f == "count" else float(v)) for v in values
        ]
    columns["saturated"] = [bool(summary["runs"][mesh]["saturated"]) for mesh in frame["mesh"]]
    return pa.Table.from_pydict(columns, schema=schema(task.axis_types))


def _nan(v: Any) -> bool:
    return isinstance(v, float) and v != v
