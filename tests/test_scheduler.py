"""The fair scheduler of node cores (meshsim.sim.cpu.fair): exact, deterministic cases.

Slices, wake-up preemption, weights and CFS bandwidth control, each on a case small enough
to work out by hand; the statistical checks against queueing theory are in
tests/test_scheduler_closed_forms.py.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import simpy

from meshsim.sim.cpu.bandwidth import Bandwidth
from meshsim.sim.cpu.cgroups import cpu_shares, cpu_weight, load_weight, quota_s
from meshsim.sim.cpu.fair import CGroup, FairScheduler
from meshsim.sim.cpu.slices import default_base_slice_s, kernel_base_slice_s


def _job(
    env: simpy.Environment, cpu: FairScheduler, g: CGroup, at: float, cpu_s: float, out: list[float]
) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(at)
    started = env.now
    yield cpu.run(cpu_s, g)
    out.append(env.now - started)


def test_an_uncontended_burst_is_one_timeout() -> None:
    env = simpy.Environment()
    cpu = FairScheduler(env, 2)
    g = cpu.group("app", 1024.0)
    done = cpu.run(0.004, g)
    # One event pending: the burst's end (as the FCFS model's one timeout).
    assert len(env._queue) == 1  # type: ignore[attr-defined]
    env.run()
    assert done.processed
    assert env.now == pytest.approx(0.004, abs=1e-15)


def test_the_kernel_scales_the_base_slice_with_the_cores() -> None:
    # 0.70 ms since Linux 6.15 (and the 6.12 stable series), 0.75 ms in 6.6 to 6.14.
    assert [default_base_slice_s(c) for c in (1, 2, 4, 8, 64)] == pytest.approx(
        [0.0007, 0.0014, 0.0021, 0.0028, 0.0028]
    )
    assert [kernel_base_slice_s(r, 4) for r in ("6.8.0-49-generic", "6.15.2", "6.18.44-fc")] == (
        pytest.approx([0.00225, 0.0021, 0.0021])
    )
    assert kernel_base_slice_s("unknown", 2) == pytest.approx(0.0014)


def test_the_lab_reads_its_kernels_base_slice(tmp_path: Path) -> None:
    from meshsim.calibrate.calibration import sched_base_slice_ns

    sched = tmp_path / "sched"
    sched.write_text(
        "cat (31732, #threads: 1)\n----\nse.vruntime  :  520.137397\n"
        "se.slice                                     :              1400000\n"
    )
    assert sched_base_slice_ns(sched) == 1400000
    sched.write_text("se.vruntime  :  520.137397\n")
    assert sched_base_slice_ns(sched) is None
    assert sched_base_slice_ns(tmp_path / "absent") is None


def test_weights_from_requests_follow_kubelet_and_runc() -> None:
    # MilliCPUToShares: 100m -> 102, 1 core -> 1024, none -> 2 (BestEffort).
    assert [cpu_shares(m) for m in (None, 1.0, 100.0, 1000.0, 1e6)] == [2, 2, 102, 1024, 262144]
    # runc's linear map to cgroup v2 cpu.weight, integer division.
    assert [cpu_weight(s) for s in (2, 102, 1024, 262144)] == [1, 4, 39, 10000]
    assert load_weight(100) == 1024.0
    assert quota_s(500.0, 0.1) == pytest.approx(0.05)
    assert quota_s(None, 0.1) is None


def _two(run_to_parity: bool, weight_b: float) -> list[float]:
    """A 100 ms hog from t=0; a 0.1 ms burst of cgroup b wakes at t=10 ms (slice 3 ms)."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.003, run_to_parity=run_to_parity)
    a, b = cpu.group("a", 1024.0), cpu.group("b", weight_b)
    ends: list[float] = []
    env.process(_job(env, cpu, a, 0.0, 0.1, []))
    env.process(_job(env, cpu, b, 0.010, 0.0001, ends))
    env.run()
    assert env.now == pytest.approx(0.1001)
    return ends


def test_an_equal_weight_wakee_waits_for_the_end_of_the_running_slice() -> None:
    # The hog's deadline (12 ms of vruntime) is earlier than the wakee's (10 + 3 ms): it
    # keeps the core to the end of its slice, then b is eligible and earlier (13 < 15).
    assert _two(False, 1024.0) == pytest.approx([0.0021])
    assert _two(True, 1024.0) == pytest.approx([0.0021])


def test_a_heavier_wakee_preempts_at_once_unless_run_to_parity_protects_the_slice() -> None:
    # Weight 10x: deadline 10 + 0.3 ms < 12 ms, so b preempts on waking...
    assert _two(False, 10240.0) == pytest.approx([0.0001])
    # ...but RUN_TO_PARITY lets the hog finish the slice it is in (9 to 12 ms).
    assert _two(True, 10240.0) == pytest.approx([0.0021])


