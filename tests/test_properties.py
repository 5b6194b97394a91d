"""Property tests (docs/DESIGN.md, testing tier 2): request conservation, ordered
timestamps, scenario round trips and a loader fuzzer."""

from __future__ import annotations

import copy
import math
from typing import Any

import simpy
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsim.errors import ScenarioError
from meshsim.scenario import from_dict, loads
from meshsim.scenario.yaml_input import dump_yaml
from meshsim.sim.engine import Simulation

SETTINGS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- generators


@st.composite
def distributions(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["number", "constant", "exponential", "lognormal", "empirical"]))
    mean = draw(st.floats(0.05, 3.0))
    if kind == "number":
        return mean
    if kind == "lognormal":
        return {"dist": "lognormal", "mean": mean, "cv": draw(st.floats(0.0, 2.0))}
    if kind == "empirical":
        return {"dist": "empirical", "values": draw(st.lists(st.floats(0.0, 3.0), min_size=1,
                                                              max_size=4))}  # fmt: skip
    return {"dist": kind, "mean": mean}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Small valid scenarios: an acyclic call graph (services call later ones), open and
    closed workloads, and a timeline of kills, errors, slow-downs and scaling."""
    duration = draw(st.sampled_from([1.0, 1.5, 2.0]))
    n = draw(st.integers(1, 4))
    names = [f"s{i}" for i in range(n)]
    services = []
    for i, name in enumerate(names):
        svc: dict[str, Any] = {
            "name": name,
            "cpu_ms": draw(distributions()),
            "concurrency": draw(st.integers(1, 4)),
        }
        later = names[i + 1 :]
        if later:
            callees = draw(st.lists(st.sampled_from(later), unique=True, max_size=len(later)))
            svc["calls"] = [
                {
                    "service": c,
                    "parallel": draw(st.booleans()),
                    "probability": draw(st.sampled_from([1.0, 0.5])),
                    "required": draw(st.booleans()),
                }
                for c in callees
            ]
        if draw(st.booleans()):
            svc["versions"] = [
                {"name": "v1", "replicas": draw(st.integers(0, 2))},
                {"name": "v2", "replicas": draw(st.integers(1, 2))},
            ]
        else:
            svc["replicas"] = draw(st.integers(1, 3))
        services.append(svc)
    workloads = []
    for j in range(draw(st.integers(1, 2))):
        arrival = draw(st.sampled_from(["poisson", "constant", "closed"]))
        wl: dict[str, Any] = {"name": f"w{j}", "target": draw(st.sampled_from(names)),
                              "arrival": arrival}  # fmt: skip
        if arrival == "closed":
            wl["clients"] = draw(st.integers(1, 3))
            wl["think_time_ms"] = draw(st.floats(0.5, 5.0))
        elif draw(st.booleans()):
            wl["rate_rps"] = draw(st.floats(20.0, 400.0))
        else:
            wl["phases"] = [
                {"at_s": 0.0, "rate_rps": draw(st.floats(0.0, 200.0))},
                {"at_s": duration / 2, "rate_rps": draw(st.floats(10.0, 400.0))},
            ]
        if draw(st.booleans()):
            wl["connections"] = draw(st.integers(1, 4))
        workloads.append(wl)
    events = []
    targets = names + [f"{s['name']}-v2" for s in services if "versions" in s]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.floats(0.0, duration * 0.95))
        target = draw(st.sampled_from(targets))
        action = draw(st.sampled_from(["kill", "errors", "slow", "scale"]))
        event: dict[str, Any] = {"at_s": at, "action": action, "target": target}
        if action == "kill":
            event["count"] = draw(st.integers(1, 2))
        elif action == "errors":
            event["rate"] = draw(st.floats(0.0, 1.0))
            event["duration_s"] = draw(st.floats(0.1, 1.0))
        elif action == "slow":
            event["factor"] = draw(st.floats(0.5, 5.0))
        else:
            event["replicas"] = draw(st.integers(0, 3))
        events.append(event)
    return {
        "meshsim": 1,
        "name": "prop",
        "seed": draw(st.integers(0, 2**32)),
        "duration_s": duration,
        "warmup_s": draw(st.sampled_from([0.0, 0.2, 0.5])),
        "cluster": {"nodes": draw(st.integers(1, 3)), "cores_per_node": draw(st.integers(1, 4))},
        "services": services,
        "workloads": workloads,
        "events": events,
    }


# --------------------------------------------------------------------------- conservation


def check_conservation(sim: Simulation) -> None:
    for w in sim.workloads:
        assert w.sent == w.completed + w.in_flight, (w.spec.name, w.sent, w.completed)
        assert w.in_flight >= 0


@SETTINGS
@given(data=scenarios(), stops=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_request_conservation(data: dict[str, Any], stops: list[float]) -> None:
    """For every workload, at any time: sent == completed + in flight; after the run and
    its drain nothing is left in flight and every completion was recorded."""
    scenario = from_dict(data)
    sim = Simulation(scenario, "none", scenario.seed, keep_records=True)
    checked: list[float] = []

    def checker(env: simpy.Environment) -> Any:
        for t in sorted(s * scenario.duration_s for s in stops):
            yield env.timeout(t - env.now)
            check_conservation(sim)
            checked.append(env.now)

    sim.env.process(checker(sim.env))
    sim.run()
    check_conservation(sim)
    assert len(checked) == len(stops)
    assert sim.in_flight() == 0
    records = sim.recorder.records or []
    for w in sim.workloads:
        done = [r for r in records if r.kind == "workload" and r.workload == w.spec.name]
        assert len(done) == w.completed == w.sent
        in_window = [r for r in done if sim.warmup_s <= r.started_at < sim.end_s]
        assert len(in_window) == w.sent_in_window
        stats = sim.recorder.workloads.get(w.spec.name)
        assert (stats.requests if stats else 0) == w.sent_in_window


# --------------------------------------------------------------------------- timestamps


@SETTINGS
@given(data=scenarios())
def test_timestamps_are_ordered_and_nested(data: dict[str, Any]) -> None:
    """Every record starts before it ends; every service record lies within an edge
    record of the same request that calls that service; every edge lies within its
    request's workload record."""
    scenario = from_dict(data)
    sim = Simulation(scenario, "none", scenario.seed, keep_records=True)
    sim.run()
    records = sim.recorder.records or []
    by_request: dict[int, list[Any]] = {}
    for r in records:
        assert r.started_at <= r.finished_at, r
        by_request.setdefault(r.request_id, []).append(r)
    for rid, recs in by_request.items():
        (top,) = [r for r in recs if r.kind == "workload"]
        for r in recs:
            assert top.started_at <= r.started_at <= r.finished_at <= top.finished_at, (rid, r)
        edges = [r for r in recs if r.kind == "edge"]
        for svc in (r for r in recs if r.kind == "service"):
            assert any(
                e.subject.endswith(f"->{svc.subject}")
                and e.started_at <= svc.started_at
                and svc.finished_at <= e.finished_at
                for e in edges
            ), (rid, svc)


