"""Under ``cluster.scheduler: cfs`` a thread whose burst ends with its next burst ready keeps its
core for it (meshsim.sim.cpu.fair): the kernel dequeues only a task that sleeps, so an event
loop with more callbacks ready goes on running them until its slice ends or a woken task
preempts it. Checked exactly on one core with constant bursts, as tests/test_thread_keeps_core.py
checks the same under fcfs.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy
from test_thread_keeps_core import sidecar_and_app, timer_and_sends
from test_wakeup_latency import _proxy

from meshsim.sim.cluster import Node
from meshsim.sim.cpu.fair import HANDED_CORE_CLAIM_S, FairScheduler

US = 1e-6


def _run(slice_s: float) -> dict[str, float]:
    """Sidecar bursts S1-S3 (50 us each) arrive at 0, 1 and 2 us; the app's A1 (20 us) at
    10 us and A2 at 11 us; the sidecar and the app are cgroups of equal weight on one core."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=slice_s)
    node = Node(env, 0, 1, cpu=cpu, resolve=lambda a: (type(a).__name__, 1024.0, None))
    ends = sidecar_and_app(env, node, _proxy(env, node, wake_us=0.0))
    env.run()
    assert cpu.idle == 1
    return ends


def test_the_sidecars_thread_goes_on_to_its_ready_bursts_within_its_slice() -> None:
    """A 1 ms slice: S1 0-50 (A1, woken at 10, does not preempt: RUN_TO_PARITY), then the
    sidecar's thread goes on to S2 and S3 without sleeping (50-150), and the app's to A1 and
    A2 (150-190). Picking afresh at each burst's end, as before, ran the app's bursts at
    50-90 (the app was owed) and the sidecar's S2 and S3 after them."""
    assert _run(1e-3) == pytest.approx(
        {"S1": 50 * US, "S2": 100 * US, "S3": 150 * US, "A1": 170 * US, "A2": 190 * US},
        abs=1e-12,
    )


def test_a_thread_that_goes_on_still_loses_its_core_when_its_slice_ends() -> None:
    """A 60 us slice: the sidecar goes on to S2 at 50 in the slice it began at 0; at 60 the
    slice is over and the app, owed CPU with the earlier deadline, takes the core: A1 60-80,
    A2 80-100 (its thread goes on in its own slice), S2's last 40 us 100-140, S3 140-190."""
    assert _run(60 * US) == pytest.approx(
        {"S1": 50 * US, "A1": 80 * US, "A2": 100 * US, "S2": 140 * US, "S3": 190 * US},
        abs=1e-12,
    )


def test_a_core_kept_for_a_burst_that_never_comes_goes_back_to_the_pick() -> None:
    """A thread says it goes on, and its next burst never comes (cancelled): the core goes to
    the burst waiting for it after HANDED_CORE_CLAIM_S."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=1e-3)
    a, b = cpu.group("a", 1024.0), cpu.group("b", 1024.0)
    ends: dict[str, float] = {}
    cpu.submit(10 * US, a, lambda: ends.setdefault("a", env.now), "t", lambda: True)

    def other() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1 * US)
        yield cpu.run(5 * US, b)
        ends["b"] = env.now

    env.process(other())
    env.run()
    assert ends == pytest.approx({"a": 10 * US, "b": 15 * US + HANDED_CORE_CLAIM_S}, abs=1e-15)
    assert cpu.idle == 1
    assert not a.on_rq
    assert not b.on_rq


def test_two_bursts_of_one_thread_name_keep_one_core_and_never_leak_one() -> None:
    """Two bursts under one thread name (as a pool's bursts would be under their worker's)
    end together on two cores, each saying it goes on: only the first keeps its core; one
    burst then claims it, and both cores are free at the end."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 2, base_slice_s=1e-3)
    g = cpu.group("pool", 1024.0)
    ends: list[float] = []

    def next_burst() -> None:
        cpu.submit(5 * US, g, lambda: ends.append(env.now), "t")

    for _ in range(2):
        cpu.submit(10 * US, g, next_burst, "t", lambda: True)
    env.run()
    assert ends == pytest.approx([15 * US, 15 * US], abs=1e-15)
    assert cpu.idle == 2
    assert not g.on_rq
    assert g.running == 0


def test_a_running_task_that_is_no_longer_owed_cpu_is_preempted_within_its_slice() -> None:
    """RUN_TO_PARITY keeps a running task on its core "until it either becomes non-eligible
    or until it gets a new slice" (pick_eevdf): a task that has run ahead of its share is
    not protected. One core, 1 ms slices: S (a 2 ms burst) and E (10 us) start at 0; S runs
    0-1000 us, E 1000-1010 and sleeps owed 495 us; S runs on from 1010. E wakes at 1500 us
    with 10 us: placed at its lag, it is owed CPU and S is not, so E preempts S at once
    (1500-1510) although S's slice runs to 2010; S ends at 2020. Protecting S regardless,
    as before, ran E at 2010-2020."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=1e-3)
    s, e = cpu.group("sidecar", 1024.0), cpu.group("echo", 1024.0)
    ends: dict[str, float] = {}
    cpu.submit(2000 * US, s, lambda: ends.setdefault("S", env.now))
    cpu.submit(10 * US, e, lambda: ends.setdefault("E1", env.now))

    def wake() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1500 * US)
        yield cpu.run(10 * US, e)
        ends["E2"] = env.now

    env.process(wake())
    env.run()
    assert ends == pytest.approx({"E1": 1010 * US, "E2": 1510 * US, "S": 2020 * US}, abs=1e-12)
    # Counted as the kernel's involuntary switches are: S at its slice's end, then by E.
    assert cpu.preemptions == {("sidecar", "slice"): 1, ("sidecar", "echo"): 1}


def test_a_thread_woken_by_its_timer_goes_on_to_the_sends_it_queues() -> None:
    """The load generator's timer wakes its thread at 10 us while S1 (0-50) runs in its
    slice; the app's A1 wakes at 20. The timer's thread, owed the core first, gets it at 50,
    queues two sends (L1, L2: 10 us each) and goes on to them (50-60, 60-70) before A1
    (70-90). Released after its empty wake-up burst, as before, the core went to A1 (50-70)
    and the sends ran after it (70-80, 80-90)."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=1e-3)
    node = Node(env, 0, 1, cpu=cpu, resolve=lambda a: (type(a).__name__, 1024.0, None))
    ends = timer_and_sends(env, node)
    env.run()
    assert ends == pytest.approx(
        {"S1": 50 * US, "woken": 50 * US, "L1": 60 * US, "L2": 70 * US, "A1": 90 * US},
        abs=1e-12,
    )
    assert cpu.idle == 1
