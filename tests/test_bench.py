"""meshsim bench: the noise rule with constructed numbers, and the gate end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.bench import Sample, compare
from meshsim.bench.measure import expand
from meshsim.bench.noise import welch

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- the noise rule


def test_sample_interval_is_students_t() -> None:
    s = Sample.of([9.9, 10.0, 10.1])
    assert s.mean == pytest.approx(10.0)
    assert s.ci95 is not None
    # stdev 0.1, n 3: half-width = t95(2) * 0.1 / sqrt(3) = 4.30265 * 0.057735
    assert (s.ci95[1] - s.ci95[0]) / 2 == pytest.approx(4.3026527 * 0.1 / math.sqrt(3))
    assert s.standard_error == pytest.approx(0.1 / math.sqrt(3))


def test_welch_statistic_and_degrees_of_freedom() -> None:
    base, now = Sample.of([9.9, 10.0, 10.1]), Sample.of([10.9, 11.0, 11.1])
    t, critical = welch(base, now)
    # se of the difference = sqrt(2) * 0.057735 = 0.08165; t = 1 / 0.08165 = 12.247;
    # equal spreads and sizes: Welch-Satterthwaite dof = 4, t95(4) = 2.77645.
    assert t == pytest.approx(1 / math.sqrt(2 * 0.01 / 3))
    assert critical == pytest.approx(2.7764451)


@pytest.mark.parametrize(
    ("base", "now", "better", "tolerance", "status"),
    [
        # +10 %, far outside a tight noise band: a regression when lower is better ...
        ([9.9, 10.0, 10.1], [10.9, 11.0, 11.1], "lower", 5.0, "regressed"),
        # ... and an improvement when higher is better.
        ([9.9, 10.0, 10.1], [10.9, 11.0, 11.1], "higher", 5.0, "improved"),
        # The same +10 %, but the replications spread by +-2: inside the noise
        # (t = 1 / 1.633 = 0.61 < 2.776), so it does not count, whatever the tolerance.
        ([8.0, 10.0, 12.0], [9.0, 11.0, 13.0], "lower", 5.0, "noise"),
        ([8.0, 10.0, 12.0], [9.0, 11.0, 13.0], "lower", 0.0, "noise"),
        # +2 %, significant (t = 24.5) but within a 5 % tolerance; beyond a 1 % one.
        ([99.9, 100.0, 100.1], [101.9, 102.0, 102.1], "lower", 5.0, "within-tolerance"),
        ([99.9, 100.0, 100.1], [101.9, 102.0, 102.1], "lower", 1.0, "regressed"),
        # Exactly the tolerance is not beyond it.
        ([100.0, 100.0, 100.0], [105.0, 105.0, 105.0], "lower", 5.0, "within-tolerance"),
        # No spread on either side (a deterministic metric): any change is significant.
        ([1.0, 1.0, 1.0], [1.2, 1.2, 1.2], "lower", 5.0, "regressed"),
        # Identical numbers.
        ([3.0, 3.5, 4.0], [3.0, 3.5, 4.0], "lower", 5.0, "unchanged"),
        # From zero (no proxies) to some: an infinite relative change.
        ([0.0, 0.0, 0.0], [0.1, 0.1, 0.1], "lower", 5.0, "regressed"),
        # A success rate that fell by 1 % against a 0.5 % tolerance.
        ([0.999, 0.999, 0.999], [0.989, 0.989, 0.989], "higher", 0.5, "regressed"),
    ],
)  # fmt: skip
def test_noise_rule(
    base: list[float], now: list[float], better: Any, tolerance: float, status: str
) -> None:
    verdict = compare(Sample.of(base), Sample.of(now), better=better, tolerance_pct=tolerance)
    assert verdict.status == status


def test_noise_rule_uses_the_stored_interval_round_trip() -> None:
    base = Sample.of([9.9, 10.0, 10.1])
    again = Sample.from_dict(json.loads(json.dumps(base.to_dict())))
    assert again == base


def test_metric_paths_expand_wildcards_and_bare_names() -> None:
    block = {
        "workloads": {"a": {"success_rate": 1.0, "latency_ms": {"p99": 5.0}},
                      "b": {"success_rate": 0.5, "latency_ms": {"p99": 7.0}}},
        "proxies": {"cpu_vcpu_per_1000rps": 0.2},
    }  # fmt: skip
    assert expand(block, "workloads.*.latency_ms.p99") == {
        "workloads.a.latency_ms.p99": 5.0,
        "workloads.b.latency_ms.p99": 7.0,
    }
    assert expand(block, "success_rate") == {
        "workloads.a.success_rate": 1.0,
        "workloads.b.success_rate": 0.5,
    }
    assert expand(block, "proxies.cpu_vcpu_per_1000rps") == {"proxies.cpu_vcpu_per_1000rps": 0.2}
    assert expand(block, "proxies.nothing") == {}


# --------------------------------------------------------------------------- the gate


def _has(mesh: str) -> bool:
    from meshsim.sim.dataplanes import DATA_PLANES

    return mesh in DATA_PLANES


SCENARIO = {
    "meshsim": 1,
    "name": "gate",
    "seed": 5,
    "duration_s": 3.0,
    "warmup_s": 0.5,
    "meshes": ["none"],
    "cluster": {"nodes": 2, "cores_per_node": 2},
    "services": [
        {"name": "web", "replicas": 1, "cpu_ms": {"dist": "lognormal", "mean": 1.0, "cv": 0.5},
         "calls": [{"service": "api"}]},
        {"name": "api", "replicas": 1, "cpu_ms": {"dist": "exponential", "mean": 0.5}},
    ],
    "workloads": [{"name": "users", "target": "web", "rate_rps": 200}],
}  # fmt: skip


def _suite(tmp_path: Path, overrides: dict[str, Any], meshes: list[str]) -> Path:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    suite = {
        "bench": 1,
        "name": "gate-test",
        "replications": 3,
        "tolerance_pct": 5,
        "baseline": "baseline.json",
        "metrics": ["workloads.*.latency_ms.p50", "workloads.*.latency_ms.p99",
                    "success_rate", "proxies.cpu_vcpu_per_1000rps"],
        "scenarios": [{"path": "scenario.yaml", "meshes": meshes, "overrides": overrides}],
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _doubled_proxy_cpu_model(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "models" / "istio-sidecar.yaml").read_text())
    for p in data["parameters"].values():
        if isinstance(p, dict) and str(p.get("unit", "")).startswith("us"):
            p["value"] = p["value"] * 2
            if "range" in p:  # the loader rejects a range that does not contain its value
                p["range"] = [bound * 2 for bound in p["range"]]
    path = tmp_path / "istio-doubled.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _bench(*args: str) -> Any:
    # No COLUMNS (as in a CI log; xdist's workers may have one): the table must still name
    # each metric whole.
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False, env={"COLUMNS": None})


@pytest.mark.parametrize("worsening", ["doubled-app-cpu", "doubled-proxy-cpu"])
@pytest.mark.long
def test_bench_flags_a_worsened_model_and_passes_an_unchanged_one(
    tmp_path: Path, worsening: str
) -> None:
    if worsening == "doubled-proxy-cpu" and not _has("istio"):
        pytest.skip("needs the istio data plane")
    meshes = ["none", "istio"] if _has("istio") else ["none"]
    suite = _suite(tmp_path, {}, meshes)
    made = _bench(str(suite), "--update-baseline")
    assert made.exit_code == 0, made.output
    stored = json.loads((tmp_path / "baseline.json").read_text())
    assert "gate/none/workloads.users.latency_ms.p99" in stored["metrics"]
    assert stored["metrics"]["gate/none/workloads.users.latency_ms.p99"]["n"] == 3

    same = _bench(str(suite))
    assert same.exit_code == 0, same.output
    assert "no regressions" in same.output

    if worsening == "doubled-app-cpu":
        overrides: dict[str, Any] = {"services[0].cpu_ms.mean": 2.0, "services[1].cpu_ms.mean": 1.0}
        regressed_metric = "gate/none/workloads.users.latency_ms.p50"
    else:
        overrides = {"mesh_options.istio.model": str(_doubled_proxy_cpu_model(tmp_path))}
        regressed_metric = "gate/istio/proxies.cpu_vcpu_per_1000rps"
    worse = _suite(tmp_path, overrides, meshes)
    gated = _bench(str(worse), "--all")
    assert gated.exit_code == 1, gated.output
    line = next(row for row in gated.output.splitlines() if regressed_metric in row)
    assert "regressed" in line
    # A tolerance wider than the damage lets it through.
    assert _bench(str(worse), "--tolerance", "1000").exit_code == 0


def test_bench_without_a_baseline_is_bad_input(tmp_path: Path) -> None:
    result = _bench(str(_suite(tmp_path, {}, ["none"])))
    assert result.exit_code == 2
    assert "no baseline" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bench: 1\nname: x\nreplications: 2\nscenarios: [{path: scenario.yaml}]\n",
         "suite.yaml:3: replications:"),
        ("bench: 1\nname: x\nscenarios:\n  - path: scenario.yaml\n    overides: {}\n",
         "suite.yaml:5: scenarios[0].overides: unknown key 'overides'"),
        ("bench: 1\nname: x\nmetrics: [p99]\nscenarios:\n  - path: scenario.yaml\n"
         "    overrides:\n      duration_s: -3\n",
         "suite.yaml:7: scenarios[0].overrides.duration_s: the scenario it makes is invalid"),
        ("bench: 1\nname: x\nmetrics: [p99]\nscenarios:\n  - path: nowhere.yaml\n",
         "suite.yaml:5: scenarios[0].path: invalid scenario"),
        ("bench: 1\nname: x\n", "a suite needs 'scenarios', 'benchmarks' or both"),
    ],
)  # fmt: skip
def test_bad_suites_give_located_errors_and_exit_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (tmp_path / "suite.yaml").write_text(text)
    result = _bench(str(tmp_path / "suite.yaml"))
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())


def test_project_suite_loads_and_its_baseline_covers_it() -> None:
    from meshsim.bench import load_suite, read_baseline

    suite = load_suite(ROOT / "benchmarks" / "suites" / "model-outputs.yaml")
    baseline = read_baseline(suite.default_baseline)
    assert baseline["suite_sha256"] == suite.sha256()
    entries = {key.split("/", 1)[0] for key in baseline["metrics"]}
    assert entries == set(suite.ids())
