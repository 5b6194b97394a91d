"""The event loop: simpy's ``Environment.run(until=...)``, without a method call per event.

``env.run(until=t)`` schedules an urgent stop event at ``t`` and calls ``env.step()`` until
it pops; each step is a method call, a ``try`` and a tuple unpacking around the few lines
that pop the next event and run its callbacks. :func:`run_until` runs those lines in one
loop, up to where the stop event would be in the queue (its time, its urgent priority and
the event id it would have taken, which it takes), and leaves what simpy leaves behind, so
the same events run in the same order, and a run gives the same results, bit for bit. It
relies on simpy's private queue, clock and id counter (stable through simpy 4), as
:mod:`meshsim.sim.uncontended` does.
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import BoundClass
from simpy.events import NORMAL, URGENT, EventPriority, Timeout

__all__ = ["Environment", "run_until"]


class Environment(simpy.Environment):
    """simpy's environment whose ``timeout()`` is one call rather than two.

    simpy binds ``Timeout`` to the environment, so ``env.timeout(d)`` runs
    ``Timeout.__init__``, which calls ``env.schedule``: two Python frames for the most
    common event of a run. Here ``timeout`` does what they do in one: the same checks,
    the same attributes, the same queue entry (time ``now + delay``, normal priority, the
    next event id). The other event factories are bound as simpy binds them.
    """

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        # simpy binds its factories to the instance, but only those of the instance's
        # own class: bind simpy.Environment's, all but timeout (a method here).
        for name, factory in vars(simpy.Environment).items():
            if type(factory) is BoundClass and name != "timeout":
                setattr(self, name, getattr(self, name))

    def timeout(self, delay: float = 0, value: Any = None) -> Timeout:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        event: Timeout = Timeout.__new__(Timeout)
        event.env = self
        event.callbacks = []
        event._value = value
        event._delay = delay
        event._ok = True
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), event))
        return event


def run_until(env: simpy.Environment, at: float) -> None:
    """Process every event that ``env.run(until=at)`` would, then stand at ``at``."""
    now = env._now
    if at <= now:
        raise ValueError(f"until ({at}) must be greater than the current simulation time")
    # The key the stop event would have: simpy schedules it at now + (at - now).
    stop = (now + (at - now), URGENT, next(env._eid))
    queue = env._queue
    while queue and queue[0] < stop:  # event ids are unique: never a tie on all three
        env._now, _, _, event = heappop(queue)
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        for callback in callbacks:
            callback(event)
        if not event._ok and not hasattr(event, "_defused"):
            # As env.step: an event failed and nobody handled it.
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
    env._now = stop[0]
    # env.step puts the stop event back, first in the queue and callback-less, under one
    # more event id: the next run pops it (it does nothing), and until then env.peek() is
    # now, which the engine's drain loop reads.
    stopped = simpy.Event(env)
    stopped._ok = True
    stopped._value = None
    heappush(queue, (stop[0], EventPriority(-1), next(env._eid), stopped))
