"""The lab's cheap CPU reader (procstat.CpuReader): process CPU clocks, against /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from meshsim.calibrate.procstat import HAVE_SCHEDSTAT, CpuReader, tree_sched

# The comparisons with tree_sched need its schedstat path (nanoseconds, live threads only);
# without schedstat it reads /proc/PID/stat's clock ticks. The CPU clocks need neither.
needs_schedstat = pytest.mark.skipif(not HAVE_SCHEDSTAT, reason="the kernel keeps no schedstat")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@needs_schedstat
def test_it_reads_what_the_full_read_of_proc_reads() -> None:
    reader = CpuReader([os.getpid()])
    cheap0, full0 = reader.cpu_s(), tree_sched([os.getpid()]).cpu_s
    _burn(0.05)
    cheap, full = reader.cpu_s() - cheap0, tree_sched([os.getpid()]).cpu_s - full0
    # The same nanoseconds (a full read takes some 0.2 ms of its own, which it counts).
    assert cheap == pytest.approx(full, abs=1e-3)
    assert cheap == pytest.approx(0.05, abs=5e-3)


@needs_schedstat
def test_a_thread_that_ended_still_counts_and_so_does_a_process() -> None:
    done = threading.Thread(target=_burn, args=(0.05,))
    reader = CpuReader([os.getpid()])
    before = reader.cpu_s()
    done.start()
    done.join()
    after = reader.cpu_s()
    assert after - before >= 0.045
    # The full read of /proc counts live threads only: it has lost the thread's CPU.
    assert tree_sched([os.getpid()]).cpu_s < after - 0.04


def test_a_process_that_ended_keeps_the_cpu_last_read() -> None:
    burn = "import time\nt = time.thread_time()\nwhile time.thread_time() - t < 0.05: pass\n"
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "input()"],
        stdin=subprocess.PIPE,
    )
    try:
        reader = CpuReader([child.pid, os.getpid()])
        while reader.cpu_s() < 0.05:
            time.sleep(0.01)
        spent = reader.cpu_s()
    finally:
        child.communicate(b"\n")
    assert reader.cpu_s() >= spent  # the child's share stays when its clock is gone


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity")
def test_switches_are_told_apart_a_sleeper_volunteers_a_crowded_burner_is_preempted() -> None:
    """Two processes burning CPU on one core take it from each other (involuntary switches,
    a few per scheduler slice); one that sleeps gives it up itself (voluntary ones)."""
    core = min(os.sched_getaffinity(0))
    burn = (
        f"import os, time\nos.sched_setaffinity(0, {{{core}}})\n"
        "t = time.thread_time()\nwhile time.thread_time() - t < 0.2: pass\ninput()\n"
    )
    sleep = "import time\nfor _ in range(50): time.sleep(0.001)\ninput()\n"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        for code in (burn, burn, sleep)
    ]
    try:
        time.sleep(0.05)
        while min(tree_sched([p.pid]).cpu_s for p in procs[:2]) < 0.19:
            time.sleep(0.02)
        time.sleep(0.2)  # the sleeper is done too
        a, b, sleeper = (tree_sched([p.pid]) for p in procs)
    finally:
        for p in procs:
            p.communicate(b"\n", timeout=10)
    # 0.2 s each, shared with the other: each was preempted many times (slices of a few ms).
    assert a.involuntary >= 10
    assert b.involuntary >= 10
    assert sleeper.voluntary >= 50
    assert sleeper.involuntary < sleeper.voluntary