# --------------------------------------------------------------------------- round trips


@SETTINGS
@given(data=scenarios(), description=st.text(max_size=20), slo=st.booleans())
def test_scenario_round_trip(data: dict[str, Any], description: str, slo: bool) -> None:
    data = {**data, "description": description}
    if slo:
        data["slo"] = [{"workload": "w0", "p99_ms": 10.0, "success_rate": 0.99}]
    scenario = from_dict(data)
    again = from_dict(scenario.to_dict())
    assert again == scenario
    # Through YAML text too, as `meshsim run` saves it in the run directory.
    assert loads(dump_yaml(scenario.to_dict(), sort_keys=False)) == scenario


def test_a_saved_scenario_keeps_a_string_that_reads_as_a_number_elsewhere() -> None:
    """'0E0' is a YAML 1.2 float (the scenario loader reads 1e3 as a number) but a string to
    PyYAML's 1.1 dumper, which wrote it bare: the saved scenario then failed to load."""
    data = {**VALID_DATA, "description": "0E0"}
    text = dump_yaml(from_dict(data).to_dict(), sort_keys=False)
    assert "description: '0E0'" in text
    assert loads(text).description == "0E0"
    assert "description: 0E0" in yaml.safe_dump({"description": "0E0"})  # the old writer


# --------------------------------------------------------------------------- loader fuzzer

VALID = """\
meshsim: 1
name: fuzz
duration_s: 10
warmup_s: 1
cluster: {nodes: 2, cores_per_node: 2, network: {same_node_us: 25}}
services:
  - name: front
    cpu_ms: {dist: lognormal, mean: 2.0, cv: 0.5}
    calls: [{service: back, probability: 0.5}]
  - name: back
    versions: [{name: v1, replicas: 1}, {name: v2, replicas: 2}]
workloads:
  - {name: users, target: front, rate_rps: 100, connections: 4}
traffic:
  - {service: back, split: {v1: 50, v2: 50}, timeout_ms: 100}
events:
  - {at_s: 2, action: kill, target: back-v2}
slo:
  - {workload: users, p99_ms: 50}
"""
VALID_DATA = yaml.safe_load(VALID)

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)  # fmt: skip


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(VALID_DATA)


