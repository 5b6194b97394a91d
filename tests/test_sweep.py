"""Sweeps: planning, located errors, executors giving identical results, resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from meshsim.sweep import (
    DaskExecutor,
    LocalExecutor,
    PointFailedError,
    PointTask,
    SweepError,
    load_results,
    load_sweep,
    plan,
    run_point,
    run_sweep,
)

SCENARIO = {
    "meshsim": 1,
    "name": "tiny",
    "seed": 3,
    "duration_s": 2.0,
    "warmup_s": 0.5,
    "meshes": ["none"],
    "cluster": {"nodes": 2, "cores_per_node": 2},
    "services": [
        {"name": "front", "replicas": 1, "cpu_ms": {"dist": "exponential", "mean": 1.0},
         "calls": [{"service": "back"}]},
        {"name": "back", "replicas": 1, "cpu_ms": {"dist": "lognormal", "mean": 0.5, "cv": 0.5}},
    ],
    "workloads": [{"name": "users", "target": "front", "rate_rps": 50}],
}  # fmt: skip

SWEEP = """\
sweep: 1
name: tiny-sweep
scenario: scenario.yaml
seed: 9
replications: 2
overrides:
  duration_s: 2
grid:
  workloads[0].rate_rps: [50, 100, 150]
  services[1].replicas: [1, 2]
  meshes: [none, istio]
