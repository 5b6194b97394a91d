"""A node's host speed over time: fast and slow phases (``cluster.host_speed``).

On a shared host a core's speed is not constant. The calibration lab's two cores (a cloud
VM) alternate between a fast state and one 1.7-2x slower, in phases of tens of milliseconds
(meshsim/calibrate/host_phases.py measures them), and a run's tail latency comes from those phases
more than from anything per request: while the host is slow, a core's capacity falls, a
queue builds, and every request behind it waits. A constant speed cannot produce that.

The model is a two-state Markov process per node (phases of exponential length, slow with
mean ``slow_dwell_ms`` and fast with the mean that gives the slow state its share of time),
or a measured trace replayed in a loop (the calibration lab's); with ``spells``, a second
two-state process of longer phases (hundreds of milliseconds) multiplies it.
The processes set ``node.speed``, the multiple of its CPU cost that a burst takes; both
schedulers read it when a burst starts running (FCFS) or is submitted (the fair scheduler).
A burst keeps the speed it started with: bursts last tens to hundreds of microseconds, a
phase tens of milliseconds, so few straddle a change.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

if TYPE_CHECKING:
    from meshsim.scenario.host import HostSpeed
    from meshsim.sim.cluster import Node


def fast_dwell_ms(spec: HostSpeed) -> float:
    """Mean length of a fast phase: the one that gives the slow state ``slow_share``."""
    assert spec.slow_dwell_ms is not None
    assert spec.slow_share
    return spec.slow_dwell_ms * (1.0 - spec.slow_share) / spec.slow_share


class _Speed:
    """A node's speed as the product of its phases' factor and its spells'."""

    __slots__ = ("node", "phase", "spell")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.phase = 1.0
        self.spell = 1.0

    def set_phase(self, factor: float) -> None:
        self.phase = factor
        self.node.speed = factor * self.spell

    def set_spell(self, factor: float) -> None:
        self.spell = factor
        self.node.speed = self.phase * factor


def start(env: simpy.Environment, node: Node, spec: HostSpeed, rng: np.random.Generator) -> None:
    """Run ``node``'s host speed processes from now on: a trace from a random bin, two states
    from a state drawn with the stationary shares (either way, a run starts as the host
    would be at a random moment), and the spells likewise."""
    speed = _Speed(node)
    spells = spec.spells
    if spells is not None:
        if spells.slow_share:
            # Their own stream (spawned: the phases' draws are the same with or without them).
            own = rng.spawn(1)[0]
            env.process(_phases(env, node, spells, own, speed.set_spell, count=False))
        else:
            speed.set_spell(spells.fast_factor)
    if spec.trace is not None:
        env.process(_replay(env, speed.set_phase, spec.trace, spec.trace_bin_ms * 1e-3, rng))
    elif not spec.slow_share:
        speed.set_phase(spec.fast_factor)
    else:
        env.process(_phases(env, node, spec, rng, speed.set_phase, count=True))


def _phases(
    env: simpy.Environment,
    node: Node,
    spec: HostSpeed,
    rng: np.random.Generator,
    set_speed: Callable[[float], None],
    *,
    count: bool,
) -> Generator[simpy.Event, Any, None]:
    assert spec.slow_factor is not None
    assert spec.slow_dwell_ms is not None
    slow_mean_s = spec.slow_dwell_ms * 1e-3
    fast_mean_s = fast_dwell_ms(spec) * 1e-3
    slow = bool(rng.random() < (spec.slow_share or 0.0))
    while True:
        set_speed(spec.slow_factor if slow else spec.fast_factor)
        if slow and count:
            node.slow_phases += 1
        yield env.timeout(rng.exponential(slow_mean_s if slow else fast_mean_s))
        slow = not slow


def _replay(
    env: simpy.Environment,
    set_speed: Callable[[float], None],
    trace: list[float],
    bin_s: float,
    rng: np.random.Generator,
) -> Generator[simpy.Event, Any, None]:
    i = int(rng.integers(len(trace)))
    tick = env.timeout  # one event per bin: 1 ms bins cost 1000 events per simulated second
    while True:
        set_speed(trace[i])
        yield tick(bin_s)
        i = i + 1 if i + 1 < len(trace) else 0
