"""run_until processes the same events, in the same order, as simpy's env.run(until=...)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import pytest
import simpy

from meshsim.sim.loop import Environment, run_until


def _scenario(
    advance: Callable[[simpy.Environment, float], Any],
    seed: int,
    make: Callable[[], simpy.Environment] = simpy.Environment,
) -> list[object]:
    """Processes on a 0.25 grid, so that many events fall exactly on the stop times (1.0,
    2.0, ...); some start new processes (urgent Initialize events) at those very instants."""
    env = make()
    rng = np.random.default_rng(seed)
    steps = [float(s) * 0.25 for s in rng.integers(0, 5, 400)]
    log: list[object] = []

    def child(name: str) -> Generator[simpy.Event, Any, None]:
        log.append((env.now, name, "child"))
        yield env.timeout(0.0)
        log.append((env.now, name, "child-done"))

    def worker(k: int) -> Generator[simpy.Event, Any, None]:
        for i in range(40):
            yield env.timeout(steps[k * 40 + i])
            log.append((env.now, k, i))
            if i % 7 == 0:
                env.process(child(f"{k}-{i}"))

    for k in range(10):
        env.process(worker(k))
    for t in (1.0, 2.0, 2.5, 3.0, 4.75, 6.0, 9.0):
        advance(env, t)
        log.append(("stop", env.now, env.peek()))
    return log


@pytest.mark.parametrize("seed", range(6))
def test_same_events_in_the_same_order_as_env_run(seed: int) -> None:
    plain = _scenario(lambda env, t: env.run(until=t), seed)
    mine = _scenario(run_until, seed)
    assert mine == plain
    stops = [entry for entry in plain if isinstance(entry, tuple) and entry[0] == "stop"]
    assert len(stops) == 7
    # simpy leaves its stop event at the front of the queue: peek() is now after each run
    assert all(s[2] == s[1] for s in stops)


def test_a_time_not_ahead_is_refused_as_env_run_refuses_it() -> None:
    env = simpy.Environment()
    run_until(env, 1.0)
    assert env.now == 1.0
    with pytest.raises(ValueError, match="greater than the current simulation time"):
        run_until(env, 1.0)


def test_a_failed_event_ends_the_run_as_in_env_run() -> None:
    env = simpy.Environment()
    failing = env.event()
    failing.fail(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        run_until(env, 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_leaner_timeouts_schedule_as_simpy_does(seed: int) -> None:
    plain = _scenario(lambda env, t: env.run(until=t), seed)
    assert _scenario(run_until, seed, Environment) == plain
    env, reference = Environment(), simpy.Environment()
    for e in (env, reference):
        e.timeout(0.5, value="v")
        e.timeout(0.0)
        e.event()
    assert [q[:3] for q in env._queue] == [q[:3] for q in reference._queue]
    ours = env.timeout(0.25, value="w")
    assert isinstance(ours, simpy.Timeout)
    assert ours.value == "w"
    assert ours.triggered
    assert "process" in vars(env)  # the other factories bound early, as simpy binds them
    with pytest.raises(ValueError, match="Negative delay"):
        env.timeout(-1.0)
