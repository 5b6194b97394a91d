"""The report's topology section: the scenario drawn as a graph, and the runs' edge figures.

The figure is drawn from the scenario alone (networkx): workloads, the gateways they enter
by, the services in call order and the external hosts, left to right; zones and clusters are
listed under it. The tables come from each run's ``topology`` block (meshsim.sim.zones):
cross-zone shares, zone failures, gateways' TLS handshakes and the multi-cluster discovery
path's parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx
    from matplotlib.axes import Axes

    from meshsim.report.comparison import Comparison
    from meshsim.report.sections import Section

KIND_COLOURS = {
    "workload": "#4c72b0", "gateway": "#dd8452", "service": "#55a868", "external": "#8172b3",
}  # fmt: skip


def scenario_graph(scenario: Mapping[str, Any]) -> nx.DiGraph:
    """Workloads -> gateways -> services -> external hosts, each node with its ``kind`` and
    ``layer`` (its column in the drawing)."""
    import networkx as nx

    g = nx.DiGraph()
    services = {s["name"]: s for s in scenario.get("services", [])}
    for name, svc in services.items():
        kind = "external" if svc.get("external") else "service"
        g.add_node(name, kind=kind, label=name)
        calls = list(svc.get("calls") or [])
        for version in svc.get("versions") or []:
            calls.extend(version.get("calls") or [])
        for call in calls:
            g.add_edge(name, call["service"])
    for gw in scenario.get("gateways") or []:
        node = f"gateway/{gw['name']}"
        g.add_node(node, kind="gateway", label=f"{gw['name']} x{gw.get('replicas', 2)}")
        for route in gw.get("routes") or []:
            g.add_edge(node, route["service"])
    for wl in scenario.get("workloads", []):
        node = f"workload/{wl['name']}"
        g.add_node(node, kind="workload", label=wl["name"])
        via = wl.get("via")
        g.add_edge(node, f"gateway/{via}" if via else wl["target"])
    # Columns: longest path from any workload (the call graph has no cycles).
    layer: dict[str, int] = {}
    for node in nx.topological_sort(g):
        preds = list(g.predecessors(node))
        layer[node] = 1 + max((layer[p] for p in preds), default=-1)
    for node, value in layer.items():
        g.nodes[node]["layer"] = value
    return g


def draw_scenario(scenario: Mapping[str, Any], ax: Axes) -> Axes:
    """The scenario graph on ``ax``, with the zones and clusters in its title."""
    import networkx as nx

    g = scenario_graph(scenario)
    pos = nx.multipartite_layout(g, subset_key="layer")
    colours = [KIND_COLOURS[g.nodes[n]["kind"]] for n in g.nodes]
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=10, edge_color="#888888")
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=500)
    labels = {n: g.nodes[n]["label"] for n in g.nodes}
    nx.draw_networkx_labels(g, pos, labels=labels, ax=ax, font_size=7)
    zones = (scenario.get("cluster") or {}).get("zones") or []
    if zones:
        by_cluster: dict[str, list[str]] = {}
        for z in zones:
            by_cluster.setdefault(z.get("cluster", "cluster-1"), []).append(
                f"{z['name']} ({z['nodes']} nodes)"
            )
        where = "; ".join(f"{c}: {', '.join(zs)}" for c, zs in by_cluster.items())
    else:
        where = f"one zone, {(scenario.get('cluster') or {}).get('nodes', 1)} nodes"
    ax.set_title(where, fontsize=8)
    for kind, colour in KIND_COLOURS.items():
        ax.scatter([], [], c=colour, label=kind)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.set_axis_off()
    return ax


def _fixed(value: float | None, digits: int) -> str:
    """A figure older summaries may lack (gateways before their CPU and memory): '-'."""
    return "-" if value is None else f"{value:.{digits}f}"


def topology_section(comp: Comparison) -> Section | None:
    """The scenario's graph and the runs' edge tables; None for a scenario without zones,
    gateways or external hosts (its topology is the call graph other sections show)."""
    from meshsim.report import figures as fg
    from meshsim.report.sections import Figure, Section, Table

    scenario = comp.scenario
    has_edges = bool(
        (scenario.get("cluster") or {}).get("zones")
        or scenario.get("gateways")
        or any(s.get("external") for s in scenario.get("services", []))
    )
    if not has_edges:
        return None
    s = Section(
        "topology", "Topology: zones, gateways and external hosts",
        "How requests enter, cross zones and clusters, and leave the mesh, as the scenario "
        "describes them, and what each mesh did with them.",
    )  # fmt: skip
    ax = fg.new_axes(7.0, 3.4)
    draw_scenario(scenario, ax)
    s.figures.append(Figure("topology", "The scenario", fg.to_svg(ax, id_prefix="topology-")))
    runs = comp.runs_summary()
    cross: list[list[str]] = []
    failures: list[list[str]] = []
    gateways: list[list[str]] = []
    discovery: list[list[str]] = []
    for mesh, run in runs.items():
        topo = run.get("topology") or {}
        for service, block in (topo.get("tries") or {}).items():
            cross.append([mesh, service, str(block["tries"]), f"{block['cross_zone_share']:.1%}"])
        for f in topo.get("zone_failures") or []:
            failover = f.get("failover_s")
            recovery = f.get("recovery_s")
            back = f.get("recovered_at_s")
            failures.append([
                mesh, f["zone"], f.get("mode", "refuse"), f"{f['at_s']:g}",
                str(f["failed_tries"]), "-" if failover is None else f"{failover:.3f}",
                str(f.get("caller_errors_failover", f.get("caller_errors", "-"))),
                f"{f.get('caller_max_latency_s', 0.0):.3f}",
                "-" if back is None else f"{back:g}",
                "-" if recovery is None else f"{recovery:.0f}",
                str(f.get("caller_errors_recovery", "-")),
            ])  # fmt: skip
        for name, g in (topo.get("gateways") or {}).items():
            gateways.append([mesh, name, g.get("implementation", "-"), str(g["replicas"]),
                             f"{g['rps']:.1f}", f"{g['handshakes_per_s']:.1f}",
                             _fixed(g.get("cpu_vcpu"), 3), _fixed(g.get("memory_mb"), 0),
                             _fixed(g.get("added_latency_ms"), 3)])  # fmt: skip
        mc = topo.get("multicluster")
        if mc:
            parts = ", ".join(
                f"{k} {v * 1e3:.0f} ms" for k, v in mc["discovery_delay_parts_s"].items()
            )
            measured = ", ".join(
                f"{path} {block['total_s']['max'] * 1e3:.0f} ms"
                for path, block in ((mc.get("convergence") or {}).get("by_path") or {}).items()
            )
            gw_cpu = ", ".join(
                f"{c} {g['cpu_s']:.2f} s / {g['requests']} req"
                for c, g in (mc.get("gateways") or {}).items()
            )
            discovery.append([mesh, mc["mode"], parts, measured or "-", gw_cpu or "-"])
    if cross:
        s.tables.append(Table("Tries by destination service: cross-zone share",
                              ["mesh", "service", "tries", "cross-zone"], cross))  # fmt: skip
    if failures:
        s.tables.append(Table(
            "Zone failures: tries that met a failed pod, time until the last one, callers' "
            "errors and slowest call; the recovery, until the cross-zone share is back "
            "within 5 points of its value before the failure (whole seconds), and the "
            "callers' errors after it",
            ["mesh", "zone", "mode", "at s", "failed tries", "failover s", "caller errors",
             "slowest call s", "back at s", "recovery s", "errors after"], failures,
        ))  # fmt: skip
    if gateways:
        s.tables.append(Table(
            "Ingress gateways: every container of the gateway pods (vCPU in the window, MB at "
            "the end) and the added latency, the mean time a request spends inside a gateway "
            "pod (ms)",
            ["mesh", "gateway", "implementation", "replicas", "rps", "TLS handshakes/s",
             "vCPU", "MB", "added ms"], gateways,
        ))  # fmt: skip
    if discovery:
        s.tables.append(Table(
            "Cross-cluster endpoint discovery: the documented parts, the slowest change "
            "measured per path (proxies' cluster <- changed cluster), and the gateways' CPU",
            ["mesh", "mode", "parts", "measured", "gateway CPU"], discovery,
        ))  # fmt: skip
    return s
