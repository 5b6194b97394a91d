"""A node's CPUs as Linux runs them: a run queue per CPU, wake-up placement and balancing.

Under ``cluster.run_queues: per_cpu`` each CPU of a node of several cores is a one-core
:class:`~meshsim.sim.cpu.fair.FairScheduler` (EEVDF, bandwidth control, wake-up preemption,
exactly as on a node of one core), and a cgroup has an entity on each CPU's run queue, as
the kernel's task groups do. What the kernel adds between the CPUs (kernel/sched/fair.c,
CPUs of one cache domain):

- **Wake-up placement** (``select_idle_sibling``): a burst runs on the CPU its thread last
  ran on if that one is idle, else on an idle one (scanning from it), else it queues on
  its last CPU. A thread that keeps its core for its next burst stays on it. Bursts of no
  thread (a pool's, a client's) follow their cgroup's last CPU.
- **Balancing at the ticks**: at a CPU's tick (4 ms) with two or more runnable, an idle CPU
  pulls one waiting task (``nohz_balancer_kick``, an idle balance), and a busy CPU with two
  fewer runnable pulls one every ``BUSY_FACTOR`` ticks. A task moves only if it is cold
  (last ran ``MIGRATION_COST_S`` ago or more, ``task_hot``), or after more than
  ``CACHE_NICE_TRIES`` failed balances even if hot; the least recently run first
  (``detach_tasks``). A task of a throttled cgroup does not move.
- **CPU limits**: the cgroup's entities draw on one runtime pool
  (:class:`~meshsim.sim.cpu.entities.QuotaPool`); a CPU's entity is throttled when its
  piece is spent and the pool is empty, and the refill at the period unthrottles each.
  Periods and throttled periods are counted once per cgroup, throttled time summed over the
  CPUs (``cpu.stat``'s ``throttled_usec`` sums its CPUs' too).

Not modelled by default: a CPU pulling a waiting task the moment it goes idle
(``sched_balance_newidle``; ``newidle=True`` adds it, for the experiment below). Not modelled:
active balancing (a running task pushed off after repeated failures) and wake-affine
placement on the waker's CPU. Replayed against the kernel (reports/validation/experiments/
multicore_queue.py: four processes serving Poisson streams of CPU bursts on two CPUs), this
model is the measured mean wait for a core within 8 % (once 11 %) and p99 within 8 % from
30 % busy, where one run queue for the node waits about a third less; with the newly-idle
pull added it is one run queue again (reports/validation/cpu-limits.md, "The kernel's
balancing, replayed, and ``cluster.run_queues: per_cpu``"). A group's weight is split
between its entities on the CPUs by its load on each (:mod:`meshsim.sim.cpu.group_shares`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import simpy

from meshsim.sim.cpu.entities import CGroup, GroupEntity, PeriodCounters, QuotaPool, Task
from meshsim.sim.cpu.fair import TICK_S, FairScheduler
from meshsim.sim.cpu.group_shares import CpuLoads
from meshsim.sim.cpu.slices import default_base_slice_s

__all__ = ["PerCpuScheduler", "SpreadCGroup", "SpreadGroup"]

MIGRATION_COST_S = 0.5e-3
"""``sysctl_sched_migration_cost``: a task that ran this recently is cache-hot."""
CACHE_NICE_TRIES = 1
"""``sd->cache_nice_tries`` of a cache domain: failed balances before a hot task moves."""
BUSY_FACTOR = 16
"""``sd->busy_factor``: a busy CPU balances every 16 of its idle interval (one tick)."""


class SpreadGroup:
    """A group cgroups nest in (a pod's, a QoS class's), with its entity on each CPU."""

    __slots__ = ("loads", "name", "parent", "per_cpu", "weight")

    def __init__(
        self, name: str, weight: float, parent: SpreadGroup | None, per_cpu: list[GroupEntity]
    ) -> None:
        self.name = name
        self.weight = weight
        """Its weight (``cpu.weight``); its entities on the CPUs share it (group_shares)."""
        self.parent = parent
        self.per_cpu = per_cpu
        self.loads = CpuLoads(len(per_cpu))


class SpreadCGroup(PeriodCounters):
    """A container's cgroup on a node of per-CPU run queues: its entity on each CPU, the
    runtime pool they share, and the counters summed over them."""

    __slots__ = (
        "chain", "loads", "name", "parent", "per_cpu", "pool", "prev_cpu", "threads", "weight",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        weight: float,
        parent: SpreadGroup | None,
        per_cpu: list[CGroup],
        pool: QuotaPool,
        prev_cpu: int,
    ) -> None:
        self.name = name
        self.weight = weight
        self.parent = parent
        self.per_cpu = per_cpu
        self.pool = pool
        self.prev_cpu = prev_cpu
        """The CPU its last burst of no thread ran on."""
        self.threads: int | None = None
        self.loads = CpuLoads(len(per_cpu))
        # A group of groups (a QoS class, kubepods) has load on every CPU, so the kernel's
        # split gives each of its entities about its weight over the CPUs, alike for each
        # such group: the ratios between them, which is what their competition sees, stand.
        # The split that moves results is a container's and its pod's, whose load is on one
        # CPU or a few; those two levels are split, the groups above keep their weight.
        self.chain: tuple[SpreadCGroup | SpreadGroup, ...] = (
            (self,) if parent is None else (self, parent)
        )
        """The levels whose weight is split between the CPUs: it, and its pod's group."""

    @property
    def quota_s(self) -> float | None:
        return self.pool.quota_s

    @property
    def period_s(self) -> float:
        return self.pool.period_s

    @property
    def cpu_s(self) -> float:
        return sum(g.cpu_s for g in self.per_cpu)

    @property
    def throttled_s(self) -> float:
        return sum(g.throttled_s for g in self.per_cpu)


