"""Scenario errors: exact messages that name the file, the line, the field path and what
was expected (DESIGN principle 7). Each test writes a real file and loads it, so the
file name in the message is the path a person would see."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsim.errors import Problem, ScenarioError
from meshsim.scenario import load_scenario

BASE = """\
meshsim: 1
name: shop
duration_s: 10
warmup_s: 1
services:
  - name: front
    cpu_ms: 1
    calls:
      - {service: back}
  - name: back
    cpu_ms: 1
workloads:
  - name: users
    target: front
    rate_rps: 10
"""


def load_error(tmp_path: Path, text: str) -> tuple[str, ScenarioError]:
    path = tmp_path / "shop.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(path), info.value


def edited(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def test_the_base_scenario_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(BASE, encoding="utf-8")
    scenario = load_scenario(path)
    assert [s.name for s in scenario.services] == ["front", "back"]


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    text = edited("    cpu_ms: 1\n    calls", "    cpu_msx: 1\n    calls")
    path, err = load_error(tmp_path, text)
    assert err.problems == [
        Problem("services[0].cpu_msx", "unknown key 'cpu_msx'; did you mean 'cpu_ms'?", line=7)
    ]
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:7: services[0].cpu_msx: unknown key 'cpu_msx'; did you mean 'cpu_ms'?"
    )


def test_unknown_top_level_key_also_reports_the_missing_one(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("duration_s: 10", "duraton_s: 10"))
    assert str(err) == (
        f"invalid scenario {path} (2 problems):\n"
        f"  {path}:1: duration_s: required key 'duration_s' is missing\n"
        f"  {path}:3: duraton_s: unknown key 'duraton_s'; did you mean 'duration_s'?"
    )


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("    rate_rps: 10", "    rate_rps: 10\n    zzz: 1"))
    (problem,) = err.problems
    assert problem.line == 16
    assert problem.field == "workloads[0].zzz"
    assert problem.message.startswith("unknown key 'zzz' (expected one of: name, target, arrival,")
    assert f"{path}:16: workloads[0].zzz: unknown key 'zzz'" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("rate_rps: 10", "rate_rps: fast", 15, "workloads[0].rate_rps",
         "expected a number, got 'fast' (str)"),
        ("name: shop", "name: shop\nseed: 1.5", 3, "seed",
         "expected a whole number, got 1.5 (float)"),
        ("    cpu_ms: 1\n    calls:", "    cpu_ms: 1\n    concurrency: many\n    calls:",
         8, "services[0].concurrency", "expected a whole number, got 'many' (str)"),
        ("workloads:\n", "meshes: istio\nworkloads:\n", 12, "meshes",
         "expected a list, got 'istio' (str)"),
        ("rate_rps: 10", "rate_rps: 10\n    arrival: bursty", 16, "workloads[0].arrival",
         "expected one of 'poisson', 'constant' or 'closed' (got 'bursty')"),
    ],
)  # fmt: skip
def test_wrong_types(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    path, err = load_error(tmp_path, edited(old, new))
    assert err.problems == [Problem(field, message, line=line)]
    assert f"{path}:{line}: {field}: {message}" in str(err)


def test_reference_to_a_missing_service_suggests_the_closest(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("{service: back}", "{service: bak}"))
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:9: services[0].calls[0].service: no service named 'bak'; "
        "did you mean 'back'? (known: back, front)"
    )


def test_workload_target_missing(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("target: front", "target: frnt"))
    assert err.problems == [
        Problem(
            "workloads[0].target",
            "no service named 'frnt'; did you mean 'front'? (known: back, front)",
            line=14,
        )
    ]
    assert f"{path}:14: workloads[0].target:" in str(err)


def test_call_cycle(tmp_path: Path) -> None:
    text = edited("  - name: back\n    cpu_ms: 1\n", "  - name: back\n    cpu_ms: 1\n    calls:\n"
                  "      - {service: front}\n")  # fmt: skip
    path, err = load_error(tmp_path, text)
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:9: services[0].calls: calls form a cycle, which would never finish: "
        "front -> back -> front"
    )


def test_self_call_is_a_cycle(tmp_path: Path) -> None:
    _path, err = load_error(tmp_path, edited("{service: back}", "{service: front}"))
    assert err.problems == [
        Problem(
            "services[0].calls",
            "calls form a cycle, which would never finish: front -> front",
            line=9,
        )
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("rate_rps: 10", "rate_rps: -5", 15, "workloads[0].rate_rps",
         "input should be greater than 0 (got -5)"),
        ("rate_rps: 10", "rate_rps: 0", 15, "workloads[0].rate_rps",
         "input should be greater than 0 (got 0)"),
        ("duration_s: 10", "duration_s: -1", 3, "duration_s",
         "input should be greater than 0 (got -1)"),
        ("    cpu_ms: 1\n    calls:", "    cpu_ms: -2\n    calls:", 7,
         "services[0].cpu_ms", "input should be greater than 0 (got -2)"),
    ],
)  # fmt: skip
def test_negative_values(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    path, err = load_error(tmp_path, edited(old, new))
    assert err.problems == [Problem(field, message, line=line)]
    assert f"{path}:{line}: {field}: {message}" in str(err)


@pytest.mark.parametrize("warmup", ["10", "12.5"])
def test_warmup_not_shorter_than_duration(tmp_path: Path, warmup: str) -> None:
    path, err = load_error(tmp_path, edited("warmup_s: 1", f"warmup_s: {warmup}"))
    shown = f"{float(warmup)}"
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:4: warmup_s: the warm-up ({shown} s) must be shorter than the run "
        "(duration_s 10.0 s)"
    )


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("warmup_s: 1\n", "warmup_s: 1\nwarmup_s: 2\n"))
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:5:1: warmup_s: not valid YAML: duplicate key 'warmup_s' (first given on line 4)"
    )


def test_duplicate_nested_key_names_its_field_path(tmp_path: Path) -> None:
    """A duplicate deep in the document names the full path, not only the key."""
    text = edited("    rate_rps: 10", "    rate_rps: 10\n    rate_rps: 20")
    path, err = load_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.line == 16
    assert problem.field == "workloads[0].rate_rps"
    assert "duplicate key 'rate_rps' (first given on line 15)" in problem.message
    assert f"{path}:16:" in str(err)
    assert "workloads[0].rate_rps" in str(err)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path, err = load_error(tmp_path, text)
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}: expected a mapping of scenario keys (meshsim: 1, name, ...), got an empty file"
    )


def test_not_a_mapping(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "- just\n- a list\n")
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}: expected a mapping of scenario keys (meshsim: 1, name, ...), got a list"
    )


def test_event_after_the_end(tmp_path: Path) -> None:
    text = BASE + "events:\n  - at_s: 12\n    action: kill\n    target: back\n"
    path, err = load_error(tmp_path, text)
    assert str(err) == (
        f"invalid scenario {path} (1 problem):\n"
        f"  {path}:17: events[0].at_s: at 12.0 s the event falls after the run ends "
        "(duration_s is 10.0)"
    )


def test_event_target_suggests_version(tmp_path: Path) -> None:
    text = BASE + "events:\n  - {at_s: 2, action: kill, target: bck}\n"
    path, err = load_error(tmp_path, text)
    assert err.problems == [
        Problem(
            "events[0].target",
            "no service or version named 'bck'; did you mean 'back'? (known: back, front)",
            line=17,
        )
    ]
    assert f"{path}:17: events[0].target:" in str(err)


def test_unknown_event_action_suggests_the_closest(tmp_path: Path) -> None:
    text = BASE + "events:\n  - {at_s: 2, action: kil, target: back}\n"
    _path, err = load_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.line == 17
    assert problem.field == "events[0]"
    assert "'kil'" in problem.message
    assert "did you mean 'kill'?" in problem.message


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, edited("    target: front", "    target: front: x"))
    (problem,) = err.problems
    assert problem.message.startswith("not valid YAML: ")
    assert (problem.line, problem.column) == (14, 18)
    assert f"{path}:14:18: not valid YAML" in str(err)


def test_several_problems_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = edited("rate_rps: 10", "rate_rps: -1").replace("{service: back}", "{service: nope}")
    _path, err = load_error(tmp_path, text)
    # Value errors are found before references are checked; the reference problem
    # appears once the values are fixed.
    assert [p.line for p in err.problems] == [15]
    path2, err2 = load_error(tmp_path, edited("{service: back}", "{service: nope}").replace(
        "target: front", "target: nope"))  # fmt: skip
    assert [(p.line, p.field) for p in err2.problems] == [
        (9, "services[0].calls[0].service"),
        (14, "workloads[0].target"),
    ]
    assert str(err2).startswith(f"invalid scenario {path2} (2 problems):\n")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(missing)
    assert str(info.value) == f"invalid scenario {missing} (1 problem):\n  {missing}: no such file"


# --------------------------------------------------------------------------- hostile YAML
# Each input below once gave a traceback or never finished (issue 12, item 3).


def billion_laughs(levels: int) -> str:
    """Anchors a..: each a list of nine aliases of the one before; 9^levels values."""
    names = "abcdefghij"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        aliases = ", ".join([f"*{names[i - 1]}"] * 9)
        lines.append(f"{names[i]}: &{names[i]} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_deep_flow_nesting_is_refused_at_its_line(tmp_path: Path) -> None:
    text = BASE + "description: " + "[" * 600 + "]" * 600 + "\n"
    path, err = load_error(tmp_path, text)
    # The document's mapping is level 1: the 64th '[' (column 14 + 63) is level 65.
    assert err.problems == [
        Problem("", "not valid YAML: nested more than 64 levels deep (the limit)", line=16,
                column=14 + 63)
    ]  # fmt: skip
    assert f"{path}:16:77: not valid YAML: nested more than 64 levels deep" in str(err)


def test_deep_block_nesting_is_refused_at_its_line(tmp_path: Path) -> None:
    text = BASE + "x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 600))
    _, err = load_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.message == "not valid YAML: nested more than 64 levels deep (the limit)"
    assert problem.line == 16 + 63


def test_complex_key_is_refused_at_its_line(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, BASE + "? [a, b]\n: 1\n")
    assert err.problems == [
        Problem("", "not valid YAML: a key must be a plain value such as a name, not a list",
                line=16, column=3)
    ]  # fmt: skip
    assert f"{path}:16:3: not valid YAML: a key must be a plain value" in str(err)


def test_complex_key_in_a_flow_mapping_names_its_field(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, edited("rate_rps: 10", "rate_rps: {? {a: 1}: 2}"))
    (problem,) = err.problems
    assert problem.field == "workloads[0].rate_rps"
    assert problem.message.endswith("a key must be a plain value such as a name, not a mapping")
    assert problem.line == 15


@pytest.mark.parametrize("digits", [41, 4_301, 50_000])
def test_a_number_too_long_to_read_names_its_field(tmp_path: Path, digits: int) -> None:
    path, err = load_error(tmp_path, BASE + "seed: " + "9" * digits + "\n")
    assert err.problems == [
        Problem("seed", f"not valid YAML: a number of {digits:,} characters; no key takes "
                "more than 40", line=16, column=7)
    ]  # fmt: skip
    assert f"{path}:16:7: seed: not valid YAML: a number of {digits:,} characters" in str(err)


def test_billion_laughs_with_a_duplicate_key_is_located_in_linear_time(tmp_path: Path) -> None:
    # 9^6 = 531,441 values once expanded: under the limit, so the duplicate key is what is
    # reported; the locator visits each of the 7 nodes once instead of every path.
    text = billion_laughs(6) + "a: 1\n"
    _, err = load_error(tmp_path, text)
    assert err.problems == [
        Problem("a", "not valid YAML: duplicate key 'a' (first given on line 1)", line=7,
                column=1)
    ]  # fmt: skip


def test_billion_laughs_is_refused_for_its_expansion(tmp_path: Path) -> None:
    text = BASE + billion_laughs(9) + "a: 1\n"
    _, err = load_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.field == "g"  # the first value whose expansion passes the limit
    assert problem.line == 16 + 6
    assert problem.message == (
        "not valid YAML: aliases expand this value to 5,380,840 values or more; the limit "
        "is 2,000,000"
    )


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, BASE + "description: &r [*r]\n")
    assert err.problems == [
        Problem("description", "not valid YAML: an alias refers to a value that contains it "
                "(a recursive structure, which never ends)", line=16, column=14)
    ]  # fmt: skip


def test_a_bad_timestamp_names_its_field(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, BASE + "description: !!timestamp 2024-13-45\n")
    assert err.problems == [
        Problem("description", "not valid YAML: cannot read '2024-13-45': month must be in "
                "1..12", line=16, column=14)
    ]  # fmt: skip


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    from meshsim.scenario.yaml_input import MAX_FILE_BYTES

    path = tmp_path / "big.yaml"
    path.write_bytes(BASE.encode() + b"#" * MAX_FILE_BYTES)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems == [
        Problem("", f"larger than the limit of {MAX_FILE_BYTES:,} bytes")
    ]


def test_merge_keys_are_read_and_written_keys_override_them(tmp_path: Path) -> None:
    text = edited(
        "  - name: back\n    cpu_ms: 1\n",
        "  - &back {name: back, cpu_ms: 1, replicas: 2, concurrency: 8}\n"
        "  - <<: *back\n    name: store\n    replicas: 3\n",
    )
    path = tmp_path / "shop.yaml"
    path.write_text(text, encoding="utf-8")
    scenario = load_scenario(path)
    store = scenario.service("store")
    assert (store.replicas, store.concurrency, store.cpu_ms.expected) == (3, 8, 1.0)
    assert scenario.service("back").replicas == 2


def test_a_bad_merged_value_points_at_the_written_key(tmp_path: Path) -> None:
    text = edited(
        "  - name: back\n    cpu_ms: 1\n",
        "  - &back {name: back, cpu_ms: 1}\n  - <<: *back\n    name: store\n    replicas: -1\n",
    )
    _, err = load_error(tmp_path, text)
    assert err.problems == [
        Problem("services[2].replicas", "input should be greater than or equal to 0 (got -1)",
                line=13)
    ]  # fmt: skip


def test_base_60_is_not_a_number(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, BASE + "seed: 1:30\n")
    assert err.problems == [Problem("seed", "expected a whole number, got '1:30' (str)", line=16)]


def test_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(edited("rate_rps: 10", "rate_rps: 1e3"), encoding="utf-8")
    assert load_scenario(path).workloads[0].rate_rps == 1000.0


# --------------------------------------------------------------------------- absurd sizes
# Each passed validation and then exhausted the machine or crashed (issue 12, item 5).


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("    cpu_ms: 1\n    calls:", f"    cpu_ms: 1\n    replicas: {2**63}\n    calls:",
         8, "services[0].replicas",
         f"input should be less than or equal to 150000 (got {2**63})"),
        ("warmup_s: 1\n", "warmup_s: 1\ncluster: {nodes: 1000000000}\n", 5, "cluster.nodes",
         "input should be less than or equal to 5000 (got 1000000000)"),
        ("warmup_s: 1\n", f"warmup_s: 1\ncluster: {{cores_per_node: {2**63}}}\n", 5,
         "cluster.cores_per_node", f"input should be less than or equal to 1024 (got {2**63})"),
        ("warmup_s: 1\n", "warmup_s: 1\nreplications: 1000000000\n", 5, "replications",
         "input should be less than or equal to 1000 (got 1000000000)"),
        ("rate_rps: 10", "rate_rps: 1e12", 15, "workloads[0].rate_rps",
         "input should be less than or equal to 1000000000 (got 1000000000000.0)"),
        ("    cpu_ms: 1\n    calls:",
         "    cpu_ms: {dist: lognormal, mean: 1, cv: 1e308}\n    calls:", 7,
         "services[0].cpu_ms.cv", "input should be less than or equal to 100 (got 1e+308)"),
        ("rate_rps: 10", "rate_rps: .nan", 15, "workloads[0].rate_rps",
         "input should be a finite number (got nan)"),
        ("duration_s: 10", "duration_s: .inf", 3, "duration_s",
         "input should be a finite number (got inf)"),
        ("    cpu_ms: 1\n    calls:", "    cpu_ms: -.inf\n    calls:", 7,
         "services[0].cpu_ms", "input should be a finite number (got -inf)"),
        # 1 / 5e-324 overflows: a run crashed with a division by zero.
        ("rate_rps: 10", "rate_rps: 5e-324", 15, "workloads[0].rate_rps",
         "5e-324 is too small: the smallest number above 0 taken is 1e-09"),
        # Envoy aborts with a final status only; 100 failed when the run was built.
        ("rate_rps: 10", "rate_rps: 10\ntraffic:\n  - {service: back, fault: {abort: "
         "{percent: 5, status: 100}}}", 17, "traffic[0].fault.abort.status",
         "input should be greater than or equal to 200 (got 100)"),
        # Linkerd's status-range parser raised a ValueError on 999 when the run was built.
        ("rate_rps: 10", "rate_rps: 10\ntraffic:\n  - {service: back, retries: {retry_on: "
         "[5xx, '999']}}", 17, "traffic[0].retries.retry_on[1]",
         "expected a retry condition (e.g. 5xx, connect-failure) or an HTTP status 100-599, "
         "got '999'"),
        # Weights are kept to three decimals: these would all be 0 when the run is built.
        ("rate_rps: 10", "rate_rps: 10\ntraffic:\n  - {service: back, split: {v1: 0.0004}}",
         17, "traffic[0]",
         "the largest split weight must be at least 0.001 (weights are kept to three decimals)"),
        # A gamma's shape is 1 / cv^2, and (1e-200)^2 is 0.
        ("    cpu_ms: 1\n    calls:",
         "    cpu_ms: {dist: gamma, mean: 1, cv: 1e-200}\n    calls:", 7,
         "services[0].cpu_ms", "a gamma distribution's cv must be 0 or at least 1e-09 "
         "(got 1e-200)"),
    ],
)  # fmt: skip
def test_absurd_sizes_are_refused(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    path, err = load_error(tmp_path, edited(old, new))
    assert err.problems == [Problem(field, message, line=line)]
    assert f"{path}:{line}: {field}: {message}" in str(err)


def test_a_run_too_long_to_simulate_is_refused_with_its_cost(tmp_path: Path) -> None:
    # 10^6 rps for 10^5 s through two services: 2 x 10^11 calls.
    text = edited("rate_rps: 10", "rate_rps: 1000000").replace("duration_s: 10", "duration_s: 1e5")
    _, err = load_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.field == "workloads"
    assert problem.line == 13  # where the list of workloads starts
    assert problem.message.startswith(
        "the run would take too long to simulate: about 2e+11 calls to simulate (1e+11 "
        "client requests), 2 pods,"
    )
    assert problem.message.endswith(
        "the limit is 1e+10 calls (lower rate_rps, duration_s, replications or meshes)"
    )


def test_the_cost_estimate_follows_the_call_graph() -> None:
    from meshsim.scenario import loads
    from meshsim.scenario.limits import estimate_cost

    text = edited("      - {service: back}", "      - {service: back, probability: 0.5}")
    cost = estimate_cost(loads(text.replace("duration_s: 10", "duration_s: 101")))
    # 10 rps x 101 s; each request makes 1 + 0.5 calls.
    assert cost.requests == pytest.approx(1010.0)
    assert cost.calls == pytest.approx(1515.0)
    assert cost.pods == 2


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"duration_s": float("inf")},
         "--duration-s inf: input should be a finite number (got inf)"),
        ({"duration_s": float("nan")},
         "--duration-s nan: input should be a finite number (got nan)"),
        ({"duration_s": 1e12}, "--duration-s 1e+12: input should be less than or equal to "
         "1000000000 (got 1000000000000.0)"),
        ({"seed": 2**64}, f"--seed {2**64}: input should be less than or equal to "
         f"{2**63 - 1} (got {2**64})"),
        ({"replications": 10**9}, "--replications 1000000000: input should be less than or "
         "equal to 1000 (got 1000000000)"),
        ({"duration_s": 0.5}, "--duration-s 0.5 must be longer than the scenario's warm-up "
         "(warmup_s: 1)"),
    ],
)  # fmt: skip
def test_overrides_follow_the_files_rules(overrides: dict[str, float], message: str) -> None:
    from meshsim.errors import MeshsimError
    from meshsim.scenario import loads
    from meshsim.scenario.overrides import apply_overrides

    with pytest.raises(MeshsimError) as info:
        apply_overrides(loads(BASE), **overrides)
    assert message in str(info.value)


def test_a_shorter_duration_override_keeps_the_events_inside_it() -> None:
    from meshsim.scenario import loads
    from meshsim.scenario.overrides import apply_overrides

    text = BASE + "events:\n  - {at_s: 3, action: kill, target: back}\n" \
        "  - {at_s: 8, action: kill, target: front}\n"  # fmt: skip
    scenario = apply_overrides(loads(text), duration_s=5.0, seed=7)
    assert (scenario.duration_s, scenario.seed) == (5.0, 7)
    assert [e.target for e in scenario.events] == ["back"]


def test_many_problems_are_capped_and_known_names_are_not_all_listed(tmp_path: Path) -> None:
    services = "".join(
        f"  - {{name: s{i}, cpu_ms: 1, calls: [{{service: x{i}}}]}}\n" for i in range(60)
    )
    text = (
        "meshsim: 1\nname: many\nduration_s: 10\nwarmup_s: 1\nservices:\n"
        + services
        + "workloads:\n  - {name: users, target: s0, rate_rps: 1}\n"
    )
    path, err = load_error(tmp_path, text)
    assert len(err.problems) == 51
    assert err.problems[0] == Problem(
        "services[0].calls[0].service",
        "no service named 'x0' (known: s0, s1, s10, s11, s12, s13, s14, "
        "s15, s16, s17, s18, s19, s2, s20, s21, s22, s23, s24, s25, s26, ... (40 more))",
        line=6,
    )
    assert err.problems[-1] == Problem("", "... and more problems; only the first 50 are shown")
    assert str(err).startswith(f"invalid scenario {path} (51 problems):")


def test_an_endless_file_is_read_no_further_than_the_limit() -> None:
    from meshsim.scenario.yaml_input import MAX_FILE_BYTES

    with pytest.raises(ScenarioError) as info:
        load_scenario("/dev/zero")
    assert info.value.problems == [
        Problem("", f"larger than the limit of {MAX_FILE_BYTES:,} bytes")
    ]
