"""Fuzzing the scenario loader, ``meshsim check`` and the CLI overrides (issue 12).

Properties, for every input: the loader returns a scenario or raises ScenarioError (never
another exception); the CLI exits 0 or 2 with no traceback; each example takes less than
``DEADLINE`` and, in the slow tier, a subprocess under a ``MEMORY_LIMIT`` address-space
limit. The default tier tries a few dozen inputs per property; ``-m slow`` tries thousands.
"""

from __future__ import annotations

import datetime
import re
import resource
import subprocess
import sys
from pathlib import Path
from unittest import mock

import meshsim.cli.run as run_command
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from meshsim.cli.main import cli

from meshsim.errors import ScenarioError
from meshsim.scenario import Scenario, loads
from meshsim.scenario.runnable import BUILD_DEFECT

DEADLINE = datetime.timedelta(seconds=20)
"""Per example: generous, as the 2-core test machine is shared (most take milliseconds)."""
MEMORY_LIMIT = 3 * 1024**3
"""Address space of a ``meshsim check`` subprocess in the slow tier."""
QUICK = settings(max_examples=40, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(
    max_examples=1500, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow]
)

BASE = """\
meshsim: 1
name: shop
seed: 3
duration_s: 4
warmup_s: 1
meshes: [none, istio, linkerd]
cluster: {nodes: 2, cores_per_node: 2}
services:
  - name: front
    replicas: 2
    cpu_ms: {dist: lognormal, mean: 1, cv: 0.5}
    calls:
      - {service: back, probability: 0.5}
  - name: back
    versions:
      - {name: v1, replicas: 1}
      - {name: v2, replicas: 1}
    cpu_ms: 0.5
workloads:
  - {name: users, target: front, rate_rps: 20}
traffic:
  - service: back
    split: {v1: 90, v2: 10}
    retries: {attempts: 2, retry_on: [5xx]}
events:
  - {at_s: 2, action: kill, target: back-v1}
slo:
  - {workload: users, p99_ms: 100}
"""

HOSTILE = [
    "1:30", "1:30.5", "9" * 5000, "0x" + "f" * 5000, "-" + "9" * 50, ".nan", ".inf", "-.inf",
    "1e308", "1e999", "1e12", "-1", "0", "-0.0", str(2**63), str(10**9), "2**63", "[]", "{}",
    "[" * 200 + "]" * 200, "~", "null", "yes", "off", "!!binary aGVsbG8=",
    "!!timestamp 2024-13-45", "2024-01-01", "!!set {a, b}", "!!python/object:os.system",
    "*undefined", "&r [*r]", "'unbalanced", '"\\x00"', "{? [a]: 1}", "!!float 1:30.5",
    "!!int 1:30", "1_000", "0o17", "0b101", "'\t'", "a" * 100, "|\n  x", "{a: 1, a: 2}",
    "[1, 2, 3]", "{dist: lognormal, mean: 1, cv: 1e308}", "{dist: gamma, mean: 1e308, cv: 100}",
    "{dist: empirical, values: [1e308, 0]}", "\x00", "\ufeff", "!!str", "? a\n: b",
]  # fmt: skip


_NUMBER = re.compile(r"(\b[a-z_]+: )-?[0-9][0-9.e+-]*")
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e-6, max_value=1e12).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 10).map(str),
)
"""Numbers of every size, as YAML text: most keep the scenario valid, many do not."""


def _value_lines() -> list[int]:
    return [i for i, line in enumerate(BASE.splitlines()) if ": " in line]


@st.composite
def mutated_scenarios(draw: st.DrawFn) -> str:
    """BASE with one or more careless or hostile edits."""
    lines = BASE.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["number", "number", "value", "chars", "delete", "nest", "aliases",
                             "dup"])
        )  # fmt: skip
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "number":
            numeric = [j for j, line in enumerate(lines) if _NUMBER.search(line)]
            if numeric:
                j = draw(st.sampled_from(numeric))
                number = draw(NUMBER_TEXT)
                lines[j] = _NUMBER.sub(lambda m, n=number: m.group(1) + n, lines[j], count=1)
        elif kind == "value":
            j = draw(st.sampled_from(_value_lines()))
            if j < len(lines) and ": " in lines[j]:
                key = lines[j].split(": ", 1)[0]
                value = draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20)))
                lines[j] = f"{key}: {value}"
        elif kind == "chars":
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            junk = draw(st.text(alphabet=":-[]{}&*!|>?#'\"\t ,%@`\\0123456789aeu.", max_size=6))
            lines[i] = line[:at] + junk + line[at:]
        elif kind == "delete":
            del lines[i]
            if not lines:
                lines = ["{}"]
        elif kind == "nest":
            depth = draw(st.integers(0, 700))
            opener = draw(st.sampled_from(["[", "{a: ", "- "]))
            closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
            lines.insert(i, "description: " + opener * depth + "x" + closer * depth)
        elif kind == "aliases":
            levels = draw(st.integers(1, 10))
            width = draw(st.integers(1, 9))
            names = [f"l{k}" for k in range(levels)]
            block = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
            block += [
                f"{names[k]}: &{names[k]} [{', '.join([f'*{names[k - 1]}'] * width)}]"
                for k in range(1, levels)
            ]
            lines[i:i] = [*block, f"{names[0]}: 1"]
        else:
            lines.insert(i, lines[i])
    return "\n".join(lines) + "\n"


