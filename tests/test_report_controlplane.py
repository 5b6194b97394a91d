"""meshsim.studies.controlplane and meshsim.studies.calibrated_model: the notebooks' helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meshsim.models import default_model
from meshsim.sim.controlplane.istiod import steady_state
from meshsim.studies import calibrated_model, controlplane

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "models" / "calibrated" / "lab.yaml"


# ----------------------------------------------------------------------------- control plane


def test_call_graph_is_the_generators_rule() -> None:
    g = controlplane.call_graph(45)
    assert g[0] == [1, 2, 3]
    assert g[17] == [18, 19]  # the group of 20 ends at 19
    assert g[19] == []
    assert g[20] == [21, 22, 23]
    assert g[43] == [44]
    assert all(j > i for i, callees in enumerate(g) for j in callees)  # no cycles


def test_scale_scenario_matches_the_committed_scenario_at_its_size() -> None:
    """The committed control-plane-scale scenario's services, from the same builder."""
    from meshsim.scenario import load_scenario

    committed = load_scenario(ROOT / "scenarios" / "control-plane-scale.yaml")
    built = controlplane.scale_scenario(2000, replicas=5, pods_per_minute=100.0)
    a = committed.model_dump(mode="json")
    b = built.model_dump(mode="json")
    assert a["services"] == b["services"]
    assert a["events"] == b["events"]
    assert a["mesh_options"]["istio"]["istiod_cores"] == 16
    assert b["cluster"]["nodes"] == 100


def test_view_scoped_and_unscoped() -> None:
    assert controlplane.view(1000, 2000, scoped=False) == (1000, 2000)
    assert controlplane.view(1000, 2000, scoped=True, scope_services=10) == (10, 20)
    assert controlplane.view(5, 50, scoped=True, scope_services=10) == (5, 50)


def test_istiod_curve_is_steady_state() -> None:
    curve = controlplane.istiod_curve([2000, 20000], [1, 1000], scope_services=10)
    # services=1 has no scoped series (scoping cannot narrow one service)
    assert sorted(set(curve["series"])) == [
        "1 service",
        "1,000 services, Sidecar scope 10",
        "1,000 services, no scoping",
    ]
    m = default_model("istiod")
    row = curve[(curve["services"] == 1000) & curve["scoped"] & (curve["sidecars"] == 2000)]
    want = steady_state(
        m, services=1000, proxies=2000, endpoints=2000, view_services=10, view_endpoints=20
    )
    assert row["memory_gb"].item() == pytest.approx(want["memory_mb"] / 1024.0, rel=1e-12)
    # no churn: CPU is connected_proxy_cpu_us_per_s per proxy, scoping or not
    per = m.value("connected_proxy_cpu_us_per_s") * 1e-6
    assert np.allclose(curve["cpu_vcpu"], curve["sidecars"] * per, rtol=1e-12)
    # scoping saves memory at 20,000 sidecars, 1000 services
    big = curve[(curve["services"] == 1000) & (curve["sidecars"] == 20000)]
    assert big[big["scoped"]]["memory_gb"].item() < big[~big["scoped"]]["memory_gb"].item()


def test_anchor_table_against_the_published_figures() -> None:
    """Stated tolerances: the fitted anchors within 5 % (they are the fit's inputs); the
    15,000-sidecar churn memory is a known miss (about -31 %, reported, not hidden)."""
    t = controlplane.anchor_table().set_index("tag")
    assert list(t.index) == ["A1", "A2", "A3", "A4"]
    assert t.loc["A1", "model_vcpu"] == pytest.approx(1.0, rel=1e-9)  # 2000 x 500 us/s
    assert t.loc["A1", "model_memory_gb"] == pytest.approx(1.5, rel=0.05)
    assert t.loc["A2", "model_memory_gb"] == pytest.approx(32.1, rel=0.05)
    assert t.loc["A4", "model_memory_gb"] == pytest.approx(40.4, rel=0.05)
    assert t.loc["A3", "model_vcpu"] == pytest.approx(15.0, rel=0.01)
    assert -35.0 < t.loc["A3", "memory_error_pct"] < -25.0
    assert bool(t.loc["A2", "cpu_saturated"])
    assert not bool(t.loc["A1", "cpu_saturated"])
    assert bool(t.loc["A1", "scoped"])
    assert not bool(t.loc["A4", "scoped"])


