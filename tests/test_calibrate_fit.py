"""Calibration fits (meshsim.calibrate.fit, fortio_import): recovery of known parameters from
synthetic samples, distribution choice, CI coverage, reproducibility."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from meshsim.calibrate.fit import (
    choose,
    fit_line,
    fit_service_time,
    gamma_cdf,
    gamma_mle,
    lognormal_cdf,
)
from meshsim.calibrate.fortio_import import calibrate_from_fortio, classify
from meshsim.models import load_model


def test_gamma_cdf_matches_closed_forms() -> None:
    x = np.array([0.1, 1.0, 3.0, 10.0])
    # shape 1: exponential CDF; shape 2: 1 - e^-x (1 + x)
    assert np.allclose(gamma_cdf(x, 1.0, 1.0), 1 - np.exp(-x), atol=1e-10)
    assert np.allclose(gamma_cdf(x, 2.0, 1.0), 1 - np.exp(-x) * (1 + x), atol=1e-10)
    assert lognormal_cdf(np.array([math.e]), 1.0, 0.5)[0] == pytest.approx(0.5)


def test_lognormal_is_chosen_and_its_ci_covers_the_truth() -> None:
    rng = np.random.default_rng(11)
    mu, sigma = math.log(80.0), 0.4
    x = rng.lognormal(mu, sigma, 3000)
    f = fit_service_time(x, seed=1)
    assert f.dist == "lognormal"
    assert f.params["mu"].covers(mu)
    assert f.params["sigma"].covers(sigma)
    assert f.mean.covers(math.exp(mu + sigma**2 / 2))
    assert f.scores["lognormal"]["ks_d"] < 0.03


def test_gamma_is_chosen_and_its_ci_covers_the_truth() -> None:
    rng = np.random.default_rng(12)
    k, theta = 3.0, 25.0
    x = rng.gamma(k, theta, 3000)
    f = fit_service_time(x, seed=2)
    assert f.dist == "gamma"
    assert f.params["shape"].covers(k)
    assert f.params["scale"].covers(theta)
    assert f.mean.covers(k * theta)
    assert gamma_mle(x)[0] == pytest.approx(k, rel=0.1)


def test_a_bimodal_sample_falls_back_to_the_empirical_distribution() -> None:
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(50, 3, 2000), rng.normal(200, 5, 1000)])
    f = fit_service_time(x, seed=3)
    assert f.dist == "empirical"
    assert len(f.quantiles) == 101
    assert (
        choose({"lognormal": {"loglik": 0, "ks_d": 0.01}, "gamma": {"loglik": -1, "ks_d": 0.5}})
        == "lognormal"
    )


def test_line_fit_recovers_slope_and_intercept_with_ci() -> None:
    rng = np.random.default_rng(14)
    x = np.repeat([0.25, 2.0, 16.0, 64.0], 5)
    y = 120.0 + 1.5 * x + rng.normal(0, 4.0, len(x))
    f = fit_line(x, y, seed=4)
    assert f.slope.covers(1.5)
    assert f.intercept.covers(120.0)
    assert abs(sum(f.residuals)) < 1e-6


def test_fit_is_reproducible_within_its_confidence_intervals() -> None:
    """Same data and seed: identical; another bootstrap seed: each estimate inside the
    other's CI (the issue's reproducibility criterion, on identical synthetic data)."""
    x = np.random.default_rng(15).lognormal(math.log(60.0), 0.5, 2000)
    a = fit_service_time(x, seed=1)
    b = fit_service_time(x, seed=1)
    c = fit_service_time(x, seed=99)
    assert a.to_json() == b.to_json()
    for name in ("mean", "cv", "p50", "p99"):
        ea, ec = getattr(a, name), getattr(c, name)
        assert ea.covers(ec.value)
        assert ec.covers(ea.value)
    # Two independent "calibrations" (fresh samples of the same process) agree within CIs.
    y = np.random.default_rng(16).lognormal(math.log(60.0), 0.5, 2000)
    d = fit_service_time(y, seed=1)
    assert a.mean.covers(d.mean.value) or d.mean.covers(a.mean.value)


@pytest.mark.long
def test_two_calibrations_agree_as_often_as_95pct_cis_allow() -> None:
    """The issue's criterion on synthetic data: many pairs of independent "calibrations"
    (fresh samples of one process, as two lab runs on a quiet machine).

    With 95% CIs of equal width, the other run's estimate falls inside this run's CI with
    probability P(|Z| < 1.96 / sqrt 2) = 0.83, not 0.95 (both estimates are noisy), while
    the two CIs overlap with probability P(|Z| < 1.96 sqrt 2) = 0.994. So "every parameter
    inside the other's CI" fails for about one parameter in six even when nothing differs
    between the runs; "the CIs overlap" is the criterion a reproducible fit meets.
    """
    rng = np.random.default_rng(2026)
    inside = overlap = 0
    pairs = 60
    for _ in range(pairs):
        a = fit_service_time(rng.lognormal(math.log(60.0), 0.5, 400), seed=1).mean
        b = fit_service_time(rng.lognormal(math.log(60.0), 0.5, 400), seed=2).mean
        inside += a.covers(b.value)
        overlap += a.lo <= b.hi and b.lo <= a.hi
    assert 0.65 <= inside / pairs <= 0.95
    assert overlap / pairs >= 0.93


# --------------------------------------------------------------------------- --from-fortio


def _fortio(labels: str, qps: float, avg_us: float) -> dict[str, object]:
    return {
        "RunType": "HTTP",
        "Labels": labels,
        "RequestedQPS": f"{qps:g}",
        "ActualQPS": qps,
        "NumThreads": 4,
        "DurationHistogram": {
            "Count": 1000,
            "Avg": avg_us * 1e-6,
            "Percentiles": [{"Percentile": 50.0, "Value": avg_us * 1e-6}],
        },
    }


def test_labels_say_which_run_is_which() -> None:
    assert classify("istio both sidecars") is True
    assert classify("no-mesh baseline") is False
    assert classify("linkerd") is True
    assert classify("something") is None


@pytest.mark.parametrize("via_manifest", [False, True])
@pytest.mark.long
def test_from_fortio_recovers_a_known_per_hop_cost(tmp_path: Path, via_manifest: bool) -> None:
    s, h, hops, workers = 150.0, 60.0, 2, 2.0
    base = 400.0
    files = []
    for qps in (100.0, 1000.0, 3000.0, 5000.0):
        rho = qps * s * 1e-6 / workers
        per_hop = h + s + rho * s / (1 - rho)
        for mesh, avg in ((False, base), (True, base + hops * per_hop)):
            name = f"{'mesh' if mesh else 'baseline'}-{qps:g}.json"
            label = "" if via_manifest else ("istio" if mesh else "baseline")
            (tmp_path / name).write_text(json.dumps(_fortio(label, qps, avg)))
            files.append((name, mesh))
    if via_manifest:
        man = tmp_path / "runs.yaml"
        man.write_text(
            "hops: 2\nworkers: 2\nruns:\n"
            + "".join(f"  - {{file: {n}, mesh: {str(m).lower()}}}\n" for n, m in files)
        )
        inputs = [man]
    else:
        inputs = [tmp_path / n for n, _ in files]
    out = tmp_path / "fortio.yaml"
    doc = calibrate_from_fortio(inputs, out, kind="envoy-sidecar")
    est = doc["fit"]["estimates"]
    assert est["service_us"]["value"] == pytest.approx(s, rel=0.02)
    assert est["hop_latency_us"]["value"] == pytest.approx(h, rel=0.05, abs=3.0)
    m = load_model(out)  # the written file passes the loader's checks
    r0, r1, _ = m.request_cpu_us(0, 0, mtls=True)
    assert r0 + r1 == pytest.approx(s, rel=0.02)
    assert m.hop_latency_us == pytest.approx(h / 2, rel=0.05, abs=1.5)
    assert (tmp_path / "fortio.fit.json").exists()


def test_from_fortio_needs_two_loads(tmp_path: Path) -> None:
    from meshsim.errors import MeshsimError

    (tmp_path / "a.json").write_text(json.dumps(_fortio("baseline", 100, 300)))
    (tmp_path / "b.json").write_text(json.dumps(_fortio("istio", 100, 500)))
    with pytest.raises(MeshsimError, match="two or more loads"):
        calibrate_from_fortio([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "o.yaml")


# --------------------------------------------------------------------------- baseline delay


def _queue(client_delay: object | None) -> dict[str, object]:
    wl: dict[str, object] = {
        "name": "w",
        "target": "a",
        "arrival": "poisson",
        "rate_rps": 20.0,
        "request_bytes": 0,
    }
    if client_delay is not None:
        wl["client_delay_ms"] = client_delay
    return {
        "meshsim": 1,
        "name": "q",
        "seed": 3,
        "duration_s": 30.0,
        "warmup_s": 1.0,
        "cluster": {
            "nodes": 1,
            "cores_per_node": 1,
            "network": {"same_node_us": 0, "cross_node_us": 0, "client_us": 0},
        },
        "services": [
            {"name": "a", "replicas": 1, "concurrency": 1, "cpu_ms": 1.0, "response_bytes": 0}
        ],
        "workloads": [wl],
    }


def _latency(doc: dict[str, object]) -> dict[str, float]:
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    out = build_summary(run_scenario(from_dict(doc), meshes=["none"]))["runs"]["none"]
    lat: dict[str, float] = out["workloads"]["w"]["latency_ms"]
    return lat


def test_client_delay_adds_a_drawn_delay_outside_the_cluster() -> None:
    plain = _latency(_queue(None))
    const = _latency(_queue(2.0))  # bare number: a constant 2 ms
    assert const["p50"] == pytest.approx(plain["p50"] + 2.0, abs=0.02)
    # An empirical delay (a baseline's quantiles): its tail reaches the workload's p99.
    values = [0.1] * 95 + [5.0] * 5
    emp = _latency(_queue({"dist": "empirical", "values": values}))
    assert emp["p50"] == pytest.approx(plain["p50"] + 0.1, abs=0.05)
    assert emp["p99"] > plain["p99"] + 4.0


def test_lab_scenario_draws_the_baseline_at_the_points_payload_and_load() -> None:
    from meshsim.calibrate.validate import baseline_for, lab_scenario

    rows = [
        {"payload_bytes": pay, "rps": rps, "delay_ms": [rps / 1000.0]}
        for pay in (128, 1024)
        for rps in (100.0, 500.0)
    ]
    fit = {
        "lab": {"network_one_way_us": 80.0, "echo_cpu_us": 40.0},
        "client_delay": {"baselines": rows},
    }
    point = {
        "payload_bytes": 1024,
        "rps": 450.0,
        "connections": 8,
        "keep_alive": True,
        "mtls": False,
    }
    assert baseline_for(fit, point) == rows[3]
    doc = lab_scenario(Path("m.yaml"), fit, point)
    assert doc["workloads"][0]["client_delay_ms"] == {"dist": "empirical", "values": [0.5]}
    assert doc["cluster"]["network"]["client_us"] == 0.0
    # Closed loop (saturation): the highest open-loop load at the payload, and no delay
    # drawn. Older fit records: the p50 as network delay.
    assert baseline_for(fit, {**point, "rps": 0.0}) == rows[3]
    assert (
        "client_delay_ms"
        not in lab_scenario(Path("m.yaml"), fit, {**point, "rps": 0.0})["workloads"][0]
    )
    old = lab_scenario(Path("m.yaml"), {"lab": fit["lab"]}, point)
    assert "client_delay_ms" not in old["workloads"][0]
    assert old["cluster"]["network"]["client_us"] == 80.0


def test_resampling_whole_points_covers_drift_between_them() -> None:
    """Samples taken at one measurement point share its machine state. When the points'
    means differ (drift), the per-sample bootstrap's CI misses the process mean most of the
    time; resampling whole points covers it about as often as a 95% CI should."""
    rng = np.random.default_rng(77)
    covered_iid = covered_cluster = 0
    widths = []
    reps = 20
    for r in range(reps):
        groups = [rng.lognormal(math.log(rng.normal(60.0, 3.0)), 0.3, 300) for _ in range(8)]
        flat = np.concatenate(groups)
        # the process mean: a point's mean is exp(mu + sigma^2 / 2) around 60
        truth = 60.0 * math.exp(0.3**2 / 2)
        iid = fit_service_time(flat, seed=r).mean
        cluster = fit_service_time(flat, seed=r, groups=groups).mean
        widths.append((cluster.hi - cluster.lo) / (iid.hi - iid.lo))
        covered_iid += iid.covers(truth)
        covered_cluster += cluster.covers(truth)
    assert covered_iid / reps < 0.5  # 8 of 20 with this seed
    assert covered_cluster / reps >= 0.75  # 18 of 20
    assert float(np.mean(widths)) > 2.0  # 2.5: the drift between points counted
