"""Capacity-planning helpers on their own (the notebooks only call these)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from meshsim.report.cost import Prices
from meshsim.studies import capacity


def row(mesh: str, rate: float, p99: float, app: float, proxy: float, **kw: object) -> dict:
    base = dict.fromkeys(capacity.POINT_COLUMNS, 0)
    base.update(
        mesh=mesh, services=3, replicas=1, rate_rps=rate, p99_ms=p99, app_vcpu=app,
        proxy_vcpu=proxy, proxy_memory_mb=1024.0, saturated=False,
    )  # fmt: skip
    base.update(kw)
    return base


def test_fanout_scenario_shape() -> None:
    s = capacity.fanout_scenario(4, 50, replicas=2, duration_s=3, warmup_s=1)
    assert [svc.name for svc in s.services] == ["frontend", "svc-1", "svc-2", "svc-3"]
    assert s.workloads[0].rate_rps == 50
    with pytest.raises(ValueError, match="at least 1"):
        capacity.fanout_scenario(0, 50)
    assert s.cluster.run_queues == "node"
    assert capacity.fanout_scenario(2, 50, run_queues="per_cpu").cluster.run_queues == "per_cpu"


def test_nodes_for_slo_uses_highest_passing_load() -> None:
    points = pd.DataFrame(
        [
            row("istio", 100, 10, app=0.5, proxy=0.1),
            row("istio", 200, 20, app=1.0, proxy=0.2),  # highest load within 30 ms
            row("istio", 400, 90, app=2.0, proxy=0.4),  # misses the SLO
            row("linkerd", 100, 50, app=0.5, proxy=0.1),  # never meets it
            row("none", 300, 5, app=1.5, proxy=0.0, saturated=True),  # saturated: unusable
        ]
    )
    out = capacity.nodes_for_slo(
        points, target_rps=10_000, p99_ms=30, cores_per_node=4, max_utilisation=0.5
    ).set_index("mesh")
    istio = out.loc["istio"]
    assert istio["measured_rps"] == 200
    assert istio["cores_per_1000rps"] == pytest.approx(6.0)  # 1.2 cores at 200 rps
    assert istio["proxy_cores_per_1000rps"] == pytest.approx(1.0)
    assert istio["nodes"] == 30  # 60 cores / (4 * 0.5)
    assert not out.loc["linkerd"]["slo_met"]
    assert math.isnan(out.loc["linkerd"]["nodes"])
    assert not out.loc["none"]["slo_met"]
    with pytest.raises(ValueError, match="max_utilisation"):
        capacity.nodes_for_slo(points, target_rps=1, p99_ms=1, cores_per_node=1, max_utilisation=0)


def test_monthly_costs() -> None:
    points = pd.DataFrame([row("istio", 100, 10, app=0.5, proxy=2.0)])
    out = capacity.monthly_costs(points, Prices(core_hour_usd=0.05, gb_hour_usd=0.01))
    assert out.iloc[0]["core_hours_per_month"] == 1460.0
    assert out.iloc[0]["gb_hours_per_month"] == 730.0
    assert out.iloc[0]["usd_per_month"] == pytest.approx(1460 * 0.05 + 730 * 0.01)


def test_capacity_grid_measures_every_point() -> None:
    meshes = capacity.available_meshes()
    points = capacity.capacity_grid(meshes, [30, 60], [2], duration_s=3, warmup_s=1)
    assert len(points) == 2 * len(meshes)
    assert list(points.columns) == capacity.POINT_COLUMNS
    assert set(points["rate_rps"]) == {30.0, 60.0}
    assert (points["pods"] == 2).all()
    none = points[points["mesh"] == "none"]
    assert (none["proxies"] == 0).all()


def test_load_runs_matches_measure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from meshsim.api import run_scenario
    from meshsim.results.store import save_run
    from meshsim.results.summary import build_summary

    scenario = capacity.fanout_scenario(2, 30, duration_s=3, warmup_s=1)
    result = run_scenario(scenario, meshes=["none"])
    save_run(result, build_summary(result), scenario.to_dict(), tmp_path / "r")
    loaded = capacity.load_runs([tmp_path / "r"])
    measured = capacity.measure([scenario], ["none"])
    pd.testing.assert_frame_equal(loaded, measured)
