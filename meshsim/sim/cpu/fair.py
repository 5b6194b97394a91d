"""A node's cores as Linux's fair scheduler shares them (EEVDF, Linux 6.6 and later).

The runnable entities are cgroups (:class:`CGroup`: a container, its app or its proxy) with
weights from their CPU requests, and inside each, the bursts (:class:`Task`) of its threads.

- **Pick**: among the cgroups with work waiting, the *eligible* one (its vruntime at or
  below the weighted average of the runnable cgroups', i.e. it is owed CPU) with the
  earliest *virtual deadline* (vruntime + slice x 1024 / weight); with none eligible, the
  earliest deadline (a free core never idles while work waits). This is EEVDF's
  ``pick_eevdf``; CFS before 6.6 took the smallest vruntime, with the same weights.
- **Slices**: a task keeps its core for one base slice (``sched_base_slice``) while others
  wait, then the pick is made again (``update_deadline``). Inside a cgroup its tasks take
  turns (round robin with that slice), which for slices short beside the bursts is
  processor sharing, as for threads of equal weight.
- **Wake-up preemption**: a burst that wakes while every core is busy preempts the running
  task whose cgroup has the latest deadline, if its own cgroup is eligible with an earlier
  deadline, unless RUN_TO_PARITY protects that task until its slice ends (the kernel's
  default since 6.6).
- **Lag**: a cgroup that sleeps keeps its lag (V - vruntime, clamped to two slices or a tick
  in its virtual time) and is placed at V - lag when it wakes (``place_entity``).
- **Bandwidth control** (a CPU limit): a cgroup with quota q per period P draws runtime
  from its pool in 5 ms pieces (``sched_cfs_bandwidth_slice_us``), as each CPU's run queue
  does; when a piece is spent and the pool is empty the cgroup is throttled: its running
  tasks leave their cores and none of its tasks runs until the next period refills the
  pool. Periods are counted (``nr_periods``, a period in which it drew runtime), so are
  throttled periods (``nr_throttled``) and the time spent throttled (``throttled_s``).

The simplification (docs/DESIGN.md): one run queue per node served by its ``c`` cores,
where Linux keeps one per core and migrates tasks between them (idle cores pull work at
once, ``newidle_balance``); with bursts far shorter than the balancing intervals, a
global queue is the usual approximation. Group entities are one level (a container's
cgroup under the node), not Kubernetes' pod and QoS levels.

Cost in the simulator: a burst that finds a core free and nothing waiting costs one
timeout, as in the FCFS model; slices, preemption and bandwidth pieces add events only
while work waits or a limit is set.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from functools import partial

import simpy

NICE_0_LOAD = 1024.0
"""The weight of a nice-0 task, the unit of vruntime: a cgroup of weight w ages 1024 / w
virtual seconds per second it runs."""
BANDWIDTH_SLICE_S = 0.005
"""sched_cfs_bandwidth_slice_us default: runtime moves from the pool in 5 ms pieces."""
TICK_S = 0.004
"""One scheduler tick at CONFIG_HZ=250 (Debian's and Ubuntu's generic kernels)."""
_EPS = 1e-12


def default_base_slice_s(cores: int) -> float:
    """0.75 ms scaled by 1 + log2(min(cores, 8)), the kernel's SCHED_TUNABLESCALING_LOG."""
    return 0.00075 * (1 + int(math.log2(min(max(cores, 1), 8))))


