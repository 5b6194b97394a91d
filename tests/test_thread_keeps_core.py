"""Under ``cluster.scheduler: fcfs`` a thread with work ready keeps its core (meshsim.sim.cluster).

An event loop runs every ready callback before it sleeps, so on a shared core a sidecar's queued
bursts run back to back and the app's burst waits for them (and the other way round), unless the
thread waiting has used less CPU than the running one: the kernel's wake-up preemption gives it
the core first (``cluster.wakeup_preemption``). Checked exactly on one core with constant
bursts: who runs when, with and without preemption, the slice that ends a run, and a core handed
on that nobody claims going back to the queue.
"""

from __future__ import annotations

from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

import pytest
import simpy
from test_wakeup_latency import _burst, _proxy

from meshsim.sim.cluster import HANDED_CORE_CLAIM_S, Node

US = 1e-6


class _App:
    """A single-threaded leaf app: one slot, its CPU on the node (as Engine.handle runs it)."""

    def __init__(self, env: simpy.Environment, node: Node) -> None:
        self.env = env
        self.node = node
        self.slots = simpy.Resource(env, capacity=1)
        self.cpu_s = 0.0

    def handle(
        self, at: float, cpu_s: float, ends: dict[str, float], name: str
    ) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(at)
        with self.slots.request() as slot:
            yield slot
            yield from self.node.execute(cpu_s, self, self.slots)
        ends[name] = self.env.now


def sidecar_and_app(env: simpy.Environment, node: Node, proxy: Any) -> dict[str, float]:
    """The bursts of :func:`_run` on ``node`` (also under the fair scheduler, in
    tests/test_fair_thread_goes_on.py): when each ends, once ``env`` has run."""
    app = _App(env, node)
    ends: dict[str, float] = {}
    for name, at in (("S1", 0.0), ("S2", 1 * US), ("S3", 2 * US)):
        env.process(_burst(env, proxy, at, 50 * US, ends, name))
    for name, at in (("A1", 10 * US), ("A2", 11 * US)):
        env.process(app.handle(at, 20 * US, ends, name))
    return ends


def _run(
    slice_s: float | None = None, preempt: bool = False, preemption_us: float = 0.0
) -> dict[str, float]:
    """Sidecar bursts S1-S3 (50 us each) arrive at 0, 1 and 2 us; the app's A1 (20 us) at
    10 us and A2 at 11 us. S1 holds the core from 0; A1 asks for it at 10, before S2 (which
    waits for the worker until S1 ends at 50). ``preemption_us``: what the sidecar's burst
    pays when its thread resumes after giving its core up with it ready."""
    env = simpy.Environment()
    node = Node(env, 0, 1, run_on_s=slice_s, preempt=preempt)
    # Bursts cost exactly what they are given (and a resumption its preemption_us).
    proxy = _proxy(env, node, wake_us=0.0, preemption_cpu_us=preemption_us)
    ends = sidecar_and_app(env, node, proxy)
    env.run()
    ends["preemptions"] = proxy.workers[0].preemptions
    ends["preempt_cpu_s"] = proxy.workers[0].preempt_cpu_s
    return ends


def test_the_sidecar_runs_its_ready_bursts_before_the_app_gets_the_core() -> None:
    """S1 0-50, S2 50-100, S3 100-150 (its thread never sleeps), then A1 150-170 and A2
    170-190 (the app's thread goes on in turn). Plain FCFS of bursts would run A1 at 50-70,
    ahead of S2, which asked for the core later."""
    ends = _run()
    assert ends == pytest.approx(
        {
            "S1": 50 * US,
            "S2": 100 * US,
            "S3": 150 * US,
            "A1": 170 * US,
            "A2": 190 * US,
            "preemptions": 0,
            "preempt_cpu_s": 0.0,
        },
        abs=1e-12,
    )


