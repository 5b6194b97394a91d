"""The lab's load generator latency in two: its timer's wait (intended to sent) and the rest.

The load generator keeps two clocks per request (``meshsim/proxy/loadgen.py``): from the
intended send time (``corrected``, what the validation compares) and from the actual send
(``uncorrected``). Their means differ by the mean wait for its event loop's timer to release
the request, which is what ``release_timer: event_loop`` simulates. This measures, at each
RPS given, the plain keep-alive point (1 KiB, 32 connections) through the proxies and without
them, and prints both clocks, that wait, the timer's lateness per wake-up and the clump size.

    python reports/validation/experiments/send_lag.py RPS[,RPS...] [SECONDS]

About 10 s a point; root (the lab's cgroups), and the lab's cores otherwise quiet. Since run
AB every calibration records the second clock too (``latency_from_send_ms``), and the
report's per-hop decomposition sets the wait beside the simulated one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from meshsim.calibrate import lab as lab_module
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Point
from meshsim.proxy.loadgen import LoadResult, LoadSpec


def main(argv: Sequence[str]) -> None:
    loads = [float(x) for x in (argv[0] if argv else "3293.2,8233.1,13172.9").split(",")]
    seconds = float(argv[1]) if len(argv) > 1 else 5.0
    results: list[LoadResult] = []
    run_load = lab_module.run_load

    def keep(spec: LoadSpec) -> LoadResult:
        result = run_load(spec)
        results.append(result)
        return result

    setattr(lab_module, "run_load", keep)  # noqa: B010
    lab = Lab(workdir())
    try:
        for rps in loads:
            for proxied in (True, False):
                point = Point(LabConfig(), 1024, rps, 32, proxied, seconds, "held_out")
                lab.measure(point, 11)
                r = results[-1]
                full, sent = r.corrected, r.uncorrected
                wait = (full.get_mean_value() - sent.get_mean_value()) / 1000.0
                late = np.asarray(r.release_lateness_s) * 1e3
                print(
                    f"{rps:7.0f} {'proxied' if proxied else 'direct '} "
                    f"p50 {full.get_value_at_percentile(50) / 1000:.3f} "
                    f"mean {full.get_mean_value() / 1000:.3f} | from the send "
                    f"p50 {sent.get_value_at_percentile(50) / 1000:.3f} "
                    f"mean {sent.get_mean_value() / 1000:.3f} | timer's wait (mean) {wait:.3f} | "
                    f"lateness mean {late.mean():.3f} p50 {np.median(late):.3f} "
                    f"p90 {np.percentile(late, 90):.3f} | per release "
                    f"{r.scheduled / max(r.releases, 1):.2f} (ms)",
                    flush=True,
                )
    finally:
        setattr(lab_module, "run_load", run_load)  # noqa: B010
        lab.close()


if __name__ == "__main__":
    main(sys.argv[1:])
