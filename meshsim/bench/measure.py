"""Running a suite: one value of every tracked metric per replication.

A scenario entry runs once with the suite's replications; each replication's
numbers come from the same summary code as ``summary.json`` (a summary of that
replication alone), so any field of a mesh's block can be tracked. A benchmark
entry calls its Python function once per replication.

Metric keys are ``<entry id>/<mesh>/<path>`` for scenarios and ``<entry id>/<name>``
for benchmarks.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshsim.bench.noise import Better
from meshsim.bench.suite import BenchmarkCase, Metric, ScenarioCase, Suite
from meshsim.errors import MeshsimError

Progress = Callable[[str], None]
"""Called with the id of each entry as it starts."""


@dataclass
class Measured:
    values: list[float]
    better: Better
    tolerance_pct: float | None


def expand(summary: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """The concrete paths of ``metric`` in a mesh's summary block, with their values.

    ``*`` matches every key at its level; a bare name that is not a key of the block
    is a workload field (``success_rate`` -> ``workloads.*.success_rate``).
    """
    parts = metric.split(".")
    if len(parts) == 1 and parts[0] not in summary:
        parts = ["workloads", "*", parts[0]]
    found: dict[str, Any] = {}

    def walk(node: Any, i: int, prefix: list[str]) -> None:
        if i == len(parts):
            found[".".join(prefix)] = node
            return
        if not isinstance(node, dict):
            return
        keys = list(node) if parts[i] == "*" else [parts[i]] if parts[i] in node else []
        for key in keys:
            walk(node[key], i + 1, [*prefix, key])

    walk(summary, 0, [])
    return found


def measure_suite(
    suite: Suite, *, only: list[str] | None = None, progress: Progress | None = None
) -> dict[str, Measured]:
    out: dict[str, Measured] = {}
    for case in suite.scenarios:
        if only is None or case.id in only:
            if progress is not None:
                progress(case.id)
            out.update(_scenario(case))
    for bench in suite.benchmarks:
        if only is None or bench.id in only:
            if progress is not None:
                progress(bench.id)
            out.update(_benchmark(bench, suite.spec.replications))
    return out


def _scenario(case: ScenarioCase) -> dict[str, Measured]:
    from meshsim.api import run_scenario
    from meshsim.results.run import MeshResult
    from meshsim.results.summary import mesh_summary

    result = run_scenario(case.scenario, meshes=case.meshes)
    out: dict[str, Measured] = {}
    for mesh, mr in result.meshes.items():
        blocks = [mesh_summary(MeshResult(mesh, [rep])) for rep in mr.replications]
        for metric in case.metrics:
            for path in _paths(blocks, metric):
                values = [expand(b, path).get(path) for b in blocks]
                _add(out, f"{case.id}/{mesh}/{path}", values, metric)
    return out


def _paths(blocks: Sequence[Mapping[str, Any]], metric: Metric) -> list[str]:
    paths: list[str] = []
    for b in blocks:
        paths.extend(p for p in expand(b, metric.metric) if p not in paths)
    return paths


def _add(out: dict[str, Measured], key: str, values: list[Any], metric: Metric) -> None:
    clean = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    clean = [v for v in clean if not math.isnan(v)]
    if len(clean) == len(values):
        out[key] = Measured(clean, metric.direction(), metric.tolerance_pct)


def _benchmark(bench: BenchmarkCase, replications: int) -> dict[str, Measured]:
    spec = importlib.util.spec_from_file_location(f"meshsim_bench_{bench.id}", bench.script)
    if spec is None or spec.loader is None:
        raise MeshsimError(f"benchmark {bench.id}: cannot import {bench.script}")
    module = importlib.util.module_from_spec(spec)
    # The script's folder goes on the path, as when it is run as a script.
    sys.path.insert(0, str(bench.script.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench.script.parent))
    function = getattr(module, bench.function, None)
    if not callable(function):
        raise MeshsimError(f"benchmark {bench.id}: {bench.script} has no {bench.function}()")
    runs: list[dict[str, Any]] = [function(**bench.args) for _ in range(replications)]
    out: dict[str, Measured] = {}
    for metric in bench.metrics:
        values = [r.get(metric.metric) for r in runs]
        if any(v is None for v in values):
            raise MeshsimError(f"benchmark {bench.id}: {bench.function}() gave no {metric.metric}")
        _add(out, f"{bench.id}/{metric.metric}", values, metric)
    return out
