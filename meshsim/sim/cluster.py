"""Nodes, their cores, pod placement, and the network between them.

A node's cores are one FCFS multi-server queue shared by everything on the node
(apps and proxies): a CPU burst waits for a free core, then holds it for its
duration. This is the non-preemptive M/G/c view of a node; with bursts far shorter
than a scheduler quantum it is close to what Linux CFS does, and it is exact for the
closed-form checks in the test suite.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

import simpy

from meshsim.scenario.model import Network


class CpuAccount(Protocol):
    """Anything whose CPU time is accounted (a pod's app, a proxy)."""

    cpu_s: float


class Node:
    """A node with ``cores`` cores; all CPU work on it goes through :meth:`execute`."""

    __slots__ = ("busy_s", "cores", "env", "index", "name", "pods")

    def __init__(self, env: simpy.Environment, index: int, cores: int) -> None:
        self.env = env
        self.index = index
        self.name = f"node-{index}"
        self.cores = simpy.Resource(env, capacity=cores)
        self.busy_s = 0.0
        """Core-seconds of CPU executed so far (all accounts)."""
        self.pods: list[Any] = []

    def execute(self, cpu_s: float, account: CpuAccount) -> Generator[simpy.Event, Any, None]:
        """Run a CPU burst of ``cpu_s`` seconds on one of this node's cores."""
        cores = self.cores
        req = cores.request()
        yield req
        yield self.env.timeout(cpu_s)
        cores.release(req)
        self.busy_s += cpu_s
        account.cpu_s += cpu_s


def place(nodes: list[Node]) -> Node:
    """The node for a new pod: fewest pods first, then lowest index (deterministic spread)."""
    return min(nodes, key=lambda n: (len(n.pods), n.index))


class NetworkModel:
    """One-way message delay: placement latency plus serialisation at link bandwidth."""

    __slots__ = ("client_s", "cross_node_s", "same_node_s", "seconds_per_byte")

    def __init__(self, spec: Network) -> None:
        self.same_node_s = spec.same_node_us * 1e-6
        self.cross_node_s = spec.cross_node_us * 1e-6
        self.client_s = (
            spec.client_us if spec.client_us is not None else spec.cross_node_us
        ) * 1e-6
        self.seconds_per_byte = 8.0 / (spec.bandwidth_gbps * 1e9)

    def delay(self, src: Node | None, dst: Node | None, nbytes: int) -> float:
        """Seconds for ``nbytes`` to go from ``src`` to ``dst`` (None: outside the cluster)."""
        if src is None or dst is None:
            base = self.client_s
        elif src is dst:
            base = self.same_node_s
        else:
            base = self.cross_node_s
        return base + nbytes * self.seconds_per_byte
