"""A sweep's points: their parameters, ids, seeds and validated scenarios.

Everything about a point is a function of the sweep's root seed and the point's own
parameters, never of the other points or their order, so a sweep can be extended,
reordered or resumed and every point keeps its id, its seed and its numbers:

- the id is a hash of the parameters;
- the seed is spawned from the root seed with a key hashed from the parameters,
  leaving out ``meshes``, so points that differ only in mesh share their random
  numbers (common random numbers, as ``meshsim run`` does across meshes);
- random sample ``i`` of an axis is drawn from a stream keyed by ``(i, axis)``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshsim.errors import Problem, ScenarioError
from meshsim.scenario import from_dict
from meshsim.sweep.documents import SweepError
from meshsim.sweep.keypath import KeyPathError, parse_path, set_path
from meshsim.sweep.spec import Choice, Integers, LogUniform, RandomAxis, Sweep, blamed_keys

SAMPLE = "sample"
"""Parameter added to points of random sweeps: the sample's index."""
_SEED_KEY = 0x5EED
_SAMPLE_KEY = 0x5A4E


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep, ready to run."""

    id: str
    params: dict[str, Any]
    """Axis path -> value (plus ``sample`` for random sweeps)."""
    seed: int
    scenario: dict[str, Any]
    """The scenario as plain data, overrides and parameters applied, validated."""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def point_id(params: dict[str, Any]) -> str:
    """A short stable id from the parameters (their order does not matter)."""
    return hashlib.sha256(canonical(params).encode("utf-8")).hexdigest()[:16]


def point_seed(root: int, params: dict[str, Any]) -> int:
    """The point's scenario seed: spawned from ``root``, keyed by the non-mesh parameters."""
    keyed = {k: v for k, v in params.items() if k != "meshes"}
    digest = hashlib.sha256(canonical(keyed).encode("utf-8")).digest()
    words = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    seq = np.random.SeedSequence(entropy=root, spawn_key=(_SEED_KEY, *words))
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def draw(root: int, sample: int, axis: str, spec: RandomAxis) -> Any:
    """Sample ``sample`` of a random axis: depends on the root, the index and the axis only."""
    seq = np.random.SeedSequence(
        entropy=root, spawn_key=(_SAMPLE_KEY, sample, zlib.crc32(axis.encode("utf-8")))
    )
    rng = np.random.Generator(np.random.PCG64(seq))
    if isinstance(spec, Choice):
        return spec.choice[int(rng.integers(len(spec.choice)))]
    if isinstance(spec, Integers):
        low, high = spec.integers
        return int(rng.integers(low, high + 1))
    if isinstance(spec, LogUniform):
        lo, hi = spec.loguniform
        return _rounded(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    a, b = spec.uniform
    return _rounded(float(rng.uniform(a, b)))


def _rounded(x: float) -> float:
    # Six significant digits: readable parameters, stable ids.
    return float(f"{x:.6g}")


def combinations(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point's parameters: the grid's product, times the random samples."""
    spec = sweep.spec
    grid = [dict(zip(spec.grid, values, strict=True))
            for values in itertools.product(*spec.grid.values())]  # fmt: skip
    if spec.random is None:
        return grid
    out: list[dict[str, Any]] = []
    for g in grid:
        for i in range(spec.random.samples):
            drawn = {axis: draw(spec.seed, i, axis, s) for axis, s in spec.random.axes.items()}
            out.append({**g, **drawn, SAMPLE: i})
    return out


def plan(sweep: Sweep) -> list[Point]:
    """Every point, each validated; a bad value is a :class:`SweepError` naming its axis."""
    points: list[Point] = []
    problems: list[Problem] = []
    for params in combinations(sweep):
        values = {k: _as_scenario_value(k, v) for k, v in params.items() if k != SAMPLE}
        values["replications"] = sweep.spec.replications
        seed = point_seed(sweep.spec.seed, params)
        values["seed"] = seed
        data = copy.deepcopy(sweep.base)
        try:
            for axis, value in values.items():
                set_path(data, parse_path(axis), value)
        except KeyPathError as exc:
            problems.append(_axis_problem(sweep, axis, params, str(exc)))
            continue
        try:
            scenario = from_dict(data)
        except ScenarioError as exc:
            for p in exc.problems:
                for axis in blamed_keys(p.field, [k for k in params if k != SAMPLE]):
                    problems.append(_axis_problem(sweep, axis, params, p.render(None)))
            continue
        points.append(Point(point_id(params), params, seed, scenario.to_dict()))
    if problems:
        raise SweepError(_unique(problems)[:20], str(sweep.path))
    return points


def _as_scenario_value(path: str, value: Any) -> Any:
    # `meshes: [none, istio]` as an axis means one mesh per point.
    return [value] if path == "meshes" and isinstance(value, str) else value


def _axis_problem(sweep: Sweep, axis: str, params: dict[str, Any], message: str) -> Problem:
    section = "grid" if axis in sweep.spec.grid else "random.axes"
    line = sweep.line(section, axis)
    value = params.get(axis)
    shown = f" = {canonical(value)}" if axis in params else ""
    message = message.removeprefix("<input>: ")
    return Problem(f"{section}.{axis}", f"the value{shown} makes a bad scenario: {message}", line)


def _unique(problems: list[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for p in problems:
        if p not in out:
            out.append(p)
    return out