def test_memory_error_is_against_the_nearest_end_of_a_range() -> None:
    a = controlplane.Anchor("x", "s", 1, 100, 1, 100, 1.0, (1.0, 2.0))
    m = default_model("istiod")
    got = steady_state(m, services=1, proxies=100, endpoints=100, view_services=1,
                       view_endpoints=100)["memory_mb"] / 1024.0  # fmt: skip
    row = controlplane.anchor_table([a]).iloc[0]
    ref = 1.0 if got < 1.0 else 2.0 if got > 2.0 else got
    assert row["memory_error_pct"] == pytest.approx(100.0 * (got - ref) / ref)


def test_convergence_point_from_plain_data() -> None:
    scenario = {
        "services": [{"name": "a", "replicas": 4}, {"name": "b", "replicas": 6}],
        "events": [{"action": "churn", "pods_per_minute": 2.5}, {"action": "kill"}],
        "mesh_options": {"istio": {"sidecar_scoping": True}},
    }
    cp = {
        "convergence_s": {"p50": 0.1, "p90": 0.2, "p99": 0.3, "max": 0.4, "count": 7},
        "cpu_vcpu": 0.05, "memory_mb": 200.0, "stale_endpoint_attempts": 3,
        "connected_proxies": 10,
    }  # fmt: skip
    row = controlplane.convergence_point("istio", cp, scenario)
    assert row["label"] == "istio (Sidecar scoping)"
    assert row["pods"] == 10
    assert row["services"] == 2
    assert row["churn_pct_per_min"] == pytest.approx(25.0)
    assert (row["conv_p50_s"], row["conv_p99_s"], row["conv_count"]) == (0.1, 0.3, 7)
    linkerd = controlplane.convergence_point("linkerd", {"convergence_s": None}, scenario)
    assert linkerd["label"] == "linkerd"
    assert not linkerd["scoped"]
    assert math.isnan(linkerd["conv_p50_s"])
    assert linkerd["conv_count"] == 0


def test_convergence_grid_small() -> None:
    f = controlplane.convergence_grid([4], [300.0], replicas=2, duration_s=10.0, warmup_s=1.0)
    assert list(f.columns) == controlplane.CONVERGENCE_COLUMNS
    assert sorted(f["label"]) == ["istio", "istio (Sidecar scoping)", "linkerd"]
    assert (f["pods"] == 8).all()
    assert (f["pods_per_minute"] == 24.0).all()
    assert (f["connected_proxies"] == 8).all()
    assert (f["conv_count"] > 0).all()
    # istiod waits PILOT_DEBOUNCE_AFTER (100 ms) after the kube event (50 ms); Linkerd does not
    istio = f[f["label"] == "istio"].iloc[0]
    linkerd = f[f["label"] == "linkerd"].iloc[0]
    assert istio["conv_p50_s"] >= 0.15
    assert linkerd["conv_p50_s"] < istio["conv_p50_s"]


def test_plots_return_axes() -> None:
    from matplotlib.axes import Axes

    curve = controlplane.istiod_curve([100, 1000], [1, 50])
    anchors = controlplane.anchor_table()
    assert isinstance(controlplane.plot_istiod(curve, anchors=anchors), Axes)
    ax = controlplane.plot_istiod(curve, y="cpu_vcpu")
    assert ax.get_ylabel() == "istiod vCPU"
    rows = [
        {"label": lab, "pods": p, "churn_pct_per_min": c, "conv_p99_s": 0.2, "conv_p50_s": 0.1,
         "memory_mb": 300.0}
        for lab in ("istio", "linkerd") for p in (10, 20) for c in (1.0, 5.0)
    ]  # fmt: skip
    f = pd.DataFrame(rows)
    ax = controlplane.plot_convergence(f, x="pods", q="p99")
    assert len(ax.get_lines()) == 4  # two meshes x two churn levels
    assert isinstance(controlplane.plot_control_plane_resources(f), Axes)


