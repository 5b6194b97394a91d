"""The sweep file: a base scenario, fixed overrides, axes, replications and one seed.

```yaml
sweep: 1
name: bookinfo-load
scenario: ../bookinfo.yaml        # relative to this file
seed: 42                          # root: every point's seed is spawned from it
replications: 2                   # per point (and per mesh)
overrides:                        # applied to every point, before the axes
  duration_s: 10
  events: []
grid:                             # every combination of these values
  workloads[0].rate_rps: [100, 400, 800]
  meshes: [none, istio]
random:                           # and, for each grid point, `samples` random draws
  samples: 4
  axes:
    services[1].replicas: {integers: [1, 3]}
    workloads[0].request_bytes: {uniform: [100, 10000]}
    mesh_options.istio.workers: {choice: [1, 2, 4]}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from meshsim.errors import Problem, ScenarioError
from meshsim.scenario import load_scenario
from meshsim.sweep.documents import SweepError, key_line, read_document, validate
from meshsim.sweep.keypath import KeyPathError, parse_path

RESERVED = ("seed", "replications")
"""Scenario keys that the sweep itself sets for every point."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]


class Uniform(_Spec):
    uniform: Bounds = Field(description="[low, high): a float drawn uniformly.")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.uniform[0] < self.uniform[1]:
            raise ValueError("uniform needs [low, high] with low < high")
        return self


class LogUniform(_Spec):
    loguniform: Bounds = Field(description="[low, high): uniform in log space, low > 0.")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        low, high = self.loguniform
        if not 0 < low < high:
            raise ValueError("loguniform needs [low, high] with 0 < low < high")
        return self


class Integers(_Spec):
    integers: Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        description="[low, high]: a whole number, both ends included."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Integers:
        if not self.integers[0] <= self.integers[1]:
            raise ValueError("integers needs [low, high] with low <= high")
        return self


class Choice(_Spec):
    choice: list[Any] = Field(min_length=1, description="One of these values, equally likely.")


def _axis_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    return None if isinstance(value, dict) else type(value).__name__.lower()


RandomAxis = Annotated[
    Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[Integers, Tag("integers")]
    | Annotated[Choice, Tag("choice")],
    Discriminator(
        _axis_kind,
        custom_error_type="random_axis",
        custom_error_message="expected one of {uniform: [low, high]}, {loguniform: [low, high]}, "
        "{integers: [low, high]} or {choice: [values...]}",
    ),
]


class RandomAxes(_Spec):
    samples: Annotated[int, Field(ge=1)]
    axes: dict[str, RandomAxis] = Field(min_length=1)


class SweepSpec(_Spec):
    """A sweep file, format version 1."""

    sweep: Literal[1] = Field(description="Sweep format version.")
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    description: str = ""
    scenario: str = Field(description="The base scenario, relative to the sweep file.")
    seed: Annotated[int, Field(ge=0)] = 0
    replications: Annotated[int, Field(ge=1)] = 1
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    random: RandomAxes | None = None

    @model_validator(mode="after")
    def _has_axes(self) -> SweepSpec:
        if not self.grid and self.random is None:
            raise ValueError("a sweep needs axes: 'grid', 'random' or both")
        return self

    def axis_paths(self) -> list[str]:
        paths = list(self.grid)
        if self.random is not None:
            paths.extend(self.random.axes)
        return paths


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file with its base scenario (overrides applied)."""

    spec: SweepSpec
    path: Path
    base: dict[str, Any]
    """The base scenario as plain data, with the sweep's overrides applied."""
    lines: dict[tuple[str, ...], int | None]
    """Lines of the file's keys, by ``(section, key)``, for errors found later."""

    def line(self, section: str, key: str) -> int | None:
        return self.lines.get((section, key))


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file and its base scenario; raises :class:`SweepError`."""
    from meshsim.scenario import from_dict
    from meshsim.sweep.keypath import editable, with_values

    path = Path(path)
    data, node = read_document(path, SweepError)
    spec = validate(SweepSpec, data, node, path, SweepError)
    lines: dict[tuple[str, ...], int | None] = {}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    sections: list[tuple[str, tuple[str | int, ...], list[str]]] = [
        ("overrides", ("overrides",), list(spec.overrides)),
        ("grid", ("grid",), list(spec.grid)),
    ]
    if spec.random is not None:
        sections.append(("random.axes", ("random", "axes"), list(spec.random.axes)))
    for section, loc, keys in sections:
        for key in keys:
            line = key_line(data, node, (*loc, key))
            lines[(section, key)] = line
            field = f"{section}.{key}"
            try:
                parts = parse_path(key)
            except KeyPathError as exc:
                problems.append(Problem(field, str(exc), line=line))
                continue
            if parts[0] in RESERVED:
                problems.append(
                    Problem(field, f"'{parts[0]}' is set by the sweep itself", line=line)
                )
            if section != "overrides":
                if key in seen:
                    problems.append(Problem(field, f"also an axis in {seen[key]}", line=line))
                seen[key] = section
                if section == "grid":
                    problems.extend(_duplicates(field, spec.grid[key], line))
    if problems:
        raise SweepError(problems, str(path))

    scenario_path = (path.parent / spec.scenario).resolve()
    try:
        base = load_scenario(scenario_path)
    except ScenarioError as exc:
        where = key_line(data, node, ("scenario",))
        raise SweepError(
            [Problem("scenario", f"the base scenario is invalid:\n    {exc}", line=where)],
            str(path),
        ) from None
    try:
        data_with_overrides = with_values(editable(base), spec.overrides)
        from_dict(data_with_overrides)
    except KeyPathError as exc:
        raise SweepError([Problem("overrides", str(exc))], str(path)) from None
    except ScenarioError as exc:
        found = [
            Problem(f"overrides.{key}", p.message, line=lines[("overrides", key)])
            for p in exc.problems
            for key in blamed_keys(p.field, list(spec.overrides))
        ]
        raise SweepError(found or [Problem("overrides", str(exc))], str(path)) from None
    return Sweep(spec=spec, path=path, base=data_with_overrides, lines=lines)


def _duplicates(field: str, values: list[Any], line: int | None) -> list[Problem]:
    canon = [yaml.safe_dump(v, sort_keys=True) for v in values]
    dupes = sorted({values[i] if not isinstance(values[i], dict | list) else canon[i]
                    for i, c in enumerate(canon) if canon.index(c) != i}, key=str)  # fmt: skip
    if not dupes:
        return []
    return [Problem(field, f"repeats the value(s) {', '.join(map(str, dupes))}", line=line)]


def blamed_keys(field: str, keys: list[str]) -> list[str]:
    """The keys whose path is, or leads to, a scenario problem's field (all, when none)."""
    hit = [k for k in keys if field == k or field.startswith((f"{k}.", f"{k}["))]
    return hit or keys
