"""A proxy's CPU-cost drift between CFS periods: the process (meshsim.sim.cpu.drift), its fit
from the lab's CPU per period (meshsim.calibrate.cpu_drift) and its effect on a simulated run.

The process is checked against its closed forms (the lognormal's moments, the exponential
autocorrelation, the period means' variance and correlation) with stated tolerances; the
fit against synthetic figures built from known parameters (exactly) and against figures
measured on a simulated drift (within the sampling noise of the series).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from meshsim.api import run_scenario
from meshsim.calibrate.cpu_drift import (
    MAX_POISSON_CV,
    MIN_PERIODS,
    SimulatedPeriods,
    excess,
    fit_drift,
    time_constant_s,
)
from meshsim.calibrate.period_cpu import figures
from meshsim.errors import MeshsimError
from meshsim.models import load_model
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.sim.cpu.drift import CpuDrift, period_lag1, period_mean_cv, standard_normal
from meshsim.sim.engine import Simulation
from meshsim.sweep.executors import LocalExecutor

PERIOD = 0.1


def _path(cv: float, tau: float, step: float, n: int, seed: int = 5) -> np.ndarray:
    """The drift's factor read every ``step`` seconds, ``n`` times."""
    drift = CpuDrift(cv, tau, standard_normal(np.random.default_rng(seed)))
    return np.array([drift.at(k * step) for k in range(n)])


# ----------------------------------------------------------------- the process


def test_the_factor_is_lognormal_of_mean_one_and_the_model_cv() -> None:
    # 200 000 readings 50 ms apart (half a time constant): about 100 000 independent ones.
    x = _path(0.1, 0.1, 0.05, 200_000)
    assert x.mean() == pytest.approx(1.0, abs=0.003)
    assert x.std() / x.mean() == pytest.approx(0.1, rel=0.03)
    assert np.log(x).std() == pytest.approx(math.sqrt(math.log1p(0.01)), rel=0.03)


def test_the_log_forgets_its_past_as_exp_minus_t_over_the_time_constant() -> None:
    log = np.log(_path(0.1, 0.1, 0.05, 200_000))
    for lag, expected in ((1, math.exp(-0.5)), (2, math.exp(-1.0)), (6, math.exp(-3.0))):
        r = np.corrcoef(log[:-lag], log[lag:])[0, 1]
        assert r == pytest.approx(expected, abs=0.02)


def test_the_factor_holds_for_a_tenth_of_the_time_constant() -> None:
    drift = CpuDrift(0.2, 0.1, standard_normal(np.random.default_rng(1)))
    first = drift.at(0.0)
    assert drift.at(0.0099) == first  # within a step: the same factor, no draw
    assert drift.at(0.0101) != first


def test_period_means_vary_and_correlate_as_their_closed_forms_say() -> None:
    # Read every millisecond, averaged over 100 ms periods.
    cv, tau = 0.1, 0.15
    x = _path(cv, tau, 0.001, 2_000_000, seed=11).reshape(-1, 100).mean(axis=1)
    assert x.std() / x.mean() == pytest.approx(period_mean_cv(cv, tau, PERIOD), rel=0.05)
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(period_lag1(tau, PERIOD), abs=0.03)


def test_the_closed_forms_limits() -> None:
    # A drift far slower than a period keeps its whole variance and correlates fully; one
    # far faster averages out and does not correlate.
    assert period_mean_cv(0.1, 100.0, PERIOD) == pytest.approx(0.1, rel=1e-3)
    assert period_lag1(100.0, PERIOD) == pytest.approx(1.0, abs=1e-3)
    assert period_mean_cv(0.1, 1e-4, PERIOD) == pytest.approx(0.1 * math.sqrt(2e-3), rel=0.01)
    assert period_lag1(1e-4, PERIOD) == pytest.approx(0.0, abs=1e-3)
    assert time_constant_s(period_lag1(0.2, PERIOD)) == pytest.approx(0.2, rel=1e-6)


# ----------------------------------------------------------------- the fit


