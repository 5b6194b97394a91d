"""A node's host as the scenario describes it: the speed of its phases and how long it takes
to wake a sleeping thread (``cluster.host_speed`` and ``cluster.wakeup_latency``; the
simulator's side is :mod:`meshsim.sim.cpu.host_speed` and :mod:`meshsim.sim.cpu.wakeup_latency`).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise
from typing import Annotated

from pydantic import Field, model_validator

from meshsim.scenario.base import NonNegativeFloat, Spec


class HostSpeed(Spec):
    """How fast a node's host runs its cores, over time: fast and slow phases.

    A node on a shared host (a cloud VM, a busy SMT sibling, a noisy neighbour) does not run
    at one speed: while the host is busy its CPU work takes longer, for phases of tens of
    milliseconds. Two ways to say how:

    - two states: ``slow_factor`` times its CPU cost while slow, ``fast_factor`` otherwise,
      in phases of exponential length (a two-state Markov process, one per node);
    - a measured ``trace``: the multiple in each bin of ``trace_bin_ms``, replayed in a loop
      from a random point (the calibration lab's own, meshsim/calibrate/host_phases.py).

    A CPU burst runs at the speed of the moment it starts (bursts are tens to hundreds of
    microseconds, phases tens of milliseconds).
    """

    slow_factor: Annotated[float, Field(gt=0, le=100)] | None = Field(
        None, description="A CPU burst's duration in the slow state, as a multiple of its CPU cost."
    )
    slow_share: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None, description="Share of time the host spends in the slow state (0: never)."
    )
    slow_dwell_ms: Annotated[float, Field(gt=0, le=1e6)] | None = Field(
        None,
        description="Mean length of a slow phase (ms); fast phases then last "
        "slow_dwell_ms x (1 - slow_share) / slow_share on average.",
    )
    fast_factor: Annotated[float, Field(gt=0, le=100)] = Field(
        1.0,
        description="A CPU burst's duration in the fast state, as a multiple of its CPU cost "
        "(below 1 when the costs are averages over both states, as measured ones are).",
    )
    trace: (
        Annotated[
            list[Annotated[float, Field(gt=0, le=100)]], Field(min_length=1, max_length=1_000_000)
        ]
        | None
    ) = Field(
        None,
        description="Instead of two states: the multiple of its CPU cost a burst takes, bin "
        "by bin (a measured series, replayed in a loop from a random point).",
    )
    trace_bin_ms: Annotated[float, Field(gt=0, le=1e6)] = Field(
        1.0, description="The length of one bin of 'trace' (ms)."
    )
    spells: HostSpeed | None = Field(
        None,
        description="A second, slower process of two states whose factor multiplies this "
        "one's: spells of a few hundred milliseconds in which the core runs 1.4-1.6 times "
        "slower (the calibration lab's core 1 had one every few seconds), on top of the "
        "phases of tens of milliseconds. Two states only: no trace, no spells of its own.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> HostSpeed:
        if self.spells is not None and (
            self.spells.trace is not None or self.spells.spells is not None
        ):
            raise ValueError("spells are two states (slow_*): no trace and no spells of their own")
        two = (self.slow_factor, self.slow_share, self.slow_dwell_ms)
        if self.trace is not None:
            if any(v is not None for v in two):
                raise ValueError("give either a trace or the two states (slow_*), not both")
        elif any(v is None for v in two):
            raise ValueError(
                "give slow_factor, slow_share and slow_dwell_ms (two states), or a trace"
            )
        return self

    def mean_factor(self) -> float:
        """The time-average multiple of CPU cost a burst takes (the spells are independent
        of the phases: the means multiply)."""
        spells = 1.0 if self.spells is None else self.spells.mean_factor()
        if self.trace is not None:
            return spells * sum(self.trace) / len(self.trace)
        assert self.slow_share is not None
        assert self.slow_factor is not None
        phases = (1.0 - self.slow_share) * self.fast_factor + self.slow_share * self.slow_factor
        return spells * phases


class WakeupLatency(Spec):
    """How long a node's host takes to run a thread that a message woke.

    An event loop with nothing to do sleeps in ``epoll_wait``; the message that wakes it
    reaches its socket at once, but the thread runs only when the kernel has sent the core an
    interrupt, the core has left its idle state and switched the thread in (on a VM, also when
    the hypervisor runs the vCPU). On a quiet host that is tens of microseconds; on a busy
    shared one its tail reaches milliseconds (the calibration lab measured a loopback hop's
    p99 at 0.1 ms and, an hour later, 1.8 ms). A proxy's burst of work that finds its worker
    asleep waits one draw of this first (a burst arriving while the worker is being woken
    rides that wake-up); a busy worker picks the next message up without one.

    Given as percentiles of the latency: between two of them the latency is interpolated
    linearly, below the lowest given it is that value and above the highest that value (give
    0 and 100 to bound the range). It replaces the proxy model's own ``wakeup_latency_us``
    (the typical wake-up on the host where the model was measured); with a model that does
    not separate it (no ``wakeup_latency_us``), its ``hop_latency_us`` already holds a typical
    wake-up and this adds to it. Apps' wake-ups are not modelled: a mesh adds the proxies'.
    """

    percentiles_us: Annotated[
        dict[Annotated[float, Field(ge=0, le=100)], NonNegativeFloat],
        Field(min_length=1, max_length=10_000),
    ] = Field(description="Latency (µs) at each percentile, e.g. {50: 35, 99: 120, 99.9: 900}.")

    @model_validator(mode="after")
    def _rising(self) -> WakeupLatency:
        pairs = sorted(self.percentiles_us.items())
        for (p0, v0), (p1, v1) in pairwise(pairs):
            if v1 < v0:
                raise ValueError(
                    f"percentiles_us falls from {v0:g} µs at p{p0:g} to {v1:g} µs at p{p1:g}: "
                    "a latency's percentiles cannot fall"
                )
        return self

    def _points(self) -> list[tuple[float, float]]:
        return sorted(self.percentiles_us.items())

    def latency_us(self, percent: float) -> float:
        """The latency at ``percent``: linear between the percentiles given, flat beyond."""
        pts = self._points()
        i = bisect_right([p for p, _ in pts], percent)
        if i == 0:
            return pts[0][1]
        if i == len(pts):
            return pts[-1][1]
        (p0, v0), (p1, v1) = pts[i - 1], pts[i]
        return v0 + (v1 - v0) * (percent - p0) / (p1 - p0)

    def mean_us(self) -> float:
        """The distribution's mean: the trapezoids between the percentiles given, and the
        flat ends below the lowest and above the highest."""
        pts = self._points()
        inner = sum((p1 - p0) * (v0 + v1) / 2.0 for (p0, v0), (p1, v1) in pairwise(pts))
        return (pts[0][0] * pts[0][1] + inner + (100.0 - pts[-1][0]) * pts[-1][1]) / 100.0
