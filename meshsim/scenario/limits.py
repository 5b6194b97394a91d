"""What a run will cost, estimated from the scenario before anything is simulated.

A scenario can be valid key by key and still ask for more than the engine can do in a
lifetime (``rate_rps: 1e6`` for a week, 10^9 replications). The estimate below is an
upper-bound guess from the file alone: requests and calls to simulate, pods to build,
memory to hold. Above a hard limit the scenario is refused (:func:`cost_problems`, part
of loading); above a soft limit the run goes ahead with a warning (:func:`cost_warnings`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from meshsim.scenario.model import Scenario, Workload
from meshsim.scenario.references import Loc, call_edges

MAX_PODS = 150_000
"""Pods in the cluster at the start: Kubernetes' own tested limit (150,000 pods, 5,000
nodes); the engine builds a simpy process and resources for each."""
CALLS_PER_SECOND = 10_000.0
"""Calls (client requests and the calls between services they cause) that the engine
simulates per second of one core, roughly: 18,000 with no mesh and 4,000 with Istio
sidecars for two services at 2,000 rps, measured on the shared 2-core reference machine."""
HARD_CALLS = 1e10
"""Refused: 10^10 calls is about twelve days of one core at the rate above."""
SOFT_CALLS = 3e7
"""Warned: 3 x 10^7 calls is about an hour."""
BYTES_PER_POD = 16 * 1024
"""Memory per pod with its proxy, rounded up from building control-plane-scale.yaml
(10,000 pods, three meshes)."""
BYTES_PER_SERIES_SECOND = 100
"""Per-second series (requests, errors, latency sum and max) kept for each workload,
service and call edge over the whole run, in Python lists."""
HARD_MEMORY_BYTES = 64 * 1024**3
"""Refused: more memory than a large workstation has."""
SOFT_MEMORY_BYTES = 4 * 1024**3
"""Warned: more than a laptop spares."""
MIN_ROUND_TRIP_S = 1e-3
"""A closed-loop client with no think time sends at most one request per this (a request
crosses the network twice and runs some CPU: about a millisecond at least)."""
_CAP = 1e30  # fan-out beyond this is "too much" anyway; keeps the arithmetic finite


@dataclass(frozen=True)
class RunCost:
    """The estimated size of a run of a scenario (all its meshes and replications)."""

    requests: float
    """Client requests (every workload, mesh and replication)."""
    calls: float
    """Requests plus the calls between services that they cause."""
    pods: int
    memory_bytes: float

    @property
    def hours(self) -> float:
        """Estimated time to simulate on one core."""
        return self.calls / CALLS_PER_SECOND / 3600

    def describe(self) -> str:
        return (
            f"about {self.calls:.3g} calls to simulate ({self.requests:.3g} client requests), "
            f"{self.pods:,} pods, {self.memory_bytes / 1024**3:.3g} GB of memory; "
            f"{_duration(self.hours)} on one core"
        )


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return "under a minute"
    if hours < 1:
        return f"about {hours * 60:.0f} minutes"
    if hours < 48:
        return f"about {hours:.1f} hours"
    return f"about {hours / 24:.3g} days"


def workload_requests(workload: Workload, duration_s: float) -> float:
    """Requests a workload sends in ``duration_s`` seconds (closed loops: an upper bound)."""
    if workload.rate_rps is not None:
        return workload.rate_rps * duration_s
    if workload.phases is not None:
        total = 0.0
        for phase, following in zip(workload.phases, [*workload.phases[1:], None], strict=True):
            end = duration_s if following is None else min(following.at_s, duration_s)
            total += phase.rate_rps * max(0.0, end - phase.at_s)
        return total
    think_s = workload.think_time_ms.expected / 1e3 if workload.think_time_ms else 0.0
    clients = workload.clients or 1
    return clients * duration_s / max(think_s, MIN_ROUND_TRIP_S)


def calls_per_request(scenario: Scenario) -> dict[str, float]:
    """Expected calls that one request to each service causes, itself included.

    One pass over the call graph in reverse topological order (cycles are refused before
    this is asked); a service's versions are weighted by their replicas.
    """
    services = {s.name: s for s in scenario.services}
    graph: dict[str, list[str]] = {name: [] for name in services}
    for caller, callee in call_edges(scenario):
        if callee in graph:
            graph[caller].append(callee)
    order: list[str] = []
    state: dict[str, int] = {}
    for root in graph:
        if root in state:
            continue
        stack = [(root, 0)]
        state[root] = 1
        while stack:
            name, i = stack[-1]
            if i < len(graph[name]):
                stack[-1] = (name, i + 1)
                nxt = graph[name][i]
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                stack.pop()
                order.append(name)
    fan: dict[str, float] = {}
    for name in order:  # callees come before their callers
        svc = services[name]
        call_lists = [svc.calls]
        weights = [1.0]
        if svc.versions is not None:
            call_lists = [v.calls if v.calls is not None else svc.calls for v in svc.versions]
            weights = [float(v.replicas) for v in svc.versions]
            if sum(weights) == 0:
                weights = [1.0] * len(svc.versions)
        total = 0.0
        for calls, weight in zip(call_lists, weights, strict=True):
            made = sum(c.probability * fan.get(c.service, 1.0) for c in calls)
            total += weight * min(made, _CAP)
        fan[name] = min(1.0 + total / sum(weights), _CAP)
    return fan


def estimate_cost(scenario: Scenario, meshes: Sequence[str] | None = None) -> RunCost:
    """The estimated cost of running ``scenario`` for ``meshes`` (default: its own)."""
    runs = len(meshes if meshes is not None else scenario.meshes) * (
        scenario.replications + scenario.model_samples
    )
    # The run goes on past duration_s to drain; the drain is short next to the run.
    fan = calls_per_request(scenario)
    requests = 0.0
    calls = 0.0
    for wl in scenario.workloads:
        sent = min(workload_requests(wl, scenario.duration_s), _CAP)
        requests += sent
        calls += sent * fan.get(wl.target, 1.0)
    pods = sum(s.total_replicas for s in scenario.services)
    subjects = len(scenario.workloads) + len(scenario.services) + len(call_edges(scenario))
    memory = pods * BYTES_PER_POD + subjects * scenario.duration_s * BYTES_PER_SERIES_SECOND
    return RunCost(min(requests * runs, _CAP), min(calls * runs, _CAP), pods, memory)


def cost_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """Hard limits: a scenario over one of them is refused, with what it would cost."""
    cost = estimate_cost(scenario)
    if cost.pods > MAX_PODS:
        yield (
            ("services",),
            (
                f"{cost.pods:,} pods in all; the limit is {MAX_PODS:,} (Kubernetes' own tested "
                "limit per cluster)"
            ),
        )
    if cost.calls > HARD_CALLS:
        yield (
            ("workloads",),
            (
                f"the run would take too long to simulate: {cost.describe()}; the limit is "
                f"{HARD_CALLS:.0e} calls (lower rate_rps, duration_s, replications or meshes)"
            ),
        )
    if cost.memory_bytes > HARD_MEMORY_BYTES:
        yield (
            ("duration_s",),
            (
                f"the run would need too much memory: {cost.describe()}; the limit is "
                f"{HARD_MEMORY_BYTES / 1024**3:.0f} GB (per-second series of every workload, "
                "service and call edge grow with duration_s)"
            ),
        )


def cost_warnings(cost: RunCost) -> list[str]:
    """Soft limits: what a person should know before starting a long or large run
    (``cost_warnings(estimate_cost(scenario, meshes))``)."""
    if cost.calls > SOFT_CALLS or cost.memory_bytes > SOFT_MEMORY_BYTES:
        return [f"a large run: {cost.describe()}"]
    return []