def test_hogs_share_a_core_in_proportion_to_their_weights() -> None:
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.001)
    heavy, light = cpu.group("heavy", 2048.0), cpu.group("light", 1024.0)
    cpu.submit(10.0, heavy, lambda: None)
    cpu.submit(10.0, light, lambda: None)
    env.run(until=3.0)
    cpu._update()
    assert heavy.cpu_s == pytest.approx(2.0, abs=0.002)
    assert light.cpu_s == pytest.approx(1.0, abs=0.002)


def test_two_hogs_on_two_cores_each_run_alone() -> None:
    env = simpy.Environment()
    cpu = FairScheduler(env, 2)
    a, b = cpu.group("a", 1024.0), cpu.group("b", 10.0)
    ends: list[float] = []
    env.process(_job(env, cpu, a, 0.0, 1.0, ends))
    env.process(_job(env, cpu, b, 0.0, 1.0, ends))
    env.run()
    assert ends == [1.0, 1.0]


def test_a_waiting_task_withdrawn_runs_on_the_cpu_it_moves_to() -> None:
    # Two hogs on one CPU of 1 ms slices: a runs [0, 1) ms, b from 1 ms. At 1.5 ms a waits,
    # 1 ms ahead in vruntime against b's 0.5 (V = 0.75): a migration takes it off with its
    # lag (-0.25 ms), where a sleep ahead of V would have left it delayed on the queue.
    env = simpy.Environment()
    here, there = FairScheduler(env, 1, base_slice_s=0.001), FairScheduler(env, 1)
    a, b = here.group("a", 1024.0), here.group("b", 1024.0)
    a_there = there.group("a", 1024.0)
    ends: dict[str, float] = {}
    here.submit(0.004, a, lambda: ends.setdefault("a", env.now))
    here.submit(0.004, b, lambda: ends.setdefault("b", env.now))
    env.run(until=0.0015)
    assert here.withdraw(b) is None  # b runs: nothing of it waits
    task = here.withdraw(a)
    assert task is not None
    assert task.remaining == pytest.approx(0.003)
    assert (here.waiting, a.on_rq, a.delayed) == (0, False, False)
    assert a.lag == pytest.approx(-0.00025)
    there.submit(task.remaining, a_there, task.done)
    env.run()
    # Each alone on its CPU from 1.5 ms: a's 3 ms left end at 4.5, b's 3.5 at 5 ms.
    assert ends == pytest.approx({"a": 0.0045, "b": 0.005})


def test_threads_of_one_cgroup_take_turns() -> None:
    # Round robin with the slice: two 10 ms bursts on one core both end near 20 ms, where
    # first-come-first-served would end them at 10 and 20 ms.
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.001)
    g = cpu.group("app", 1024.0)
    ends: list[float] = []
    env.process(_job(env, cpu, g, 0.0, 0.010, ends))
    env.process(_job(env, cpu, g, 0.0, 0.010, ends))
    env.run()
    assert ends == pytest.approx([0.019, 0.020])


# --------------------------------------------------------------------------- bandwidth


PICKERS = ["cfs", "fcfs"]
"""Bandwidth control is the same rule under either pick (meshsim.sim.cpu.bandwidth)."""


def _cores(env: simpy.Environment, picker: str, cores: int, quota: float | None) -> Any:
    """A way to run bursts of one cgroup limited to ``quota`` per 100 ms on ``cores``:
    ``(group, run)``, ``run(cpu_s)`` a generator that ends when the burst has run."""
    if picker == "cfs":
        cpu = FairScheduler(env, cores)
        g = cpu.group("limited", 1024.0, quota_s=quota, period_s=0.1)

        def run_fair(cpu_s: float) -> Generator[simpy.Event, Any, None]:
            yield cpu.run(cpu_s, g)

        return g, run_fair, cpu._update
    res = simpy.Resource(env, capacity=cores)
    bw = Bandwidth(env, res, cores, lambda _a: ("limited", 1024.0, quota), 0.1)
    g = bw.limited(object())
    assert g is not None

    def run_fcfs(cpu_s: float) -> Generator[simpy.Event, Any, None]:
        creq, _ran = yield from bw.run(cpu_s, g, lambda: 1.0)
        res.release(creq)  # type: ignore[arg-type]

    return g, run_fcfs, lambda: None


def _throttled(
    period_jobs: int, every: int, quota: float, cpu_s: float, periods: int, picker: str = "cfs"
) -> tuple[CGroup, list[float]]:
    """One thread that gets ``cpu_s`` of work at the start of every ``every``-th 100 ms
    period and does its work in order (a worker: one burst at a time)."""
    env = simpy.Environment()
    g, run, update = _cores(env, picker, 1, quota)
    latencies: list[float] = []

    def thread() -> Generator[simpy.Event, Any, None]:
        for k in range(period_jobs):
            arrives = k * every * 0.1
            if env.now < arrives:
                yield env.timeout(arrives - env.now)
            yield from run(cpu_s)
            latencies.append(env.now - arrives)

    env.process(thread())
    env.run(until=periods * 0.1 - 1e-9)
    update()
    return g, latencies