def _sidecar(period_cv: float, lag1: float, n: float, request_cv: float = 0.0) -> dict[str, float]:
    """The figures of a sidecar whose requests are Poisson (``n`` a period) and whose CPU
    drifts by ``period_cv`` per period with lag-1 ``lag1``, exactly."""
    poisson = 1.0 / math.sqrt(n)
    var = period_cv**2 + poisson**2 + (request_cv * poisson) ** 2
    return {
        "periods": 50,
        "cpu_cv": math.sqrt(var),
        "requests_cv": poisson,
        "poisson_cv": poisson,
        "lag1": lag1 * period_cv**2 / var,
    }


def test_the_fit_recovers_a_known_drift_exactly() -> None:
    tau = 0.2
    rho = period_lag1(tau, PERIOD)
    points = [
        {
            "server_sidecar": _sidecar(0.07, rho, n, 0.3),
            "client_sidecar": _sidecar(0.07, rho, n, 0.3),
        }
        for n in (100.0, 200.0, 400.0)
    ]
    d = fit_drift(points, 0.3)
    assert d is not None
    assert d.samples == 6
    assert d.period_cv == pytest.approx(0.07, rel=1e-6)
    assert d.time_constant_ms.value == pytest.approx(200.0, rel=1e-4)
    assert d.cv.value == pytest.approx(0.07 / period_mean_cv(1.0, tau, PERIOD), rel=1e-4)
    # Identical samples: the bootstrap has nothing to vary.
    assert (d.cv.lo, d.cv.hi) == pytest.approx((d.cv.value, d.cv.value), rel=1e-6)


def test_the_fit_leaves_out_points_whose_requests_hide_the_drift() -> None:
    few = 1.0 / (MAX_POISSON_CV * 1.1) ** 2  # just too few requests a period
    points = [{"server_sidecar": _sidecar(0.3, 0.5, few)}] * 5
    assert fit_drift(points, 0.0) is None
    # Points with enough requests, but none beyond the requests' variance: no drift.
    steady = [{"server_sidecar": _sidecar(0.0, 0.0, 400.0)}] * 5
    assert fit_drift(steady, 0.0) is None
    # Points of too few periods (the quick grid's 1 s loads) say nothing.
    short = {**_sidecar(0.07, 0.5, 400.0), "periods": MIN_PERIODS - 1}
    assert fit_drift([{"server_sidecar": short}] * 5, 0.0) is None
    assert fit_drift([{"server_sidecar": _sidecar(0.07, 0.5, 400.0)}] * 2, 0.0) is None


def test_the_median_takes_the_negative_excesses_as_they_come() -> None:
    # Sampling noise puts some excesses below zero; clipping each would bias the median up.
    v, _ = excess({"cpu_cv": 0.05, "requests_cv": 0.06, "poisson_cv": 0.06, "lag1": 0.0}, 0.0)
    assert v == pytest.approx(0.05**2 - 0.06**2)
    points = [
        {"s": {"periods": 50, "cpu_cv": c, "requests_cv": 0.06, "poisson_cv": 0.06, "lag1": 0.3}}
        for c in (0.05, 0.0781, 0.10)
    ]
    d = fit_drift(points, 0.0)
    assert d is not None
    assert d.period_cv == pytest.approx(math.sqrt(0.0781**2 - 0.06**2), rel=1e-6)


def test_the_fit_recovers_a_simulated_drift_within_its_sampling_noise() -> None:
    # 30 "points" of 300 periods: a drift of cv 0.08 and 150 ms, Poisson requests (250 a
    # period) each costing 100 us times the drift and a per-request gamma of cv 0.3.
    rng = np.random.default_rng(7)
    cv, tau = 0.08, 0.15
    points = []
    for k in range(30):
        factor = _path(cv, tau, 0.002, 300 * 50, seed=100 + k).reshape(-1, 50).mean(axis=1)
        n = rng.poisson(250.0, size=300).astype(float)
        noise = np.array([rng.gamma(1 / 0.09, 0.09, size=int(m)).sum() for m in n])
        per = 100e-6 * factor * noise
        f = figures(per, n)
        assert f is not None
        points.append({"server_sidecar": f})
    d = fit_drift(points, 0.3)
    assert d is not None
    assert d.cv.value == pytest.approx(cv, rel=0.15)
    assert d.time_constant_ms.value == pytest.approx(1e3 * tau, rel=0.5)
    assert d.cv.covers(cv)