"""


def _meshes() -> list[str]:
    from meshsim.sim.dataplanes import DATA_PLANES

    return ["none", "istio"] if "istio" in DATA_PLANES else ["none", "none2"]


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    text = SWEEP
    if _meshes()[1] != "istio":  # before the data planes: vary the seed axis instead
        text = text.replace("  meshes: [none, istio]\n", "  warmup_s: [0.5, 1.0]\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def _dataset(out: Path) -> pd.DataFrame:
    return load_results(out)


def test_plan_has_twelve_points_with_stable_ids_and_seeds(sweep_file: Path) -> None:
    points = plan(load_sweep(sweep_file))
    assert len(points) == 12
    assert len({p.id for p in points}) == 12
    # A smaller sweep: the shared points keep their ids and seeds (nothing depends on
    # which other points exist), and the order of the axes does not matter.
    text = sweep_file.read_text().replace("[50, 100, 150]", "[150, 50]")
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("grid:"))
    lines[i + 1 : i + 4] = [lines[i + 3], lines[i + 1], lines[i + 2]]
    sweep_file.write_text("\n".join(lines) + "\n")
    smaller = {p.id: p.seed for p in plan(load_sweep(sweep_file))}
    assert len(smaller) == 8
    full = {p.id: p.seed for p in points}
    assert all(full[k] == v for k, v in smaller.items())


def test_points_differing_only_in_mesh_share_a_seed(sweep_file: Path) -> None:
    points = plan(load_sweep(sweep_file))
    by_rest: dict[str, set[int]] = {}
    for p in points:
        rest = {k: v for k, v in p.params.items() if k != "meshes"}
        by_rest.setdefault(repr(sorted(rest.items())), set()).add(p.seed)
    if "meshes" in points[0].params:
        assert all(len(seeds) == 1 for seeds in by_rest.values())


def test_random_axes_are_reproducible(tmp_path: Path) -> None:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    text = (
        "sweep: 1\nname: r\nscenario: scenario.yaml\nseed: 5\n"
        "random:\n  samples: 4\n  axes:\n"
        "    workloads[0].rate_rps: {uniform: [10, 100]}\n"
        "    services[0].replicas: {integers: [1, 3]}\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    a = plan(load_sweep(tmp_path / "s.yaml"))
    b = plan(load_sweep(tmp_path / "s.yaml"))
    assert [p.params for p in a] == [p.params for p in b]
    assert all(10 <= p.params["workloads[0].rate_rps"] < 100 for p in a)
    assert all(p.params["services[0].replicas"] in (1, 2, 3) for p in a)


# --------------------------------------------------------------------------- located errors


def _error(tmp_path: Path, text: str) -> str:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SweepError) as info:
        plan(load_sweep(path))
    return str(info.value)


HEAD = "sweep: 1\nname: bad\nscenario: scenario.yaml\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("grid:\n  meshes: [none]\nrepliactions: 2\n", "bad.yaml:6: repliactions: unknown key"),
        ("grid:\n  workloads[0].rate_rps: [10, -5]\n",
         "bad.yaml:5: grid.workloads[0].rate_rps: the value = -5 makes a bad scenario"),
        ("grid:\n  workloads[3].rate_rps: [10]\n",
         "bad.yaml:5: grid.workloads[3].rate_rps: the value = 10 makes a bad scenario"),
        ("grid:\n  services[0].replicas: [1, 1]\n",
         "bad.yaml:5: grid.services[0].replicas: repeats the value(s) 1"),
        ("grid:\n  workloads..rate: [1]\n", "bad.yaml:5: grid.workloads..rate: malformed key path"),
        ("grid:\n  seed: [1, 2]\n", "bad.yaml:5: grid.seed: 'seed' is set by the sweep itself"),
        ("grid:\n  meshes: [none, consul]\n", "bad.yaml:5: grid.meshes: the value = \"consul\""),
        ("overrides:\n  duration_s: -1\ngrid:\n  meshes: [none]\n",
         "bad.yaml:5: overrides.duration_s:"),
        ("random:\n  samples: 0\n  axes: {meshes: {choice: [none]}}\n",
         "bad.yaml:5: random.samples:"),
        ("random:\n  samples: 2\n  axes:\n    workloads[0].rate_rps: {uniform: [5, 1]}\n",
         "bad.yaml:7: random.axes.workloads[0].rate_rps.uniform: uniform needs [low, high]"),
        ("", "a sweep needs axes"),
    ],
)  # fmt: skip
def test_bad_sweep_files_give_located_errors(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _error(tmp_path, HEAD + body)


def test_missing_base_scenario_is_located(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("sweep: 1\nname: x\nscenario: nowhere.yaml\ngrid: {meshes: [none]}\n")
    with pytest.raises(SweepError, match=r"s.yaml:3: scenario: the base scenario is invalid"):
        load_sweep(path)


def test_cli_bad_sweep_exits_2(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from meshsim.cli.main import cli

    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (tmp_path / "bad.yaml").write_text(HEAD + "grid:\n  workloads[0].rate_rps: [0]\n")
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2
    assert "bad.yaml:5: grid.workloads[0].rate_rps" in result.output


# --------------------------------------------------------------------------- running


@pytest.mark.integration
def test_local_and_dask_give_identical_datasets(sweep_file: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_file)
    local = run_sweep(sweep, tmp_path / "local", executor=LocalExecutor(2))
    assert (local.total, local.skipped, len(local.ran)) == (12, 0, 12)
    dask = run_sweep(sweep, tmp_path / "dask", executor=DaskExecutor(workers=2, processes=False))
    assert len(dask.ran) == 12
    a, b = _dataset(tmp_path / "local"), _dataset(tmp_path / "dask")
    pd.testing.assert_frame_equal(a, b)
    assert a["point_id"].nunique() == 12
    assert set(a["replication"]) == {0, 1}
    assert {"workloads[0].rate_rps", "services[1].replicas", "seed", "saturated",
            "proxies.cpu_vcpu_per_1000rps", "p99_ms"} <= set(a.columns)  # fmt: skip
    # Running again skips every point and changes nothing.
    again = run_sweep(sweep, tmp_path / "local", executor=LocalExecutor(2))
    assert (again.skipped, again.ran) == (12, [])
    pd.testing.assert_frame_equal(_dataset(tmp_path / "local"), a)


_FAIL_ENV = "MESHSIM_TEST_FAIL_POINTS"


def failing_point(task: PointTask) -> Any:
    """run_point, except for the points named in the environment (inherited by workers)."""
    if task.point.id in os.environ.get(_FAIL_ENV, "").split(","):
        raise RuntimeError("injected failure")
    return run_point(task)


@pytest.mark.long
def test_failed_sweep_resumes_to_the_same_dataset(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = load_sweep(sweep_file)
    points = plan(sweep)
    monkeypatch.setenv(_FAIL_ENV, points[6].id)
    with pytest.raises(PointFailedError, match="injected failure"):
        run_sweep(sweep, tmp_path / "a", executor=LocalExecutor(1), point_function=failing_point)
    saved = sorted((tmp_path / "a" / "points").glob("*.parquet"))
    assert 0 < len(saved) < 12
    monkeypatch.delenv(_FAIL_ENV)
    resumed = run_sweep(sweep, tmp_path / "a", executor=LocalExecutor(2))
    assert resumed.skipped == len(saved)
    assert len(resumed.ran) == 12 - len(saved)
    whole = run_sweep(sweep, tmp_path / "b", executor=LocalExecutor(2))
    assert len(whole.ran) == 12
    pd.testing.assert_frame_equal(_dataset(tmp_path / "a"), _dataset(tmp_path / "b"))
    assert not list((tmp_path / "a" / "points").glob(".*"))


@pytest.mark.integration
def test_sigkilled_sweep_resumes_to_the_same_dataset(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "meshsim", "sweep", str(sweep_file), "--out", str(out),
           "--workers", "1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "points").glob("*.parquet"))) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = len(list((out / "points").glob("*.parquet")))
    assert 4 <= done < 12
    resumed = subprocess.run([*cmd[:-3], "--workers", "2", "--quiet"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{12 - done} run, {done} already done" in " ".join(resumed.stderr.split())
    whole = run_sweep(load_sweep(sweep_file), tmp_path / "whole", executor=LocalExecutor(2))
    assert len(whole.ran) == 12
    pd.testing.assert_frame_equal(_dataset(out), _dataset(tmp_path / "whole"))


def test_a_different_sweep_in_the_same_directory_is_refused(
    sweep_file: Path, tmp_path: Path
) -> None:
    from meshsim.errors import MeshsimError

    sweep = load_sweep(sweep_file)
    out = tmp_path / "out"
    with pytest.raises(PointFailedError):
        run_sweep(sweep, out, executor=LocalExecutor(1), point_function=_none)
    sweep_file.write_text(sweep_file.read_text().replace("seed: 9", "seed: 10"))
    with pytest.raises(MeshsimError, match="holds results of a different sweep"):
        run_sweep(load_sweep(sweep_file), out, executor=LocalExecutor(1))


def _none(task: PointTask) -> Any:
    raise RuntimeError("not run")


# --------------------------------------------------------------------------- killed sweeps

SLOW_SWEEP = """\
sweep: 1
name: slow-sweep
scenario: scenario.yaml
seed: 9
replications: 1
overrides:
  duration_s: 60