class CGroup:
    """A container's cgroup on one node: weight, quota, fairness state and counters."""

    __slots__ = (
        "cpu_s", "deadline", "index", "lag", "name", "nr_periods", "nr_throttled",
        "on_rq", "period_idx", "period_s", "pool_s", "queue", "quota_s", "running",
        "threads", "throttled", "throttled_at", "throttled_s", "vruntime", "weight",
    )  # fmt: skip

    def __init__(
        self, name: str, weight: float, index: int, quota_s: float | None, period_s: float
    ) -> None:
        self.name = name
        self.weight = weight
        """Kernel load weight: cpu.weight x 1024 / 100."""
        self.index = index
        self.quota_s = quota_s
        """Runtime per period (None: no limit)."""
        self.period_s = period_s
        self.threads: int | None = None
        """How many cores its container can use at once (a proxy's workers, an app's
        concurrency; None: not bounded, a client's load generator)."""
        self.vruntime = 0.0
        self.deadline = 0.0
        self.lag = 0.0
        self.on_rq = False
        self.queue: deque[Task] = deque()
        """Tasks waiting for a core, in turn order."""
        self.running = 0
        self.pool_s = 0.0
        self.period_idx = -1
        self.throttled = False
        self.throttled_at = 0.0
        self.cpu_s = 0.0
        self.nr_periods = 0
        self.nr_throttled = 0
        self.throttled_s = 0.0

    # Bandwidth control's bookkeeping, the same under either picker (meshsim.sim.cpu.bandwidth
    # for FCFS cores). ``window`` is the measurement window [from, until) the counters count in.

    def refill(self, now: float, window: tuple[float, float]) -> None:
        """A new period's quota, if ``now`` is in a later period than the last refill."""
        idx = int(now / self.period_s + 1e-9)
        if idx > self.period_idx:
            self.period_idx = idx
            self.pool_s = self.quota_s or 0.0
            if window[0] <= now < window[1]:
                self.nr_periods += 1

    def throttle(self, now: float, window: tuple[float, float]) -> float:
        """Throttled now, its pool spent: the delay to the next period's refill."""
        self.throttled = True
        self.throttled_at = now
        if window[0] <= now < window[1]:
            self.nr_throttled += 1
        return max((self.period_idx + 1) * self.period_s - now, 0.0)

    def unthrottle(self, now: float, window: tuple[float, float]) -> None:
        """The refill that ends a throttle (a period of its own, counted)."""
        self.throttled = False
        self.throttled_s += max(min(now, window[1]) - max(self.throttled_at, window[0]), 0.0)
        self.period_idx += 1
        self.pool_s = self.quota_s or 0.0
        if window[0] <= now < window[1]:
            self.nr_periods += 1

    def count_cpu(self, now: float, ran: float, window: tuple[float, float]) -> None:
        """``ran`` seconds of CPU that ended ``now``, the part inside the window."""
        if now > window[0]:
            self.cpu_s += max(min(now, window[1]) - max(now - ran, window[0]), 0.0)


class Task:
    """One CPU burst of one thread: it runs ``remaining`` seconds, then calls ``done``."""

    __slots__ = (
        "budget", "done", "fire_at", "group", "remaining", "slice_end", "started", "timer",
    )  # fmt: skip

    def __init__(self, remaining: float, group: CGroup, done: Callable[[], None]) -> None:
        self.remaining = remaining
        self.group = group
        self.done = done
        self.started = 0.0
        self.slice_end = math.inf
        self.budget = math.inf if group.quota_s is None else 0.0
        """Bandwidth runtime drawn and not yet spent (inf: no limit)."""
        self.fire_at = math.inf
        self.timer = 0
        """Bumped whenever the task's pending timer stops meaning anything."""


def _succeed(ev: simpy.Event) -> None:
    ev.succeed()


