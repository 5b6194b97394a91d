"""take/give: a free simpy resource taken without a queue round trip, and only when that
cannot change the order of anything else (meshsim.sim.uncontended)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from meshsim.sim.uncontended import Held, first_of, give, spawn, start, take


def test_free_resource_and_nothing_else_now_is_taken_at_once() -> None:
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=2)
    slot = take(res)
    assert isinstance(slot, Held)
    assert res.count == 1
    give(res, slot)
    assert res.count == 0
    assert env.peek() == float("inf")  # neither scheduled an event


def test_not_taken_when_full_or_when_another_event_is_due_now() -> None:
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=1)
    first = take(res)
    assert first is not None
    assert take(res) is None  # full
    give(res, first)
    env.timeout(0)  # something else is due at this instant
    assert take(res) is None


def test_give_with_a_waiter_admits_it_through_simpy() -> None:
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=1)
    held = take(res)
    assert held is not None
    waiting = res.request()
    assert not waiting.triggered
    give(res, held)
    env.run()
    assert waiting.triggered
    assert res.users == [waiting]


def _run(acquire: Callable[..., Any], seed: int) -> list[tuple[float, int, str]]:
    """An M/D/2-like system with coincident instants (constant times on a 0.5 ms grid,
    several clients starting together), logged event by event."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=2)
    rng = np.random.default_rng(seed)
    log: list[tuple[float, int, str]] = []

    def job(i: int, hold: float) -> Generator[simpy.Event, Any, None]:
        log.append((env.now, i, "arrive"))
        slot = yield from acquire(res)
        log.append((env.now, i, "start"))
        yield env.timeout(hold)
        release = give if acquire is _fast else (lambda r, s: r.release(s))
        release(res, slot)
        log.append((env.now, i, "done"))

    def source(k: int) -> Generator[simpy.Event, Any, None]:
        for n in range(40):
            yield env.timeout(float(rng.integers(1, 8)) * 0.5e-3)
            env.process(job(k * 100 + n, float(rng.integers(1, 4)) * 0.5e-3))

    for k in range(3):
        env.process(source(k))
    env.run()
    return log


def _plain(res: simpy.Resource) -> Generator[simpy.Event, Any, object]:
    req = res.request()
    yield req
    return req


_PATHS = {"taken": 0, "queued": 0}


def _fast(res: simpy.Resource) -> Generator[simpy.Event, Any, object]:
    slot = take(res)
    _PATHS["queued" if slot is None else "taken"] += 1
    if slot is None:
        req = res.request()
        yield req
        return req
    return slot


def test_same_order_of_events_as_plain_requests_even_with_ties() -> None:
    for seed in range(5):
        plain = _run(_plain, seed)
        fast = _run(_fast, seed)
        assert fast == plain
        assert len({t for t, _, _ in plain}) < len(plain)  # the case has coincident instants
    # Both ways were exercised.
    assert _PATHS["taken"] > 0
    assert _PATHS["queued"] > 0


def _run_sources(started: bool, seed: int) -> list[tuple[float, int, str]]:
    """Three open-loop sources on a 0.5 ms grid (coincident instants) feeding jobs that
    queue for one resource; with ``started`` the sources start their jobs with
    uncontended.start after scheduling their next wait, else with env.process after it."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=2)
    rng = np.random.default_rng(seed)
    gaps = [[float(g) * 0.5e-3 for g in rng.integers(0, 8, 40)] for _ in range(3)]
    holds = [float(h) * 0.5e-3 for h in rng.integers(0, 4, 120)]
    log: list[tuple[float, int, str]] = []

    def job(i: int) -> Generator[simpy.Event, Any, None]:
        log.append((env.now, i, "arrive"))
        slot: object = take(res)
        if slot is None:
            req = res.request()
            yield req
            slot = req
        log.append((env.now, i, "start"))
        yield env.timeout(holds[i])
        give(res, slot)
        log.append((env.now, i, "done"))

    def source(k: int) -> Generator[simpy.Event, Any, None]:
        due: int | None = None
        for n, gap in enumerate(gaps[k]):
            wait = env.timeout(gap)
            if due is not None:
                start(env, job(due))
            yield wait
            if started:
                due = k * 40 + n
            else:
                env.process(job(k * 40 + n))
        if due is not None:
            start(env, job(due))

    for k in range(3):
        env.process(source(k))
    env.run()
    return log


def test_start_keeps_the_order_of_a_process_started_from_its_initialize_event() -> None:
    for seed in range(8):
        plain = _run_sources(False, seed)
        started = _run_sources(True, seed)
        assert started == plain
        assert len(plain) == 3 * 120
        assert len({t for t, _, _ in plain}) < len(plain) / 2  # many coincident instants


def test_start_runs_the_first_step_now_only_when_nothing_else_is_due() -> None:
    env = simpy.Environment()
    ran: list[float] = []

    def job() -> Generator[simpy.Event, Any, None]:
        ran.append(env.now)
        yield env.timeout(1.0)
        ran.append(env.now)

    start(env, job())
    assert ran == [0.0]  # nothing was due: its first step ran at once
    env.timeout(0.0)
    start(env, job())
    assert ran == [0.0]  # another event is due now: it starts from an urgent event
    env.run()
    assert ran == [0.0, 0.0, 1.0, 1.0]
    assert env.peek() == float("inf")  # and neither end left an event behind


def _order_with_urgent_pending(begin: Callable[[simpy.Environment, Any], Any]) -> list[str]:
    """A process starts a job while another process's Initialize event (urgent) is due at
    the same instant: the job's own Initialize event would pop after it."""
    env = simpy.Environment()
    log: list[str] = []

    def job() -> Generator[simpy.Event, Any, None]:
        log.append("job")
        yield env.timeout(0.0)

    def starter(name: str, spawn: bool) -> Generator[simpy.Event, Any, None]:
        log.append(name)
        if spawn:
            begin(env, job())
        yield env.timeout(1.0)

    env.process(starter("first", True))
    env.process(starter("second", False))
    env.run()
    return log


