"""Where does this host's kernel put a task that wakes while one CPU is busy and another idle?

Mainline Linux places a waking task on an idle CPU of its cache domain when its last one is
busy (``select_idle_sibling``, kernel/sched/fair.c), which is what ``cluster.run_queues:
per_cpu`` models. A kernel may carry placement changes of its own: the host of the 2026-12-06
multicore passes boots with ``sched_vcpu_pack=15`` (``/proc/cmdline``; ``/proc/kallsyms`` has
``vcpu_pack_room``), a vCPU-packing patch mainline lacks. If it packed a wakee onto a busy
vCPU beside an idle one, the per-CPU model's match with that kernel
(``multicore_queue.py``) would be a match with the patch, not with Linux.

A spinner is pinned to one CPU; a sleeper, free to run on either, wakes every 2 ms, notes
the CPU it woke on (``/proc/thread-self/stat``, field 39) and burns ``BURST`` us of CPU.
Mainline's placement puts every wake-up on the idle CPU.

    python reports/validation/experiments/wakee_placement.py [WAKES]

Needs Linux with two CPUs or more (CPUs 0 and 1); no root.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from typing import Any

BURST_US = (0, 300)


def _cpu_now() -> int:
    with open("/proc/thread-self/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[36])


def _spinner(cpu: int, stop: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    while not stop.is_set():
        for _ in range(10_000):
            pass


def _sleeper(wakes: int, burst_us: int, out: Any) -> None:
    counts: dict[int, int] = {}
    for _ in range(wakes):
        time.sleep(0.002)
        cpu = _cpu_now()
        counts[cpu] = counts.get(cpu, 0) + 1
        end = time.thread_time_ns() + burst_us * 1000
        while time.thread_time_ns() < end:
            pass
    out.put(counts)


def probe(spin_cpu: int, burst_us: int, wakes: int) -> dict[int, int]:
    """The sleeper's wake-ups by the CPU they ran on, the spinner pinned to ``spin_cpu``."""
    stop, out = mp.Event(), mp.Queue()
    spinner = mp.Process(target=_spinner, args=(spin_cpu, stop))
    spinner.start()
    time.sleep(0.3)
    sleeper = mp.Process(target=_sleeper, args=(wakes, burst_us, out))
    sleeper.start()
    counts: dict[int, int] = out.get()
    sleeper.join()
    stop.set()
    spinner.join()
    return counts


def main(argv: list[str]) -> None:
    wakes = int(argv[0]) if argv else 1000
    with open("/proc/cmdline") as f:
        packing = [w for w in f.read().split() if w.startswith("sched_vcpu_pack")]
    print(f"kernel {os.uname().release}, {' '.join(packing) or 'no sched_vcpu_pack'}")
    for spin_cpu in (0, 1):
        for burst in BURST_US:
            counts = probe(spin_cpu, burst, wakes)
            busy = counts.get(spin_cpu, 0)
            print(
                f"spinner on CPU {spin_cpu}, sleeper's burst {burst} us: {busy} of {wakes} "
                f"wake-ups on the busy CPU ({dict(sorted(counts.items()))})"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
