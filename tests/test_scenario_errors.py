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