class FairScheduler:
    """The cores of one node under EEVDF with CFS bandwidth control."""

    def __init__(
        self,
        env: simpy.Environment,
        cores: int,
        *,
        base_slice_s: float | None = None,
        run_to_parity: bool = True,
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
        self.window = (count_from_s, count_until_s)
        """CPU, period and throttling counters count in [from, until): the window."""
        self.running: list[Task] = []
        self.groups: list[CGroup] = []
        self._rq: list[CGroup] = []
        """Cgroups with a task waiting or running."""
        self.waiting = 0

    def group(
        self, name: str, weight: float, quota_s: float | None = None, period_s: float = 0.1
    ) -> CGroup:
        g = CGroup(name, weight, len(self.groups), quota_s, period_s)
        self.groups.append(g)
        return g

    # ----------------------------------------------------------------- submitting

    def run(self, cpu_s: float, group: CGroup) -> simpy.Event:
        """An event that fires when ``cpu_s`` of CPU has run for ``group``."""
        ev = self.env.event()
        self.submit(cpu_s, group, partial(_succeed, ev))
        return ev

    def submit(self, cpu_s: float, group: CGroup, done: Callable[[], None]) -> None:
        """Run ``cpu_s`` for ``group``, then call ``done`` (no process needed)."""
        task = Task(cpu_s, group, done)
        if not group.on_rq:
            self._place(group)
        if self.idle and not self.waiting and not group.throttled:
            self._start(task)
            return
        group.queue.append(task)
        self.waiting += 1
        if self.idle:
            self._dispatch()
        else:
            self._contended(task)

    # ----------------------------------------------------------------- fairness

    def _update(self) -> None:
        """Charge every running task for the time since it was last charged."""
        now = self.env.now
        for task in self.running:
            ran = now - task.started
            if ran > 0.0:
                self._charge(task, ran)
                task.started = now

    def _charge(self, task: Task, ran: float) -> None:
        g = task.group
        task.remaining -= ran
        task.budget -= ran
        g.vruntime += ran * NICE_0_LOAD / g.weight
        if g.vruntime >= g.deadline:
            # update_deadline, as the ticks would have done it meanwhile: a new deadline
            # one slice after the last, and the slice that began there protects the task.
            slice_v = self.base_slice_s * NICE_0_LOAD / g.weight
            g.deadline += slice_v * (math.floor((g.vruntime - g.deadline) / slice_v) + 1)
            task.slice_end = self.env.now + (g.deadline - g.vruntime) * g.weight / NICE_0_LOAD
        g.count_cpu(self.env.now, ran, self.window)

    def _avg_vruntime(self) -> float:
        rq = self._rq
        if not rq:
            return 0.0
        total_w = 0.0
        total = 0.0
        base = rq[0].vruntime
        for g in rq:
            total_w += g.weight
            total += g.weight * (g.vruntime - base)
        return base + total / total_w

    def _lag_limit(self, g: CGroup) -> float:
        return max(2.0 * self.base_slice_s, TICK_S) * NICE_0_LOAD / g.weight

    def _place(self, g: CGroup) -> None:
        """``place_entity``: a waking cgroup keeps the lag it had when it slept."""
        if self._rq:
            if self.running:
                self._update()
            # The lag is scaled so that it is still the lag once g's own weight is in the
            # average (place_entity: lag x (W + w) / W).
            total_w = sum(e.weight for e in self._rq)
            g.vruntime = self._avg_vruntime() - g.lag * (total_w + g.weight) / total_w
        g.deadline = g.vruntime + self.base_slice_s * NICE_0_LOAD / g.weight
        g.on_rq = True
        self._rq.append(g)

    def _sleep(self, g: CGroup) -> None:
        """The cgroup has no task left: it leaves the run queue, remembering its lag."""
        g.on_rq = False
        if len(self._rq) == 1:
            # Alone, it is at the average: no lag (and no one else's time to charge).
            g.lag = 0.0
            self._rq.clear()
            return
        if self.running:
            self._update()
        v = self._avg_vruntime()
        limit = self._lag_limit(g)
        g.lag = min(max(v - g.vruntime, -limit), limit)
        self._rq.remove(g)

    def _pick(self) -> CGroup | None:
        """The waiting, unthrottled cgroup EEVDF runs next (None: nothing can run)."""
        if self.running:
            self._update()
        v = self._avg_vruntime()
        best: CGroup | None = None
        best_any: CGroup | None = None
        for g in self._rq:
            if not g.queue or g.throttled:
                continue
            if best_any is None or (g.deadline, g.index) < (best_any.deadline, best_any.index):
                best_any = g
            if g.vruntime <= v + _EPS and (
                best is None or (g.deadline, g.index) < (best.deadline, best.index)
            ):
                best = g
        return best if best is not None else best_any

    # ----------------------------------------------------------------- cores

    def _start(self, task: Task) -> None:
        now = self.env.now
        self.idle -= 1
        self.running.append(task)
        task.group.running += 1
        task.started = now
        task.slice_end = now + self.base_slice_s
        if task.group.quota_s is not None and task.budget <= _EPS and not self._draw(task):
            self._throttle(task)
            return
        self._arm(task)

    def _arm(self, task: Task) -> None:
        """The task's next event: its end, its bandwidth piece spent, or (while others
        wait) its slice's end."""
        now = self.env.now
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
        ran = self.env.now - task.started
        self._charge(task, ran)
        task.started = self.env.now
        if ends or task.remaining <= _EPS:
            self._stop(task)
            g = task.group
            if not g.queue and not g.running:
                self._sleep(g)
            task.done()
            self._dispatch()
            return
        if task.budget <= _EPS and not self._draw(task):
            self._throttle(task)
            return
        if self.waiting and self.env.now >= slice_end - _EPS:
            self._slice_over(task)
            return
        self._arm(task)

    def _stop(self, task: Task) -> None:
        task.timer += 1
        self.running.remove(task)
        task.group.running -= 1
        self.idle += 1

    def _slice_over(self, task: Task) -> None:
        """``update_deadline``: a new deadline, and the core goes to whoever is owed it."""
        g = task.group
        g.deadline = g.vruntime + self.base_slice_s * NICE_0_LOAD / g.weight
        task.slice_end = self.env.now + self.base_slice_s
        best = self._pick()
        if best is None or (
            best is not g
            and g.vruntime <= self._avg_vruntime() + _EPS
            and (g.deadline, g.index) <= (best.deadline, best.index)
        ):
            self._arm(task)
            return
        self._preempt(task)

    def _preempt(self, task: Task) -> None:
        """Take ``task`` off its core; it waits its turn again behind its cgroup's others."""
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

    def _contended(self, task: Task) -> None:
        """Every core is busy and ``task`` waits: wake-up preemption, and slices start to
        matter for the running tasks."""
        now = self.env.now
        g = task.group
        victim: Task | None = None
        if not g.throttled and g.running == 0:
            self._update()
            v = self._avg_vruntime()
            if g.vruntime <= v + _EPS:
                for r in self.running:
                    rg = r.group
                    if rg.deadline > g.deadline and (
                        victim is None or rg.deadline > victim.group.deadline
                    ):
                        victim = r
                if victim is not None and self.run_to_parity and now < victim.slice_end - _EPS:
                    victim = None
        if victim is not None:
            self._preempt(victim)
            return
        for r in self.running:
            if r.slice_end < r.fire_at - _EPS:
                self._arm(r)

    # ----------------------------------------------------------------- bandwidth

    def _draw(self, task: Task) -> bool:
        """Draw the next piece of runtime from the pool; False when the pool is empty."""
        g = task.group
        assert g.quota_s is not None
        g.refill(self.env.now, self.window)
        if g.pool_s <= _EPS:
            return False
        piece = min(task.remaining, BANDWIDTH_SLICE_S, g.pool_s)
        g.pool_s -= piece
        task.budget = piece
        return True

    def _throttle(self, task: Task) -> None:
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
                g.pool_s += max(r.budget, 0.0)
                r.budget = 0.0
                g.queue.appendleft(r)
                self.waiting += 1
            ev = self.env.timeout(wait)
            assert ev.callbacks is not None
            ev.callbacks.append(partial(self._unthrottle, g))
        self._dispatch()

    def _unthrottle(self, g: CGroup, _ev: simpy.Event) -> None:
        g.unthrottle(self.env.now, self.window)
        self._dispatch()
