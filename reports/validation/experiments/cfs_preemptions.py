"""Who takes whose core in the simulated lab under ``cluster.scheduler: cfs``, per request, to
set beside the lab's scheduler trace (experiments/sched_trace.py: at 7741 rps the load
generator took core 0 from the running client sidecar 0.28 times a request, the echo core 1
from the server sidecar 0.27 times, and the sidecars theirs back 0.016 and 0.014 times).

    python reports/validation/experiments/cfs_preemptions.py [N]

Runs the committed record's first N plain held-out loads (default 3), 4 s each, with the
simulated lab under ``cfs`` (its own scheduler since 2026-12-05); prints the fair
scheduler's involuntary switches (``FairScheduler.preemptions``) in the measured window, per
request completed in it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import meshsim.calibrate.lab_scenario as lab_scenario
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.validate import held_out_points, merge_passes
from meshsim.rng import replication_seeds
from meshsim.scenario import from_dict
from meshsim.sim.engine import Simulation

MODEL = Path("models/calibrated/lab.yaml")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    fit = load_fit(MODEL)
    points = sorted(
        (
            p
            for p in (merge_passes(ps) for ps in held_out_points(fit["points"], fit["held_out"]))
            if p["config"] == "plain-ka-f0" and p["rps"] and not p.get("cpu_limit_m")
        ),
        key=lambda p: p["rps"],
    )
    for point in points[:n]:
        scenario = from_dict(
            lab_scenario.lab_scenario(MODEL, fit, point, duration_s=4.0, scheduler="cfs")
        )
        sim = Simulation(scenario, "istio", replication_seeds(scenario.seed, 1)[0])
        before: list[int] = []

        def at_warmup(
            sim: Simulation = sim, before: list[int] = before, at: float = scenario.warmup_s
        ) -> Any:
            # The switches are counted in the measured window: so are the requests.
            yield sim.env.timeout(at)
            before.append(sum(w.completed for w in sim.workloads))

        sim.env.process(at_warmup())
        sim.run()
        requests = sum(w.completed for w in sim.workloads) - before[0]
        print(f"{point['rps']:.0f} rps, {requests} requests completed")
        for node in sim.nodes:
            assert node.cpu is not None
            for (victim, by), count in sorted(node.cpu.preemptions.items()):
                print(f"  {victim:24s} <- {by:24s} {count:7d} {count / requests:7.3f}/request")


if __name__ == "__main__":
    main()
