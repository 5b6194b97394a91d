"""What a node asks of its cores' fair scheduler, whether one run queue serves them all
(:class:`meshsim.sim.cpu.fair.FairScheduler`) or each CPU has its own
(:class:`meshsim.sim.cpu.percpu.PerCpuScheduler`): ``cluster.run_queues``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import simpy


class CGroupView(Protocol):
    """A container's cgroup as a node and the results see it."""

    threads: int | None

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def quota_s(self) -> float | None: ...
    @property
    def period_s(self) -> float: ...
    @property
    def parent(self) -> object: ...
    @property
    def cpu_s(self) -> float: ...
    @property
    def nr_periods(self) -> int: ...
    @property
    def nr_throttled(self) -> int: ...
    @property
    def throttled_s(self) -> float: ...


class NodeCores(Protocol):
    """A node's cores under the fair scheduler. The group arguments are what the same
    scheduler's :meth:`group` and :meth:`parent_group` returned."""

    @property
    def cores(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def groups(self) -> Sequence[CGroupView]: ...
    @property
    def preemptions(self) -> dict[tuple[str, str], int]: ...

    def group(
        self,
        name: str,
        weight: float,
        quota_s: float | None = None,
        period_s: float = 0.1,
        parent: Any = None,
    ) -> CGroupView: ...

    def parent_group(self, name: str, weight: float, parent: Any = None) -> Any: ...

    def reweight(self, e: Any, weight: float) -> None: ...

    def run(
        self,
        cpu_s: float,
        group: Any,
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> simpy.Event: ...

    def submit(
        self,
        cpu_s: float,
        group: Any,
        done: Callable[[], object],
        thread: object = None,
        goes_on: Callable[[], bool] | None = None,
    ) -> None: ...
