"""How Linux splits a task group's weight between its entities on each CPU.

With a run queue per CPU (:mod:`meshsim.sim.cpu.percpu`) a cgroup has an entity on each
CPU's run queue, and the kernel gives each a part of the group's weight by how much of the
group's load is on that CPU (``calc_group_shares``)::

    load   = max(runnable weight on this CPU now, its average)
    shares = weight x load / (the group's average load on the other CPUs + load)

clamped to [``MIN_SHARES``, weight]. So a group runnable on one CPU at a time keeps its
whole weight there, and one busy on two CPUs at once weighs about half on each: together
what one entity of it would weigh. The averages are PELT's (a 32 ms half-life), and a task
that moves takes its own average with it (``attach_entity_load_avg``). Here a group's load
is counted in runnable tasks (each nice 0, as every container's thread is) rather than in
its children's weights; the averages are exact exponentials of the runnable count rather
than PELT's 1 ms steps; a task that moves takes one task's worth of its group's average
(or all of it, if less), where the kernel moves the task's own; and a group's share is set
as its entity joins a CPU's run queue and at the ticks while the CPU is contended (the
kernel also updates it at each enqueue and dequeue under it).
"""

from __future__ import annotations

import math

__all__ = ["MIN_SHARES", "PELT_HALF_LIFE_S", "CpuLoads"]

PELT_HALF_LIFE_S = 0.032
"""PELT's half-life: a load average decays by half in 32 ms (y^32 = 1/2)."""
MIN_SHARES = 2.0
"""The least weight a group's entity on a CPU gets (``MIN_SHARES``)."""
_TAU_S = PELT_HALF_LIFE_S / math.log(2.0)


class CpuLoads:
    """A group's runnable tasks on each CPU, now and averaged, and over all its CPUs (the
    sum of the averages is itself one average of the total, so the other CPUs' load is
    the total's less this one's, without visiting them)."""

    __slots__ = ("avg", "nr", "stamp", "total", "total_nr", "total_stamp")

    def __init__(self, cpus: int) -> None:
        self.avg = [0.0] * cpus
        self.nr = [0] * cpus
        self.stamp = [0.0] * cpus
        self.total = 0.0
        self.total_nr = 0
        self.total_stamp = 0.0

    def add(self, c: int, now: float, k: int) -> None:
        """``k`` more (or fewer) of its tasks runnable on ``c`` from ``now``."""
        # Both averages brought to now first (inline: on every burst's path).
        dt = now - self.stamp[c]
        if dt > 0.0:
            n = self.nr[c]
            self.avg[c] = n + (self.avg[c] - n) * math.exp(-dt / _TAU_S)
            self.stamp[c] = now
        self.nr[c] += k
        dt = now - self.total_stamp
        if dt > 0.0:
            n = self.total_nr
            self.total = n + (self.total - n) * math.exp(-dt / _TAU_S)
            self.total_stamp = now
        self.total_nr += k

    def move(self, src: int, dst: int, now: float, load: float) -> None:
        """A task's average ``load`` moves from ``src`` to ``dst`` with it."""
        self.add(src, now, 0)
        self.add(dst, now, 0)
        moved = min(load, self.avg[src])
        self.avg[src] -= moved
        self.avg[dst] += moved

    def share(self, weight: float, c: int, now: float) -> float:
        """``calc_group_shares``: the part of ``weight`` its entity on ``c`` gets."""
        self.add(c, now, 0)
        return self._share(weight, c)

    def wake(self, c: int, now: float, weight: float) -> float:
        """One more task runnable on ``c`` from ``now`` (:meth:`add`), and the share of
        ``weight`` that its entity there gets (:meth:`share`), in one step."""
        self.add(c, now, 1)
        return self._share(weight, c)

    def _share(self, weight: float, c: int) -> float:
        avg = self.avg[c]
        nr = self.nr[c]
        load = nr if nr > avg else avg
        others = self.total - avg
        # Within the kernel's own rounding of the other CPUs' load (it updates a group's
        # total only when a CPU's part moves by 1/64).
        if others * 64.0 <= load:
            return weight
        return min(max(weight * load / (others + load), MIN_SHARES), weight)
