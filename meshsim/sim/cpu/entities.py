"""The fair scheduler's entities (:mod:`meshsim.sim.cpu.fair`): a container's cgroup with its
weight, its CPU limit's bandwidth bookkeeping and its counters, the groups cgroups nest in
(a pod, a QoS class: :mod:`meshsim.sim.cpu.kubepods`), and one CPU burst of a thread.

Each entity carries the state EEVDF keeps per ``sched_entity`` on its run queue: vruntime,
virtual deadline and the lag it keeps while it sleeps. The bandwidth bookkeeping is the
same under either picker (:mod:`meshsim.sim.cpu.bandwidth` uses it for FCFS cores).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

BANDWIDTH_SLICE_S = 0.005
"""sched_cfs_bandwidth_slice_us default: runtime moves from the pool in 5 ms pieces."""


class Entity(ABC):
    """A scheduling entity on a run queue: its weight and its fairness state."""

    __slots__ = (
        "deadline", "delayed", "depth", "index", "lag", "name", "on_rq", "parent", "vruntime",
        "weight",
    )  # fmt: skip

    def __init__(
        self, name: str, weight: float, index: int, parent: GroupEntity | None = None
    ) -> None:
        self.name = name
        self.weight = weight
        """Kernel load weight: cpu.weight x 1024 / 100."""
        self.index = index
        self.parent = parent
        """The group whose run queue it is on (None: the node's)."""
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.vruntime = 0.0
        self.deadline = 0.0
        self.lag = 0.0
        self.on_rq = False
        self.delayed = False
        """Asleep but kept on its run queue until it is owed CPU again (DELAY_DEQUEUE)."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether a task of it (or of a cgroup under it) waits for a core and may run."""

    @abstractmethod
    def pickable(self) -> bool:
        """Whether the pick may choose it: ready, or delayed (it, or one under it)."""


class GroupEntity(Entity):
    """A group of cgroups (a pod, a QoS class): an entity on its parent's run queue, with a
    run queue of its own."""

    __slots__ = ("rq",)

    def __init__(
        self, name: str, weight: float, index: int, parent: GroupEntity | None = None
    ) -> None:
        super().__init__(name, weight, index, parent)
        self.rq: list[Entity] = []
        """Its children with a task waiting or running."""

    def ready(self) -> bool:
        for e in self.rq:  # noqa: SIM110 - a loop, not any(): on every pick's path
            if e.ready():
                return True
        return False

    def pickable(self) -> bool:
        if self.delayed:
            return True
        for e in self.rq:  # noqa: SIM110 - as ready()
            if e.pickable():
                return True
        return False


class QuotaPool:
    """A CPU limit's runtime for one period (the kernel's ``cfs_bandwidth``): the quota it
    refills to, what is left of it, and the periods counted (``cpu.stat``). One per cgroup;
    a cgroup with an entity on each CPU's run queue (:mod:`meshsim.sim.cpu.percpu`) draws
    from one pool on every CPU, as the kernel's per-CPU run queues do."""

    __slots__ = (
        "nr_periods", "nr_throttled", "period_idx", "period_s", "pool_s", "quota_s",
        "throttled_idx",
    )  # fmt: skip

    def __init__(self, quota_s: float | None, period_s: float) -> None:
        self.quota_s = quota_s
        self.period_s = period_s
        self.pool_s = 0.0
        self.period_idx = -1
        self.nr_periods = 0
        self.nr_throttled = 0
        self.throttled_idx = -1
        """The last period counted as throttled (once, however many CPUs throttled in it)."""

    def refill(self, now: float, window: tuple[float, float]) -> None:
        """A new period's quota, if ``now`` is in a later period than the last refill."""
        idx = int(now / self.period_s + 1e-9)
        if idx > self.period_idx:
            self.period_idx = idx
            self.pool_s = self.quota_s or 0.0
            if window[0] <= now < window[1]:
                self.nr_periods += 1


class PeriodCounters:
    """``cpu.stat``'s period counters of a cgroup, which its runtime pool keeps (one pool
    for all of a cgroup's entities, when it has one on each CPU)."""

    __slots__ = ()
    pool: QuotaPool

    @property
    def nr_periods(self) -> int:
        """Periods in which it drew runtime (``cpu.stat`` nr_periods)."""
        return self.pool.nr_periods

    @property
    def nr_throttled(self) -> int:
        """Periods in which it was throttled (``cpu.stat`` nr_throttled)."""
        return self.pool.nr_throttled


class CGroup(PeriodCounters, Entity):
    """A container's cgroup on one node (or on one CPU of it): weight, quota, fairness state
    and counters."""

    __slots__ = (
        "cpu_s", "period_s", "pool", "queue", "quota_s", "running", "threads", "throttled",
        "throttled_at", "throttled_idx", "throttled_s",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        weight: float,
        index: int,
        quota_s: float | None,
        period_s: float,
        parent: GroupEntity | None = None,
    ) -> None:
        super().__init__(name, weight, index, parent)
        self.quota_s = quota_s
        """Runtime per period (None: no limit)."""
        self.period_s = period_s
        self.pool = QuotaPool(quota_s, period_s)
        """The runtime it draws from (shared by its entities on each CPU's run queue)."""
        self.threads: int | None = None
        """How many cores its container can use at once (a proxy's workers, an app's
        concurrency; None: not bounded, a client's load generator)."""
        self.queue: deque[Task] = deque()
        """Tasks waiting for a core, in turn order."""
        self.running = 0
        self.throttled = False
        self.throttled_at = 0.0
        self.throttled_idx = -1
        """The period it was last throttled in."""
        self.cpu_s = 0.0
        self.throttled_s = 0.0

    def ready(self) -> bool:
        return bool(self.queue) and not self.throttled

    def pickable(self) -> bool:
        return self.delayed or self.ready()

    # Bandwidth control's bookkeeping, the same under either picker (meshsim.sim.cpu.bandwidth
    # for FCFS cores). ``window`` is the measurement window [from, until) the counters count in.

    def refill(self, now: float, window: tuple[float, float]) -> None:
        """A new period's quota, if ``now`` is in a later period than the last refill."""
        self.pool.refill(now, window)

    def throttle(self, now: float, window: tuple[float, float]) -> float:
        """Throttled now, its pool spent: the delay to the next period's refill."""
        self.throttled = True
        self.throttled_at = now
        pool = self.pool
        self.throttled_idx = pool.period_idx
        if window[0] <= now < window[1] and pool.throttled_idx != pool.period_idx:
            pool.throttled_idx = pool.period_idx
            pool.nr_throttled += 1
        return max((pool.period_idx + 1) * pool.period_s - now, 0.0)

    def unthrottle(self, now: float, window: tuple[float, float]) -> None:
        """The refill that ends a throttle (a period of its own, counted once, by the first
        of the cgroup's entities that the refill unthrottles)."""
        self.throttled = False
        self.throttled_s += max(min(now, window[1]) - max(self.throttled_at, window[0]), 0.0)
        pool = self.pool
        if pool.period_idx <= self.throttled_idx:
            pool.period_idx = self.throttled_idx + 1
            pool.pool_s = pool.quota_s or 0.0
            if window[0] <= now < window[1]:
                pool.nr_periods += 1

    def count_cpu(self, now: float, ran: float, window: tuple[float, float]) -> None:
        """``ran`` seconds of CPU that ended ``now``, the part inside the window."""
        if now > window[0]:
            self.cpu_s += max(min(now, window[1]) - max(now - ran, window[0]), 0.0)


class Task:
    """One CPU burst of one thread: it runs ``remaining`` seconds, then calls ``done``.
    ``thread`` names the thread (None: anonymous), and ``goes_on``, asked as the burst ends,
    says whether the thread has its next burst ready then (it goes on without sleeping)."""

    __slots__ = (
        "budget", "done", "fire_at", "goes_on", "group", "remaining", "slice_end", "started",
        "thread", "timer",
    )  # fmt: skip

    def __init__(
        self,
        remaining: float,
        group: CGroup,
        done: Callable[[], object],
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> None:
        self.remaining = remaining
        self.group = group
        self.done = done
        self.thread = thread
        self.goes_on = goes_on
        self.started = 0.0
        self.slice_end = math.inf
        self.budget = math.inf if group.quota_s is None else 0.0
        """Bandwidth runtime drawn and not yet spent (inf: no limit)."""
        self.fire_at = math.inf
        self.timer = 0
        """Bumped whenever the task's pending timer stops meaning anything."""
