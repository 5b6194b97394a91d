"""Bench suites: which scenarios (and Python benchmarks) to run, and what to track.

```yaml
bench: 1
name: model-outputs
replications: 3                  # at least 3: the noise rule needs intervals
tolerance_pct: 5                 # a change counts only beyond this (and outside the noise)
baseline: ../baselines/model-outputs.json   # relative to this file
metrics:                         # paths into a mesh's summary.json block; '*' matches any key
  - workloads.*.latency_ms.p99
  - proxies.cpu_vcpu_per_1000rps
  - success_rate                 # a bare name is a workload field: workloads.*.success_rate
  - {metric: workloads.*.rps, better: higher, tolerance_pct: 2}
scenarios:
  - path: ../../scenarios/bookinfo.yaml
    id: bookinfo                 # default: the scenario's name
    meshes: [none, istio]        # default: the scenario's meshes
    overrides: {duration_s: 6, events: []}
benchmarks:                      # Python functions returning {metric: value}, once per replication
  - id: sim-speed
    script: ../sim_throughput.py
    function: measure
    args: {duration_s: 10}
    metrics: [{metric: meshsim_over_bare_ratio, better: higher, tolerance_pct: 25}]
```

Higher is better for success rates, rates and ratios; lower is better for
everything else, unless a metric says ``better:``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshsim.bench.noise import Better
from meshsim.errors import Problem, ScenarioError
from meshsim.scenario import Scenario, from_dict, load_scenario
from meshsim.sweep.documents import SuiteError, key_line, line_of, read_document, validate
from meshsim.sweep.keypath import KeyPathError, editable, parse_path, with_values

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$", max_length=63)]
_HIGHER = ("success_rate", "rps", "achieved_rps", "ratio")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Metric(_Spec):
    metric: str
    better: Literal["lower", "higher"] | None = None
    tolerance_pct: Annotated[float, Field(ge=0)] | None = None

    def direction(self) -> Better:
        if self.better is not None:
            return self.better
        last = self.metric.rsplit(".", 1)[-1]
        return "higher" if any(last == h or last.endswith(f"_{h}") for h in _HIGHER) else "lower"


def _metric(value: Any) -> Any:
    return {"metric": value} if isinstance(value, str) else value


MetricList = list[Metric]


class ScenarioEntry(_Spec):
    path: str
    id: Id | None = None
    meshes: list[str] | None = Field(None, min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    metrics: MetricList | None = Field(None, description="Instead of the suite's metrics.")

    @field_validator("metrics", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_metric(v) for v in value] if isinstance(value, list) else value


class BenchmarkEntry(_Spec):
    id: Id
    script: str
    function: str = "measure"
    args: dict[str, Any] = Field(default_factory=dict)
    metrics: MetricList = Field(min_length=1)

    @field_validator("metrics", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_metric(v) for v in value] if isinstance(value, list) else value


class SuiteSpec(_Spec):
    bench: Literal[1] = Field(description="Suite format version.")
    name: Id
    description: str = ""
    replications: Annotated[int, Field(ge=3)] = 3
    tolerance_pct: Annotated[float, Field(ge=0)] = 5.0
    baseline: str | None = None
    metrics: MetricList = Field(default_factory=list)
    scenarios: list[ScenarioEntry] = Field(default_factory=list)
    benchmarks: list[BenchmarkEntry] = Field(default_factory=list)

    @field_validator("metrics", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_metric(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _has_entries(self) -> SuiteSpec:
        if not self.scenarios and not self.benchmarks:
            raise ValueError("a suite needs 'scenarios', 'benchmarks' or both")
        return self


@dataclass(frozen=True)
class ScenarioCase:
    id: str
    scenario: Scenario
    meshes: list[str]
    metrics: list[Metric]


@dataclass(frozen=True)
class BenchmarkCase:
    id: str
    script: Path
    function: str
    args: dict[str, Any]
    metrics: list[Metric]


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    scenarios: list[ScenarioCase]
    benchmarks: list[BenchmarkCase]

    @property
    def default_baseline(self) -> Path:
        if self.spec.baseline is not None:
            return Path(os.path.normpath(self.path.parent / self.spec.baseline))
        return self.path.with_name(f"{self.path.stem}.baseline.json")

    def sha256(self) -> str:
        """A hash of what is measured, so a baseline from another suite is noticed."""
        key = {
            "replications": self.spec.replications,
            "scenarios": [(c.id, c.scenario.to_dict(), c.meshes) for c in self.scenarios],
            "benchmarks": [(b.id, b.function, b.args) for b in self.benchmarks],
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def ids(self) -> list[str]:
        return [c.id for c in self.scenarios] + [b.id for b in self.benchmarks]


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite and its scenarios; raises :class:`SuiteError`."""
    path = Path(path)
    data, node = read_document(path, SuiteError)
    spec = validate(SuiteSpec, data, node, path, SuiteError)
    problems: list[Problem] = []
    cases: list[ScenarioCase] = []
    for i, entry in enumerate(spec.scenarios):
        where = ("scenarios", i)
        case = _scenario_case(path, spec, entry, where, data, node, problems)
        if case is not None:
            cases.append(case)
    benchmarks: list[BenchmarkCase] = []
    for i, b in enumerate(spec.benchmarks):
        script = (path.parent / b.script).resolve()
        if not script.is_file():
            line = line_of(data, node, ("benchmarks", i, "script"))
            problems.append(Problem(f"benchmarks[{i}].script", f"no such file: {script}", line))
        benchmarks.append(BenchmarkCase(b.id, script, b.function, b.args, b.metrics))
    for i, c in enumerate(cases):
        if not c.metrics:
            line = line_of(data, node, ("scenarios", i))
            problems.append(Problem(f"scenarios[{i}]", "no metrics (suite or entry)", line))
    ids = [c.id for c in cases] + [b.id for b in benchmarks]
    for dup in sorted({x for x in ids if ids.count(x) > 1}):
        problems.append(Problem("", f"id '{dup}' is used twice; give entries distinct 'id's"))
    if problems:
        raise SuiteError(problems, str(path))
    return Suite(spec, path, cases, benchmarks)


