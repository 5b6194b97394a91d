"""Simulated requests per wall-second: meshsim versus a bare simpy loop, same hops.

Goal (issue 2): meshsim reaches at least half of the bare loop's rate on a
3-service chain with the `none` mesh. Both run in this process, one after the
other, so the ratio is robust to the machine's speed.

    python benchmarks/sim_throughput.py [--update-baseline]
    meshsim bench benchmarks/suites/model-outputs.yaml --only sim-speed   (as a gate)
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from meshsim.api import run_scenario
from meshsim.scenario import from_dict

try:
    from benchmarks._baseline import compare, wants_update
except ImportError:  # run as a script from benchmarks/
    from _baseline import compare, wants_update  # type: ignore[no-redef]

RATE = 2000.0
DURATION = 60.0
HOPS = 3


def chain_scenario(duration_s: float = DURATION) -> Any:
    services = [
        {
            "name": f"s{i}",
            "replicas": 2,
            "cpu_ms": {"dist": "exponential", "mean": 0.5},
            "concurrency": 32,
            "calls": [{"service": f"s{i + 1}"}] if i + 1 < HOPS else [],
        }
        for i in range(HOPS)
    ]
    return from_dict(
        {
            "meshsim": 1, "name": "chain", "duration_s": duration_s, "warmup_s": 1.0,
            "cluster": {"nodes": 3, "cores_per_node": 4},
            "services": services,
            "workloads": [{"name": "load", "target": "s0", "rate_rps": RATE}],
        }
    )  # fmt: skip


def bare_simpy(duration_s: float = DURATION) -> int:
    """The same hops written directly in simpy: network, worker slot, core, CPU, network."""
    env = simpy.Environment()
    rng = np.random.default_rng(1)
    cores = [simpy.Resource(env, 4) for _ in range(3)]
    slots = [[simpy.Resource(env, 32) for _ in range(2)] for _ in range(HOPS)]
    done = [0]

    def hop(i: int) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(150e-6)
        replica = int(rng.integers(2))
        slot = slots[i][replica].request()
        yield slot
        node = cores[(i * 2 + replica) % 3]
        core = node.request()
        yield core
        yield env.timeout(rng.exponential(0.5e-3))
        node.release(core)
        if i + 1 < HOPS:
            yield from hop(i + 1)
        slots[i][replica].release(slot)
        yield env.timeout(150e-6)

    def request() -> Generator[simpy.Event, Any, None]:
        yield from hop(0)
        done[0] += 1

    def arrivals() -> Generator[simpy.Event, Any, None]:
        while env.now < duration_s:
            yield env.timeout(rng.exponential(1.0 / RATE))
            env.process(request())

    env.process(arrivals())
    env.run()
    return done[0]


def measure(duration_s: float = DURATION) -> dict[str, float]:
    """Both rates, measured one after the other in this process, and their ratio.

    ``meshsim bench`` calls this once per replication (benchmarks/suites/model-outputs.yaml).
    """
    t0 = time.perf_counter()
    bare_requests = bare_simpy(duration_s)
    bare_rate = bare_requests / (time.perf_counter() - t0)

    scenario = chain_scenario(duration_s)
    t0 = time.perf_counter()
    result = run_scenario(scenario, meshes=["none"])
    elapsed = time.perf_counter() - t0
    rep = result.meshes["none"].replications[0]
    sim_rate = sum(rep.sent.values()) / elapsed
    return {
        "bare_simpy_requests_per_s": bare_rate,
        "meshsim_requests_per_s": sim_rate,
        "meshsim_over_bare_ratio": sim_rate / bare_rate,
    }


def main() -> None:
    figures = measure()
    ratio = figures["meshsim_over_bare_ratio"]
    print(f"3-service chain, {RATE:g} rps for {DURATION:g} simulated s")
    compare("sim_throughput", figures, update=wants_update())
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"  goal: ratio >= 0.5 -> {verdict}")


if __name__ == "__main__":
    main()