def test_a_lighter_thread_woken_meanwhile_takes_the_core_when_the_burst_ends() -> None:
    """With wake-up preemption the app, which has used less CPU (0 against S1's 50 us), takes
    the core when S1 ends: A1 50-70; then the app has A2 ready and, still the lighter (20 us
    against 50), keeps the core (A2 70-90); S2 and S3 follow (90-140, 140-190). Without it
    the sidecar ran all three first (the test above)."""
    ends = _run(preempt=True)
    assert ends == pytest.approx(
        {
            "S1": 50 * US,
            "A1": 70 * US,
            "A2": 90 * US,
            "S2": 140 * US,
            "S3": 190 * US,
            "preemptions": 1,
            "preempt_cpu_s": 0.0,
        },
        abs=1e-12,
    )


def test_the_heavier_thread_waits_for_the_lighter_to_finish_its_ready_work() -> None:
    """The other way round: the app's A1 (0-50) and A2 are ready, and the sidecar has already
    run 100 us. Its S1, queued at 10 us, waits for A1 and A2 (the app is the lighter and goes
    on), then runs 100-150."""
    env = simpy.Environment()
    node = Node(env, 0, 1, preempt=True)
    proxy = _proxy(env, node, wake_us=0.0)
    proxy.cpu_s = 100 * US
    app = _App(env, node)
    ends: dict[str, float] = {}
    env.process(app.handle(0.0, 50 * US, ends, "A1"))
    env.process(app.handle(1 * US, 50 * US, ends, "A2"))
    env.process(_burst(env, proxy, 10 * US, 50 * US, ends, "S1"))
    env.run()
    assert ends == pytest.approx({"A1": 50 * US, "A2": 100 * US, "S1": 150 * US}, abs=1e-12)


def test_a_thread_that_has_run_its_slice_lets_the_waiting_app_go_first() -> None:
    """With a 60 us slice the sidecar's run ends after S2 (0-100 > 60): A1 runs 100-120,
    then the app, too, has queued work (A2) and keeps the core (A2 120-140); S3 runs last."""
    ends = _run(slice_s=60 * US)
    assert ends == pytest.approx(
        {
            "S1": 50 * US,
            "S2": 100 * US,
            "A1": 120 * US,
            "A2": 140 * US,
            "S3": 190 * US,
            "preemptions": 1,
            "preempt_cpu_s": 0.0,
        },
        abs=1e-12,
    )


@pytest.mark.parametrize(
    ("slice_us", "preempt", "expected"),
    [
        # The app woke and went first: S2 resumes after it, 7 us dearer (90-147).
        (None, True, {"S1": 50, "A1": 70, "A2": 90, "S2": 147, "S3": 197}),
        # Its slice ran out after S2: S3 resumes after the app's two bursts (140-197).
        (60, False, {"S1": 50, "S2": 100, "A1": 120, "A2": 140, "S3": 197}),
    ],
)
def test_a_burst_resumed_after_its_thread_was_preempted_pays_the_preemption(
    slice_us: float | None, preempt: bool, expected: dict[str, float]
) -> None:
    """``preemption_cpu_us`` (7 us here) on the burst a preempted thread resumes with, once
    per preemption; none where the thread went on without giving its core up (S2 and S3
    after S1 in the first case, S2 after S1 in the second)."""
    ends = _run(None if slice_us is None else slice_us * US, preempt, preemption_us=7.0)
    assert ends == pytest.approx(
        {**{k: v * US for k, v in expected.items()}, "preemptions": 1, "preempt_cpu_s": 7 * US},
        abs=1e-12,
    )


def test_a_core_handed_on_that_nobody_claims_goes_back_to_the_queue() -> None:
    """A core handed on to a thread whose next burst never comes (it was cancelled) is given
    back after HANDED_CORE_CLAIM_S, and a burst waiting for it runs then."""
    env = simpy.Environment()
    node = Node(env, 0, 1)
    held = node.cores.request()
    env.run(until=1 * US)
    assert held.triggered
    node.hand_on(42, held, since=0.0)
    ends: dict[str, float] = {}

    def other() -> Generator[simpy.Event, Any, None]:
        yield from node.execute(5 * US, SimpleNamespace(cpu_s=0.0))
        ends["other"] = env.now

    env.process(other())
    env.run()
    assert node.claim(42) is None
    assert ends["other"] == pytest.approx(1 * US + HANDED_CORE_CLAIM_S + 5 * US, abs=1e-12)


