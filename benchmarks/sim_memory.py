"""Peak memory of a run of two million requests (goal: under 500 MB).

Latencies stream into fixed-size histograms, so memory should not grow with the
request count. Runs a 3-service chain at 10,000 rps for 200 simulated seconds.

    python benchmarks/sim_memory.py [--requests N] [--update-baseline]
"""

from __future__ import annotations

import resource
import sys
import time

from meshsim.api import run_scenario
from meshsim.scenario import from_dict

try:
    from benchmarks._baseline import compare, wants_update
except ImportError:
    from _baseline import compare, wants_update  # type: ignore[no-redef]


def main() -> None:
    requests = 2_000_000
    if "--requests" in sys.argv:
        requests = int(sys.argv[sys.argv.index("--requests") + 1])
    rate = 10_000.0
    duration = requests / rate
    services = [
        {
            "name": f"s{i}",
            "replicas": 4,
            "cpu_ms": {"dist": "exponential", "mean": 0.1},
            "calls": [{"service": f"s{i + 1}"}] if i < 2 else [],
        }
        for i in range(3)
    ]
    scenario = from_dict(
        {
            "meshsim": 1, "name": "memory", "duration_s": duration, "warmup_s": 1.0,
            "cluster": {"nodes": 4, "cores_per_node": 8},
            "services": services,
            "workloads": [{"name": "load", "target": "s0", "rate_rps": rate}],
        }
    )  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = run_scenario(scenario, meshes=["none"])
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sent = sum(result.meshes["none"].replications[0].sent.values())
    print(f"{sent:,} requests in the window, {elapsed:.0f} s wall")
    compare(
        "sim_memory",
        {"peak_rss_mb": peak, "rss_before_run_mb": before, "requests": float(sent)},
        update=wants_update(),
    )
    print(f"  goal: peak under 500 MB -> {'meets' if peak < 500 else 'MISSES'}")


if __name__ == "__main__":
    main()
