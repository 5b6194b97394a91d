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
meshsim's fair scheduler: one node of two cores (``global``: meshsim's model), two one-core
nodes with the workers split as pinned (``split``), and two per-CPU sketches with wake-up
placement and no balancing of running tasks (``percpu``, ``balanced``: :func:`replay`). The
wait of a request is its
time from send to end less its own CPU: queueing behind its worker's earlier requests,
waiting for a core, and the wake-up. The wake-up's latency (measured at the lowest load, the
median wait there, as the simulated lab's ``wakeup_latency_us``) is added to every wake-up
in both replays. If ``unpinned`` tracks ``global`` and ``pinned`` tracks ``split``, the one
queue is the kernel's behaviour for a node's cores; where ``unpinned`` sits between them,
the gap is what per-CPU queues would add.

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
from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from meshsim.calibrate.calibration import sched_base_slice_ns
from meshsim.sim.cpu.fair import CGroup, FairScheduler
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


PER_CPU = ("percpu", "balanced", "kernel", "newidle")
MIGRATION_COST_S = 0.5e-3
"""``sysctl_sched_migration_cost``: a task that ran this recently is cache-hot, and the
balancer leaves it where it is (``task_hot``) unless balancing has failed before."""
CACHE_NICE_TRIES = 1
"""``sd->cache_nice_tries`` of the CPUs' domain (MC): failed balances after which a hot task
moves too."""
TICK_S = 0.004
"""One tick at CONFIG_HZ=250."""
BUSY_BALANCE_S = 16 * TICK_S
"""A busy CPU's balance interval: one jiffy (``sd->balance_interval``, the domain's weight in
milliseconds rounded up to a jiffy) times ``busy_factor`` 16."""


def replay(
    measured: dict[str, Any],
    model: str,
    wakeup_s: float,
    slice_s: float,
    migrations: list[int] | None = None,
) -> np.ndarray:
    """The waits (s) of ``measured``'s requests through meshsim's fair scheduler: ``global``,
    one node of two cores (one run queue); ``split``, two nodes of one core with the workers
    as pinned; ``percpu``, a run queue per CPU with the kernel's wake-up placement as
    ``select_idle_sibling`` makes it (the CPU the task last ran on if it is idle, else an idle
    one, else the last one's queue) and no balancing after (the driver too); ``balanced``,
    the same but a wakee with no idle CPU goes to the one with the fewest tasks. Neither
    moves a task that never sleeps (a worker with a backlog), which the kernel's balancer
    does; ``kernel`` is ``percpu`` with the kernel's balancing at its ticks, ``newidle`` with
    a CPU that goes idle pulling a waiting task at once as well (:class:`_Balancer`).
    ``migrations``, if given, gets each worker's moves between CPUs."""
    env = simpy.Environment()
    cpus = (
        [FairScheduler(env, len(CPUS), base_slice_s=slice_s)]
        if model == "global"
        else [FairScheduler(env, 1, base_slice_s=slice_s) for _ in CPUS]
    )
    # A task's entity on each CPU (the kernel's per-CPU group entities); split uses one.
    groups = [[c.group(f"worker{w}", 1024.0) for c in cpus] for w in range(WORKERS)]
    drivers = [c.group("driver", 1024.0) for c in cpus]
    where = _Where(w % len(cpus) for w in range(WORKERS + 1))  # the driver is task WORKERS
    driver_cpu_s = measured["driver_cpu_ns_per_send"] / 1e9
    reqs = measured["requests"]
    pending: list[deque[int]] = [deque() for _ in range(WORKERS)]
    busy = [False] * WORKERS
    last_ran = [0.0] * WORKERS
    ends = np.zeros(len(reqs))
    per_cpu = model in PER_CPU

    def place(task: int) -> int:
        if not per_cpu:
            return where[task]
        prev = where[task]
        if cpus[prev].idle and not cpus[prev].waiting:
            return prev
        for c, sched in enumerate(cpus):
            if sched.idle and not sched.waiting:
                where[task] = c
                return c
        if model != "balanced":
            return prev
        load = [len(sc.running) + sc.waiting for sc in cpus]
        best = min(range(len(cpus)), key=lambda c: (load[c], c != prev))
        where[task] = best
        return best

    def start(w: int) -> None:
        c = where[w]
        cpus[c].submit(reqs[pending[w][0]][3] / 1e9, groups[w][c], lambda: finish(w), thread=w,
                       goes_on=lambda: len(pending[w]) > 1)  # fmt: skip

    balance = _Balancer(env, cpus, groups, where, pending, reqs, last_ran, model == "newidle")
    balancing = model in ("kernel", "newidle")

    def finish(w: int) -> None:
        i = pending[w].popleft()
        ends[i] = last_ran[w] = env.now
        if pending[w]:
            start(w)
        else:
            busy[w] = False
        if balancing:
            balance.went_idle()

    def send(_ev: object = None) -> None:
        d = place(WORKERS)
        cpus[d].submit(driver_cpu_s, drivers[d], balance.went_idle if balancing else
                       (lambda: None))  # fmt: skip

    def woke(w: int, _ev: object = None) -> None:
        place(w)
        start(w)

    def arrive(i: int, _ev: object = None) -> None:
        w = reqs[i][1]
        pending[w].append(i)
        if not busy[w]:
            busy[w] = True
            wake = env.timeout(wakeup_s)
            assert wake.callbacks is not None
            wake.callbacks.append(partial(woke, w))

    for i, (sent, *_rest) in enumerate(reqs):
        # The driver's CPU a send is its wake-up and the write, before the worker wakes.
        ev = env.timeout(max(sent / 1e9 - driver_cpu_s, 0.0))
        assert ev.callbacks is not None
        ev.callbacks.append(send)
        ev = env.timeout(sent / 1e9)
        assert ev.callbacks is not None
        ev.callbacks.append(partial(arrive, i))
    if balancing:
        env.process(balance.ticks(reqs[-1][0] / 1e9 + 1.0))
    env.run()
    if migrations is not None:
        migrations[:] = where.moves[:WORKERS]
    sent = np.array([r[0] for r in reqs]) / 1e9
    cpu = np.array([r[3] for r in reqs]) / 1e9
    return ends - sent - cpu


