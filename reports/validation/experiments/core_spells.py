"""Are the lab's slow periods the sidecar's own, or its core's?

Runs plain keep-alive loads (1 KiB) at RPS for SECONDS each, PASSES times, and prints per
100 ms period: the server sidecar's CPU (its sampled schedstat, as the calibration reads it),
the echo's on the same core, the client sidecar's on the other, core 1's idle and steal time
from ``/proc/stat``, and the load generator's completions per period (its own clock: whether
the requests are Poisson). A slow spell of the core shows as a run of periods in which the
server sidecar and the echo both cost more for the same requests while the client sidecar
does not (meshsim/calibrate/host_spells.py).

    python reports/validation/experiments/core_spells.py [RPS [SECONDS [PASSES]]]

About 20 s a pass; the lab's cores must be otherwise quiet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import meshsim.proxy.loadgen as loadgen
from meshsim.calibrate import period_cpu
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Point
from meshsim.calibrate.procstat import tree_sched

EVERY_S = 0.01
USER_HZ_MS = 10.0  # /proc/stat counts in USER_HZ ticks (100 a second)


def _cpu_line(core: int) -> list[int]:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                return [int(x) for x in line.split()[1:]]
    raise RuntimeError(f"/proc/stat has no cpu{core}")


def _per_period(t: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.diff(np.interp(edges, t, values))


def one_pass(lab: Lab, rps: float, seconds: float, seed: int) -> dict[str, list[float]]:
    done: list[float] = []
    original = loadgen._Conn.on_message_complete

    def completed(conn: Any) -> None:
        done.append(time.time())
        original(conn)

    samples: list[tuple[float, float, list[int]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), tree_sched(lab.echo.pids()).cpu_s, _cpu_line(1)))
            stop.wait(EVERY_S)

    captured: dict[str, Any] = {}
    measure = period_cpu.measure

    def keep(
        s: Sequence[tuple[float, Any]], answered: Any, start: float, end: float
    ) -> dict[str, Any]:
        captured.update(samples=list(s), start=start, end=end)
        return measure(s, answered, start, end)

    loadgen._Conn.on_message_complete = completed  # type: ignore[method-assign,assignment]
    period_cpu.measure = keep  # type: ignore[assignment]
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        lab.measure(Point(LabConfig(), 1024, rps, 32, True, seconds, "held_out"), seed=seed)
    finally:
        stop.set()
        thread.join()
        loadgen._Conn.on_message_complete = original  # type: ignore[method-assign]
        period_cpu.measure = measure
    start = float(captured["start"])
    edges = start + period_cpu.PERIOD_S * np.arange(1, int(seconds / period_cpu.PERIOD_S) - 1)
    st = np.array([s[0] for s in captured["samples"]])
    out = {
        name: list(
            _per_period(st, np.array([s[1][name] for s in captured["samples"]]), edges) * 1e3
        )
        for name in ("server_sidecar", "client_sidecar")
    }
    t = np.array([s[0] for s in samples])
    out["echo"] = list(_per_period(t, np.array([s[1] for s in samples]), edges) * 1e3)
    stat = np.array([s[2] for s in samples], dtype=float)
    out["core1_idle"] = list(_per_period(t, stat[:, 3], edges) * USER_HZ_MS)
    out["core1_steal"] = list(_per_period(t, stat[:, 7], edges) * USER_HZ_MS)
    out["completions"] = list(np.histogram(np.array(done), edges)[0].astype(float))
    return out


def main(argv: Sequence[str]) -> None:
    rps = float(argv[0]) if argv else 5335.8
    seconds = float(argv[1]) if len(argv) > 1 else 5.0
    passes = int(argv[2]) if len(argv) > 2 else 3
    lab = Lab(workdir())
    try:
        for k in range(passes):
            rows = one_pass(lab, rps, seconds, seed=11 + k)
            n = np.array(rows["completions"])
            print(f"pass {k}: completions per period cv {n.std() / n.mean():.4f} "
                  f"(Poisson {1 / np.sqrt(n.mean()):.4f})")  # fmt: skip
            for name, values in rows.items():
                if name != "completions":
                    print(f"  {name:15} " + " ".join(f"{v:4.0f}" for v in values))
    finally:
        lab.close()


if __name__ == "__main__":
    main(sys.argv[1:])
