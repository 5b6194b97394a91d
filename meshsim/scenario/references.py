"""Checks that span the whole scenario: names that must exist, cycles, timing.

Each check yields a problem with the location of the offending value as a tuple
path (``("services", 2, "calls", 0, "service")``), which the loader turns into a
file line. Names that do not exist come with the closest valid name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

from pydantic import ValidationError

from meshsim.scenario.edges import (
    external_problems,
    gateway_problems,
    multicluster_problems,
    zone_problems,
)
from meshsim.scenario.events import ANY_SERVICE, CONTROL_PLANE_TARGET, ErrorsEvent
from meshsim.scenario.model import Scenario, Service

Loc = tuple[str | int, ...]


def closest(name: str, candidates: Sequence[str]) -> str:
    """A ", did you mean 'x'?" suffix naming the closest candidate, or nothing."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


MAX_LISTED = 20
"""Known names listed after an unknown one; a scenario of 30,000 services would otherwise
print all of them for every mistake."""


def _unknown(kind: str, name: str, known: Sequence[str]) -> str:
    names = sorted(known)
    listed = ", ".join(names[:MAX_LISTED]) or "none"
    if len(names) > MAX_LISTED:
        listed += f", ... ({len(names) - MAX_LISTED:,} more)"
    return f"no {kind} named '{name}'{closest(name, known)} (known: {listed})"


def event_targets(scenario: Scenario) -> list[str]:
    """Valid event targets: every service, and every ``<service>-<version>``."""
    targets: list[str] = []
    for svc in scenario.services:
        targets.append(svc.name)
        if svc.versions is not None:
            targets.extend(f"{svc.name}-{v.name}" for v in svc.versions)
    return targets