def assert_clean(text: str) -> ScenarioError | None:
    """Load ``text``: either a Scenario or a ScenarioError whose every line renders."""
    error: ScenarioError | None = None
    try:
        loads(text, "fuzz.yaml")
    except ScenarioError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith("invalid scenario fuzz.yaml (")
        assert error.problems
    return error


@settings(deadline=None, max_examples=150)
@given(path=st.sampled_from(ALL_PATHS), value=values, delete=st.booleans())
def test_loader_fuzz_mutated_values(path: tuple[Any, ...], value: Any, delete: bool) -> None:
    """Replacing or deleting any value gives a scenario or a ScenarioError, never another
    exception; each problem of a mapping document names a line."""
    data = copy.deepcopy(VALID_DATA)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    text = yaml.safe_dump(data, sort_keys=False)
    err = assert_clean(text)
    if err is not None:
        for problem in err.problems:
            assert problem.line is not None, (problem, text)
            assert f"fuzz.yaml:{problem.line}" in str(err)


@settings(deadline=None, max_examples=150)
@given(
    cut=st.integers(0, len(VALID)),
    length=st.integers(0, 12),
    insert=st.text(alphabet=st.sampled_from(list("{}[]:,-'\"&*!|>%@ \n\t#?0a")), max_size=6),
)
def test_loader_fuzz_malformed_yaml(cut: int, length: int, insert: str) -> None:
    """Splicing junk into the text gives a scenario or a ScenarioError, never another
    exception; when the text is not valid YAML, the error names a line."""
    text = VALID[:cut] + insert + VALID[cut + length :]
    err = assert_clean(text)
    try:
        # The loader reads with libyaml's parser (a tab inside a plain scalar is valid YAML
        # there, an error in PyYAML's pure-Python scanner): the oracle uses the same one.
        yaml.load(text, Loader=yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
        parses = True
    except yaml.YAMLError:
        parses = False
    if not parses:
        assert err is not None
        (problem,) = err.problems
        assert problem.line is not None
        assert f"fuzz.yaml:{problem.line}:" in str(err)


@settings(deadline=None, max_examples=100)
@given(text=st.text(max_size=60))
def test_loader_fuzz_arbitrary_text(text: str) -> None:
    """Any text at all: a ScenarioError (it is never a valid scenario), nothing else."""
    assert assert_clean(text) is not None


def test_loader_rejects_non_finite_numbers_cleanly() -> None:
    for bad in (".nan", ".inf", "-.inf"):
        err = assert_clean(VALID.replace("rate_rps: 100", f"rate_rps: {bad}"))
        assert err is not None
        assert any(p.field == "workloads[0].rate_rps" for p in err.problems), (bad, str(err))
    assert math.isfinite(100.0)


def test_scaling_a_version_starts_its_pods_in_its_own_service() -> None:
    """Two services with versions equal as values (same names and specs, no pods yet): a
    scale event on the second must start its pods there, not in the first (Hypothesis
    found them in the first: VersionRuntime compared by value)."""
    versions = [{"name": "v1", "replicas": 0}, {"name": "v2", "replicas": 1}]
    scenario = from_dict({
        "meshsim": 1, "name": "scale", "seed": 0, "duration_s": 1.0, "warmup_s": 0.0,
        "cluster": {"nodes": 1, "cores_per_node": 1},
        "services": [{"name": "s0", "cpu_ms": 1.0, "versions": versions},
                     {"name": "s2", "cpu_ms": 1.0, "versions": versions}],
        "workloads": [{"name": "w0", "target": "s2", "rate_rps": 10.0}],
        "events": [{"at_s": 0.0, "action": "scale", "target": "s2", "replicas": 2}],
    })  # fmt: skip
    sim = Simulation(scenario, "none", scenario.seed, keep_records=True)
    sim.run()
    pods = {
        name: sorted(len(v.pods) for v in s.versions.values()) for name, s in sim.services.items()
    }
    assert pods == {"s0": [0, 1], "s2": [2, 2]}
    served = {r.subject for r in sim.recorder.records or [] if r.kind == "service"}
    assert served == {"s2"}
