"""What if the simulated load generator's releases came when its timer fires, not on a grid?

The simulated lab releases the load generator's requests on a grid of timer ticks
(``release_tick_ms``, :meth:`meshsim.sim.workload.WorkloadDriver._ticked_open_loop`): every
release one tick after the last, each sending the requests due within half a tick. The lab's
load generator (:func:`meshsim.proxy.loadgen._schedule`) sleeps until its next request is due
and sends it when the timer fires, early or late by the loop's millisecond clock, with
everything due within half a millisecond: its releases are as irregular as its timer. This
replaces the grid with that: the timer fires at the request's intended time plus a lateness
drawn uniformly from LO..HI ms, and the release sends what is due within half a millisecond.
Prints, for the model's held-out point at RPS, the simulated legs (way there, server span,
way back, client span, load generator: p50 / p90 / p99 ms), the requests per release and
the deciles of the client sidecar's longer gaps between parsed requests (over 30 us), on the
grid and with each HI.

    python reports/validation/experiments/release_lateness.py MODEL RPS HI[,HI...] [LO]

MODEL is a calibration's lab.yaml (its lab.fit.json beside it); LO defaults to 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simpy

import meshsim.calibrate.sim_trace as sim_trace
import meshsim.sim.workload as workload
from meshsim.calibrate.decomposition import trace_lab
from meshsim.calibrate.validate import held_out_points, merge_passes
from meshsim.sim.uncontended import give, take

HALF_TICK_S = 0.0005
LATENESS: dict[str, tuple[float, float] | None] = {"ms": None}
RELEASES = [0]
grid_loop = workload.WorkloadDriver._ticked_open_loop


def timer_loop(self: workload.WorkloadDriver, tick_s: float) -> Generator[simpy.Event, Any, None]:
    if LATENESS["ms"] is None:
        yield from grid_loop(self, tick_s)
        return
    lo, hi = (x * 1e-3 for x in LATENESS["ms"])
    env = self.env
    host = self.sim.data_plane.client_host(self.client) if self.client_cpu else None
    thread, send, due = self.client_thread, self._send, self._intended_times()
    rng = np.random.default_rng(12345)
    at = next(due, None)

    def release() -> bool:
        nonlocal at
        if at is None:
            return False
        RELEASES[0] += 1
        horizon = env.now + HALF_TICK_S
        env.process(send(min(at, env.now)))
        at = next(due, None)
        while at is not None and at <= horizon:
            env.process(send(min(at, env.now)))
            at = next(due, None)
        return True

    while at is not None:
        wake = at + float(rng.uniform(lo, hi)) if at - env.now > HALF_TICK_S else env.now
        if wake > env.now:
            yield env.timeout(wake - env.now)
        if host is None or thread is None:
            release()
            continue
        slot: object | None = take(thread)
        if slot is None:
            request = thread.request()
            yield request
            slot = request
        yield from host.wake_thread(self.client, release)
        give(thread, slot)


def main(argv: Sequence[str]) -> None:
    model, rps = Path(argv[0]), float(argv[1])
    his = [float(x) for x in argv[2].split(",")]
    lo = float(argv[3]) if len(argv) > 3 else 0.0
    fit = json.loads((model.parent / "lab.fit.json").read_text())
    rows = fit["points"]
    held = [i for i, r in enumerate(rows) if r["role"] == "held_out"]
    points = [merge_passes(g) for g in held_out_points(rows, held)]
    (point,) = [
        p
        for p in points
        if p["config"] == "plain-ka-f0" and abs(p["rps"] - rps) < 50 and not p.get("cpu_limit")
    ]
    lat = point["latency_ms"]
    print(f"lab: load generator {lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ms, "
          f"{point.get('requests_per_release')} requests per release")  # fmt: skip
    legs: list[tuple[float, ...]] = []
    finish = sim_trace.Tracer.finish

    def keep(self: sim_trace.Tracer, started_at: float, finished_at: float) -> None:
        frame = sim_trace._request_frame()
        acc = self._open.get(frame) if frame is not None else None
        if acc is not None and self.sim.warmup_s <= started_at < self.sim.end_s:
            marks = (acc.client_start, acc.server_start, acc.server_end, acc.client_end)
            if None not in marks:
                c0, s0, s1, c1 = (float(m) for m in marks)  # type: ignore[arg-type]
                legs.append((s0 - c0, s1 - s0, c1 - s1, c1 - c0, finished_at - started_at, c0))
        finish(self, started_at, finished_at)

    sim_trace.Tracer.finish = keep  # type: ignore[method-assign]
    workload.WorkloadDriver._ticked_open_loop = timer_loop  # type: ignore[method-assign]
    for lateness in [None, *((lo, hi) for hi in his)]:
        LATENESS["ms"] = lateness
        legs.clear()
        RELEASES[0] = 0
        trace_lab(model, fit, point)
        a = np.array(legs)
        parts = []
        for i, label in enumerate(("there", "server", "back", "client", "load generator")):
            q = np.percentile(a[:, i], [50, 90, 99]) * 1e3
            parts.append(f"{label} {q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}")
        gaps = np.diff(np.sort(a[:, 5])) * 1e6
        deciles = " ".join(f"{v:.0f}" for v in np.percentile(gaps[gaps > 30], [10, 30, 50, 70, 90]))
        per = f"{len(a) / RELEASES[0]:.2f}" if RELEASES[0] else "grid"
        name = "grid" if lateness is None else f"late {lateness[0]}..{lateness[1]} ms"
        print(f"{name}: {' | '.join(parts)} | per release {per} | long gaps {deciles}")


if __name__ == "__main__":
    main(sys.argv[1:])
