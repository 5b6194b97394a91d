"""Output locations: refused before any simulation when they cannot be written; a write
that fails half way (a full disk) leaves no directory that reads as a complete run; a
reused directory keeps no file of the earlier run; an incomplete sweep point file does
not count as done."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim import files
from meshsim.errors import MeshsimError
from meshsim.files import OutputError, prepare_output_dir
from meshsim.results.store import load_run
from meshsim.sweep import LocalExecutor, load_results, load_sweep, plan, run_sweep

TINY = """\
meshsim: 1
name: tiny
seed: 3
duration_s: 2
warmup_s: 0.5
cluster: {nodes: 1, cores_per_node: 2}
services:
  - {name: front, cpu_ms: 0.5}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 50}
"""

SWEEP = """\
sweep: 1
name: out-sweep
scenario: scenario.yaml
seed: 9
replications: 1
grid:
  workloads[0].rate_rps: [50, 100, 150]
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "scenario.yaml").write_text(TINY, encoding="utf-8")
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP, encoding="utf-8")
    return path


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation fails the test: the location must be refused before one starts."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("simulated before checking the output location")

    monkeypatch.setattr("meshsim.api.run_scenario", refuse)
    monkeypatch.setattr("meshsim.sweep.run.LocalExecutor.run", refuse)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _erofs(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


# --------------------------------------------------------------------------- before the run


def _bad_locations(tmp_path: Path) -> dict[str, tuple[str, str]]:
    regular = tmp_path / "regular-file"
    regular.write_text("x")
    return {
        "under /proc": ("/proc/meshsim-out", "cannot create the directory"),
        "under /dev/null": ("/dev/null/x", "cannot create the directory (Not a directory)"),
        "under a regular file": (str(regular / "run"), "(Not a directory)"),
        "a regular file": (str(regular), "is a file"),
        "empty": ("", "must name a directory (it is empty)"),
    }


@pytest.mark.parametrize(
    "case", ["under /proc", "under /dev/null", "under a regular file", "a regular file", "empty"]
)
@pytest.mark.parametrize("command", ["run", "compare"])
def test_run_refuses_an_unwritable_out_before_simulating(
    tiny: Path, tmp_path: Path, no_simulation: None, command: str, case: str
) -> None:
    if case == "under /proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    out, message = _bad_locations(tmp_path)[case]
    code, output = invoke(command, str(tiny), "--quiet", "--out", out)
    assert code == 2
    assert message in " ".join(output.split())
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "case", ["under /proc", "under /dev/null", "under a regular file", "a regular file", "empty"]
)
def test_sweep_refuses_an_unwritable_out_before_running_points(
    sweep_file: Path, tmp_path: Path, no_simulation: None, case: str
) -> None:
    if case == "under /proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    out, message = _bad_locations(tmp_path)[case]
    code, output = invoke("sweep", str(sweep_file), "--quiet", "--out", out)
    assert code == 2
    assert message in " ".join(output.split())