def _load(text: str) -> Scenario | ScenarioError:
    try:
        scenario = loads(text, "fuzz.yaml")
    except ScenarioError as exc:
        message = exc.problems[0].message
        event("refused: " + (message[:14] if message.startswith("not valid") else "validation"))
        return exc
    event("valid")
    return scenario


def _assert_clean(result: Scenario | ScenarioError) -> None:
    if isinstance(result, ScenarioError):
        assert result.problems
        assert all(p.message for p in result.problems)
        assert str(result).startswith("invalid scenario fuzz.yaml (")


@QUICK
@given(mutated_scenarios())
def test_the_loader_gives_a_scenario_or_a_scenario_error(text: str) -> None:
    _assert_clean(_load(text))


@pytest.mark.slow
@THOROUGH
@given(mutated_scenarios())
def test_the_loader_gives_a_scenario_or_a_scenario_error_thoroughly(text: str) -> None:
    _assert_clean(_load(text))


def _check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error: invalid scenario" in result.stderr
        assert BUILD_DEFECT not in result.stderr


@settings(QUICK, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])  # fmt: skip
@given(text=mutated_scenarios())
def test_check_exits_0_or_2(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


@pytest.mark.slow
@settings(THOROUGH, max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                             HealthCheck.too_slow])  # fmt: skip
@given(text=mutated_scenarios())
def test_check_exits_0_or_2_thoroughly(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


# --------------------------------------------------------------------------- overrides


class StoppedBeforeSimulatingError(Exception):
    """Raised in place of simulating: the overrides passed validation."""


def _run_with(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(BASE, encoding="utf-8")

    def stop(*_args: object, **_kwargs: object) -> None:
        raise StoppedBeforeSimulatingError

    with mock.patch.object(run_command, "run_and_save", stop):
        result = CliRunner().invoke(
            cli, ["run", str(path), "--quiet", "--out", str(tmp_path / "out"), *args]
        )
    if isinstance(result.exception, StoppedBeforeSimulatingError):
        return
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "error" in result.stderr.lower()


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e12", "1e309", "0", "-0", "1:30", "", "abc",
                     "0x10", "1_0", " 5", "4.0000000001", "1e-320"]),
)  # fmt: skip


@st.composite
def override_args(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for option in ("--duration-s", "--seed", "--model-samples"):
        if draw(st.booleans()):
            args += [option, draw(NUMBERS)]
    return args


@settings(QUICK, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])  # fmt: skip
@given(args=override_args())
def test_run_overrides_are_validated_before_simulating(tmp_path: Path, args: list[str]) -> None:
    _run_with(tmp_path, args)


@pytest.mark.slow
@settings(THOROUGH, max_examples=600, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                             HealthCheck.too_slow])  # fmt: skip
@given(args=override_args())
def test_run_overrides_are_validated_thoroughly(tmp_path: Path, args: list[str]) -> None:
    _run_with(tmp_path, args)


# --------------------------------------------------------------------------- memory and time


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _laughs(levels: int) -> str:
    names = [f"l{k}" for k in range(levels)]
    block = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    block += [f"{names[k]}: &{names[k]} [{', '.join([f'*{names[k - 1]}'] * 9)}]"
              for k in range(1, levels)]  # fmt: skip
    return "\n".join(block) + f"\n{names[0]}: 1\n"


HOSTILE_FILES = {
    "laughs-9": _laughs(9),
    "laughs-6-duplicate": _laughs(6),
    "nest-5000": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "block-nest-2000": "".join("  " * i + f"k{i}:\n" for i in range(2000)),
    "digits-100000": BASE + "x: " + "9" * 100_000 + "\n",
    "complex-key": BASE + "? [a, b]\n: 1\n",
    "huge-flat-list": BASE + "description: [" + "1," * 1_500_000 + "1]\n",
    "replicas-2e63": BASE.replace("replicas: 2", f"replicas: {2**63}"),
    "rate-1e12": BASE.replace("rate_rps: 20", "rate_rps: 1e12"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_files_end_in_bounded_time_and_memory(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HOSTILE_FILES[name], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", "from meshsim.cli.main import main; main()", "check", str(path)],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"{path}:" in proc.stderr
