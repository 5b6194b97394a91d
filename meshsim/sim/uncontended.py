"""Taking and giving back a simpy resource without a trip through the event queue.

``yield resource.request()`` costs a scheduled event even when a slot is free: the request
is triggered at once, pushed on the heap at the current time and popped again before the
process resumes, and ``release()`` schedules one more event that nobody waits for. Most of
the simulator's resources (a replica's worker slots, a client's connections) are free most
of the time, so these round trips are a large share of a hop's cost.

:func:`take` and :func:`give` skip them only when skipping cannot change what happens next:
nothing else is scheduled at the current instant (the heap's next event is later) and
nobody queues for the resource. Then the request's event would be the very next one popped,
its only effects being to resume the process that is already running, and the release's
event would find no request to admit; so every other event keeps its time and its order,
and a run gives the same results, bit for bit, with or without them. This relies on the
engine's rule that a process is the only waiter of the events it yields (so no other
callback of the event that resumed it is still to run): true of timeouts, requests,
processes and conditions as the simulator uses them.

Two more round trips are skipped the same way: :func:`start` runs a request's process that
nobody waits for without its Initialize and end events where that changes no order, and
:func:`spawn` one that is waited for without its Initialize event; :func:`first_of` races
two events as ``a | b`` does, without building a condition's value.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

__all__ = ["Task", "first_of", "give", "spawn", "start", "take"]


class Held:
    """A slot of a resource taken by :func:`take`; hand it back with :func:`give`."""

    __slots__ = ()


# simpy's private attributes (stable through simpy 4) rather than ``capacity``, ``now`` and
# ``peek()``: these run several times per hop, and the property calls were most of their cost.


def take(res: simpy.Resource) -> Held | None:
    """A slot of ``res`` taken now, or None: then request it and yield the request."""
    users = res.users
    if len(users) < res._capacity and not res.put_queue:
        env = res._env
        queue = env._queue
        if not queue or queue[0][0] > env._now:  # env.peek() > env.now
            held = Held()
            users.append(held)  # type: ignore[arg-type]
            return held
    return None


def give(res: simpy.Resource, slot: object) -> None:
    """Give back a slot of ``res`` (taken by :func:`take` or by a yielded request)."""
    if not res.put_queue:
        env = res._env
        queue = env._queue
        if not queue or queue[0][0] > env._now:
            res.users.remove(slot)  # type: ignore[arg-type]
            return
    res.release(slot)  # type: ignore[arg-type]


class _Task:
    """A generator driven as a simpy process is, for one that nobody waits for: the
    process's own event at its end (a no-op without waiters) is never scheduled."""

    __slots__ = ("_generator", "_resume_cb")

    def __init__(self, generator: Generator[simpy.Event, Any, Any]) -> None:
        self._generator = generator
        self._resume_cb = self._resume

    def _resume(self, event: Any) -> None:
        # simpy.Process._resume, less the bookkeeping that only waiters and interrupts
        # read; the simulator's events never fail, and an exception still ends the run.
        generator = self._generator
        while True:
            try:
                event = generator.send(event._value)
            except StopIteration:
                return
            callbacks = event.callbacks
            if callbacks is not None:
                callbacks.append(self._resume_cb)
                return
            if not event._ok:  # pragma: no cover - no simulator event fails
                raise event._value


class Task(simpy.Event):
    """A process as an event, like ``simpy.Process``: it succeeds with its generator's
    return value (scheduled when the generator ends, as a process is). Started by
    :func:`spawn`."""

    def __init__(self, env: simpy.Environment, generator: Generator[simpy.Event, Any, Any]):
        self.env = env
        self.callbacks = []
        self._value = simpy.events.PENDING
        self._generator = generator
        self._resume_cb = self._resume

    def _resume(self, event: Any) -> None:
        # As _Task._resume; at the end, what simpy.Process does: succeed, scheduled.
        generator = self._generator
        while True:
            try:
                event = generator.send(event._value)
            except StopIteration as stop:
                self._ok = True
                self._value = stop.value
                self.env.schedule(self)
                return
            callbacks = event.callbacks
            if callbacks is not None:
                callbacks.append(self._resume_cb)
                return
            if not event._ok:  # pragma: no cover - no simulator event fails
                raise event._value


class _Started:
    """What a process's Initialize event hands its generator: a first ``send(None)``."""

    _ok = True
    _value = None


_STARTED = _Started()


def start(env: simpy.Environment, generator: Generator[simpy.Event, Any, Any]) -> None:
    """Run ``generator`` as ``env.process`` would, for a process that nobody waits for.

    When nothing else is due at this instant, its first step runs now instead of from an
    Initialize event, which would be the very next event popped (it is urgent); so the
    caller must have scheduled its own next event already, as it would have been before
    that first step. Otherwise it starts from an urgent event, as a process does. Either
    way its end schedules nothing: a process's end is an event for its waiters, and it
    has none (the event did nothing but, at its instant, make :func:`take` queue).
    """
    task = _Task(generator)
    queue = env._queue
    if not queue or queue[0][0] > env._now:
        task._resume(_STARTED)
        return
    init = simpy.Event(env)
    init.callbacks.append(task._resume_cb)
    init._ok = True
    init._value = None
    env.schedule(init, simpy.events.URGENT)


def spawn(env: simpy.Environment, generator: Generator[simpy.Event, Any, Any]) -> Task:
    """``env.process(generator)`` for a process that is waited for: a :class:`Task`.

    Its first step runs now when nothing else is due at this instant, as its Initialize
    event would be popped next; so, as for :func:`start`, the caller must already have
    created the events it creates after ``env.process`` and before it waits (a deadline's
    timeout). Otherwise it starts from an urgent event, as a process does.
    """
    task = Task(env, generator)
    queue = env._queue
    if not queue or queue[0][0] > env._now:
        task._resume(_STARTED)
        return task
    init = simpy.Event(env)
    init.callbacks.append(task._resume_cb)
    init._ok = True
    init._value = None
    env.schedule(init, simpy.events.URGENT)
    return task


def first_of(
    env: simpy.Environment, a: simpy.Event, b: simpy.Event, *more: simpy.Event
) -> simpy.Event:
    """An event that succeeds when the first of ``a``, ``b`` (and ``more``) is processed:
    ``a | b`` (all pending) for a waiter that reads neither its value nor theirs. It is
    triggered by the same callback at the same moment as the condition would be, so it is
    scheduled at the same place; it only skips the condition's bookkeeping."""
    either = simpy.Event(env)

    def first(_event: simpy.Event) -> None:
        if not either.triggered:
            either.succeed()

    assert a.callbacks is not None, "a pending event"
    assert b.callbacks is not None, "a pending event"
    a.callbacks.append(first)
    b.callbacks.append(first)
    for event in more:
        assert event.callbacks is not None, "a pending event"
        event.callbacks.append(first)
    return either