# ----------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def cal() -> calibrated_model.Calibration:
    if not LAB.exists():
        pytest.skip("no committed calibrated model")
    return calibrated_model.load_calibration(LAB)


def test_service_time_samples_are_the_fits(cal: calibrated_model.Calibration) -> None:
    assert cal.measurements is not None
    s = calibrated_model.service_time_samples(cal.measurements)
    st = cal.fit["service_time"]
    assert len(s) == st["samples"]
    assert s.mean() == pytest.approx(st["mean"]["value"], rel=1e-9)
    if st.get("quantiles_us"):
        assert np.quantile(s, 0.5) == pytest.approx(st["p50"]["value"], rel=1e-9)


def test_service_time_frame() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(4.0, 0.4, size=500)
    fit = {"service_time": {"dist": "lognormal", "params": {}}}
    f = calibrated_model.service_time_frame(fit, x)
    assert f["cpu_us"].is_monotonic_increasing
    assert f["measured_cdf"].iloc[-1] == 1.0
    # the lognormal MLE fits lognormal data: max |F_n - F| small (KS at n=500, 1 % level ~0.073)
    assert (f["measured_cdf"] - f["lognormal_cdf"]).abs().max() < 0.073
    # without samples, an empirical fit's quantiles stand in
    q = {"service_time": {"dist": "empirical", "params": {}, "quantiles_us": list(
        np.quantile(x, np.linspace(0, 1, 101)))}}  # fmt: skip
    g = calibrated_model.service_time_frame(q)
    assert len(g) == 101
    assert g["measured_cdf"].iloc[50] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        calibrated_model.service_time_frame({"service_time": {"dist": "gamma", "params": {}}})


def test_residual_and_ci_frames() -> None:
    fit = {
        "service_time": {
            "mean": {"value": 10.0, "ci95": [9.0, 11.0]}, "cv": {"value": 0.5, "ci95": [0.4, 0.6]},
            "p50": {"value": 9.0, "ci95": [8.0, 10.0]}, "p99": {"value": 30.0, "ci95": [20, 40]},
            "params": {"mu": {"value": 2.0, "ci95": [1.9, 2.1]}},
        },
        "estimates": {
            "filter_cpu_us": {
                "intercept": {"value": 100.0, "ci95": [90.0, 110.0]},
                "slope": {"value": 10.0, "ci95": [5.0, 15.0]},
                "points": [{"x": 0.0, "y": 105.0, "residual": 5.0},
                           {"x": 4.0, "y": 135.0, "residual": -5.0}],
            },
            "handshake_cpu_us_per_side": {"value": 1000.0, "ci95": [900.0, 1200.0]},
            "handshake_cpu_us_by_side": {"client": 1.0},
            "tls_extra_cpu_us_vs_kib": None,
            "hop_latency_us": {"added_p50_us": 1.0},
        },
    }  # fmt: skip
    r = calibrated_model.residual_frame(fit)
    assert list(r["fitted"]) == [100.0, 140.0]
    assert list(r["residual_pct"]) == pytest.approx([5.0, -5.0 / 140.0 * 100.0])
    c = calibrated_model.ci_frame(fit).set_index("quantity")
    assert list(c.index) == [
        "service_time.mean", "service_time.cv", "service_time.p50", "service_time.p99",
        "service_time.mu", "filter_cpu_us.intercept", "filter_cpu_us.slope",
        "handshake_cpu_us_per_side",
    ]  # fmt: skip
    assert c.loc["filter_cpu_us.slope", "parameter"] == "l7_filter_us"
    assert c.loc["filter_cpu_us.slope", "rel_half_width_pct"] == pytest.approx(50.0)
    assert c.loc["handshake_cpu_us_per_side", "rel_half_width_pct"] == pytest.approx(15.0)


