"""CPU limits: CFS bandwidth control on a node's cores, under either picker.

A CPU limit is CFS bandwidth control, and bandwidth control is not tied to how the kernel
picks among runnable tasks: it caps a cgroup's runtime per period, whatever the pick. So
the FCFS cores enforce it too, the same way :mod:`meshsim.sim.cpu.fair` does (one rule,
two pickers): a limited cgroup draws runtime from its pool in 5 ms pieces
(``sched_cfs_bandwidth_slice_us``); when a piece is due and the pool is empty, the cgroup
is throttled until the next period refills it, and a burst of it that was running gives
its core up and queues for one again when it is unthrottled. The counters are the fair
scheduler's (:class:`meshsim.sim.cpu.fair.CGroup`): periods in which it drew runtime,
throttled periods, throttled time, CPU, all in the measurement window.

Only a limit that can bind is enforced: a container cannot use more cores than it has
threads, nor more than its node has, so a limit at or above ``min(threads, cores)``
(Istio's default 2000m on a two-worker Envoy) never throttles; its container runs on the
plain FCFS path, unaccounted. The cgroups of :attr:`Bandwidth.groups` are the limited
ones, which is what ``summary.json``'s ``cgroups`` lists under FCFS. Under ``cfs``
(:class:`FairBandwidth`) every cgroup is on the fair scheduler's books, limited or not.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import Any, Protocol

import simpy

from meshsim.sim.cpu.cgroups import bounded_threads, threads_of
from meshsim.sim.cpu.entities import BANDWIDTH_SLICE_S, CGroup, Task
from meshsim.sim.uncontended import give, take

_EPS = 1e-12


class Bandwidth:
    """CFS bandwidth control of the binding CPU limits on one FCFS node."""

    __slots__ = (
        "_groups", "_refill", "_resolve", "cores", "env", "groups", "n_cores", "period_s",
        "window",
    )  # fmt: skip

    def __init__(
        self,
        env: simpy.Environment,
        cores: simpy.Resource,
        n_cores: int,
        resolve: Callable[[Any], tuple[str, float, float | None]],
        period_s: float,
        *,
        count_from_s: float = 0.0,
        count_until_s: float = float("inf"),
    ) -> None:
        self.env = env
        self.cores = cores
        self.n_cores = n_cores
        self._resolve = resolve
        self.period_s = period_s
        self.window = (count_from_s, count_until_s)
        """CPU, period and throttling counters count in [from, until): the window."""
        self.groups: list[CGroup] = []
        """The cgroups whose limit can bind, in the order they first ran."""
        self._groups: dict[int, CGroup | None] = {}
        self._refill: dict[int, simpy.Event] = {}
        """A throttled cgroup's refill at its next period (by cgroup index)."""

    def limited(self, account: Any) -> CGroup | None:
        """``account``'s cgroup if its CPU limit can bind, else None (run it unlimited)."""
        key = id(account)
        try:
            return self._groups[key]
        except KeyError:
            pass
        name, weight, quota = self._resolve(account)
        can_use_s = min(threads_of(account), self.n_cores) * self.period_s
        g = None
        if quota is not None and quota < can_use_s - _EPS:
            g = CGroup(name, weight, len(self.groups), quota, self.period_s)
            g.threads = bounded_threads(account)
            self.groups.append(g)
        self._groups[key] = g
        return g

    def run(
        self, cpu_s: float, g: CGroup, speed: Callable[[], float], held: object = None
    ) -> Generator[simpy.Event, Any, tuple[object, float]]:
        """Run a burst of ``cpu_s`` (host-speed seconds: times ``speed()`` when it first
        gets a core) for ``g``, within its quota; returns the core it ends on, still held
        (``held``: a core the caller already holds), and the seconds it ran."""
        env = self.env
        cores = self.cores
        creq = held
        remaining = cpu_s
        ran = 0.0
        scaled = held is not None
        if scaled:
            remaining *= speed()
        while True:
            if not self._draw(g):
                if creq is not None:
                    give(cores, creq)
                    creq = None
                yield self._throttle(g)
                continue
            if creq is None:
                creq = take(cores)
                if creq is None:
                    creq = cores.request()
                    yield creq
                    continue  # the pool may have run dry while it queued
            if not scaled:
                remaining *= speed()
                scaled = True
            pool = g.pool
            piece = min(remaining, BANDWIDTH_SLICE_S, pool.pool_s)
            pool.pool_s -= piece
            yield env.timeout(piece)
            g.count_cpu(env.now, piece, self.window)
            ran += piece
            remaining -= piece
            if remaining <= _EPS:
                return creq, ran

    def _draw(self, g: CGroup) -> bool:
        """Whether ``g`` has runtime left this period (a new period refills its pool)."""
        if g.throttled:
            return False
        g.refill(self.env.now, self.window)
        return g.pool.pool_s > _EPS

    def _throttle(self, g: CGroup) -> simpy.Event:
        """The event of ``g``'s refill, throttling it now if it is not yet."""
        if g.throttled:
            return self._refill[g.index]
        ev = self._refill[g.index] = self.env.timeout(g.throttle(self.env.now, self.window))
        assert ev.callbacks is not None
        # Before any waiter's resume (they append theirs when they yield it).
        ev.callbacks.append(partial(self._unthrottle, g))
        return ev

    def _unthrottle(self, g: CGroup, _ev: simpy.Event) -> None:
        g.unthrottle(self.env.now, self.window)