def _sleeping_sidecar(
    rng: np.random.Generator, drift_cv: float, periods: int = 300, n: float = 335.0
) -> dict[str, float]:
    """Figures of a sidecar whose CPU per period is 6 ms that go with its loop's sleeps
    (not with its requests) plus 33 us per Poisson request with a per-request cv of 0.3,
    all times a drift of ``drift_cv`` per period, independent between periods: the shape
    of the lab's server sidecar at 3347 rps (slope times requests 0.65 of the mean)."""
    count = rng.poisson(n, size=periods).astype(float)
    noise = np.array([rng.gamma(1 / 0.09, 0.09, size=int(m)).sum() for m in count])
    drift = 1.0 + drift_cv * rng.standard_normal(periods)
    f = figures((6e-3 + 33e-6 * noise) * drift, count)
    assert f is not None
    return f


def test_a_period_s_residual_on_its_requests_is_what_the_count_does_not_explain() -> None:
    rng = np.random.default_rng(3)
    n = rng.poisson(300.0, size=200).astype(float)
    exact = figures(5e-3 + 40e-6 * n, n)
    assert exact is not None
    assert exact["residual_cv"] == pytest.approx(0.0, abs=1e-9)
    # An AR(1) residual of sd 0.5 ms and lag-1 0.6 over a 17 ms mean.
    e = np.zeros(20_000)
    for k in range(1, len(e)):
        e[k] = 0.6 * e[k - 1] + 0.8 * 0.5e-3 * rng.standard_normal()
    n = rng.poisson(300.0, size=len(e)).astype(float)
    per = 5e-3 + 40e-6 * n + e
    f = figures(per, n)
    assert f is not None
    assert f["residual_cv"] == pytest.approx(0.5e-3 / per.mean(), rel=0.03)
    assert f["residual_lag1"] == pytest.approx(0.6, abs=0.03)
    assert figures(np.full(4, 1e-3), np.full(4, 10.0)) is not None  # a count that never varies


def test_cpu_that_goes_with_sleeps_is_neither_taken_for_a_drift_nor_hides_one() -> None:
    # The count's whole cv taken out of the CPU's, as if the CPU were proportional to it,
    # takes out more than the count put in: every excess comes out negative, and a drift
    # of 3 % per period disappears. On the residual the fit finds none where there is
    # none and the 3 % where it is.
    rng = np.random.default_rng(9)
    none = [{"s": _sleeping_sidecar(rng, 0.0)} for _ in range(7)]
    some = [{"s": _sleeping_sidecar(rng, 0.03)} for _ in range(7)]
    old = [{k: v for k, v in f["s"].items() if not k.startswith("residual")} for f in some]
    assert all(excess(f, 0.3)[0] < 0.0 for f in old)
    assert fit_drift([{"s": f} for f in old], 0.3) is None
    found = fit_drift(none, 0.3)
    # The median of seven residuals' sampling noise (300 periods each) leaves under 0.6 %.
    assert found is None or found.period_cv < 0.006
    d = fit_drift(some, 0.3)
    assert d is not None
    assert d.period_cv == pytest.approx(0.03, rel=0.15)
    # Independent between periods: a lag-1 of 300 periods has a sampling sd of 0.06.
    assert d.period_lag1 < 0.15


# ----------------------------------------------------------------- in the simulator


