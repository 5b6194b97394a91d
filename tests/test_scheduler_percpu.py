"""Per-CPU run queues (meshsim.sim.cpu.percpu, ``cluster.run_queues: per_cpu``): wake-up
placement, the balancing at the ticks, a CPU limit's pool shared by a cgroup's CPUs, and the
scenario key. Exact, deterministic cases worked out by hand; the model's fit to the kernel's
waits is reports/validation/experiments/multicore_queue.py's."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.sim.cpu.fair import FairScheduler
from meshsim.sim.cpu.percpu import PerCpuScheduler, SpreadCGroup


def _ends(env: simpy.Environment, out: dict[str, float], name: str) -> Callable[[], float]:
    return lambda: out.setdefault(name, env.now)


def test_a_wakee_goes_to_an_idle_cpu_and_waits_on_its_own_when_none_is() -> None:
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, 2, base_slice_s=0.010)
    a, b, c = cpu.group("a", 1024.0), cpu.group("b", 1024.0), cpu.group("c", 1024.0)
    ends: dict[str, float] = {}
    cpu.submit(0.004, a, _ends(env, ends, "a"), thread="ta")  # its cgroup's CPU 0, idle
    cpu.submit(0.004, b, _ends(env, ends, "b"), thread="tb")  # CPU 1, idle
    # c's CPU (0) is busy and so is the other: it waits on CPU 0 behind a, where one run
    # queue would have given it the first core to free (b's and a's alike, at 4 ms).
    cpu.submit(0.001, c, _ends(env, ends, "c"), thread="tc")
    env.run()
    assert ends == pytest.approx({"a": 0.004, "b": 0.004, "c": 0.005})
    assert (cpu.cpus[0].groups[0].cpu_s, cpu.cpus[1].groups[1].cpu_s) == pytest.approx(
        (0.004, 0.004)
    )
    assert (a.cpu_s, c.cpu_s) == pytest.approx((0.004, 0.001))


def test_a_thread_wakes_on_an_idle_cpu_when_its_last_is_busy_and_stays_there() -> None:
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, 2, base_slice_s=0.010)
    # New cgroups start on the CPUs in turn: b and c on CPU 0 (x, unused, on CPU 1).
    b, _x, c = cpu.group("b", 1024.0), cpu.group("x", 1024.0), cpu.group("c", 1024.0)
    ends: dict[str, float] = {}
    cpu.submit(0.002, b, _ends(env, ends, "b1"), thread="tb")  # CPU 0
    env.run(until=0.003)
    cpu.submit(0.010, c, _ends(env, ends, "c"), thread="tc")  # CPU 0, idle again
    env.run(until=0.004)
    cpu.submit(0.001, b, _ends(env, ends, "b2"), thread="tb")  # CPU 0 busy: CPU 1
    env.run(until=0.006)
    cpu.submit(0.001, b, _ends(env, ends, "b3"), thread="tb")  # its last, CPU 1, idle
    env.run()
    assert ends == pytest.approx({"b1": 0.002, "c": 0.013, "b2": 0.005, "b3": 0.007})
    assert [g.cpu_s for g in b.per_cpu] == pytest.approx([0.002, 0.002])
    assert cpu.moves == {"tb": 1}


def _two_hogs_and_a_short_burst(
    slice_s: float, hog_s: float, balancing: bool = True
) -> tuple[PerCpuScheduler, list[SpreadCGroup], dict[str, float]]:
    """Two CPUs: hogs a and c (``hog_s`` each) share CPU 0, b's 1 ms burst leaves CPU 1
    idle at 1 ms (new cgroups start on the CPUs in turn). Run to the end."""
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, 2, base_slice_s=slice_s, balancing=balancing)
    groups = [cpu.group(name, 1024.0) for name in "abc"]
    ends: dict[str, float] = {}
    for g, cpu_s in zip(groups, (hog_s, 0.001, hog_s), strict=True):
        cpu.submit(cpu_s, g, _ends(env, ends, g.name))
    env.run()
    return cpu, groups, ends


def test_an_idle_cpu_pulls_a_cold_waiting_task_at_the_busy_ones_tick() -> None:
    # a and c share CPU 0 in 1.4 ms slices (a 0-1.4, c 1.4-2.8, a 2.8-); b leaves CPU 1 idle
    # at 1 ms. No CPU pulls as it goes idle: at CPU 0's tick (4 ms) c, which last ran 1.2
    # ms before, is cold and moves. Then each runs alone: a has 10 - 2.6 ms left, c 8.6.
    cpu, (_a, _b, c), ends = _two_hogs_and_a_short_burst(0.0014, 0.010)
    assert ends == pytest.approx({"b": 0.001, "a": 0.0114, "c": 0.0126})
    assert cpu.moves == {c: 1}


def test_a_hot_task_moves_only_after_two_balances_failed() -> None:
    # Slices of 3.9 ms on CPU 0: a 0-3.9, c 3.9-7.8, a 7.8-11.7, c from 11.7. At the ticks
    # of 4 and 8 ms the waiting one last ran 0.1 and 0.2 ms before (hot: not moved); at 12
    # ms it is hot again (0.3 ms) but two balances have failed (cache_nice_tries 1): a moves.
    cpu, (a, _b, _c), ends = _two_hogs_and_a_short_burst(0.0039, 0.020)
    # By 12 ms a has run 3.9 + 3.9 = 7.8 ms and c 3.9 + 0.3 = 4.2: alone from 12 ms.
    assert ends == pytest.approx({"b": 0.001, "a": 0.0242, "c": 0.0278})
    assert cpu.moves == {a: 1}


def test_without_the_balancing_a_cpu_stays_idle_beside_a_queue() -> None:
    _cpu, _groups, ends = _two_hogs_and_a_short_burst(0.0014, 0.010, balancing=False)
    assert ends["b"] == pytest.approx(0.001)
    assert max(ends["a"], ends["c"]) == pytest.approx(0.020)


def test_a_limited_cgroup_on_two_cpus_draws_one_pool() -> None:
    # Two threads of one cgroup, each alone on a CPU, limited to one core (100 ms a 100 ms
    # period): the pool empties at 50 ms each period, and both CPUs' entities are throttled
    # to its end. Per period: 100 ms of CPU, one throttled period, 2 x 50 ms throttled time
    # (cpu.stat's throttled_usec sums the CPUs').
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, 2, count_until_s=1.0)
    g = cpu.group("app", 1024.0, quota_s=0.1, period_s=0.1)
    ends: dict[str, float] = {}
    cpu.submit(0.5, g, _ends(env, ends, "t0"), thread="t0")
    cpu.submit(0.5, g, _ends(env, ends, "t1"), thread="t1")
    env.run()
    assert ends == pytest.approx({"t0": 0.95, "t1": 0.95})
    assert (g.nr_periods, g.nr_throttled) == (10, 9)
    assert g.cpu_s == pytest.approx(1.0)
    assert g.throttled_s == pytest.approx(2 * 9 * 0.05)


def test_a_node_of_one_core_is_the_fair_scheduler_under_either_key() -> None:
    from meshsim.scenario.loader import loads
    from meshsim.sim.cluster import make_nodes

    text = (
        "meshsim: 1\nname: t\nduration_s: 1\nwarmup_s: 0\nmeshes: [none]\n"
        "cluster: {nodes: 1, cores_per_node: %d, run_queues: per_cpu}\n"
        "services: [{name: a, cpu_ms: 1}]\n"
        "workloads: [{name: w, target: a, rate_rps: 1}]\n"
    )
    env = simpy.Environment()
    one = make_nodes(env, loads(text % 1), "none")[0]
    two = make_nodes(env, loads(text % 2), "none")[0]
    assert type(one.cpu) is FairScheduler
    assert type(two.cpu) is PerCpuScheduler


def test_a_group_busy_on_two_cpus_weighs_half_on_each() -> None:
    # x runs a thread on each CPU, y and z one each beside it, all of weight 1024. The
    # kernel gives x's entity on each CPU half its weight once its load is spread over both
    # (calc_group_shares): each cgroup gets 2/3 of a CPU, where full weight on each CPU
    # would give x a whole CPU and y and z half each. PELT's average climbs to the split in
    # about 0.2 s (a 46 ms time constant) and the shares follow at the ticks: over 4 s x's
    # excess is about 0.05 / 4 s of CPU, within the 0.02 allowed.
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, 2)
    x, y, z = cpu.group("x", 1024.0), cpu.group("y", 1024.0), cpu.group("z", 1024.0)
    cpu.submit(10.0, x, lambda: None, thread="x0")  # x's CPU 0
    cpu.submit(10.0, x, lambda: None, thread="x1")  # CPU 0 busy: CPU 1
    cpu.submit(10.0, y, lambda: None, thread="y")  # y's CPU 1 busy, and 0: waits on 1
    cpu.submit(10.0, z, lambda: None, thread="z")  # z's CPU 0 busy, and 1: waits on 0
    env.run(until=4.0)
    for c in cpu.cpus:
        c._update()
    assert [g.cpu_s / 4.0 for g in (x, y, z)] == pytest.approx([2 / 3, 2 / 3, 2 / 3], abs=0.02)
    assert [e.weight for e in x.per_cpu] == pytest.approx([512.0, 512.0], rel=1 / 64)


_BURSTS = st.lists(
    st.tuples(
        st.integers(0, 3),  # cgroup
        st.sampled_from([None, 0, 1, 2]),  # thread of that cgroup (None: thread-less)
        st.floats(0.0, 0.01),  # gap before it (s)
        st.floats(1e-5, 0.004),  # CPU (s)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(bursts=_BURSTS, cores=st.integers(2, 4), limited=st.booleans(), slice_ms=st.floats(0.2, 3))
def test_every_burst_ends_once_and_the_cpus_run_exactly_the_work_submitted(
    bursts: list[tuple[int, int | None, float, float]], cores: int, limited: bool, slice_ms: float
) -> None:
    # Whatever the placement, balancing, preemption and throttling do, a burst is never
    # lost or run twice: each ends once, no earlier than its own CPU after it was submitted,
    # the cgroups' CPU is the CPU submitted, and the node is idle and empty at the end.
    env = simpy.Environment()
    cpu = PerCpuScheduler(env, cores, base_slice_s=slice_ms * 1e-3)
    groups = [
        cpu.group(f"g{i}", 1024.0 / (i + 1), quota_s=0.01 if limited and i == 0 else None,
                  period_s=0.02)
        for i in range(4)
    ]  # fmt: skip
    ends: list[int] = [0] * len(bursts)
    late: list[bool] = []

    def chain(items: list[int]) -> Generator[simpy.Event, Any, None]:
        for i in items:
            g, thread, gap, cpu_s = bursts[i]
            yield env.timeout(gap)
            start = env.now
            yield cpu.run(cpu_s, groups[g], None if thread is None else (g, thread))
            ends[i] += 1
            late.append(env.now >= start + cpu_s - 1e-9)

    # A thread's bursts one after another; thread-less bursts each on their own.
    by_thread: dict[object, list[int]] = {}
    for i, (g, thread, _gap, _cpu) in enumerate(bursts):
        by_thread.setdefault((g, thread) if thread is not None else ("none", i), []).append(i)
    for items in by_thread.values():
        env.process(chain(items))
    env.run()
    assert ends == [1] * len(bursts)
    assert all(late)
    assert sum(g.cpu_s for g in groups) == pytest.approx(sum(b[3] for b in bursts), abs=1e-9)
    assert cpu.idle == cores
    assert all(c.waiting == 0 for c in cpu.cpus)
