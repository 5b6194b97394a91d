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
"""

from __future__ import annotations

import simpy

__all__ = ["give", "take"]


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
