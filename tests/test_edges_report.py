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


# --------------------------------------------------------------------------- ingress figures


def _gateway_runs() -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """ingress-bookinfo for 4 s under Istio and Linkerd: each run's ``topology`` block."""
    from meshsim.scenario import load_scenario
    from meshsim.sim.engine import Simulation

    path = SCENARIOS / "ingress-bookinfo.yaml"
    scenario = load_scenario(path).model_copy(update={"duration_s": 4.0, "warmup_s": 1.0})
    runs: dict[str, dict[str, object]] = {}
    for mesh in ("istio", "linkerd"):
        sim = Simulation(scenario, mesh, scenario.seed)
        sim.run()
        runs[mesh] = {"topology": sim.measure().topology}
    return yaml.safe_load(path.read_text()), runs


def test_report_and_cli_show_each_meshs_gateway_cpu_memory_and_added_latency() -> None:
    from rich.console import Console

    from cli.render import gateways_table
    from meshsim.report.topology import topology_section

    scenario, runs = _gateway_runs()

    class Comp:
        def __init__(self) -> None:
            self.scenario = scenario

        def runs_summary(self) -> dict[str, dict[str, object]]:
            return runs

    section = topology_section(Comp())  # type: ignore[arg-type]
    assert section is not None
    (table,) = [t for t in section.tables if t.caption.startswith("Ingress gateways")]
    assert table.columns[-3:] == ["vCPU", "MB", "added ms"]
    rows = {row[0]: row for row in table.rows}
    assert set(rows) == {"istio", "linkerd"}
    assert rows["linkerd"][2].startswith("ingress-nginx + linkerd-proxy")
    for mesh, row in rows.items():
        block = runs[mesh]["topology"]["gateways"]["public"]  # type: ignore[index]
        assert row[-3:] == [f"{block['cpu_vcpu']:.3f}", f"{block['memory_mb']:.0f}",
                            f"{block['added_latency_ms']:.3f}"]  # fmt: skip
        assert min(block["cpu_vcpu"], block["memory_mb"], block["added_latency_ms"]) > 0
    cli_table = gateways_table({"runs": runs})
    assert cli_table is not None
    console = Console(record=True, width=200)
    console.print(cli_table)
    text = console.export_text()
    cells = [line.split() for line in text.splitlines()]
    cli_rows = {c[0]: c for c in cells if c and c[0] in ("istio", "linkerd")}
    assert cli_rows["istio"][2:5] == ["2", "x", "1"]  # one container, the Envoy
    assert cli_rows["linkerd"][2:5] == ["2", "x", "2"]  # NGINX and its linkerd-proxy
    for mesh, row in cli_rows.items():
        block = runs[mesh]["topology"]["gateways"]["public"]  # type: ignore[index]
        assert row[-3] == f"{block['memory_mb']:.0f}"
        assert row[-2] == f"{block['added_latency_ms']:.3f}"
    assert gateways_table({"runs": {"none": {"topology": None}}}) is None