grid:
  workloads[0].rate_rps: [400, 410, 420, 430]
"""


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc; zombies count as gone)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _eof_within(stream: Any, seconds: float) -> bool:
    """Whether ``stream`` (a pipe) reaches end of file within ``seconds``."""
    import select

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], deadline - time.monotonic())
        if ready and not os.read(stream.fileno(), 65536):
            return True
    return False


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_sweep_leaves_no_workers_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """Only the sweep's own process is signalled (not its group, as a CI runner or a
    `kill PID` does): its pool workers must go with it and release its output pipe."""
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (tmp_path / "sweep.yaml").write_text(SLOW_SWEEP)
    cmd = [sys.executable, "-m", "meshsim", "sweep", str(tmp_path / "sweep.yaml"), "--out",
           str(tmp_path / "out"), "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2, "the pool did not start"
        time.sleep(0.5)  # the workers are inside their first point now
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, sig)
        assert proc.stdout is not None
        # Its output pipe reaches EOF: nothing of the sweep holds it any more.
        assert _eof_within(proc.stdout, 10.0)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)]
        if sig == signal.SIGTERM:
            assert proc.returncode != 0  # interrupted, as Ctrl-C
    finally:
        for w in [proc.pid, *workers]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.integration
def test_a_sweep_with_model_samples_has_rows_per_parameter_set(tmp_path: Path) -> None:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "sweep: 1\nname: banded\nscenario: scenario.yaml\nseed: 9\n"
        "overrides:\n  duration_s: 2\n  model_samples: 2\n  meshes: [none, istio]\n"
        "grid:\n  workloads[0].rate_rps: [50, 100]\n"
    )
    outcome = run_sweep(load_sweep(path), tmp_path / "out", executor=LocalExecutor(1))
    assert len(outcome.ran) == 2
    data = _dataset(tmp_path / "out")
    # Per point: the central run (model_set null) and one run per set, each for both meshes.
    per_point = data[data["kind"] == "workload"].groupby("point_id")["model_set"]
    for _, sets in per_point:
        assert sorted(sets.fillna(-1).astype(int).tolist()) == [-1, -1, 0, 0, 1, 1]
    istio = data[(data["mesh"] == "istio") & (data["kind"] == "workload")]
    assert istio["proxies.cpu_vcpu_per_1000rps"].nunique() == len(istio)


@pytest.mark.integration
def test_sweep_cli_model_samples_overrides_the_scenario(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from meshsim.cli.main import cli

    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "sweep: 1\nname: banded\nscenario: scenario.yaml\nseed: 9\n"
        "overrides:\n  duration_s: 2\n  meshes: [none, istio]\n"
        "grid:\n  workloads[0].rate_rps: [50]\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sweep", str(path), "--out", str(out), "--workers", "1", "--model-samples", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    sets = _dataset(out)["model_set"]
    assert set(sets.dropna().astype(int)) == {0}
    assert sets.isna().any()