def _errors_problems(i: int, event: ErrorsEvent, scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """A gRPC status only from a ``protocol: grpc`` service, and one kind of status."""
    if event.grpc_status is None:
        return
    service = next(
        s
        for s in scenario.services
        if event.target == s.name
        or any(event.target == f"{s.name}-{v.name}" for v in s.versions or [])
    )
    if service.protocol != "grpc":
        yield (
            ("events", i, "grpc_status"),
            f"'{service.name}' is not a gRPC service (protocol: {service.protocol}): it "
            "answers HTTP statuses; expected status (400..599) instead, or protocol: grpc "
            "on the service",
        )
    elif event.status is not None:
        yield (
            ("events", i, "status"),
            "expected one of status (an HTTP status) or grpc_status (a gRPC status in a "
            "200), not both",
        )


def check_references(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """Every cross-reference problem in ``scenario``, as (location, message)."""
    services = {s.name: s for s in scenario.services}
    names = list(services)

    named: tuple[tuple[str, list[str]], ...] = (
        ("service", [s.name for s in scenario.services]),
        ("workload", [w.name for w in scenario.workloads]),
    )
    for kind, item_names in named:
        seen: set[str] = set()
        for i, name in enumerate(item_names):
            if name in seen:
                yield (f"{kind}s", i, "name"), f"{kind} name '{name}' is used twice"
            seen.add(name)

    for i, svc in enumerate(scenario.services):
        for j, call in enumerate(svc.calls):
            if call.service not in services:
                yield (
                    ("services", i, "calls", j, "service"),
                    _unknown("service", call.service, names),
                )
        for k, version in enumerate(svc.versions or []):
            for j, call in enumerate(version.calls or []):
                if call.service not in services:
                    loc: Loc = ("services", i, "versions", k, "calls", j, "service")
                    yield loc, _unknown("service", call.service, names)

    for i, wl in enumerate(scenario.workloads):
        if wl.target not in services:
            yield ("workloads", i, "target"), _unknown("service", wl.target, names)

    yield from _traffic_problems(scenario, services, names)

    targets = event_targets(scenario)
    known_targets = set(targets)
    for i, event in enumerate(scenario.events):
        if event.action in ("control-plane-down", "control-plane-slow"):
            if event.target != CONTROL_PLANE_TARGET:
                yield ("events", i, "target"), f"expected '{CONTROL_PLANE_TARGET}'"
        elif event.target == ANY_SERVICE and event.action in ("churn", "config"):
            pass
        elif event.action in ("fail-zone", "recover-zone"):
            pass  # a zone: meshsim.scenario.edges.zone_problems
        elif event.target not in known_targets:
            yield ("events", i, "target"), _unknown("service or version", event.target, targets)
        elif isinstance(event, ErrorsEvent):
            yield from _errors_problems(i, event, scenario)
        if event.at_s >= scenario.duration_s:
            yield (
                ("events", i, "at_s"),
                (
                    f"at {event.at_s} s the event falls after the run ends "
                    f"(duration_s is {scenario.duration_s})"
                ),
            )

    workloads = [w.name for w in scenario.workloads]
    for i, slo in enumerate(scenario.slo):
        if slo.service is not None and slo.service not in services:
            yield ("slo", i, "service"), _unknown("service", slo.service, names)
        if slo.workload is not None and slo.workload not in workloads:
            yield ("slo", i, "workload"), _unknown("workload", slo.workload, workloads)
        if slo.mesh is not None and slo.mesh not in scenario.meshes:
            yield ("slo", i, "mesh"), _unknown("mesh in 'meshes'", slo.mesh, scenario.meshes)

    if scenario.warmup_s >= scenario.duration_s:
        yield (
            ("warmup_s",),
            (
                f"the warm-up ({scenario.warmup_s} s) must be shorter than the run "
                f"(duration_s {scenario.duration_s} s)"
            ),
        )
    if len(set(scenario.meshes)) != len(scenario.meshes):
        yield ("meshes",), "each mesh may appear once"

    yield from _mesh_option_services(scenario, names)
    yield from zone_problems(scenario)
    yield from gateway_problems(scenario)
    yield from external_problems(scenario)
    yield from multicluster_problems(scenario)
    yield from _linkerd_sidecar_problems(scenario)

    cycle = find_call_cycle(scenario)
    if cycle is not None:
        first = names.index(cycle[0])
        yield (
            ("services", first, "calls"),
            ("calls form a cycle, which would never finish: " + " -> ".join(cycle)),
        )


def _traffic_problems(
    scenario: Scenario, services: dict[str, Service], names: list[str]
) -> Iterator[tuple[Loc, str]]:
    """The traffic rules' references: their service, its versions in a split, a mirror."""
    for i, rule in enumerate(scenario.traffic):
        ruled = services.get(rule.service)
        if ruled is None:
            yield ("traffic", i, "service"), _unknown("service", rule.service, names)
            continue
        svc = ruled
        subsets = [v.name for v in svc.subsets()]
        for subset in rule.split or {}:
            if svc.versions is None:
                yield (
                    ("traffic", i, "split", subset),
                    (f"service '{svc.name}' has no versions to split between"),
                )
            elif subset not in subsets:
                yield (
                    ("traffic", i, "split", subset),
                    _unknown(f"version of '{svc.name}'", subset, subsets),
                )
        if rule.mirror is not None:
            mirrored = services.get(rule.mirror.service)
            if mirrored is None:
                yield (
                    ("traffic", i, "mirror", "service"),
                    _unknown("service", rule.mirror.service, names),
                )
            elif rule.mirror.subset is not None:
                subs = [v.name for v in mirrored.subsets()]
                if rule.mirror.subset not in subs:
                    yield (
                        ("traffic", i, "mirror", "subset"),
                        _unknown(f"version of '{mirrored.name}'", rule.mirror.subset, subs),
                    )


def _mesh_option_services(scenario: Scenario, names: list[str]) -> Iterator[tuple[Loc, str]]:
    """The mesh options that name services (waypoints, Cilium's L7 services): a typo would
    silently leave a service without its waypoint or its Envoy."""
    options = scenario.mesh_options
    named: tuple[tuple[Loc, object], ...] = (
        (("mesh_options", "istio-ambient", "waypoints"), options.istio_ambient.waypoints),
        (("mesh_options", "cilium", "l7_services"), options.cilium.l7_services),
        (("mesh_options", "cilium", "lb_l7_services"), options.cilium.lb_l7_services),
    )
    for loc, listed in named:
        if not isinstance(listed, list):
            continue  # "all" or "none"
        for j, name in enumerate(listed):
            if name not in names:
                yield (*loc, j), _unknown("service", name, names)


def call_edges(scenario: Scenario) -> list[tuple[str, str]]:
    """Every caller -> callee edge, over all versions, in declaration order."""
    # A dict keeps the order and finds a repeated edge at once (a list made this
    # quadratic: 440 s for a 32,767-service call tree).
    edges: dict[tuple[str, str], None] = {}
    for svc in scenario.services:
        call_lists = [svc.calls] + [v.calls for v in svc.versions or [] if v.calls is not None]
        for calls in call_lists:
            for call in calls:
                edges[(svc.name, call.service)] = None
    return list(edges)


def find_call_cycle(scenario: Scenario) -> list[str] | None:
    """A cycle in the call graph as a closed path of names, or None.

    Plain depth-first search: the scenario package must not need networkx
    (DESIGN principle 6), which ``meshsim check`` uses only to draw the graph.
    """
    graph: dict[str, list[str]] = {s.name: [] for s in scenario.services}
    for caller, callee in call_edges(scenario):
        if callee in graph:
            graph[caller].append(callee)
    # Iterative depth-first search: a call chain of thousands of services must not
    # exhaust Python's recursion limit.
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in graph:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(graph[node]):
                stack[-1] = (node, i + 1)
                nxt = graph[node][i]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                stack.pop()
                path.pop()
                state[node] = 2
    return None


def _linkerd_sidecar_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """A service's proxy_resources that Linkerd's injector, taking each value over the
    mesh's own, would turn into a pod Kubernetes refuses (a request above its limit)."""
    if "linkerd" not in scenario.meshes:
        return
    opts = scenario.mesh_options
    for i, svc in enumerate(scenario.services):
        if svc.proxy_resources is None:
            continue
        try:
            opts.sidecar_resources("linkerd", svc.proxy_resources)
        except ValidationError as exc:
            # Imported here: the loader reads this module's checks.
            from meshsim.scenario.loader import explain_error

            reason = "; ".join(explain_error(e) for e in exc.errors())
            yield (
                ("services", i, "proxy_resources"),
                f"over mesh_options.linkerd.proxy_resources, as Linkerd's injector takes each "
                f"value over the mesh's: {reason}",
            )
