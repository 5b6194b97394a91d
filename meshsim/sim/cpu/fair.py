"""A node's cores as Linux's fair scheduler shares them (EEVDF, Linux 6.6 and later).

The runnable entities are cgroups (:class:`CGroup`: a container, its app or its proxy) with
weights from their CPU requests, and inside each, the bursts (:class:`Task`) of its threads.
Cgroups may nest in groups (:class:`GroupEntity`: a pod, a QoS class, Kubernetes' tree in
:mod:`meshsim.sim.cpu.kubepods`) as the kernel's group scheduling nests its entities: each
group has a run queue of its own, whose children share what the group gets by their weights,
and every rule below holds at each level (a pick walks down from the node's run queue).

- **Pick**: among the cgroups with work waiting, the *eligible* one (its vruntime at or
  below the weighted average of the runnable cgroups', i.e. it is owed CPU) with the
  earliest *virtual deadline* (vruntime + slice x 1024 / weight); with none eligible, the
  earliest deadline (a free core never idles while work waits). This is EEVDF's
  ``pick_eevdf``; CFS before 6.6 took the smallest vruntime, with the same weights.
- **Slices**: a task keeps its core for one base slice (``sched_base_slice``) while others
  wait, then the pick is made again (``update_deadline``; in a tree, when the deadline of a
  level with siblings passes, and every level it ran under starts a new slice). Inside a
  cgroup its tasks take turns (round robin with that slice), which for slices short beside
  the bursts is processor sharing, as for threads of equal weight.
- **Wake-up preemption**: a burst that wakes while every core is busy, its cgroup the one the
  pick would choose of those waiting (eligible, the earliest deadline), preempts a running
  task whose cgroup is not eligible (it has run ahead of its share), or one with a later
  deadline whose slice is over: RUN_TO_PARITY (the kernel's default since 6.6) protects a
  running task's slice only while it is eligible. Of several, the one with the latest
  deadline.
- **A thread that goes on**: a burst that ends with its thread's next burst ready (an event
  loop with more callbacks ready, a proxy worker's next request, its telemetry after the
  response) keeps the core for that burst, in the same slice: the kernel dequeues only a
  task that sleeps, and a running one loses its core only at its slice's end or to a
  wake-up preemption. Bursts without a thread, or whose thread would sleep, leave the core
  to the pick.
- **Lag**: a cgroup that sleeps keeps its lag (V - vruntime, clamped to two slices or a tick
  in its virtual time) and is placed at V - lag when it wakes (``place_entity``).
- **Delayed dequeue** (DELAY_DEQUEUE and DELAY_ZERO, the kernel's default since 6.12): one
  that sleeps ahead of its share (not eligible) stays on its run queue, counted in V, until
  the pick reaches it (then it leaves with no lag) or it wakes; so the others keep what they
  are owed, where it would take their share of V with it. One that wakes while delayed is
  requeued where it is, or at V if it has come to be owed meanwhile, and before the running
  task is charged for its current run (``requeue_delayed_entity`` calls no
  ``update_curr``; ``enqueue_entity`` does): the check that follows finds the running task
  past V, so a requeued wakee level with it preempts, where a fresh one waits its slice. The
  lab's scheduler trace, replayed (reports/validation/experiments/sched_replay.py), bears
  both out: of the wake-ups of one lab process onto the core where another runs, these
  rules call preempt-or-wait right in 75-99 % (three loads), EEVDF as of 6.6 in 11-78 %.
- **Bandwidth control** (a CPU limit): a cgroup with quota q per period P draws runtime
  from its pool in 5 ms pieces (``sched_cfs_bandwidth_slice_us``), as each CPU's run queue
  does; when a piece is spent and the pool is empty the cgroup is throttled: its running
  tasks leave their cores and none of its tasks runs until the next period refills the
  pool. Periods are counted (``nr_periods``, a period in which it drew runtime), so are
  throttled periods (``nr_throttled``) and the time spent throttled (``throttled_s``).

One run queue per node (``cluster.run_queues: node``, the default): this scheduler serves
a node's ``c`` cores, where Linux keeps a run queue per CPU, wakes a task on the CPU it last
ran on when that one is idle (else on an idle one it finds, else queued there:
``select_idle_sibling``) and balances the queues at its ticks. Measured on a two-CPU node
(reports/validation/experiments/multicore_queue.py: four processes serving Poisson streams
of CPU bursts, unpinned), the kernel's mean wait for a core at 30-70 % busy was 1.35-1.8x
this queue's (at 5 % a few microseconds apart), so on a node of several cores this queue's
waits are short from about 30 % busy, and a run says so (:func:`meshsim.sim.cluster.
one_run_queue_warnings`). ``cluster.run_queues: per_cpu`` runs one of these schedulers per
CPU, with the kernel's placement and balancing (:mod:`meshsim.sim.cpu.percpu`, which gives
the measured waits); a node of one core, as each of the calibration lab's, is the same under
either. With one queue a group's weight is its whole share, where the kernel splits it
between its per-CPU entities by its load on each CPU (``calc_group_shares``): the same total.

Cost in the simulator: a burst that finds a core free and nothing waiting costs one
timeout and its completion's event, and the virtual-time bookkeeping of each level it runs
under as its cgroup wakes, runs and sleeps, which FCFS's free core skips (about twice FCFS's
simulation time on Bookinfo, reports/validation/cpu-limits.md); slices, preemption and
bandwidth pieces add events only while work waits or a limit is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import simpy

from meshsim.sim.cpu.bandwidth import FairBandwidth
from meshsim.sim.cpu.entities import BANDWIDTH_SLICE_S, CGroup, Entity, GroupEntity, Task
from meshsim.sim.cpu.slices import default_base_slice_s

__all__ = [
    "BANDWIDTH_SLICE_S",
    "CGroup",
    "Entity",
    "FairScheduler",
    "GroupEntity",
    "Task",
    "default_base_slice_s",
]

NICE_0_LOAD = 1024.0
"""The weight of a nice-0 task, the unit of vruntime: a cgroup of weight w ages 1024 / w
virtual seconds per second it runs."""
TICK_S = 0.004
"""One scheduler tick at CONFIG_HZ=250 (Debian's and Ubuntu's generic kernels)."""
_EPS = 1e-12

HANDED_CORE_CLAIM_S = 1e-9
"""How long a core kept for a thread's next burst waits for it to be claimed (under either
scheduler): that burst is submitted in the same instant, so a core nobody claimed (the burst
was cancelled, the pod killed) goes back to the pick next, a nanosecond later."""


class FairScheduler(FairBandwidth):
    """The cores of one node under EEVDF with CFS bandwidth control (its part in
    :class:`meshsim.sim.cpu.bandwidth.FairBandwidth`)."""

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
    ) -> None:
        self.env = env
        self.cores = cores
        self.idle = cores
        self.base_slice_s = (
            base_slice_s if base_slice_s is not None else default_base_slice_s(cores)
        )
        self.run_to_parity = run_to_parity
        self.delay_dequeue = delay_dequeue
        self.window = (count_from_s, count_until_s)
        """CPU, period and throttling counters count in [from, until): the window."""
        self.running: list[Task] = []
        self.groups: list[CGroup] = []
        """The containers' cgroups, in the order they were made."""
        self.parents: list[GroupEntity] = []
        """The groups they nest in (pods, QoS classes), if any."""
        self._rq: list[Entity] = []
        """The node's run queue: entities with a task waiting or running under them."""
        self.waiting = 0
        self.preemptions: dict[tuple[str, str], int] = {}
        """Tasks taken off their core in the window with work left (involuntary switches), by
        the cgroup preempted and what took the core: a woken task's cgroup, or ``slice``."""
        self._past: Entity | None = None
        """A running entity just preempted by such a wakee: not eligible in the pick."""
        self._woken: list[tuple[Task, bool]] = []
        """Tasks that woke while a core was kept for a thread's next burst (_contended), and
        whether each woke a delayed entity."""
        self._held: dict[object, tuple[CGroup, float, float]] = {}
        """Cores kept for a thread's next burst, by thread: its cgroup, its slice's end and
        the bandwidth runtime it had drawn."""

    def group(
        self,
        name: str,
        weight: float,
        quota_s: float | None = None,
        period_s: float = 0.1,
        parent: GroupEntity | None = None,
    ) -> CGroup:
        """A container's cgroup, on the node's run queue or on ``parent``'s."""
        g = CGroup(name, weight, len(self.groups) + len(self.parents), quota_s, period_s, parent)
        self.groups.append(g)
        return g

    def parent_group(
        self, name: str, weight: float, parent: GroupEntity | None = None
    ) -> GroupEntity:
        """A group for cgroups to nest in (a pod's, a QoS class's)."""
        e = GroupEntity(name, weight, len(self.groups) + len(self.parents), parent)
        self.parents.append(e)
        return e

    def reweight(self, e: Entity, weight: float) -> None:
        """A new weight for ``e`` (kubelet resizing a QoS class as its pods come), as the
        kernel's ``reweight_entity``: its lag and its slice's remaining virtual time are kept
        in real terms (scaled by old / new weight)."""
        if weight == e.weight:
            return
        scale = e.weight / weight
        if not e.on_rq:
            e.weight = weight
            e.lag *= scale
            return
        if self.running:
            self._update()
        rq = self._rq_of(e)
        rel_deadline = (e.deadline - e.vruntime) * scale
        e.lag = (self._avg_vruntime(rq) - e.vruntime) * scale
        rq.remove(e)
        e.weight = weight
        self._enqueue(e, rq)
        e.deadline = e.vruntime + rel_deadline

    # ----------------------------------------------------------------- submitting

    def run(
        self,
        cpu_s: float,
        group: CGroup,
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> simpy.Event:
        """An event that fires when ``cpu_s`` of CPU has run for ``group`` (see
        :meth:`submit` for ``thread`` and ``goes_on``)."""
        ev = self.env.event()
        self.submit(cpu_s, group, ev.succeed, thread, goes_on)
        return ev

    def submit(
        self,
        cpu_s: float,
        group: CGroup,
        done: Callable[[], object],
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``cpu_s`` for ``group``, then call ``done`` (no process needed). ``thread``:
        the thread whose burst it is; ``goes_on``, asked as the burst ends: whether the thread
        has its next burst ready, for which it keeps its core (submitted in the same instant,
        with the same ``thread``)."""
        task = Task(cpu_s, group, done, thread, goes_on)
        if self._held and thread is not None and self._claim(task):
            return
        # _wake, its commonest case (a cgroup already on its run queue) without a call.
        if group.on_rq and not group.delayed:
            requeued = False
        else:
            requeued = self._wake(group)
        if self.idle and not self.waiting and not group.throttled:
            self._start(task)
            return
        group.queue.append(task)
        self.waiting += 1
        if self.idle:
            self._dispatch()
        else:
            self._contended(task, requeued)

    def holds(self, thread: object) -> bool:
        """Whether a core here is kept for ``thread``'s next burst."""
        return thread in self._held

    def withdraw(self, group: CGroup) -> Task | None:
        """Take ``group``'s first waiting task off this run queue, to run elsewhere (the
        kernel's ``detach_task``, as a balancer migrates a runnable task to another CPU):
        None if none waits. A cgroup left with nothing dequeues as a migration does, not
        as a sleep: it keeps its lag and is never delayed."""
        if not group.queue:
            return None
        task = group.queue.popleft()
        self.waiting -= 1
        if not group.queue and not group.running:
            self._sleep(group, migrating=True)
        return task

    # ----------------------------------------------------------------- fairness

    def _update(self) -> None:
        """Charge every running task for the time since it was last charged."""
        now = self.env._now
        charge = self._charge
        for task in self.running:
            ran = now - task.started
            if ran > 0.0:
                charge(task, ran)
                task.started = now

    def _charge(self, task: Task, ran: float) -> None:
        g = task.group
        task.remaining -= ran
        task.budget -= ran
        # Every level it runs under ages (update_curr on each entity up the tree), and a new
        # slice begins when a level's deadline passes where the level has company on its run
        # queue (the kernel reschedules at any level's deadline; a group alone on its queue,
        # as kubepods is, is picked again at once, so only the levels with siblings can move
        # the core); with none, the cgroup's own, whose threads take turns. A chain of groups
        # with one child each then runs as the cgroup alone would, up to float rounding.
        e: Entity | None = g
        left: float | None = None
        own: float | None = None
        while e is not None:
            v = e.vruntime = e.vruntime + ran * NICE_0_LOAD / e.weight
            # (Within _EPS: a level's virtual time is kept at its own scale, and a deadline
            # reached to the float's last bit at one level must be reached at the others.)
            if v >= e.deadline - _EPS:
                # update_deadline, as the ticks would have done it meanwhile: a new deadline
                # one slice after the last, and the slice that began there protects the task.
                slice_v = self.base_slice_s * NICE_0_LOAD / e.weight
                e.deadline += slice_v * (math.floor((e.vruntime - e.deadline) / slice_v) + 1)
                t = (e.deadline - e.vruntime) * e.weight / NICE_0_LOAD
                parent = e.parent
                if len(self._rq if parent is None else parent.rq) > 1:
                    left = t if left is None else min(left, t)
                if e is g:
                    own = t
            e = e.parent
        if left is None:
            left = own
        now = self.env._now
        if left is not None:
            task.slice_end = now + left
        g.count_cpu(now, ran, self.window)

    def _rq_of(self, e: Entity) -> list[Entity]:
        return self._rq if e.parent is None else e.parent.rq

    def _avg_vruntime(self, rq: list[Entity]) -> float:
        return self._avg_and_weight(rq)[0]

    @staticmethod
    def _avg_and_weight(rq: list[Entity]) -> tuple[float, float]:
        """``avg_vruntime``: the weighted average vruntime V of ``rq`` (0 when empty), and
        the run queue's total weight."""
        if not rq:
            return 0.0, 0.0
        total_w = 0.0
        total = 0.0
        base = rq[0].vruntime
        for g in rq:
            total_w += g.weight
            total += g.weight * (g.vruntime - base)
        return base + total / total_w, total_w

    def _lag_limit(self, e: Entity) -> float:
        return max(2.0 * self.base_slice_s, TICK_S) * NICE_0_LOAD / e.weight

    def _wake(self, e: Entity) -> bool:
        """``e`` has work again: placed if it slept (:meth:`_place`), requeued if it was
        delayed (:meth:`_requeue`), left as it is if it is on its run queue. Whether a
        delayed entity, ``e`` or a group above it, was requeued."""
        if not e.on_rq:
            return self._place(e)
        if e.delayed:
            self._requeue(e)
            return True
        return False

    def _place(self, e: Entity) -> bool:
        """``place_entity``: a waking entity keeps the lag it had when it slept; a group
        wakes with its first child (``enqueue_task_fair`` walks up the tree). Whether a
        group above it was delayed, and requeued (:meth:`_requeue`)."""
        parent = e.parent
        self._enqueue(e, self._rq if parent is None else parent.rq)
        if parent is None or (parent.on_rq and not parent.delayed):
            return False
        requeued = self._wake(parent)
        # A group that woke where it slept (delayed) kept the deadline it had: its new child
        # is in the rest of that slice, as the cgroup would be, were it not nested.
        e.deadline = e.vruntime + (parent.deadline - parent.vruntime) * parent.weight / e.weight
        return requeued

    def _requeue(self, e: Entity) -> None:
        """``requeue_delayed_entity``: a delayed entity wakes where it is, still owing what
        it ran ahead (DELAY_ZERO: one owed CPU meanwhile is placed at V with no lag)."""
        e.delayed = False
        rq = self._rq if e.parent is None else e.parent.rq
        if self.running:
            self._update()
        if self._avg_vruntime(rq) - e.vruntime > _EPS:
            rq.remove(e)
            e.lag = 0.0
            self._enqueue(e, rq)

    def _enqueue(self, e: Entity, rq: list[Entity]) -> None:
        if rq:
            if self.running:
                self._update()
            # The lag is scaled so that it is still the lag once e's own weight is in the
            # average (place_entity: lag x (W + w) / W).
            v, total_w = self._avg_and_weight(rq)
            e.vruntime = v - e.lag * (total_w + e.weight) / total_w
        e.deadline = e.vruntime + self.base_slice_s * NICE_0_LOAD / e.weight
        e.on_rq = True
        rq.append(e)

    def _sleep(self, e: Entity, picked: bool = False, migrating: bool = False) -> None:
        """The entity has no task left: it leaves its run queue, remembering its lag (and a
        group left with none goes too). ``picked``: a delayed one the pick reached;
        ``migrating``: its last task moved to another CPU (never delayed)."""
        while True:
            parent = e.parent
            rq = self._rq if parent is None else parent.rq
            alone = len(rq) == 1
            v = 0.0
            if not alone:
                if self.running:
                    self._update()
                v = self._avg_vruntime(rq)
                if not picked and not migrating and self.delay_dequeue and e.vruntime > v + _EPS:
                    # DELAY_DEQUEUE (Linux 6.12 and later): one that sleeps ahead of its
                    # share stays on its run queue, counted in V, until the pick reaches
                    # it: it pays its debt asleep, and the others keep what they are owed
                    # (they would lose it to V if it left with its debt).
                    e.delayed = True
                    return
            e.on_rq = False
            e.delayed = False
            if alone:
                # Alone, it is at the average: no lag (and no one else's time to charge).
                e.lag = 0.0
                rq.clear()
            else:
                limit = self._lag_limit(e)
                e.lag = min(max(v - e.vruntime, -limit), limit)
                if picked:
                    # DELAY_ZERO: what it came to be owed while asleep is not kept.
                    e.lag = min(e.lag, 0.0)
                rq.remove(e)
            if parent is None or parent.rq:
                return
            # A group left with no child sleeps too (not as a pick's: it keeps its lag).
            e = parent
            picked = False

    def _pick(self) -> CGroup | None:
        """The waiting, unthrottled cgroup EEVDF runs next (None: nothing can run): the pick
        at the node's run queue, then at the picked group's, down to a cgroup."""
        if self.running:
            self._update()
        rq = self._rq
        while True:
            best = self._pick_in(rq)
            if best is not None and best.delayed:
                # pick_next_entity: a delayed entity picked leaves now, and the pick starts
                # again from the top.
                self._sleep(best, picked=True)
                rq = self._rq
                continue
            if best is None or isinstance(best, CGroup):
                return best
            assert isinstance(best, GroupEntity)
            rq = best.rq

    def _pick_in(self, rq: list[Entity]) -> Entity | None:
        """``pick_eevdf`` on one run queue: the eligible entity with the earliest deadline,
        else the earliest deadline (a free core never idles while work waits)."""
        v = self._avg_vruntime(rq)
        best: Entity | None = None
        best_any: Entity | None = None
        for e in rq:
            if not e.pickable():
                continue
            if best_any is None or (e.deadline, e.index) < (best_any.deadline, best_any.index):
                best_any = e
            if (
                e.vruntime <= v + _EPS
                and e is not self._past
                and (best is None or (e.deadline, e.index) < (best.deadline, best.index))
            ):
                best = e
        return best if best is not None else best_any

    @staticmethod
    def _matching(a: Entity, b: Entity) -> tuple[Entity, Entity]:
        """``find_matching_se``: the ancestors of ``a`` and ``b`` (or themselves) that are on
        one run queue, where the two are compared."""
        while a.depth > b.depth:
            assert a.parent is not None
            a = a.parent
        while b.depth > a.depth:
            assert b.parent is not None
            b = b.parent
        while a.parent is not b.parent:
            assert a.parent is not None
            assert b.parent is not None
            a, b = a.parent, b.parent
        return a, b

    def _eligible(self, e: Entity) -> bool:
        return e.vruntime <= self._avg_vruntime(self._rq_of(e)) + _EPS

    # ----------------------------------------------------------------- cores

    def _start(self, task: Task, slice_end: float | None = None) -> None:
        now = self.env._now
        self.idle -= 1
        self.running.append(task)
        task.group.running += 1
        task.started = now
        task.slice_end = now + self.base_slice_s if slice_end is None else slice_end
        if task.group.quota_s is not None and task.budget <= _EPS and not self._draw(task):
            self._throttle(task)
            return
        self._arm(task)

    def _arm(self, task: Task) -> None:
        """The task's next event: its end, its bandwidth piece spent, or (while others
        wait) its slice's end."""
        now = self.env._now
        delay = min(task.remaining, task.budget)
        if self.waiting and task.slice_end - now < delay:
            delay = max(task.slice_end - now, 0.0)
        task.timer += 1
        task.fire_at = now + delay
        ev = self.env.timeout(delay)
        assert ev.callbacks is not None
        ev.callbacks.append(partial(self._fire, task, task.timer, delay >= task.remaining))

    def _fire(self, task: Task, timer: int, ends: bool, _ev: simpy.Event) -> None:
        if timer != task.timer:
            return
        slice_end = task.slice_end
        now = self.env._now
        self._charge(task, now - task.started)
        task.started = now
        if ends or task.remaining <= _EPS:
            self._stop(task)
            g = task.group
            # goes_on is asked exactly once (a timer's wake-up runs its callbacks in it).
            goes_on = task.goes_on
            thread = task.thread
            if (
                goes_on is not None
                and goes_on()
                and thread is not None
                and thread not in self._held
            ):
                self._hold(task)
            elif not g.queue and not g.running:
                self._sleep(g)
            task.done()
            self._dispatch()
            return
        if task.budget <= _EPS and not self._draw(task):
            self._throttle(task)
            return
        if self.waiting and now >= slice_end - _EPS:
            self._slice_over(task)
            return
        self._arm(task)

    def _hold(self, task: Task) -> None:
        """Keep the core ``task`` ran on for its thread's next burst: the thread does not
        sleep, so its cgroup stays on its run queue."""
        g = task.group
        self.idle -= 1
        g.running += 1
        held = (g, task.slice_end, task.budget)
        self._held[task.thread] = held
        ev = self.env.timeout(HANDED_CORE_CLAIM_S)
        assert ev.callbacks is not None
        ev.callbacks.append(partial(self._unclaimed, task.thread, held))

    def _let_go(self, g: CGroup) -> None:
        g.running -= 1
        self.idle += 1

    def _claim(self, task: Task) -> bool:
        """Start ``task`` on the core its thread kept, in the slice it was running, unless
        its cgroup was throttled meanwhile. Whether it started."""
        held = self._held.pop(task.thread, None)
        if held is None:
            return False
        g, slice_end, budget = held
        self._let_go(g)
        if g is not task.group or g.throttled:
            if not g.queue and not g.running and g is not task.group:
                self._sleep(g)
            return False
        if g.quota_s is not None:
            task.budget = budget
        self._start(task, slice_end)
        woken = self._woken
        if not self._held:
            self._woken = []
        if task in self.running:
            for w, requeued in woken:
                wg = w.group
                if w.remaining > 0.0 and wg.queue and not wg.throttled and wg.running == 0:
                    mine, theirs = self._matching(wg, g)
                    if self._preempts(mine, theirs, task, {}, requeued):
                        self._take(task, wg.name, theirs if requeued else None)
                        break
        return True

    def _unclaimed(
        self, thread: object, held: tuple[CGroup, float, float], _ev: simpy.Event
    ) -> None:
        if self._held.get(thread) is not held:
            return
        del self._held[thread]
        if not self._held:
            self._woken.clear()
        g = held[0]
        self._let_go(g)
        if not g.queue and not g.running:
            self._sleep(g)
        self._dispatch()

    def _stop(self, task: Task) -> None:
        task.timer += 1
        self.running.remove(task)
        task.group.running -= 1
        self.idle += 1

    def _slice_over(self, task: Task) -> None:
        """``update_deadline``: a new deadline (at each level the task runs under: its slice
        was theirs too), and the core goes to whoever is owed it."""
        g = task.group
        e: Entity | None = g
        while e is not None:
            e.deadline = e.vruntime + self.base_slice_s * NICE_0_LOAD / e.weight
            e = e.parent
        task.slice_end = self.env.now + self.base_slice_s
        best = self._pick()
        if best is None:
            self._arm(task)
            return
        if best is not g:
            mine, theirs = self._matching(g, best)
            if self._eligible(mine) and (mine.deadline, mine.index) <= (
                theirs.deadline,
                theirs.index,
            ):
                self._arm(task)
                return
        self._preempt(task, "slice")

    def _preempt(self, task: Task, by: str) -> None:
        """Take ``task`` off its core for ``by`` (a wakee's cgroup, or ``slice``); it waits its
        turn again behind its cgroup's others."""
        if self.window[0] <= self.env.now < self.window[1]:
            key = (task.group.name, by)
            self.preemptions[key] = self.preemptions.get(key, 0) + 1
        self._stop(task)
        task.group.queue.append(task)
        self.waiting += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Fill the free cores with what EEVDF picks."""
        while self.idle and self.waiting:
            g = self._pick()
            if g is None:
                return
            task = g.queue.popleft()
            self.waiting -= 1
            self._start(task)
        if self.idle and self.delay_dequeue and self._rq:
            # A core that goes idle picks from its run queue: the delayed entities leave.
            self._pick()

    def _contended(self, task: Task, requeued: bool) -> None:
        """Every core is busy and ``task`` waits: wake-up preemption, and slices start to
        matter for the running tasks. ``requeued``: its waking requeued a delayed entity."""
        g = task.group
        victim: Task | None = None
        if not g.throttled and g.running == 0:
            self._update()
            # check_preempt_wakeup_fair: the wakee's and each running task's entities on a
            # common run queue, where pick_eevdf decides: the wakee's must be the one it picks
            # of those waiting (eligible, the earliest deadline), and the running one's either
            # not eligible (then neither its deadline nor its slice protects it: RUN_TO_PARITY
            # keeps a task "until it either becomes non-eligible or until it gets a new
            # slice") or eligible with a later deadline and its slice over.
            # (Each ancestor's standing once: flat, ``mine`` is ``g`` for every task.)
            latest = -math.inf
            known: dict[tuple[Entity, bool], bool] = {}
            for r in self.running:
                mine, theirs = self._matching(g, r.group)
                if theirs.deadline > latest and self._preempts(mine, theirs, r, known, requeued):
                    victim, latest = r, theirs.deadline
            if victim is None and self._held:
                # A thread keeping its core for its next burst is still the core's current
                # task: the wakee is checked against it when that burst starts (_claim).
                self._woken.append((task, requeued))
        if victim is not None:
            past = self._matching(g, victim.group)[1] if requeued else None
            self._take(victim, g.name, past)
            return
        for r in self.running:
            if r.slice_end < r.fire_at - _EPS:
                self._arm(r)

    def _take(self, victim: Task, by: str, past: Entity | None) -> None:
        """Preempt ``victim`` for the wakee's cgroup ``by``; ``past``: its entity, when the
        wakee was requeued, is past V in the pick that follows too (see _preempts)."""
        self._past = past
        self._preempt(victim, by)
        self._past = None

    def _preempts(
        self,
        mine: Entity,
        theirs: Entity,
        r: Task,
        known: dict[tuple[Entity, bool], bool],
        requeued: bool,
    ) -> bool:
        """Whether the wakee's entity ``mine`` preempts running task ``r``, whose entity on
        the same run queue is ``theirs`` (``known``: what was worked out so far for this
        wakee): as ``check_preempt_wakeup_fair``, only if ``pick_eevdf`` there would pick the
        wakee's (the eligible one with the earliest deadline of those waiting, and ahead of
        the running one unless that one is not eligible). ``requeued``: the wakee was
        delayed, and requeued before the running task was charged (``requeue_delayed_entity``
        calls no ``update_curr``, as ``enqueue_entity`` does before placing a fresh wakee);
        the check charges it (``update_curr``) for the run it was in, which puts a running
        task that was at V past it: level with V, it is not eligible."""
        ok = known.get((mine, True))
        if ok is None:
            ok = self._eligible(mine) and self._pick_in(self._rq_of(mine)) is mine
            known[mine, True] = ok
        if not ok:
            return False
        # Only an eligible running task keeps its core by its deadline or its slice.
        theirs_ok = known.get((theirs, False))
        if theirs_ok is None:
            v = self._avg_vruntime(self._rq_of(theirs))
            theirs_ok = known[theirs, False] = (
                theirs.vruntime < v - _EPS if requeued else theirs.vruntime <= v + _EPS
            )
        return not theirs_ok or (
            theirs.deadline > mine.deadline
            and not (self.run_to_parity and self.env.now < r.slice_end - _EPS)
        )
