"""take/give: a free simpy resource taken without a queue round trip, and only when that
cannot change the order of anything else (meshsim.sim.uncontended)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from meshsim.sim.uncontended import Held, give, take


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
