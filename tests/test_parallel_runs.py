"""Independent simulations run in a process pool (or on Dask) with bit-identical results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.api import run_scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import loads

pytestmark = pytest.mark.integration

SCENARIO = """
meshsim: 1
name: parallel
seed: 11
duration_s: 5
warmup_s: 1
replications: 2
meshes: [none, istio, linkerd]
cluster: {nodes: 2, cores_per_node: 2}
services:
  - name: front
    replicas: 2
    cpu_ms: {dist: exponential, mean: 0.5}
    calls: [{service: back}]
  - name: back
    replicas: 1
    cpu_ms: {dist: lognormal, mean: 0.4, cv: 0.8}
workloads:
  - {name: users, target: front, arrival: poisson, rate_rps: 120, connections: 4}
"""


def test_a_process_pool_gives_bit_identical_results_to_one_process() -> None:
    scenario = loads(SCENARIO, path="parallel.yaml")
    seen: list[tuple[str, int, float]] = []
    serial = build_summary(run_scenario(scenario, jobs=1, model_samples=2))
    pooled = build_summary(
        run_scenario(
            scenario, jobs=2, model_samples=2, progress=lambda m, i, t: seen.append((m, i, t))
        )
    )
    assert json.dumps(serial, sort_keys=True) == json.dumps(pooled, sort_keys=True)
    # From a pool, progress comes once per finished simulation: 3 meshes x (2 + 2).
    assert sorted((m, i) for m, i, _ in seen) == sorted(
        (m, i) for m in ("none", "istio", "linkerd") for i in range(4)
    )
    assert {t for _, _, t in seen} == {5.0}


def test_run_cli_takes_jobs_and_model_samples(tmp_path: Path) -> None:
    path = tmp_path / "parallel.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        ["run", str(path), "--out", str(out), "--jobs", "2", "--model-samples", "2", "-q",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["model_samples"]["n"] == 2
    assert "band" in summary["runs"]["istio"]["proxies"]
    assert "model_samples: 2" in (out / "scenario.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "0"], "--jobs"),
        (["--model-samples", "65"], "--model-samples"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask"),
    ],
)
def test_run_cli_refuses_bad_parallel_options(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "parallel.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output