def test_start_waits_for_urgent_events_due_now_as_a_process_would() -> None:
    assert _order_with_urgent_pending(lambda env, g: env.process(g)) == ["first", "second", "job"]
    assert _order_with_urgent_pending(start) == ["first", "second", "job"]


def _races(
    race: Callable[[simpy.Environment, Any, Any], Any], seed: int, spawned: bool = False
) -> list[object]:
    """Callers race a job against a deadline on a 0.5 ms grid (ties between the job's end,
    the deadline and other callers' events), as a try raced by its timeout; ``spawned``:
    the deadline made first and the job started with spawn, as the resilience chain does."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    log: list[object] = []

    def job(i: int, hold: float) -> Generator[simpy.Event, Any, int]:
        yield env.timeout(hold)
        log.append((env.now, i, "job-done"))
        return i

    def caller(i: int, start_at: float, hold: float, limit: float) -> Generator[Any, Any, None]:
        yield env.timeout(start_at)
        if spawned:
            deadline = env.timeout(limit)
            proc: simpy.Event = spawn(env, job(i, hold))
            yield race(env, proc, deadline)
        else:
            proc = env.process(job(i, hold))
            yield race(env, proc, env.timeout(limit))
        log.append((env.now, i, "won" if proc.triggered else "timed out"))

    for i in range(60):
        start_at, hold, limit = (float(x) * 0.5e-3 for x in rng.integers(0, 6, 3))
        env.process(caller(i, start_at, hold, limit))
    env.run()
    return log


def test_first_of_resumes_as_a_condition_does() -> None:
    for seed in range(6):
        plain = _races(lambda env, a, b: a | b, seed)
        assert _races(first_of, seed) == plain
        outcomes = {entry[2] for entry in plain if isinstance(entry, tuple)}
        assert {"won", "timed out"} <= outcomes


def test_spawn_then_first_of_resumes_as_process_then_condition() -> None:
    for seed in range(6):
        plain = _races(lambda env, a, b: a | b, seed)
        assert _races(first_of, seed, spawned=True) == plain
    # A spawned job that ran its first step at once still reports its value.
    env = simpy.Environment()

    def quick() -> Generator[simpy.Event, Any, int]:
        yield env.timeout(0.0)
        return 7

    task = spawn(env, quick())
    env.run()
    assert task.triggered
    assert task.value == 7


def _tie(new: bool) -> list[object]:
    """A caller alone races a job whose first event falls exactly on its deadline."""
    env = simpy.Environment()
    log: list[object] = []

    def job() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(0.5)
        log.append(("job", env.now))

    def caller() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1.0)
        if new:  # the resilience chain's order: the deadline, then spawn
            deadline = env.timeout(0.5)
            proc: simpy.Event = spawn(env, job())
            race = first_of(env, proc, deadline)
        else:  # the order it replaced: a process, then its deadline, as a condition
            proc = env.process(job())
            deadline = env.timeout(0.5)
            race = proc | deadline
        assert deadline.callbacks is not None
        deadline.callbacks.append(lambda _e: log.append(("deadline", env.now)))
        yield race
        log.append(("resumed", env.now, proc.triggered))

    env.process(caller())
    env.run()
    return log


def test_a_spawned_job_loses_a_tie_with_its_deadline_as_a_process_did() -> None:
    # The deadline's timeout was made before the job's first event: it pops first.
    old = _tie(new=False)
    assert old == [("deadline", 1.5), ("job", 1.5), ("resumed", 1.5, True)]
    assert _tie(new=True) == old