def timer_and_sends(env: simpy.Environment, node: Node) -> dict[str, float]:
    """A load generator's timer wakes its thread at 10 us while a sidecar's S1 (0-50) runs;
    the woken thread queues two sends (L1, L2: 10 us each); an app's A1 (20 us) wakes at 20.
    When each ends, once ``env`` has run (also under the fair scheduler, in
    tests/test_fair_thread_goes_on.py)."""
    proxy = _proxy(env, node, wake_us=0.0)
    app = _App(env, node)
    client = SimpleNamespace(cpu_s=0.0)
    thread = simpy.Resource(env, capacity=1)
    ends: dict[str, float] = {}

    def send(name: str) -> Generator[simpy.Event, Any, None]:
        with thread.request() as slot:
            yield slot
            yield from node.execute(10 * US, client, thread)
        ends[name] = env.now

    def timer() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(10 * US)

        def release() -> bool:
            ends["woken"] = env.now
            for name in ("L1", "L2"):
                env.process(send(name))
            return True

        with thread.request() as slot:
            yield slot
            yield from node.wake_thread(client, release, thread)

    env.process(_burst(env, proxy, 0.0, 50 * US, ends, "S1"))
    env.process(timer())
    env.process(app.handle(20 * US, 20 * US, ends, "A1"))
    return ends


def test_a_thread_woken_by_its_timer_goes_on_to_the_work_it_queues() -> None:
    """The woken thread gets the core at 50 (S1's end), queues L1 and L2 and goes on to them
    (50-60, 60-70) before A1 (70-90), which asked for the core before L1 and would otherwise
    run at 50-70, ahead of both."""
    env = simpy.Environment()
    ends = timer_and_sends(env, Node(env, 0, 1, preempt=False))
    env.run()
    assert ends == pytest.approx(
        {"S1": 50 * US, "woken": 50 * US, "L1": 60 * US, "L2": 70 * US, "A1": 90 * US},
        abs=1e-12,
    )


@pytest.mark.parametrize("on", [False, True])
def test_the_scenario_key_reaches_every_fcfs_node(on: bool) -> None:
    from meshsim.scenario import from_dict
    from meshsim.sim.cluster import make_nodes

    doc = {
        "meshsim": 1,
        "name": "keys",
        "duration_s": 2.0,
        "warmup_s": 1.0,
        "meshes": ["none"],
        "cluster": {"nodes": 2, "cores_per_node": 1, "scheduler": "fcfs", "wakeup_preemption": on},
        "services": [{"name": "s", "cpu_ms": {"dist": "constant", "mean": 1.0}}],
        "workloads": [{"name": "w", "target": "s", "rate_rps": 10}],
    }
    nodes = make_nodes(simpy.Environment(), from_dict(doc), "none")
    assert [n.preempt for n in nodes] == [on, on]


@pytest.mark.parametrize("scheduler", [None, "fcfs"])
def test_the_fcfs_key_under_cfs_is_a_warning(scheduler: str | None) -> None:
    """A scenario written when fcfs was the default may set wakeup_preemption without naming
    the scheduler: under cfs, the default now, the key is ignored, and the run says so."""
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    cluster: dict[str, object] = {"nodes": 1, "cores_per_node": 1, "wakeup_preemption": True}
    if scheduler is not None:
        cluster["scheduler"] = scheduler
    doc = {
        "meshsim": 1, "name": "keys", "duration_s": 2.0, "warmup_s": 1.0, "meshes": ["none"],
        "cluster": cluster,
        "services": [{"name": "s", "cpu_ms": {"dist": "constant", "mean": 1.0}}],
        "workloads": [{"name": "w", "target": "s", "rate_rps": 10}],
    }  # fmt: skip
    warnings = Simulation(from_dict(doc), "none", 1).data_plane.warnings
    ignored = [w for w in warnings if w.startswith("cluster.wakeup_preemption")]
    assert len(ignored) == (1 if scheduler is None else 0)
