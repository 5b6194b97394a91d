"""``meshsim check``: validate a scenario and show its call graph without running it.

It accepts exactly what ``meshsim run`` accepts: after the file's own checks it builds
every mesh of the scenario as a run would (nothing is simulated). Every step is linear in
the size of the scenario; the call graph is summarised (each service's callees once,
a bounded depth and length), since printing every path of a call DAG is exponential.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from meshsim.scenario.limits import cost_warnings, estimate_cost
from meshsim.scenario.loader import load_buildable_scenario
from meshsim.scenario.model import Scenario, Service
from meshsim.scenario.references import call_edges

from .common import scenario_argument, user_errors

MAX_LINES = 200
"""Lines of call graph printed; a scenario of 2,000 services would otherwise print for
minutes (180,923 lines for control-plane-scale.yaml when every path was printed)."""
MAX_CALLEES = 12
"""Callees listed under one service; the rest are counted on a '... N more' line."""
MAX_DEPTH = 12
"""Call levels shown below a workload; deeper calls are counted on one line."""


def callees_by_service(scenario: Scenario) -> dict[str, list[str]]:
    """Each service's callees, in declaration order, each once."""
    callees: dict[str, list[str]] = {s.name: [] for s in scenario.services}
    for caller, callee in call_edges(scenario):
        callees[caller].append(callee)
    return callees


def call_depth(scenario: Scenario, callees: dict[str, list[str]]) -> int:
    """The longest chain of calls, counting the workload's request as the first (the call
    graph has no cycles once the scenario is valid): one pass, each service once."""
    longest: dict[str, int] = {}
    for start in callees:
        stack = [(start, False)]
        while stack:
            name, finished = stack.pop()
            if finished:
                longest[name] = max((1 + longest[c] for c in callees[name]), default=0)
            elif name not in longest:
                stack.append((name, True))
                stack.extend((c, False) for c in callees[name] if c not in longest)
    from_workloads = (1 + longest[w.target] for w in scenario.workloads)
    return max(max(from_workloads, default=0), max(longest.values(), default=0))


def _label(svc: Service) -> str:
    versions = (
        escape(" [" + ", ".join(f"{v.name}x{v.replicas}" for v in svc.versions) + "]")
        if svc.versions
        else f" x{svc.total_replicas}"
    )
    # Shown for gRPC and HTTP/2: under an L4 balancer their callers' connections bind.
    protocol = "" if svc.protocol == "http1" else f"  {svc.protocol}"
    return f"[cyan]{svc.name}[/]{versions}  cpu {svc.cpu_ms.expected:g} ms{protocol}"


def _rate(scenario: Scenario, index: int) -> str:
    wl = scenario.workloads[index]
    if wl.rate_rps:
        return f"{wl.rate_rps:g} rps {wl.arrival}"
    if wl.clients:
        return f"{wl.clients} closed-loop clients"
    return f"{len(wl.phases or [])} phases"


def _callees(count: int) -> str:
    return f"{count} callee{'s' if count != 1 else ''}"


def call_tree(scenario: Scenario, callees: dict[str, list[str]]) -> Tree:
    """Workloads and the services they reach; each service's callees are listed where it
    first appears and referred to ("calls shown above") where it appears again."""
    services = {s.name: s for s in scenario.services}
    root = Tree(
        f"[bold]{scenario.name}[/] ({len(scenario.services)} services, "
        f"{sum(s.total_replicas for s in scenario.services)} pods)"
    )
    expanded: set[str] = set()
    lines = 0
    cut = False
    # (parent, service, depth) or (parent, None, text for a '...' line); a stack, so that
    # the tree is printed depth first in declaration order.
    stack: list[tuple[Tree, str | None, int | str]] = []
    for i in reversed(range(len(scenario.workloads))):
        stack.append((root, None, f"\0{i}"))
    while stack:
        parent, name, extra = stack.pop()
        if lines >= MAX_LINES:
            cut = True
            break
        lines += 1
        if name is None:
            text = str(extra)
            if text.startswith("\0"):  # a workload
                index = int(text[1:])
                wl = scenario.workloads[index]
                branch = parent.add(f"[green]{wl.name}[/] ({_rate(scenario, index)})")
                stack.append((branch, wl.target, 1))
            else:
                parent.add(f"[dim]{text}[/]")
            continue
        kids = callees[name]
        again = name in expanded and bool(kids)
        node = parent.add(
            _label(services[name]) + ("  [dim](calls shown above)[/]" if again else "")
        )
        if again or not kids:
            continue
        expanded.add(name)
        if extra == MAX_DEPTH:
            deeper = f"... {_callees(len(kids))}, deeper than {MAX_DEPTH} levels"
            stack.append((node, None, deeper))
            continue
        if len(kids) > MAX_CALLEES:
            stack.append((node, None, f"... {_callees(len(kids) - MAX_CALLEES)} more"))
        depth = int(extra) + 1
        stack.extend((node, kid, depth) for kid in reversed(kids[:MAX_CALLEES]))
    if cut:
        root.add(
            f"[dim]... cut at {MAX_LINES} lines: {len(scenario.services):,} services, "
            f"{sum(len(k) for k in callees.values()):,} calls in all[/]"
        )
    return root


@click.command()
@scenario_argument
@user_errors
def check(scenario_path: str) -> None:
    """Validate SCENARIO.yaml and print its call graph; runs nothing."""
    scenario = load_buildable_scenario(scenario_path)
    console = Console()
    callees = callees_by_service(scenario)
    console.print(call_tree(scenario, callees))
    cost = estimate_cost(scenario)
    console.print(f"estimated run: {cost.describe()}", highlight=False)
    for warning in cost_warnings(cost):
        console.print(f"[bold yellow]warning[/]: {warning}", highlight=False)
    console.print(
        f"[green]ok[/]: {scenario_path} is valid: meshes {', '.join(scenario.meshes)}; "
        f"call depth {call_depth(scenario, callees)}; {len(scenario.events)} events; "
        f"{len(scenario.slo)} SLOs"
    )