def _model(tmp_path: Path, cv: float, ms: float) -> Path:
    """The shipped Istio sidecar model with a drift."""
    src = Path(__file__).resolve().parents[1] / "models" / "istio-sidecar.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["parameters"]["cpu_drift_cv"] = {"value": cv, "unit": "ratio", "source": "test"}
    doc["parameters"]["cpu_drift_ms"] = {"value": ms, "unit": "ms", "source": "test"}
    out = tmp_path / "drifting.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _scenario(model: Path | None, duration_s: float = 20.0) -> dict[str, Any]:
    istio: dict[str, Any] = {"mtls": "DISABLE", "workers": 1}
    if model is not None:
        istio["model"] = str(model)
    return {
        "meshsim": 1,
        "name": "drift",
        "seed": 3,
        "duration_s": duration_s,
        "warmup_s": 0.5,
        "meshes": ["istio"],
        "cluster": {"nodes": 1, "cores_per_node": 4},
        "services": [{"name": "echo", "replicas": 1, "cpu_ms": {"dist": "constant", "mean": 0.05}}],
        "workloads": [{"name": "load", "target": "echo", "arrival": "poisson", "rate_rps": 2000.0}],
        "mesh_options": {"istio": istio},
    }


def _periods(doc: dict[str, Any]) -> dict[str, float]:
    probes: list[SimulatedPeriods] = []
    run_scenario(
        from_dict(doc),
        observe=lambda sim: probes.append(SimulatedPeriods(sim, {"s": "echo-v1-0/sidecar"})),
    )
    return probes[0].figures()["s"]


@pytest.mark.long
def test_a_drifting_sidecar_s_cpu_per_period_varies_by_the_drift_and_its_requests(
    tmp_path: Path,
) -> None:
    model = _model(tmp_path, 0.1, 150.0)
    assert load_model(model).cpu_drift == pytest.approx((0.1, 0.15))
    steady = _periods(_scenario(None))
    drifting = _periods(_scenario(model))
    # Without the drift: the requests' (Poisson, 200 a period) and the shipped model's
    # per-request noise, within sampling noise (195 periods: a cv's relative error ~5 %).
    assert steady["cpu_cv"] == pytest.approx(steady["requests_cv"], rel=0.25)
    # With it: the period means' cv added in quadrature.
    expected = math.hypot(steady["cpu_cv"], period_mean_cv(0.1, 0.15, PERIOD))
    assert drifting["cpu_cv"] == pytest.approx(expected, rel=0.2)
    assert drifting["lag1"] > steady["lag1"] + 0.2
    # The same requests (common random numbers): only the CPU differs.
    assert drifting["requests_cv"] == pytest.approx(steady["requests_cv"], rel=0.05)


@pytest.mark.long
def test_a_drift_keeps_the_mean_cpu(tmp_path: Path) -> None:
    def cpu_per_request(doc: dict[str, Any]) -> float:
        run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
        sidecars = run["proxies"]["by_kind"]["sidecar"]
        return float(sidecars["cpu_s_total"]) / float(sidecars["requests"])

    steady = cpu_per_request(_scenario(None))
    drifting = cpu_per_request(_scenario(_model(tmp_path, 0.1, 150.0)))
    # 20 s of a 150 ms drift: ~130 time constants, the mean's relative error ~0.1/sqrt(65).
    assert drifting == pytest.approx(steady, rel=0.04)


def test_a_model_without_a_drift_builds_none(tmp_path: Path) -> None:
    sim = Simulation(from_dict(_scenario(None, 1.0)), "istio", 1)
    assert all(p.drift is None for p in sim.data_plane.proxies)
    doc = _scenario(_model(tmp_path, 0.1, 150.0), 1.0)
    doc["services"][0]["replicas"] = 2
    sim = Simulation(from_dict(doc), "istio", 1)
    drifts = [p.drift for p in sim.data_plane.proxies if p.kind == "sidecar"]
    assert len(drifts) == 2
    a, b = drifts
    assert a is not None
    assert b is not None
    assert a.factor != b.factor  # each proxy its own, started from its own draw


def test_observing_needs_the_simulations_in_this_process() -> None:
    with pytest.raises(MeshsimError, match="observe"):
        run_scenario(
            from_dict(_scenario(None, 1.0)), observe=lambda sim: None, executor=LocalExecutor(2)
        )