class _Where(list[int]):
    """The CPU each task is on, counting its moves."""

    def __init__(self, cpus: Any) -> None:
        super().__init__(cpus)
        self.moves = [0] * len(self)

    def __setitem__(self, i: Any, cpu: Any) -> None:
        if self[i] != cpu:
            self.moves[i] += 1
        super().__setitem__(i, cpu)


class _Balancer:
    """Balancing between the CPUs' run queues, as Linux 6.18 does it for CPUs of one cache
    domain (kernel/sched/fair.c), of the workers (the driver's short bursts stay where they
    woke). A waiting task moves if it is cold (last ran ``MIGRATION_COST_S`` ago or more,
    ``task_hot``), or hot too after more than ``CACHE_NICE_TRIES`` failed balances; the
    least recently run first (``detach_tasks`` walks ``cfs_tasks`` from its tail).

    - **Idle CPUs at a busy one's tick** (``nohz_balancer_kick``): a CPU with two or more
      runnable at its tick has an idle one balance (``CPU_IDLE``) and pull one.
    - **Busy CPUs** every ``BUSY_BALANCE_S``: a CPU with two fewer runnable than another
      pulls one.
    - **Newly idle** (``sched_balance_newidle``; only if ``newidle``): a CPU about to go idle
      pulls a cold waiting task at once. The kernel may skip this balance when the CPU's
      average idle time is below the balance's cost (``max_newidle_lb_cost``); replayed
      against the measured waits, the variant without it fits and the one with it is as
      short as one run queue.

    Not modelled: active balancing (a running task pushed off its CPU after repeated
    failures) and wake-affine placement on the waker's CPU."""

    def __init__(
        self,
        env: simpy.Environment,
        cpus: list[FairScheduler],
        groups: list[list[CGroup]],
        where: _Where,
        pending: list[deque[int]],
        reqs: list[Any],
        last_ran: list[float],
        newidle: bool,
    ) -> None:
        self.env, self.cpus, self.groups, self.where = env, cpus, groups, where
        self.pending, self.reqs, self.last_ran = pending, reqs, last_ran
        self.newidle = newidle
        self.failed = 0

    def nr(self, c: int) -> int:
        s = self.cpus[c]
        return s.cores - s.idle + s.waiting

    def idle(self, c: int) -> bool:
        s = self.cpus[c]
        return bool(s.idle) and not s.waiting

    def pull(self, dst: int, hot_too: bool) -> bool:
        now = self.env.now
        for src in range(len(self.cpus)):
            if src == dst or self.nr(src) < 2:
                continue
            cands = []
            for w, g in enumerate(self.groups):
                if self.where[w] != src or not g[src].queue:
                    continue
                waiting = g[src].queue[0]
                full = self.reqs[self.pending[w][0]][3] / 1e9
                ran = waiting.started if waiting.remaining < full - 1e-12 else self.last_ran[w]
                cands.append((ran, w))
            for ran, w in sorted(cands):
                if hot_too or now - ran >= MIGRATION_COST_S:
                    task = self.cpus[src].withdraw(self.groups[w][src])
                    assert task is not None
                    self.where[w] = dst
                    self.cpus[dst].submit(task.remaining, self.groups[w][dst], task.done,
                                          thread=w, goes_on=task.goes_on)  # fmt: skip
                    return True
        return False

    def went_idle(self) -> None:
        if not self.newidle:
            return
        # After the core's next pick (the scheduler picks after a burst's callback).
        ev = self.env.timeout(0)
        assert ev.callbacks is not None
        ev.callbacks.append(self._pull_to_idle)

    def _pull_to_idle(self, _ev: object) -> None:
        for c in range(len(self.cpus)):
            if self.idle(c):
                self.pull(c, False)

    def balance(self, dst: int) -> None:
        if self.pull(dst, self.failed > CACHE_NICE_TRIES):
            self.failed = 0
        else:
            self.failed += 1

    def ticks(self, until: float) -> Generator[simpy.Event, None, None]:
        next_busy = [0.0] * len(self.cpus)
        n = len(self.cpus)
        k = 0
        while self.env.now < until:
            yield self.env.timeout(TICK_S / n)
            c = k % n
            k += 1
            if self.idle(c):
                continue
            if self.nr(c) >= 2:
                for d in range(n):
                    if d != c and self.idle(d):
                        self.balance(d)
                        break
            if self.env.now >= next_busy[c]:
                next_busy[c] = self.env.now + BUSY_BALANCE_S
                if any(self.nr(d) - self.nr(c) >= 2 for d in range(n) if d != c):
                    self.balance(c)


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
        for model in ("global", "percpu", "balanced", "kernel", "newidle", "split"):
            moved: list[int] = []
            w = replay(m, model, wakeup_s, slice_s, moved)
            print(line(model, w) + (f"  migrations {moved}" if model in PER_CPU else ""))
    if keep is not None:
        with gzip.open(keep, "wt") as f:
            json.dump({"host": host, "slice_s": slice_s, "runs": runs}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
