"""The command line (testing tier 4): `meshsim run`, `check` and `schema` through
click's CliRunner and as subprocesses; exit statuses 0 / 1 (SLO breach) / 2 (bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from meshsim.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

GOOD = """\
meshsim: 1
name: tiny
seed: 3
duration_s: 3
warmup_s: 1
cluster: {nodes: 2, cores_per_node: 2}
services:
  - name: front
    cpu_ms: {dist: exponential, mean: 1.0}
    calls: [{service: back}]
  - name: back
    versions:
      - {name: v1, replicas: 1}
      - {name: v2, replicas: 2}
    cpu_ms: 0.5
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 100}
slo:
  - {workload: users, p99_ms: 1000, success_rate: 0.5}
"""

CONTRACT_RUN_KEYS = {"services", "workloads", "proxies", "control_plane", "saturated", "warnings"}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_run_json_follows_the_results_contract(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = invoke("run", str(good), "--json", "--quiet", "--out", str(out))
    assert code == 0
    doc = json.loads(stdout)
    assert doc["schema"] == 1
    assert doc["scenario"] == "tiny"
    assert doc["seed"] == 3
    assert isinstance(doc["meshsim_version"], str)
    assert len(doc["scenario_sha256"]) == 64
    assert doc["slo_breaches"] == []
    run = doc["runs"]["none"]
    assert set(run) >= CONTRACT_RUN_KEYS
    assert set(run["services"]) == {"front", "back"}
    users = run["workloads"]["users"]
    assert users["success_rate"] == 1.0
    assert set(users["latency_ms"]) == {"mean", "p50", "p90", "p99", "p999"}
    assert users["requested_rps"] == 100
    # Every call to front makes one call to back.
    assert run["services"]["back"]["requests"] == run["services"]["front"]["requests"]
    assert run["saturated"] is False
    assert run["warnings"] == []
    # The run directory.
    assert {"summary.json", "meta.json", "scenario.yaml"} <= {p.name for p in out.iterdir()}
    # The saved summary is what --json prints, objectives included.
    assert json.loads((out / "summary.json").read_text()) == doc
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scenario_sha256"] == doc["scenario_sha256"]
    assert meta["seed"] == 3
    assert yaml.safe_load((out / "scenario.yaml").read_text())["name"] == "tiny"
    assert not (out / "records.parquet").exists()


def test_run_records_parquet(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, _ = invoke("run", str(good), "--quiet", "--records", "--out", str(out))
    assert code == 0
    frame = pd.read_parquet(out / "records.parquet")
    assert set(frame["kind"]) == {"workload", "service", "edge"}
    assert (frame["finished_at"] >= frame["started_at"]).all()
    workload_rows = frame[frame["kind"] == "workload"]
    # One workload record per request sent, all answered (status 200).
    assert workload_rows["request_id"].is_unique
    assert set(workload_rows["status"]) == {200}


def test_run_slo_breach_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(GOOD.replace("p99_ms: 1000", "p99_ms: 0.01"), encoding="utf-8")
    out = str(tmp_path / "o")
    code, stdout, stderr = invoke("run", str(path), "--json", "--quiet", "--out", out)
    assert code == 1
    doc = json.loads(stdout)
    assert len(doc["slo_breaches"]) == 1
    assert "workload users p99_ms" in doc["slo_breaches"][0]
    assert "SLO breached" in stderr
    assert (
        json.loads((Path(out) / "summary.json").read_text())["slo_breaches"] == doc["slo_breaches"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mesh", "nosuch"], "--mesh: unknown mesh 'nosuch'"),
        (["--duration-s", "0.5"], "--duration-s 0.5 must be longer than the scenario's warm-up"),
        (["--seed", "-1"], "--seed must be 0 or more"),
    ],
)
def test_run_bad_options_exit_2(good: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, stdout, stderr = invoke("run", str(good), "--quiet", "--out", str(tmp_path / "o"), *args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stdout + stderr
    assert not (tmp_path / "o").exists()


def test_run_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("rate_rps: 100", "rate_rps: lots"), encoding="utf-8")
    code, stdout, stderr = invoke("run", str(bad), "--quiet")
    assert code == 2
    assert f"{bad}:17: workloads[0].rate_rps: expected a number" in stderr
    assert "Traceback" not in stdout + stderr
    code, _, stderr = invoke("run", str(tmp_path / "missing.yaml"), "--quiet")
    assert code == 2
    assert "no such file" in stderr


def test_saturation_is_flagged(tmp_path: Path) -> None:
    """One core, 1 ms per request, 1,500 requests/s: utilisation 1.5 -> saturated."""
    path = tmp_path / "hot.yaml"
    path.write_text(
        "meshsim: 1\nname: hot\nduration_s: 3\nwarmup_s: 1\n"
        "cluster: {nodes: 1, cores_per_node: 1}\n"
        "services: [{name: a, cpu_ms: 1, concurrency: 4}]\n"
        "workloads: [{name: w, target: a, rate_rps: 1500}]\n",
        encoding="utf-8",
    )
    code, stdout, _ = invoke("run", str(path), "--json", "--quiet", "--out", str(tmp_path / "o"))
    assert code == 0
    run = json.loads(stdout)["runs"]["none"]
    assert run["saturated"] is True
    assert any("node-0 is saturated" in w for w in run["warnings"])
    assert any(w.startswith("saturated:") for w in run["warnings"])


def test_check_prints_the_call_graph(good: Path) -> None:
    code, stdout, _ = invoke("check", str(good))
    assert code == 0
    assert "tiny (2 services, 4 pods)" in stdout
    assert "users (100 rps constant)" in stdout
    assert "front x1" in stdout
    # A service with versions lists them (and the brackets are not eaten as markup).
    assert "back [v1x1, v2x2]" in stdout
    assert "valid: meshes none; call depth 2; 0 events; 1 SLOs" in stdout


def test_check_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("{service: back}", "{service: bakc}"), encoding="utf-8")
    code, stdout, stderr = invoke("check", str(bad))
    assert code == 2
    assert f"{bad}:10: services[0].calls[0].service: no service named 'bakc'" in stderr
    assert "did you mean 'back'?" in stderr
    assert "Traceback" not in stdout + stderr


def test_schema_is_a_json_schema_that_validates_scenarios() -> None:
    code, stdout, _ = invoke("schema")
    assert code == 0
    doc = json.loads(stdout)
    assert {"services", "workloads", "cluster", "events"} <= set(doc["properties"])
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    assert list(validator.iter_errors(yaml.safe_load(GOOD))) == []
    bad = yaml.safe_load(GOOD)
    bad["services"][0]["cpu_msx"] = 1
    assert list(validator.iter_errors(bad)) != []
    good_bookinfo = yaml.safe_load(Path("scenarios/bookinfo.yaml").read_text())
    assert list(validator.iter_errors(good_bookinfo)) == []


# --------------------------------------------------------------------------- subprocess


def meshsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshsim", *args], capture_output=True, text=True, cwd=cwd
    )


def test_python_m_meshsim_help() -> None:
    proc = meshsim("--help")
    assert proc.returncode == 0
    for command in ("run", "check", "schema"):
        assert command in proc.stdout


def test_subprocess_exit_statuses(good: Path, tmp_path: Path) -> None:
    ok = meshsim("run", str(good), "--json", "--quiet", "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["runs"]["none"]["workloads"]["users"]["requests"] > 100
    strict = tmp_path / "strict.yaml"
    strict.write_text(GOOD.replace("p99_ms: 1000", "p99_ms: 0.01"), encoding="utf-8")
    breach = meshsim("run", str(strict), "--quiet", "--out", str(tmp_path / "b"))
    assert breach.returncode == 1
    bad = meshsim("run", str(good), "--quiet", "--mesh", "nosuch")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "unknown mesh 'nosuch'" in bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("meshsim: 1\nname: [\n", encoding="utf-8")
    proc = meshsim("run", str(broken), "--quiet")
    assert proc.returncode == 2
    assert f"{broken}:" in proc.stderr
    assert "not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_default_run_directory(good: Path, tmp_path: Path) -> None:
    proc = meshsim("run", str(good), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("tiny-")
    assert (run_dir / "summary.json").exists()


def test_run_shows_control_plane_convergence(tmp_path: Path) -> None:
    """A kill and a rollout under Istio and Linkerd: the summary gets a control-plane table
    with measured convergence (the 'none' baseline has none)."""
    result = CliRunner().invoke(
        cli,
        ["run", str(ROOT / "scenarios" / "rollout.yaml"), "--mesh", "none,istio,linkerd",
         "--duration-s", "20", "--quiet", "--out", str(tmp_path / "run")],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Control plane"))
    header = next(i for i in range(start, len(lines)) if lines[i].split()[:2] == ["mesh", "vCPU"])
    rows = {line.split()[0]: line.split() for line in lines[header + 2 : header + 5]}
    assert rows["none"][3] == "-"  # kube-proxy semantics: nothing to converge
    for mesh in ("istio", "linkerd"):
        assert float(rows[mesh][3]) > 0, f"{mesh} convergence p50 is measured"
