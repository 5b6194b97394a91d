"""Planning at scale (meshsim.studies.capacity): proxy ceilings, where a plan saturates, the
marks on its charts, and the simulated check of an imported scenario."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from meshsim.studies import capacity, sizing, sizing_plan

matplotlib.use("Agg")


def test_one_proxy_ceiling_is_where_its_workers_are_busy() -> None:
    c = capacity.one_proxy_ceiling("linkerd", samples=0)
    assert c["workers"] == 1
    assert c["says"].startswith("linkerd2-proxy runs 1 worker per pod by default: one proxy "
                                f"saturates at {c['max_rps_per_proxy']:,.0f} rps")  # fmt: skip
    # every worker is busy at the ceiling, not before it: just under it the proxy is just under
    # fully busy, just over it the demand exceeds its workers
    for share, low, high in ((0.999, 0.99, 1.0), (1.001, 1.0, 1.01)):
        (m,) = sizing.size(sizing_plan.sizing_inputs(share * c["max_rps_per_proxy"], 1, 1, 0.0,
                                                     ["linkerd"], samples=0))  # fmt: skip
        assert low <= m.proxies[0].utilisation.value < high
    ambient = capacity.one_proxy_ceiling("istio-ambient", samples=4)
    assert "ztunnel runs 2 workers per node" in ambient["says"]
    assert ambient["max_rps_per_proxy_low"] <= ambient["max_rps_per_proxy"]
    assert ambient["max_rps_per_proxy"] <= ambient["max_rps_per_proxy_high"]


def test_saturation_rps_scales_the_row_nearest_its_ceiling() -> None:
    plan = pd.DataFrame([
        {"mesh": "linkerd", "services": 20, "pods": 40, "rps": 1000.0, "headroom": 90.0},
        {"mesh": "linkerd", "services": 20, "pods": 40, "rps": 100000.0, "headroom": 0.9},
        {"mesh": "istio", "services": 20, "pods": 40, "rps": 1000.0, "headroom": 145.0},
        {"mesh": "istio", "services": 20, "pods": 40, "rps": 100000.0, "headroom": math.inf},
    ])  # fmt: skip
    out = capacity.saturation_rps(plan).set_index("mesh")
    assert out.loc["linkerd", "saturates_at_rps"] == pytest.approx(90000.0)
    assert out.loc["istio", "saturates_at_rps"] == pytest.approx(145000.0)
    assert out.loc["linkerd", "says"] == (
        "linkerd, 20 services on 40 pods: the busiest proxy saturates at 90,000 client rps "
        "(headroom 0.9x at 100,000 rps)"
    )


def test_plot_plan_marks_each_ceiling_in_view() -> None:
    plan = sizing_plan.plan_grid(["linkerd"], [1000, 100000], [20], replicas=2, samples=0)
    ceiling = capacity.saturation_rps(plan)["saturates_at_rps"].iloc[0]
    ax = capacity.plot_plan(plan, x="rps", y="proxy_vcpu", title="t")
    vertical = [ln for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1]
    assert [ln.get_xdata()[0] for ln in vertical] == [pytest.approx(ceiling)]
    assert ax.get_xlabel() == "client requests per second"
    bare = capacity.plot_plan(plan, x="rps", y="proxy_vcpu", title="t", mark_ceilings=False)
    assert [ln for ln in bare.get_lines() if len(set(ln.get_xdata())) == 1] == []
    # a saturated hop has no latency: its x sits at the top edge, not at 0 ms
    assert plan["saturated"].tolist() == [False, True]
    latency = capacity.plot_plan(plan, x="rps", y="hop_p99_ms", title="t")
    (mark,) = [c for c in latency.collections if isinstance(c, PathCollection)]
    assert mark.get_offsets().tolist() == [[100000.0, 0.97]]
    assert mark.get_label() == "linkerd: saturated, no steady state"


@pytest.mark.integration
def test_simulated_check_puts_simulation_beside_the_closed_form() -> None:
    scenario = capacity.fanout_scenario(3, 100, duration_s=3.0, warmup_s=1.0)
    out = capacity.simulated_check(scenario, ["istio", "cilium"], samples=4).set_index("mesh")
    istio, cilium = out.loc["istio"], out.loc["cilium"]
    assert istio["simulated_proxy_vcpu"] > 0
    assert istio["sized_low"] <= istio["sized_proxy_vcpu"] <= istio["sized_high"]
    assert istio["in_band"] == (istio["sized_low"] <= istio["simulated_proxy_vcpu"]
                                <= istio["sized_high"])  # fmt: skip
    assert math.isnan(cilium["sized_proxy_vcpu"])  # no closed form for cilium
    assert not cilium["in_band"]
