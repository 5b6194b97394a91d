"""The server sidecar's CPU per 100 ms period (a CFS period) under a held-out load, unlimited.

How much it varies from period to period decides how often a CPU limit near its average is
reached (reports/validation/cpu-limits.md, "CPU-limited points in every calibration").
Samples both sidecars' schedstat every 10 ms in a thread while ``Lab.measure`` runs a
plain, keep-alive, 1 KiB point, then keeps the longest stretch of busy periods (the load)
less its first and last period, and counts the requests the server sidecar answered in
each period (its access log's ``ts``), to split the CPU's variation between the number of
requests and the CPU per request.

    python reports/validation/experiments/period_cpu.py RPS SECONDS
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Point
from meshsim.calibrate.procstat import tree_sched


def main(rps: float, seconds: float) -> dict[str, object]:
    lab = Lab(workdir())
    samples: list[tuple[float, float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        assert lab.server is not None
        assert lab.client is not None
        while not stop.is_set():
            server, client = tree_sched(lab.server.pids()), tree_sched(lab.client.pids())
            samples.append((time.monotonic(), server.cpu_s, client.cpu_s, time.time()))
            time.sleep(0.01)

    try:
        point = Point(LabConfig(), 1024, rps, 32, duration_s=seconds, role="held_out")
        lab.reconfigure(point.config)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        measured = lab.measure(point)
        stop.set()
        thread.join()
        assert lab.server is not None
        assert isinstance(lab.server.log, Path)
        answered = [
            rec["ts"]
            for line in lab.server.log.read_bytes().splitlines()
            if (rec := json.loads(line)).get("status") == 200
        ]
    finally:
        lab.close()
    a = np.array(samples)
    edges = np.arange(a[0, 0], a[-1, 0], 0.1)
    server = np.diff(np.interp(edges, a[:, 0], a[:, 1])) * 1e3  # ms of CPU per 100 ms
    client = np.diff(np.interp(edges, a[:, 0], a[:, 2])) * 1e3
    busy = server > 0.25 * np.percentile(server, 90)
    runs, start = [], None
    for i, b in enumerate([*busy, False]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            runs.append((start, i))
            start = None
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    s, c = server[lo + 1 : hi - 1], client[lo + 1 : hi - 1]
    wall = np.interp(edges, a[:, 0], a[:, 3])[lo + 1 : hi]
    n = np.histogram(answered, bins=wall)[0].astype(float)
    per_request = s / n
    mean = float(s.mean())
    return {
        "rps": rps,
        "achieved_rps": round(measured.achieved_rps, 1),
        "periods": len(s),
        "server_ms_per_period": {"mean": round(mean, 2), "cv": round(float(s.std()) / mean, 3)},
        "poisson_count_cv": round(1 / np.sqrt(rps * 0.1), 3),
        "requests_per_period": {
            "mean": round(float(n.mean()), 1),
            "cv": round(float(n.std() / n.mean()), 3),
        },
        "cpu_us_per_request": {
            "mean": round(float(per_request.mean()) * 1e3, 1),
            "cv": round(float(per_request.std() / per_request.mean()), 3),
        },
        "correlation_cpu_with_requests": round(float(np.corrcoef(s, n)[0, 1]), 3),
        "lag1_autocorrelation": round(float(np.corrcoef(s[:-1], s[1:])[0, 1]), 3),
        "correlation_with_client_sidecar": round(float(np.corrcoef(s, c)[0, 1]), 3),
        "periods_over_a_quota_at": {
            f"{used:.0%} of it used": round(float((s > mean / used).mean()), 3)
            for used in (0.67, 0.8, 0.88, 0.9, 0.92)
        },
        "series_ms": [round(float(x), 1) for x in s],
    }


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]), float(sys.argv[2]))))
