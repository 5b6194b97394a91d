"""A process's counters from ``/proc``: CPU, run delay, context switches, RSS.

``/proc/PID/task/*/schedstat`` gives CPU and run delay to the nanosecond where the kernel
keeps it (CONFIG_SCHED_INFO); elsewhere the CPU comes from ``/proc/PID/stat``'s clock ticks
and the run delay is unknown.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from meshsim.errors import MeshsimError

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HAVE_SCHEDSTAT = Path("/proc/self/schedstat").exists()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class Sched:
    """A process's scheduler counters, summed over its threads."""

    cpu_s: float
    run_delay_s: float | None
    """None where the kernel keeps no schedstat."""
    voluntary: int
    """Context switches out of a thread that went to sleep (its wake-ups)."""
    involuntary: int = 0
    """Context switches out of a thread that was still running: preempted, mostly by a
    process it had just woken on its core."""

    def __sub__(self, other: Sched) -> Sched:
        rd = (
            None
            if self.run_delay_s is None or other.run_delay_s is None
            else self.run_delay_s - other.run_delay_s
        )
        return Sched(
            self.cpu_s - other.cpu_s,
            rd,
            self.voluntary - other.voluntary,
            self.involuntary - other.involuntary,
        )

    def __add__(self, other: Sched) -> Sched:
        rd = (
            None
            if self.run_delay_s is None or other.run_delay_s is None
            else self.run_delay_s + other.run_delay_s
        )
        return Sched(
            self.cpu_s + other.cpu_s,
            rd,
            self.voluntary + other.voluntary,
            self.involuntary + other.involuntary,
        )


def proc_sched(pid: int) -> Sched:
    """CPU, run delay and context switches of ``pid``, all threads.

    ``schedstat`` gives CPU and run delay in nanoseconds; a kernel without it (no
    CONFIG_SCHED_INFO) leaves the CPU to ``/proc/PID/stat``'s clock ticks and the run delay
    unknown.
    """
    cpu_ns = delay_ns = voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
            if HAVE_SCHEDSTAT:
                fields = (task / "schedstat").read_text().split()
                cpu_ns += int(fields[0])
                delay_ns += int(fields[1])
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    if not HAVE_SCHEDSTAT:
        return Sched(proc_cpu_s(pid), None, voluntary, involuntary)
    return Sched(cpu_ns * 1e-9, delay_ns * 1e-9, voluntary, involuntary)


def tree_sched(pids: list[int]) -> Sched:
    """:func:`proc_sched` summed over a process tree (processes that have ended count 0)."""
    total = Sched(0.0, 0.0 if HAVE_SCHEDSTAT else None, 0)
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total = total + proc_sched(pid)
    return total


def process_cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time, all its threads, those ended too (Linux's
    ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``; glibc's ``clock_getcpuclockid``)."""
    return (~pid << 3) | 2


class CpuReader:
    """The CPU seconds of some processes, cheap enough to read every 10 ms.

    :func:`tree_sched` reads every thread's ``schedstat`` and ``status`` afresh: about 175 us
    a process on the lab's host (each lab process has six threads). Done every 10 ms for the
    two sidecars from a thread of the load generator's process, it held the load generator's
    core, and its interpreter lock, for 0.48 ms a hundred times a second: 4.7 % of the core,
    in the middle of the latency being measured (the kernel's scheduler trace,
    ``reports/validation/experiments/sched_trace.py``). This reads each process's CPU clock
    instead (``clock_gettime``, about 0.2 us; the same nanoseconds as ``schedstat``, with the
    threads that have ended counted); a process that has ended keeps the CPU last read of it.
    """

    def __init__(self, pids: list[int]) -> None:
        self._clocks = {pid: process_cpu_clock(pid) for pid in pids}
        self._last = dict.fromkeys(pids, 0.0)

    def cpu_s(self) -> float:
        """The processes' CPU seconds now."""
        for pid, clock in self._clocks.items():
            with contextlib.suppress(OSError):  # ended: the last value stays
                self._last[pid] = time.clock_gettime(clock)
        return sum(self._last.values())


def proc_rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise MeshsimError(f"no VmRSS for process {pid}")