def test_a_read_only_location_is_refused(
    tiny: Path, tmp_path: Path, no_simulation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:
        # Root writes through mode bits; a read-only mount refuses even root, with EROFS.
        monkeypatch.setattr(files.tempfile, "mkstemp", _erofs)
    code, output = invoke("run", str(tiny), "--quiet", "--out", str(out))
    out.chmod(0o755)
    assert code == 2
    assert f"--out {out}: cannot write in the directory" in " ".join(output.split())


def test_a_full_disk_is_refused_before_simulating(
    tiny: Path, tmp_path: Path, no_simulation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files.os, "fsync", _enospc)
    code, output = invoke("run", str(tiny), "--quiet", "--out", str(tmp_path / "full"))
    assert code == 2
    assert "cannot write in the directory (No space left on device)" in " ".join(output.split())
    assert [p.name for p in (tmp_path / "full").iterdir()] == []  # the probe is gone


def test_prepare_output_dir_creates_parents_and_leaves_nothing(tmp_path: Path) -> None:
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir()
    assert list(out.iterdir()) == []
    with pytest.raises(OutputError, match="--out must name a directory"):
        prepare_output_dir("")


# --------------------------------------------------------------------------- half way


def _fail_on_call(n: int, real: Any) -> Any:
    calls = {"n": 0}

    def write(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            _enospc()
        return real(*args, **kwargs)

    return write


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4, 5])
def test_a_disk_full_half_way_leaves_no_complete_run(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    """The directory held a complete earlier run: after the failed one it holds none, so
    no report can mix the two. Writes: meta, scenario, histograms, series, summary."""
    import meshsim.results.store as store

    out = tmp_path / "run"
    assert invoke("run", str(tiny), "--quiet", "--out", str(out))[0] == 0
    load_run(out)
    monkeypatch.setattr(store, "write_atomic", _fail_on_call(failing_write, store.write_atomic))
    code, output = invoke("run", str(tiny), "--quiet", "--seed", "4", "--out", str(out))
    assert code == 2
    assert f"cannot write {out} (No space left on device)" in " ".join(output.split())
    assert "Traceback" not in output
    with pytest.raises(MeshsimError, match=r"missing summary\.json"):
        load_run(out)


def test_a_reused_out_keeps_no_file_of_the_earlier_run(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("run", str(tiny), "--quiet", "--records", "--out", str(out))[0] == 0
    assert (out / "records.parquet").is_file()
    (out / "notes.txt").write_text("mine")
    assert invoke("run", str(tiny), "--quiet", "--seed", "5", "--out", str(out))[0] == 0
    assert not (out / "records.parquet").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not meshsim's: left alone
    assert load_run(out).summary["seed"] == 5
    names = {p.name for p in out.iterdir()}
    assert names == {"summary.json", "meta.json", "scenario.yaml", "histograms.json",
                     "series.parquet", "notes.txt"}  # fmt: skip
    assert json.loads((out / "meta.json").read_text())["seed"] == 5


# --------------------------------------------------------------------------- sweeps


def test_a_sweep_disk_full_half_way_says_so_and_resumes(
    sweep_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshsim.sweep.dataset as dataset

    sweep = load_sweep(sweep_file)
    out = tmp_path / "out"
    # One write per point (the manifest is written through another module): the second fails.
    monkeypatch.setattr(dataset, "write_atomic", _fail_on_call(2, dataset.write_atomic))
    with pytest.raises(OutputError, match=r"No space left on device.*1 of 3 points are saved"):
        run_sweep(sweep, out, executor=LocalExecutor(1))
    monkeypatch.undo()
    resumed = run_sweep(sweep, out, executor=LocalExecutor(1))
    assert (resumed.skipped, len(resumed.ran)) == (1, 2)
    run_sweep(sweep, tmp_path / "whole", executor=LocalExecutor(1))
    pd.testing.assert_frame_equal(load_results(out), load_results(tmp_path / "whole"))


def test_a_truncated_point_file_is_set_aside_and_rerun(sweep_file: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_file)
    out = tmp_path / "out"
    run_sweep(sweep, out, executor=LocalExecutor(1))
    before = load_results(out)
    victim = plan(sweep)[1].id
    path = out / "points" / f"{victim}.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MeshsimError, match="unreadable sweep results"):
        load_results(out)
    resumed = run_sweep(sweep, out, executor=LocalExecutor(1))
    assert resumed.set_aside == [victim]
    assert (resumed.skipped, resumed.ran) == (2, [victim])
    assert (out / "points" / f".{victim}.parquet.corrupt").read_bytes() == data[: len(data) // 2]
    pd.testing.assert_frame_equal(load_results(out), before)


def test_an_empty_point_file_is_not_done(sweep_file: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_file)
    out = tmp_path / "out"
    run_sweep(sweep, out, executor=LocalExecutor(1))
    victim = plan(sweep)[0].id
    (out / "points" / f"{victim}.parquet").write_bytes(b"")
    code, output = invoke("sweep", str(sweep_file), "--quiet", "--workers", "1", "--out", str(out))
    assert code == 0, output
    assert "1 incomplete point file(s) were set aside" in " ".join(output.split())
    assert "3 points: 1 run, 2 already done" in " ".join(output.split())


def test_a_corrupt_manifest_is_a_clear_error(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text("{not json")
    code, output = invoke("sweep", str(sweep_file), "--quiet", "--out", str(out))
    assert code == 2
    assert "sweep.json: not a sweep manifest" in " ".join(output.split())


def test_the_scenario_saved_is_the_one_run(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("run", str(tiny), "--quiet", "--duration-s", "1.5", "--out", str(out))[0] == 0
    assert yaml.safe_load((out / "scenario.yaml").read_text())["duration_s"] == 1.5
