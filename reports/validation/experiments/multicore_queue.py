"""Does one run queue per node predict what Linux's per-CPU run queues do on a node of two
cores? meshsim's fair scheduler serves a node's cores from one run queue
(``meshsim/sim/cpu/fair.py``), where the kernel keeps one per CPU, places a waking task on an
idle CPU if it finds one (``select_idle_sibling``) and balances between them. The calibration
lab cannot tell: it pins its processes one core apiece per pair, and each simulated node is
one core. This runs a workload where the difference shows, on this host's kernel:

- four single-threaded worker processes, each serving its own Poisson stream of CPU bursts
  (exponential, mean 300 us of thread CPU, from a pipe, one at a time in order: a sidecar or
  an app on a node), and a driver process that sends them, at 0.05 (the wake-up alone), 0.3,
  0.5 and 0.7 of the two cores;
- twice at each load: the workers free to run on either CPU (``unpinned``, as pods without
  a cpuset), and two pinned to each CPU (``pinned``: per-CPU queues that cannot balance);

and replays every request (its send time and the CPU its burst took, as measured) through
meshsim's fair scheduler: one node of two cores (``global``: ``cluster.run_queues: node``),
two one-core nodes with the workers split as pinned (``split``), and a run queue per CPU
(``kernel``: ``cluster.run_queues: per_cpu``, with the kernel's wake-up placement and its
balancing at the ticks; ``newidle``: with a CPU pulling as it goes idle too; ``percpu``:
the placement alone; :func:`replay`). The wait of a request is its
time from send to end less its own CPU: queueing behind its worker's earlier requests,
waiting for a core, and the wake-up. The wake-up's latency (measured at the lowest load, the
median wait there, as the simulated lab's ``wakeup_latency_us``) is added to every wake-up
in every replay. If ``unpinned`` tracks ``global`` and ``pinned`` tracks ``split``, the one
queue is the kernel's behaviour for a node's cores; where ``unpinned`` sits between them,
the gap is what per-CPU queues add, and ``kernel`` should track it (it does, within 11 %,
from 30 % busy: reports/validation/cpu-limits.md).

    python reports/validation/experiments/multicore_queue.py [SECONDS] [--keep OUT.json.gz]
    python reports/validation/experiments/multicore_queue.py --replay KEPT.json.gz

Needs Linux with two CPUs or more (it uses CPUs 0 and 1); no root.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import struct
import sys
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from meshsim.calibrate.calibration import sched_base_slice_ns
from meshsim.sim.cpu.cores import NodeCores
from meshsim.sim.cpu.fair import FairScheduler
from meshsim.sim.cpu.percpu import PerCpuScheduler
from meshsim.sim.cpu.slices import default_base_slice_s

WORKERS = 4
MEAN_BURST_S = 300e-6
LOADS = (0.05, 0.3, 0.5, 0.7)
CPUS = (0, 1)
_MSG = struct.Struct("qq")  # sequence number, burst in ns of thread CPU


def _worker(fd: int, out: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    rows = []
    read, unpack, now, cpu_ns = os.read, _MSG.unpack, time.monotonic_ns, time.thread_time_ns
    while True:
        before = cpu_ns()
        msg = read(fd, _MSG.size)
        if len(msg) < _MSG.size:
            break
        woke = now()
        seq, burst = unpack(msg)
        end_cpu = cpu_ns() + burst
        while cpu_ns() < end_cpu:
            pass
        rows.append((seq, woke, now(), cpu_ns() - before))
    with open(out, "w", closefd=False) as f:
        json.dump({"rows": rows, "migrations": _migrations()}, f)


def _migrations() -> int:
    for line in Path("/proc/self/sched").read_text().splitlines():
        if line.startswith("se.nr_migrations"):
            return int(line.split(":")[1])
    return -1


def run(load: float, seconds: float, pinned: bool, seed: int) -> dict[str, Any]:
    """One pass on this host: the driver is this process (free on both CPUs)."""
    rng = random.Random(seed)
    rate = load * len(CPUS) / MEAN_BURST_S / WORKERS
    sends = []
    for w in range(WORKERS):
        t = rng.expovariate(rate)
        while t < seconds:
            burst = min(max(rng.expovariate(1 / MEAN_BURST_S), 20e-6), 3e-3)
            sends.append((t, w, int(burst * 1e9)))
            t += rng.expovariate(rate)
    sends.sort()
    pipes, outs, pids = [], [], []
    for w in range(WORKERS):
        r, wr = os.pipe()
        out = os.open(f"/tmp/multicore-{os.getpid()}-{w}.json", os.O_CREAT | os.O_RDWR | os.O_TRUNC)
        pid = os.fork()
        if pid == 0:
            os.close(wr)
            try:
                _worker(r, out, CPUS[w % len(CPUS)] if pinned else None)
            finally:
                os._exit(0)
        os.close(r)
        pipes.append(wr)
        outs.append(out)
        pids.append(pid)
    os.sched_setaffinity(0, set(CPUS))
    time.sleep(0.2)
    sent = []
    cpu0 = time.thread_time_ns()
    start = time.monotonic_ns()
    for seq, (t, w, burst) in enumerate(sends):
        delay = start + int(t * 1e9) - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        sent.append(time.monotonic_ns())
        os.write(pipes[w], _MSG.pack(seq, burst))
    driver_cpu_ns = time.thread_time_ns() - cpu0
    for wr in pipes:
        os.close(wr)
    for pid in pids:
        os.waitpid(pid, 0)
    done: dict[int, tuple[int, int, int, int]] = {}
    migrations = []
    for w, out in enumerate(outs):
        os.lseek(out, 0, os.SEEK_SET)
        data = json.loads(os.read(out, 1 << 30).decode() or "{}")
        os.close(out)
        os.unlink(f"/tmp/multicore-{os.getpid()}-{w}.json")
        migrations.append(data["migrations"])
        for seq, woke, end, cpu in data["rows"]:
            done[seq] = (w, woke, end, cpu)
    reqs = [
        (sent[seq] - start, w, done[seq][2] - start, done[seq][3])
        for seq, (_, w, _) in enumerate(sends)
    ]
    return {
        "load": load,
        "pinned": pinned,
        "requests": reqs,  # (sent ns, worker, end ns, worker CPU ns)
        "driver_cpu_ns_per_send": driver_cpu_ns / len(sends),
        "migrations": migrations,
    }


def replay(
    measured: dict[str, Any], model: str, wakeup_s: float, slice_s: float
) -> tuple[np.ndarray, list[int]]:
    """The waits (s) of ``measured``'s requests through meshsim's fair scheduler, and each
    worker's moves between CPUs: ``global``, one node of two cores (one run queue);
    ``split``, two nodes of one core with the workers as pinned; ``kernel``, a run queue per
    CPU with the kernel's wake-up placement and balancing
    (:class:`meshsim.sim.cpu.percpu.PerCpuScheduler`, ``cluster.run_queues: per_cpu``);
    ``newidle``, the same with a CPU pulling a waiting task as it goes idle; ``percpu``, the
    placement without the balancing."""
    env = simpy.Environment()
    scheds: list[NodeCores]
    if model == "global":
        scheds = [FairScheduler(env, len(CPUS), base_slice_s=slice_s)]
    elif model == "split":
        scheds = [FairScheduler(env, 1, base_slice_s=slice_s) for _ in CPUS]
    else:
        scheds = [
            PerCpuScheduler(
                env, len(CPUS), base_slice_s=slice_s, newidle=model == "newidle",
                balancing=model != "percpu",
            )
        ]  # fmt: skip
    on = [scheds[w % len(scheds)] for w in range(WORKERS)]
    groups = [on[w].group(f"worker{w}", 1024.0) for w in range(WORKERS)]
    driver = scheds[0].group("driver", 1024.0)
    driver_cpu_s = measured["driver_cpu_ns_per_send"] / 1e9
    reqs = measured["requests"]
    pending: list[deque[int]] = [deque() for _ in range(WORKERS)]
    busy = [False] * WORKERS
    ends = np.zeros(len(reqs))

    def start(w: int, _ev: object = None) -> None:
        on[w].submit(reqs[pending[w][0]][3] / 1e9, groups[w], partial(finish, w), thread=w,
                     goes_on=lambda: len(pending[w]) > 1)  # fmt: skip

    def finish(w: int) -> None:
        i = pending[w].popleft()
        ends[i] = env.now
        if pending[w]:
            start(w)
        else:
            busy[w] = False

    def send(_ev: object = None) -> None:
        scheds[0].submit(driver_cpu_s, driver, lambda: None)

    def arrive(i: int, _ev: object = None) -> None:
        w = reqs[i][1]
        pending[w].append(i)
        if not busy[w]:
            busy[w] = True
            wake = env.timeout(wakeup_s)
            assert wake.callbacks is not None
            wake.callbacks.append(partial(start, w))

    for i, (sent, *_rest) in enumerate(reqs):
        # The driver's CPU a send is its wake-up and the write, before the worker wakes.
        ev = env.timeout(max(sent / 1e9 - driver_cpu_s, 0.0))
        assert ev.callbacks is not None
        ev.callbacks.append(send)
        ev = env.timeout(sent / 1e9)
        assert ev.callbacks is not None
        ev.callbacks.append(partial(arrive, i))
    env.run()
    sched = scheds[0]
    moves = (
        [sched.moves.get(w, 0) for w in range(WORKERS)]
        if isinstance(sched, PerCpuScheduler)
        else []
    )
    sent = np.array([r[0] for r in reqs]) / 1e9
    cpu = np.array([r[3] for r in reqs]) / 1e9
    return ends - sent - cpu, moves


def waits(measured: dict[str, Any]) -> np.ndarray:
    r = np.array([(s, e, c) for s, _, e, c in measured["requests"]], dtype=float) / 1e9
    return r[:, 1] - r[:, 0] - r[:, 2]


def line(name: str, w: np.ndarray) -> str:
    us = w * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"  {name:10s} mean {us.mean():8.1f}  p50 {p50:8.1f}  p90 {p90:8.1f}  p99 {p99:8.1f}"


def main(argv: list[str]) -> None:
    keep = Path(argv[argv.index("--keep") + 1]) if "--keep" in argv else None
    if "--replay" in argv:
        with gzip.open(argv[argv.index("--replay") + 1], "rt") as f:
            kept = json.load(f)
        host, slice_s, runs = kept["host"], kept["slice_s"], kept["runs"]
    else:
        host = os.uname().release
        seconds = float(argv[0]) if argv and not argv[0].startswith("-") else 10.0
        if len(os.sched_getaffinity(0)) < len(CPUS):
            sys.exit("needs two CPUs")
        slice_ns = sched_base_slice_ns()
        slice_s = slice_ns / 1e9 if slice_ns else default_base_slice_s(len(CPUS))
        runs = [
            run(load, seconds, pinned, seed=i)
            for i, load in enumerate(LOADS)
            for pinned in (False, True)
        ]
    base = runs[0]
    wakeup_s = float(np.median(waits(base)))
    print(f"host: {host}, base slice {slice_s * 1e3:.2f} ms; "
          f"wake-up (median wait at {base['load']}): {wakeup_s * 1e6:.1f} us")  # fmt: skip
    print("waits (send to end less the burst's own CPU), us:")
    for m in runs:
        cpu_share = sum(r[3] for r in m["requests"]) / (m["requests"][-1][2] * len(CPUS))
        print(f"load {m['load']} ({'pinned' if m['pinned'] else 'unpinned'}): measured CPU "
              f"{cpu_share:.2f} of the cores, {len(m['requests'])} requests, driver "
              f"{m['driver_cpu_ns_per_send'] / 1e3:.1f} us a send, worker migrations "
              f"{m['migrations']}")  # fmt: skip
        print(line("measured", waits(m)))
        for model in ("global", "percpu", "kernel", "newidle", "split"):
            w, moved = replay(m, model, wakeup_s, slice_s)
            print(line(model, w) + (f"  migrations {moved}" if moved else ""))
    if keep is not None:
        with gzip.open(keep, "wt") as f:
            json.dump({"host": host, "slice_s": slice_s, "runs": runs}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