class PerCpuScheduler:
    """The cores of one node, each with its own run queue, balanced as Linux balances them."""

    def __init__(
        self,
        env: simpy.Environment,
        cores: int,
        *,
        base_slice_s: float | None = None,
        run_to_parity: bool = True,
        delay_dequeue: bool = True,
        count_from_s: float = 0.0,
        count_until_s: float = math.inf,
        newidle: bool = False,
        balancing: bool = True,
    ) -> None:
        self.env = env
        self.cores = cores
        self.newidle = newidle
        """A CPU going idle pulls a cold waiting task at once (``sched_balance_newidle``);
        off by default: measured, the kernel's waits are those without it (the module)."""
        self.balancing = balancing
        """The balancing at the ticks (off only to show what placement alone does)."""
        # The kernel scales the slice by the node's CPUs, whichever run queue a task is on.
        self.base_slice_s = (
            base_slice_s if base_slice_s is not None else default_base_slice_s(cores)
        )
        self.window = (count_from_s, count_until_s)
        self.cpus = [
            FairScheduler(
                env, 1, base_slice_s=self.base_slice_s, run_to_parity=run_to_parity,
                delay_dequeue=delay_dequeue, count_from_s=count_from_s,
                count_until_s=count_until_s,
            )
            for _ in range(cores)
        ]  # fmt: skip
        self.groups: list[SpreadCGroup] = []
        self.moves: dict[object, int] = {}
        """Moves to another CPU than it last ran on in the window, by thread (or cgroup,
        for bursts of no thread): the kernel's ``se.nr_migrations``, by wake-up placement
        or by the balancing."""
        self._prev: dict[object, int] = {}
        """The CPU each thread last ran on."""
        self._last_ran: dict[object, float] = {}
        """When each thread's (or thread-less cgroup's) last burst ended."""
        self._spread: dict[CGroup, SpreadCGroup] = {}
        """Each CPU's entity of a cgroup, to the cgroup."""
        self._load_on: dict[object, int] = {}
        """The CPU each thread's (or thread-less cgroup's) load average counts on."""
        self._ticking = [False] * cores
        self._next_busy = [0.0] * cores
        self._failed = 0
        """Balances in a row that moved nothing (``sd->nr_balance_failed``)."""

    @property
    def idle(self) -> int:
        """Cores running nothing (nor kept for a thread's next burst)."""
        return sum(c.idle for c in self.cpus)

    @property
    def preemptions(self) -> dict[tuple[str, str], int]:
        """Involuntary switches in the window on every CPU, by the cgroup preempted and what
        took its core (see :attr:`FairScheduler.preemptions`)."""
        out: dict[tuple[str, str], int] = {}
        for c in self.cpus:
            for k, n in c.preemptions.items():
                out[k] = out.get(k, 0) + n
        return out

    # ----------------------------------------------------------------- cgroups

    def group(
        self,
        name: str,
        weight: float,
        quota_s: float | None = None,
        period_s: float = 0.1,
        parent: SpreadGroup | None = None,
    ) -> SpreadCGroup:
        """A container's cgroup: an entity on each CPU's run queue (or on ``parent``'s)."""
        pool = QuotaPool(quota_s, period_s)
        per_cpu = []
        for i, cpu in enumerate(self.cpus):
            g = cpu.group(
                name, weight, quota_s, period_s, None if parent is None else parent.per_cpu[i]
            )
            g.pool = pool
            per_cpu.append(g)
        # A new task starts on the idlest CPU (fork balancing): spread them in turn.
        sg = SpreadCGroup(name, weight, parent, per_cpu, pool, len(self.groups) % self.cores)
        self.groups.append(sg)
        for g in per_cpu:
            self._spread[g] = sg
        return sg

    def parent_group(
        self, name: str, weight: float, parent: SpreadGroup | None = None
    ) -> SpreadGroup:
        """A group for cgroups to nest in, on every CPU."""
        per_cpu = [
            cpu.parent_group(name, weight, None if parent is None else parent.per_cpu[i])
            for i, cpu in enumerate(self.cpus)
        ]
        return SpreadGroup(name, weight, parent, per_cpu)

    def reweight(self, e: SpreadGroup | SpreadCGroup, weight: float) -> None:
        """A new weight for ``e`` (:meth:`FairScheduler.reweight` on every CPU): each entity
        queued keeps its part of it, and one asleep gets its part when it wakes."""
        scale = weight / e.weight
        for cpu, entity in zip(self.cpus, e.per_cpu, strict=True):
            cpu.reweight(entity, entity.weight * scale if entity.on_rq else weight)
        e.weight = weight

    # ----------------------------------------------------------------- submitting

    def run(
        self,
        cpu_s: float,
        group: SpreadCGroup,
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> simpy.Event:
        """An event that fires when ``cpu_s`` of CPU has run for ``group``."""
        ev = self.env.event()
        self.submit(cpu_s, group, ev.succeed, thread, goes_on)
        return ev

    def submit(
        self,
        cpu_s: float,
        group: SpreadCGroup,
        done: Callable[[], object],
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``cpu_s`` for ``group`` on the CPU the kernel would wake it on, then call
        ``done`` (:meth:`FairScheduler.submit` for ``thread`` and ``goes_on``)."""
        c = self._place(group, thread)
        cpu = self.cpus[c]
        burst = _Burst(self, group if thread is None else thread, group, c, done)
        self._runnable(burst, c)
        cpu.submit(cpu_s, group.per_cpu[c], burst, thread, goes_on)
        if cpu.waiting and not self._ticking[c] and self.balancing:
            self._arm_tick(c)

    def _runnable(self, burst: _Burst, c: int) -> None:
        """``burst``'s thread is runnable on ``c`` from now (its load with it, if it moved),
        and the levels it wakes there take their share of their group's weight."""
        now = self.env._now
        key = burst.key
        chain = burst.group.chain
        was = self._load_on.get(key)
        if was != c:
            if was is not None:
                # A task takes its own average with it (attach_entity_load_avg): one task's
                # worth at most, all of its cgroup's there if that is less.
                for level in chain:
                    level.loads.move(was, c, now, 1.0)
            self._load_on[key] = c
        burst.cpu = c
        cpu = self.cpus[c]
        queued = False
        for level in chain:
            if queued:
                level.loads.add(c, now, 1)
                continue
            e = level.per_cpu[c]
            if e.on_rq:
                # Queued already, and so is every group above it: its share stands.
                queued = True
                level.loads.add(c, now, 1)
                continue
            w = level.loads.wake(c, now, level.weight)
            if w != e.weight:
                cpu.reweight(e, w)

    def _not_runnable(self, burst: _Burst) -> None:
        now = self.env._now
        c = burst.cpu
        for level in burst.group.chain:
            level.loads.add(c, now, -1)

    def _ended(self, burst: _Burst) -> None:
        self._not_runnable(burst)
        self._last_ran[burst.key] = self.env._now
        burst.done()
        if self.newidle:
            # Once the CPU has picked what it runs next (after this callback).
            ev = self.env.timeout(0.0)
            assert ev.callbacks is not None
            ev.callbacks.append(self._newidle)

    def _newidle(self, _ev: simpy.Event) -> None:
        for d in range(self.cores):
            if self._idle(d):
                busiest = max(range(self.cores), key=self._nr)
                if self._nr(busiest) >= 2:
                    self._pull(d, busiest, hot_too=False)

    def _idle(self, c: int) -> bool:
        cpu = self.cpus[c]
        return cpu.idle == 1 and not cpu.waiting

    def _place(self, group: SpreadCGroup, thread: object) -> int:
        """``select_idle_sibling``: the thread's last CPU if idle (or kept for it), else an
        idle one, else its last."""
        if thread is None:
            prev = group.prev_cpu
        else:
            prev = self._prev.get(thread, group.prev_cpu)
            if self.cpus[prev].holds(thread):
                return prev
        c = prev
        if not self._idle(prev):
            n = self.cores
            for k in range(1, n):
                d = (prev + k) % n
                if self._idle(d):
                    c = d
                    break
        self._moved(group, thread, c)
        return c

    def _moved(self, group: SpreadCGroup, thread: object, c: int) -> None:
        if thread is None:
            prev = group.prev_cpu
            group.prev_cpu = c
        else:
            prev = self._prev.get(thread, c)
            self._prev[thread] = c
        if prev != c and self.window[0] <= self.env._now < self.window[1]:
            key = group if thread is None else thread
            self.moves[key] = self.moves.get(key, 0) + 1

    # ----------------------------------------------------------------- balancing

    def _nr(self, c: int) -> int:
        """Tasks runnable on CPU ``c`` (``nr_running``: running, kept or waiting)."""
        cpu = self.cpus[c]
        return 1 - cpu.idle + cpu.waiting

    def _arm_tick(self, c: int) -> None:
        """CPU ``c``'s next tick, while it has tasks waiting (its ticks are staggered from
        its siblings' by a share of one)."""
        self._ticking[c] = True
        now = self.env._now
        offset = c * TICK_S / self.cores
        at = offset + (math.floor((now - offset) / TICK_S + 1e-9) + 1) * TICK_S
        ev = self.env.timeout(max(at - now, 0.0))
        assert ev.callbacks is not None
        ev.callbacks.append(partial(self._tick, c))

    def _tick(self, c: int, _ev: simpy.Event) -> None:
        self._ticking[c] = False
        self._update_shares(c)
        if self._nr(c) >= 2:
            n = self.cores
            others = [(c + k) % n for k in range(1, n)]
            for d in others:
                if self._idle(d):
                    self._balance(d, c)
                    break
            now = self.env._now
            for d in others:
                if (
                    not self._idle(d)
                    and now >= self._next_busy[d]
                    and self._nr(c) - self._nr(d) >= 2
                ):
                    self._next_busy[d] = now + BUSY_FACTOR * TICK_S
                    self._balance(d, c)
        if self.cpus[c].waiting:
            self._arm_tick(c)

    def _update_shares(self, c: int) -> None:
        """At a tick, the running task's levels take their share of their groups' weights
        again (``entity_tick`` calls ``update_cfs_group``), if it moved by 1/64 or more."""
        cpu = self.cpus[c]
        now = self.env._now
        for task in cpu.running:
            spread = self._spread.get(task.group)
            if spread is None:
                continue
            for level in spread.chain:
                e = level.per_cpu[c]
                w = level.loads.share(level.weight, c, now)
                if abs(w - e.weight) * 64.0 >= e.weight:
                    cpu.reweight(e, w)

    def _balance(self, dst: int, src: int) -> None:
        if self._pull(dst, src, hot_too=self._failed > CACHE_NICE_TRIES):
            self._failed = 0
        else:
            self._failed += 1

    def _pull(self, dst: int, src: int, hot_too: bool) -> bool:
        """Move the least recently run waiting task of ``src`` (a cold one, unless
        ``hot_too``) to ``dst``. Whether one moved."""
        now = self.env._now
        best: SpreadCGroup | None = None
        best_ran = math.inf
        for g in self.groups:
            e = g.per_cpu[src]
            if not e.queue or e.throttled:
                continue
            task = e.queue[0]
            # A task that ran and was preempted last ran when it stopped; one that has not
            # run since it woke, when its thread's last burst ended.
            ran = (
                task.started
                if task.started > 0.0
                else self._last_ran.get(g if task.thread is None else task.thread, 0.0)
            )
            if ran < best_ran and (hot_too or now - ran >= MIGRATION_COST_S):
                best, best_ran = g, ran
        if best is None:
            return False
        moved = self.cpus[src].withdraw(best.per_cpu[src])
        assert moved is not None
        self._resubmit(moved, best, dst)
        return True

    def _resubmit(self, task: Task, g: SpreadCGroup, dst: int) -> None:
        # The runtime it drew on its old CPU goes back to the pool (a run queue with nothing
        # left to run returns its runtime, ``return_cfs_rq_runtime``).
        if g.pool.quota_s is not None and task.budget > 0.0:
            g.pool.pool_s += task.budget
        self._moved(g, task.thread, dst)
        burst = task.done
        assert isinstance(burst, _Burst)
        self._not_runnable(burst)
        self._runnable(burst, dst)
        self.cpus[dst].submit(task.remaining, g.per_cpu[dst], task.done, task.thread, task.goes_on)
        if self.cpus[dst].waiting and not self._ticking[dst] and self.balancing:
            self._arm_tick(dst)


class _Burst:
    """A burst's end, and what the load counts need then: its thread (or thread-less
    cgroup), its cgroup and the CPU it runs on (which the balancing may change)."""

    __slots__ = ("cpu", "done", "group", "key", "sched")

    def __init__(
        self,
        sched: PerCpuScheduler,
        key: object,
        group: SpreadCGroup,
        cpu: int,
        done: Callable[[], object],
    ) -> None:
        self.sched = sched
        self.key = key
        self.group = group
        self.cpu = cpu
        self.done = done

    def __call__(self) -> None:
        self.sched._ended(self)