def _scenario_case(
    path: Path,
    spec: SuiteSpec,
    entry: ScenarioEntry,
    where: tuple[str, int],
    data: Any,
    node: Any,
    problems: list[Problem],
) -> ScenarioCase | None:
    field = f"{where[0]}[{where[1]}]"
    try:
        base = load_scenario((path.parent / entry.path).resolve())
    except ScenarioError as exc:
        line = line_of(data, node, (*where, "path"))
        problems.append(Problem(f"{field}.path", f"invalid scenario:\n    {exc}", line))
        return None
    values: dict[str, Any] = dict(entry.overrides)
    values["replications"] = spec.replications
    if entry.meshes is not None:
        values["meshes"] = entry.meshes
    try:
        for key in entry.overrides:
            parse_path(key)
        scenario = from_dict(with_values(editable(base), values))
    except KeyPathError as exc:
        line = line_of(data, node, (*where, "overrides"))
        problems.append(Problem(f"{field}.overrides", str(exc), line))
        return None
    except ScenarioError as exc:
        for p in exc.problems:
            blamed = next((k for k in entry.overrides if p.field.startswith(k)), None)
            if blamed is not None:
                line = key_line(data, node, (*where, "overrides", blamed))
                at = f"{field}.overrides.{blamed}"
            else:
                line, at = line_of(data, node, where), field
            message = p.render(None).removeprefix("<input>: ")
            problems.append(Problem(at, f"the scenario it makes is invalid: {message}", line))
        return None
    metrics = entry.metrics if entry.metrics is not None else spec.metrics
    return ScenarioCase(entry.id or scenario.name, scenario, list(scenario.meshes), metrics)
