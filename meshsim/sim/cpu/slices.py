"""The fair scheduler's base slice as Linux sets it (``sysctl_sched_base_slice``): a default
per kernel release, scaled by the CPUs the kernel sees (SCHED_TUNABLESCALING_LOG). The fair
scheduler (:mod:`meshsim.sim.cpu.fair`) takes it where a scenario names none, the FCFS cores
run on for as long, and the calibration lab reads its kernel's own (``se.slice``)."""

from __future__ import annotations

import math
import re

__all__ = [
    "BASE_SLICE_S",
    "EEVDF_FIRST_BASE_SLICE_S",
    "default_base_slice_s",
    "kernel_base_slice_s",
]

BASE_SLICE_S = 0.0007
"""``sysctl_sched_base_slice`` before scaling: 0.70 ms since Linux 6.15 and in the 6.12
stable series since May 2025 (commit 2ae891b82695, "sched: Reduce the default slice to avoid
tasks getting an extra tick": a slice that is a whole number of ticks ran into one tick
more). EEVDF's first releases, 6.6 to 6.14, had CFS's 0.75 ms
(:data:`EEVDF_FIRST_BASE_SLICE_S`). The calibration lab's kernels (6.18) show 1.4 ms on two
CPUs in ``/proc/self/sched``'s ``se.slice``."""
EEVDF_FIRST_BASE_SLICE_S = 0.00075


def default_base_slice_s(cores: int, base_s: float = BASE_SLICE_S) -> float:
    """``base_s`` scaled by 1 + log2(min(cores, 8)), the kernel's SCHED_TUNABLESCALING_LOG."""
    return base_s * (1 + int(math.log2(min(max(cores, 1), 8))))


def kernel_base_slice_s(release: str, cores: int) -> float:
    """The default base slice of kernel ``release`` (``uname -r``) on ``cores`` CPUs: 0.75 ms
    scaled before 6.15, 0.70 ms from it (a 6.12 stable kernel with the backport cannot be
    told from its release: read ``se.slice`` where the kernel is at hand)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        return default_base_slice_s(cores)
    old = (int(m[1]), int(m[2])) < (6, 15)
    return default_base_slice_s(cores, EEVDF_FIRST_BASE_SLICE_S if old else BASE_SLICE_S)
