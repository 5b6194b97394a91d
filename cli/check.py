"""``meshsim check``: validate a scenario and show its call graph without running it."""

from __future__ import annotations

import click
import networkx as nx
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from meshsim.scenario import load_scenario
from meshsim.scenario.model import Scenario
from meshsim.scenario.references import call_edges

from .common import scenario_argument, user_errors


def call_graph(scenario: Scenario) -> nx.DiGraph:
    """The call graph: workloads and services as nodes, calls as edges."""
    graph = nx.DiGraph()
    for svc in scenario.services:
        graph.add_node(svc.name, kind="service", replicas=svc.total_replicas)
    for wl in scenario.workloads:
        graph.add_node(wl.name, kind="workload")
        graph.add_edge(wl.name, wl.target)
    graph.add_edges_from(call_edges(scenario))
    return graph


def _tree(graph: nx.DiGraph, scenario: Scenario) -> Tree:
    root = Tree(
        f"[bold]{scenario.name}[/] ({len(scenario.services)} services, "
        f"{sum(s.total_replicas for s in scenario.services)} pods)"
    )

    def label(name: str) -> str:
        svc = next((s for s in scenario.services if s.name == name), None)
        if svc is None:
            return name
        versions = (
            escape(" [" + ", ".join(f"{v.name}x{v.replicas}" for v in svc.versions) + "]")
            if svc.versions
            else f" x{svc.total_replicas}"
        )
        return f"[cyan]{name}[/]{versions}  cpu {svc.cpu_ms.expected:g} ms"

    def grow(node: Tree, name: str, path: tuple[str, ...]) -> None:
        for child in graph.successors(name):
            branch = node.add(label(child))
            if child not in path:
                grow(branch, child, (*path, child))

    for wl in scenario.workloads:
        rate = (
            f"{wl.rate_rps:g} rps {wl.arrival}"
            if wl.rate_rps
            else (
                f"{wl.clients} closed-loop clients"
                if wl.clients
                else f"{len(wl.phases or [])} phases"
            )
        )
        branch = root.add(f"[green]{wl.name}[/] ({rate})")
        grow(branch, wl.name, (wl.name,))
    return root


@click.command()
@scenario_argument
@user_errors
def check(scenario_path: str) -> None:
    """Validate SCENARIO.yaml and print its call graph; runs nothing."""
    scenario = load_scenario(scenario_path)
    console = Console()
    graph = call_graph(scenario)
    console.print(_tree(graph, scenario))
    depth = nx.dag_longest_path_length(graph) if graph.number_of_edges() else 0
    console.print(
        f"[green]ok[/]: {scenario_path} is valid: meshes {', '.join(scenario.meshes)}; "
        f"call depth {depth}; {len(scenario.events)} events; {len(scenario.slo)} SLOs"
    )
