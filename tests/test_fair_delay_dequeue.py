"""DELAY_DEQUEUE under ``cluster.scheduler: cfs`` (meshsim.sim.cpu.fair, Linux 6.12 and later):
a cgroup that sleeps ahead of its share stays on its run queue until the pick reaches it,
so the others keep what they are owed; one that wakes while still there is requeued where it
is, before the running task is charged for its current run. Checked exactly on one core with
constant bursts (slice 1 ms, two cgroups of equal weight; times in us).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from meshsim.sim.cpu.fair import FairScheduler

US = 1e-6


def _bursts(
    delay_dequeue: bool, plan: list[tuple[float, str, float]]
) -> tuple[dict[str, float], FairScheduler]:
    """Run ``plan``'s bursts (submitted at, cgroup, CPU; us) on one core; when each ends."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=1e-3, delay_dequeue=delay_dequeue)
    groups = {name: cpu.group(name, 1024.0) for name in ("a", "b")}
    ends: dict[str, float] = {}

    def burst(at: float, name: str, cpu_us: float, key: str) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at * US)
        yield cpu.run(cpu_us * US, groups[name])
        ends[key] = round(env.now / US, 6)

    seen: dict[str, int] = {}
    for at, name, cpu_us in plan:
        seen[name] = seen.get(name, 0) + 1
        env.process(burst(at, name, cpu_us, f"{name}{seen[name]}"))
    env.run()
    assert cpu.idle == 1
    for g in groups.values():
        assert not g.on_rq
        assert not g.delayed
    return ends, cpu


# a1 0-100 while b1 waits (a woke first and is protected); b1 100-110. Then a2 wakes alone at
# 1000 and b2 at 1010.
OWED = [(0.0, "a", 100.0), (0.0, "b", 10.0), (1000.0, "a", 50.0), (1010.0, "b", 10.0)]


def test_the_one_that_waited_keeps_what_it_is_owed_when_the_other_sleeps_ahead() -> None:
    """a sleeps at 100 having run 100 to b's 0: delayed, it stays on the queue, so b, which
    runs 10 more, sleeps at 110 owed 45 (V = 55) and keeps it; the idle core then takes a off
    with no lag. b2, waking at 1010 with its 45, preempts a2: b2 1010-1020, a2 to 1060."""
    ends, _cpu = _bursts(True, OWED)
    assert ends == {"a1": 100.0, "b1": 110.0, "b2": 1020.0, "a2": 1060.0}


def test_without_delayed_dequeue_the_others_lag_goes_with_the_sleeper() -> None:
    """a leaves at 100 with its debt (lag -50), b is alone from then on and sleeps at 110 with
    no lag; b2 wakes at V, a2 is at V too and keeps its slice: a2 to 1050, b2 1050-1060."""
    ends, _cpu = _bursts(False, OWED)
    assert ends == {"a1": 100.0, "b1": 110.0, "a2": 1050.0, "b2": 1060.0}


# b1 0-300 while a1 (2000) waits; b sleeps at 300 with V = 150: ahead of its share, delayed.
# a1 runs from 300 in a slice to 1300; b2 wakes at WAKE.
def _plan(wake_us: float) -> list[tuple[float, str, float]]:
    return [(0.0, "b", 300.0), (0.0, "a", 2000.0), (wake_us, "b", 10.0)]


def test_a_delayed_one_that_is_owed_by_the_time_it_wakes_preempts_at_once() -> None:
    """At 800 a has run 500 to b's 300: b is owed 100 (V = 400), so it is requeued at V with
    no lag (DELAY_ZERO), level with a. The kernel requeues it before charging the running a
    for its current run (requeue_delayed_entity has no update_curr), then charges a, which
    puts a past V: b2 preempts, 800-810. (A fresh wakee level with the running task waits
    for its slice: tests/test_fair_thread_goes_on.py.)"""
    ends, cpu = _bursts(True, _plan(800.0))
    assert ends == {"b1": 300.0, "b2": 810.0, "a1": 2310.0}
    assert cpu.preemptions == {("a", "b"): 1}


def test_a_delayed_one_that_still_owes_when_it_wakes_keeps_its_place_and_waits() -> None:
    """At 400 a has run 100 to b's 300 (V = 200): b still owes 100, so it is requeued where it
    was, not eligible, and waits for a's slice to end at 1300; then b, owed and with the
    earlier deadline (its first, 1000 against a's renewed 2000), runs 1300-1310."""
    ends, cpu = _bursts(True, _plan(400.0))
    assert ends == {"b1": 300.0, "b2": 1310.0, "a1": 2310.0}
    assert cpu.preemptions == {("a", "slice"): 1}


def test_without_delayed_dequeue_the_sleeper_carries_its_debt_and_waits() -> None:
    """b leaves at 300 with lag -150 and wakes at 800 placed 300 behind a: it waits for a's
    slice to end at 1300, as in the case above."""
    ends, _cpu = _bursts(False, _plan(800.0))
    assert ends == {"b1": 300.0, "b2": 1310.0, "a1": 2310.0}


@pytest.mark.parametrize("delay_dequeue", [True, False])
def test_an_idle_core_leaves_no_one_delayed(delay_dequeue: bool) -> None:
    """However the bursts fall, once the core is idle every cgroup has left the run queue
    (_bursts asserts it), as the kernel's pick on going idle dequeues the delayed."""
    _bursts(delay_dequeue, [(0.0, "a", 300.0), (5.0, "b", 20.0), (40.0, "b", 30.0)])


@pytest.mark.parametrize("on", [True, False])
def test_the_scenario_key_reaches_every_nodes_scheduler(on: bool) -> None:
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    doc = {
        "meshsim": 1, "name": "dd", "duration_s": 1, "warmup_s": 0.5, "meshes": ["none"],
        "cluster": {"nodes": 2, "cores_per_node": 2, "scheduler": "cfs", "delay_dequeue": on},
        "services": [{"name": "web"}],
        "workloads": [{"name": "w", "target": "web", "rate_rps": 10}],
    }  # fmt: skip
    sim = Simulation(from_dict(doc), "none", 1)
    assert [node.cpu.delay_dequeue for node in sim.nodes if node.cpu is not None] == [on, on]
