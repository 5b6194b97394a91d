"""The report's topology figure (issue 15, step 6): the scenario drawn with networkx."""

from __future__ import annotations

from pathlib import Path

import yaml

from meshsim.report import figures as fg
from meshsim.report.topology import draw_scenario, scenario_graph

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def test_ingress_graph_puts_users_then_gateway_then_services() -> None:
    g = scenario_graph(yaml.safe_load((SCENARIOS / "ingress-bookinfo.yaml").read_text()))
    assert g.nodes["workload/users"]["kind"] == "workload"
    assert g.nodes["gateway/public"]["kind"] == "gateway"
    assert g.nodes["gateway/public"]["label"] == "public x2"
    assert list(g.successors("workload/users")) == ["gateway/public"]
    assert list(g.successors("workload/internal")) == ["productpage"]
    layers = {n: g.nodes[n]["layer"] for n in g.nodes}
    assert layers["workload/users"] == 0
    assert layers["gateway/public"] == 1
    assert layers["productpage"] == 2
    assert layers["ratings"] == 4  # productpage -> reviews (v2, v3) -> ratings


def test_external_hosts_are_their_own_kind_and_zones_title_the_figure() -> None:
    scenario = {
        "cluster": {"zones": [{"name": "a", "nodes": 1, "cluster": "east"},
                              {"name": "b", "nodes": 2, "cluster": "west"}]},
        "services": [{"name": "shop", "calls": [{"service": "pay"}]},
                     {"name": "pay", "replicas": 0, "external": {"latency_ms": 40}}],
        "workloads": [{"name": "users", "target": "shop"}],
    }  # fmt: skip
    g = scenario_graph(scenario)
    assert g.nodes["pay"]["kind"] == "external"
    ax = fg.new_axes()
    draw_scenario(scenario, ax)
    assert ax.get_title() == "east: a (1 nodes); west: b (2 nodes)"
    svg = fg.to_svg(ax, id_prefix="t-")
    assert svg.lstrip().startswith("<svg") or "<svg" in svg[:500]
