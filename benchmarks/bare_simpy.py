"""A bare simpy loop with the mechanisms of a meshsim run under mesh `none`: the yardstick.

Poisson arrivals, each request a process that takes a connection from the client's pool,
then per hop: a network delay, a worker slot of a replica picked at random, a core of that
replica's node, an exponential CPU burst, the next hop, and the delay back; the slot is
held until the reply, as meshsim's app model does. Resources are ``simpy.Resource``s taken
with ``yield request`` and given back with ``release``, as a simpy user writes them; random
numbers are drawn in numpy blocks (a per-draw numpy call would slow the yardstick down and
flatter meshsim). Latencies are kept in a list, the cheapest honest record.

Pods are placed as meshsim places them (service by service, replica by replica, each on the
node with the fewest pods: round robin), and the delays are meshsim's for mesh `none`
(client to the first hop ``client_us``, then ``same_node_us`` or ``cross_node_us``).

    python benchmarks/bare_simpy.py     (one point: prints its requests per wall second)
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

_BLOCK = 4096


@dataclass(frozen=True)
class Shape:
    """What both the bare loop and meshsim's scenario are built from."""

    rate_rps: float = 1000.0
    hops: int = 1
    """Length of the call chain (services s0 -> s1 -> ...)."""
    services: int = 1
    """Independent chains side by side, each with its own client at rate_rps / services."""
    replicas: int = 2
    nodes: int = 4
    cores_per_node: int = 8
    concurrency: int = 32
    connections: int = 64
    cpu_ms: float = 0.2
    duration_s: float = 4.0
    warmup_s: float = 0.5
    client_us: float = 150.0
    same_node_us: float = 25.0
    cross_node_us: float = 150.0


def _blocks(draw: Any) -> Iterator[float]:
    while True:
        yield from draw(_BLOCK).tolist()


def bare_run(shape: Shape, seed: int = 1) -> int:
    """Simulate ``shape`` with bare simpy; the number of requests sent."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    cores = [simpy.Resource(env, shape.cores_per_node) for _ in range(shape.nodes)]
    # pods[chain][hop] -> [(slots, node index)], placed round robin in creation order.
    pods: list[list[list[tuple[simpy.Resource, int]]]] = []
    k = 0
    for _ in range(shape.services):
        chain = []
        for _ in range(shape.hops):
            reps = []
            for _ in range(shape.replicas):
                reps.append((simpy.Resource(env, shape.concurrency), k % shape.nodes))
                k += 1
            chain.append(reps)
        pods.append(chain)
    cpu = _blocks(lambda n: rng.exponential(shape.cpu_ms * 1e-3, n))
    pick = _blocks(lambda n: rng.random(n))
    client_s = shape.client_us * 1e-6
    same_s = shape.same_node_us * 1e-6
    cross_s = shape.cross_node_us * 1e-6
    latencies: list[float] = []
    sent = [0]

    def hop(
        chain: list[list[tuple[simpy.Resource, int]]], h: int, src: int
    ) -> Generator[simpy.Event, Any, None]:
        reps = chain[h]
        slots, node = reps[int(next(pick) * len(reps))]
        delay = client_s if src < 0 else (same_s if src == node else cross_s)
        yield env.timeout(delay)
        slot = slots.request()
        yield slot
        core_pool = cores[node]
        core = core_pool.request()
        yield core
        yield env.timeout(next(cpu))
        core_pool.release(core)
        if h + 1 < len(chain):
            yield from hop(chain, h + 1, node)
        slots.release(slot)
        yield env.timeout(delay)

    def request(
        chain: Any, conns: simpy.Resource, sent_at: float
    ) -> Generator[simpy.Event, Any, None]:
        conn = conns.request()
        yield conn
        yield from hop(chain, 0, -1)
        conns.release(conn)
        latencies.append(env.now - sent_at)

    def arrivals(chain: Any, rate: float) -> Generator[simpy.Event, Any, None]:
        conns = simpy.Resource(env, shape.connections)
        gaps = _blocks(lambda n: rng.exponential(1.0 / rate, n))
        while True:
            gap = next(gaps)
            if env.now + gap >= shape.duration_s:
                return
            yield env.timeout(gap)
            sent[0] += 1
            env.process(request(chain, conns, env.now))

    for chain in pods:
        env.process(arrivals(chain, shape.rate_rps / shape.services))
    env.run()
    return sent[0]


if __name__ == "__main__":
    shape = Shape()
    t0 = time.perf_counter()
    n = bare_run(shape)
    wall = time.perf_counter() - t0
    print(f"bare simpy: {n:,} requests, {shape.hops} hop(s), {n / wall:,.0f} requests/s")