def test_held_out_frame_and_goals() -> None:
    rows = [
        {"config": "plain-ka-f0", "payload_bytes": 256, "rps": 500.0, "saturation": False,
         "measured_proxy_utilisation": 0.2,
         "measured": {"p50": 1.0, "p90": 2.0, "p99": 4.0, "rps": 500.0},
         "predicted": {"p50": 1.05, "p90": 1.5, "p99": 3.0, "rps": 490.0},
         "error_pct": {"p50": 5.0, "p90": -25.0, "p99": -25.0, "rps": -2.0},
         "checked": ["p50", "p99"]},
        {"config": "plain-ka-f0", "payload_bytes": 256, "rps": 0.0, "saturation": True,
         "measured_proxy_utilisation": 0.9,
         "measured": {"p50": 3.0, "p90": 3.0, "p99": 3.0, "rps": 3000.0},
         "predicted": {"p50": 3.0, "p90": 3.0, "p99": 3.0, "rps": 2900.0},
         "error_pct": {"p50": 0.0, "p90": 0.0, "p99": 0.0, "rps": -3.33},
         "checked": ["rps"]},
    ]  # fmt: skip
    h = calibrated_model.held_out_frame(rows)
    assert list(h.columns) == calibrated_model.HELD_OUT_COLUMNS
    assert len(h) == 8
    assert h["checked"].sum() == 3
    g = calibrated_model.goals_frame(h).set_index("metric")
    assert g.loc["p50", "met"]
    assert g.loc["p50", "worst_error_pct"] == 5.0
    assert not g.loc["p99", "met"]
    assert g.loc["p99", "worst_error_pct"] == 25.0
    assert g.loc["rps", "met"]
    assert g.loc["rps", "points"] == 1


@pytest.mark.long
def test_held_out_simulated_from_the_committed_model(lab_model_few_held_out: Path) -> None:
    from meshsim.calibrate.validate import held_out_points, merge_passes

    # Three of its held-out points (the lowest plain load, saturation, mTLS), 0.6 s each:
    # the lab scenario's 0.5 s warm-up and 0.1 s measured (at least ~100 requests at the
    # lowest held-out rate); what is checked here is the frame's shape, the measured values
    # copied from the fit record and that every prediction is positive, none of which needs
    # a longer window or more points.
    cal = calibrated_model.load_calibration(lab_model_few_held_out)
    h = calibrated_model.held_out_frame(calibrated_model.held_out(cal.path, duration_s=0.6))
    # one row per metric and held-out point, its passes merged into their median
    points = [merge_passes(g) for g in held_out_points(cal.fit["points"], cal.fit["held_out"])]
    points = [p for p in points if not p["filters"]]
    assert len(points) == 3
    assert len(h) == 4 * len(points)
    measured = h[h["metric"] == "p50"]["measured"].tolist()
    assert measured == [p["latency_ms"]["p50"] for p in points]
    assert (h["predicted"] > 0).all()


def test_calibration_plots_return_axes(cal: calibrated_model.Calibration) -> None:
    from matplotlib.axes import Axes

    assert cal.measurements is not None
    samples = calibrated_model.service_time_samples(cal.measurements)
    st = calibrated_model.service_time_frame(cal.fit, samples)
    assert isinstance(calibrated_model.plot_service_time(st), Axes)
    residuals = calibrated_model.residual_frame(cal.fit)
    assert isinstance(calibrated_model.plot_residuals(residuals), Axes)
    cis = calibrated_model.ci_frame(cal.fit)
    ax = calibrated_model.plot_cis(cis)
    assert len(ax.get_yticks()) == int((cis["value"] != 0).sum())