@pytest.mark.parametrize("picker", PICKERS)
def test_a_cgroup_at_60_percent_with_a_50_percent_quota_is_throttled_every_period(
    picker: str,
) -> None:
    """cpu.max 50000 100000 and 60 ms of work each period: the cgroup runs 50 ms and waits
    50 ms in every period, so nr_throttled = nr_periods, throttled time 50 ms a period,
    and it gets exactly half a core while its backlog grows 10 ms a period."""
    g, latencies = _throttled(20, 1, 0.05, 0.06, 20, picker)
    assert g.nr_periods == 20
    assert g.nr_throttled == 20
    assert g.throttled_s == pytest.approx(19 * 0.05)  # the 20th period's wait ends after
    assert g.cpu_s == pytest.approx(1.0)
    # Burst k ends after 60 (k + 1) ms of CPU: in period floor(0.06 (k + 1) / 0.05).
    expected = []
    for k in range(16):
        work = 0.06 * (k + 1)
        full, rest = divmod(work, 0.05)
        if rest < 1e-12:
            full, rest = full - 1, 0.05
        expected.append(full * 0.1 + rest - k * 0.1)
    assert latencies == pytest.approx(expected)


@pytest.mark.parametrize("picker", PICKERS)
def test_a_burst_longer_than_the_quota_waits_for_the_next_period(picker: str) -> None:
    """60 ms every other period (30 % of a core) under 50 ms per 100 ms: each burst runs
    50 ms, is throttled 50 ms, and finishes 10 ms into the next period (110 ms instead of
    60); half the periods are throttled."""
    g, latencies = _throttled(10, 2, 0.05, 0.06, 20, picker)
    assert latencies == pytest.approx([0.11] * 10)
    assert (g.nr_periods, g.nr_throttled) == (20, 10)
    assert g.throttled_s == pytest.approx(10 * 0.05)


@pytest.mark.parametrize("picker", PICKERS)
def test_a_limit_of_one_and_a_half_cores_holds_two_threads_to_it(picker: str) -> None:
    """Two busy threads on four cores under 150 ms per 100 ms: each runs 75 ms of every
    period and waits 25 ms, throttled every period."""
    env = simpy.Environment()
    g, run, update = _cores(env, picker, 4, 0.15)
    for _ in range(2):
        env.process(run(100.0))
    env.run(until=10.0 + 1e-9)
    update()
    assert g.cpu_s == pytest.approx(15.0, abs=1e-6)
    assert g.nr_throttled == 100
    assert g.throttled_s == pytest.approx(100 * 0.025, abs=1e-6)


def test_a_limit_that_cannot_bind_is_not_enforced_under_fcfs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container cannot use more cores than its threads or its node has: a limit at or
    above that (Istio's 2000m on a two-worker Envoy) runs on the plain FCFS path."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=4)
    monkeypatch.setattr("meshsim.sim.cpu.bandwidth.threads_of", lambda threads: threads)

    def binds(limit_m: float, threads: int) -> bool:
        quota = quota_s(limit_m, 0.1)
        bw = Bandwidth(env, res, 4, lambda _a: ("c", 1024.0, quota), 0.1)
        return bw.limited(threads) is not None

    assert (binds(2000, 2), binds(1999, 2)) == (False, True)
    assert (binds(4000, 16), binds(3000, 16)) == (False, True)


def test_an_unlimited_cgroup_counts_no_periods() -> None:
    g, latencies = _throttled(5, 1, None, 0.06, 5)  # type: ignore[arg-type]
    assert latencies == pytest.approx([0.06] * 5)
    assert (g.nr_periods, g.nr_throttled, g.throttled_s) == (0, 0, 0.0)


def test_a_busy_node_of_several_cores_is_flagged_for_its_one_run_queue() -> None:
    # One run queue per node waits less than the kernel's per-CPU queues from about 30 % busy
    # (reports/validation/experiments/multicore_queue.py): a run says so once, however many
    # nodes; a one-core node's queue is the kernel's, and a node less busy is not flagged.
    from meshsim.sim.cluster import one_run_queue_warnings
    from meshsim.sim.measure import NodeMeasure

    window = 10.0
    assert one_run_queue_warnings([NodeMeasure("node-0", 1, 9.9)], window) == []
    assert one_run_queue_warnings([NodeMeasure("node-0", 4, 11.9)], window) == []
    busy = one_run_queue_warnings(
        [NodeMeasure("node-0", 4, 12.0), NodeMeasure("node-1", 2, 19.0)], window
    )
    assert len(busy) == 1
    assert "30% busy or more" in busy[0]
    assert "cluster.run_queues: per_cpu" in busy[0]
    assert one_run_queue_warnings([NodeMeasure("node-0", 4, 12.0)], 0.0) == []