class _FairCores(Protocol):
    """What :class:`FairBandwidth`'s methods use of the scheduler they are part of."""

    env: simpy.Environment
    running: list[Task]
    waiting: int
    window: tuple[float, float]

    def _charge(self, task: Task, ran: float) -> None: ...
    def _stop(self, task: Task) -> None: ...
    def _dispatch(self) -> None: ...
    def _unthrottle(self, g: CGroup, _ev: simpy.Event) -> None: ...


class FairBandwidth:
    """Bandwidth control's part in :class:`meshsim.sim.cpu.fair.FairScheduler`: a running task
    draws its cgroup's runtime in pieces, and a cgroup whose pool is empty is throttled,
    every task of it off its core, until the next period. Its methods work on the
    scheduler's own state and steps (:class:`_FairCores`: ``self`` is the scheduler)."""

    def _draw(self: _FairCores, task: Task) -> bool:
        """Draw the next piece of runtime from the pool; False when the pool is empty."""
        g = task.group
        assert g.quota_s is not None
        g.refill(self.env.now, self.window)
        pool = g.pool
        if pool.pool_s <= _EPS:
            return False
        piece = min(task.remaining, BANDWIDTH_SLICE_S, pool.pool_s)
        pool.pool_s -= piece
        task.budget = piece
        return True

    def _throttle(self: _FairCores, task: Task) -> None:
        g = task.group
        self._stop(task)
        task.budget = 0.0
        g.queue.appendleft(task)
        self.waiting += 1
        if not g.throttled:
            now = self.env.now
            wait = g.throttle(now, self.window)
            # Its other running tasks leave their cores too (the kernel throttles the
            # cgroup's run queue on each CPU as its local runtime runs out; here at once).
            for r in [r for r in self.running if r.group is g]:
                self._charge(r, now - r.started)
                r.started = now
                self._stop(r)
                g.pool.pool_s += max(r.budget, 0.0)
                r.budget = 0.0
                g.queue.appendleft(r)
                self.waiting += 1
            ev = self.env.timeout(wait)
            assert ev.callbacks is not None
            ev.callbacks.append(partial(self._unthrottle, g))
        self._dispatch()

    def _unthrottle(self: _FairCores, g: CGroup, _ev: simpy.Event) -> None:
        g.unthrottle(self.env.now, self.window)
        self._dispatch()
