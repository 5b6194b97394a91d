"""The server sidecar's CPU per 100 ms period (a CFS period) under a held-out load, unlimited.

How much it varies from period to period decides how often a CPU limit near its average is
reached (reports/validation/cpu-limits.md, "CPU-limited points in every calibration").
Runs a plain, keep-alive, 1 KiB point with ``Lab.measure`` (which records the same figures,
``period_cpu``, printed here as ``recorded_by_the_lab``) under a sampler of its own
(:class:`meshsim.calibrate.period_cpu.PeriodSampler`), so as to add what the fit record does
not keep: the series, the share of periods over a quota at a given share of the mean, and the
correlation with the client sidecar (on the other core).

    python reports/validation/experiments/period_cpu.py RPS SECONDS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.period_cpu import PERIOD_S, PeriodSampler, answered_times, per_period
from meshsim.calibrate.points import LabConfig, Point


def main(rps: float, seconds: float) -> dict[str, object]:
    lab = Lab(workdir())
    try:
        point = Point(LabConfig(), 1024, rps, 32, duration_s=seconds, role="held_out")
        lab.reconfigure(point.config)  # starts the sidecars
        assert lab.server is not None
        assert lab.client is not None
        sidecars = {"server_sidecar": lab.server.pids(), "client_sidecar": lab.client.pids()}
        with PeriodSampler(sidecars) as sampler:
            measured = lab.measure(point)
        assert isinstance(lab.server.log, Path)
        answered = answered_times(lab.server.log.read_bytes())
    finally:
        lab.close()
    samples = sampler.samples
    # The load is the longest stretch of answers without a gap of a period (the warm-up's
    # answers come before the probes that precede the load).
    gaps = np.flatnonzero(np.diff(answered) > PERIOD_S)
    bounds = np.split(np.asarray(answered), gaps + 1)
    load = max(bounds, key=len)
    start, end = float(load[0]), float(load[-1])
    server = per_period(samples, "server_sidecar", load, start, end)
    client = per_period(samples, "client_sidecar", load, start, end)
    assert server is not None
    assert client is not None
    s, n = server
    c = client[0]
    per_request = s / n
    mean = float(s.mean())
    return {
        "rps": rps,
        "achieved_rps": round(measured.achieved_rps, 1),
        "recorded_by_the_lab": measured.period_cpu.get("server_sidecar"),
        "periods": len(s),
        "server_ms_per_period": {
            "mean": round(mean * 1e3, 2),
            "cv": round(float(s.std()) / mean, 3),
        },
        "poisson_count_cv": round(1 / np.sqrt(rps * PERIOD_S), 3),
        "requests_per_period": {
            "mean": round(float(n.mean()), 1),
            "cv": round(float(n.std() / n.mean()), 3),
        },
        "cpu_us_per_request": {
            "mean": round(float(per_request.mean()) * 1e6, 1),
            "cv": round(float(per_request.std() / per_request.mean()), 3),
        },
        "correlation_cpu_with_requests": round(float(np.corrcoef(s, n)[0, 1]), 3),
        "lag1_autocorrelation": round(float(np.corrcoef(s[:-1], s[1:])[0, 1]), 3),
        "correlation_with_client_sidecar": round(float(np.corrcoef(s, c)[0, 1]), 3),
        "periods_over_a_quota_at": {
            f"{used:.0%} of it used": round(float((s > mean / used).mean()), 3)
            for used in (0.67, 0.8, 0.88, 0.9, 0.92)
        },
        "series_ms": [round(float(x) * 1e3, 1) for x in s],
    }


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]), float(sys.argv[2]))))
