"""Locality-aware endpoint selection, as Envoy (Istio) and Kubernetes (Linkerd) do it.

Plain state machines and functions, clock-free, shared by both clocks (DESIGN principle 1).
The semantics and their sources are in docs/mesh-semantics.md §14:

- Envoy priorities: Istio's failover puts endpoints in priorities by how much of the
  source's locality they share (region, zone). A priority's health is its healthy share
  times the overprovisioning factor 1.4, capped at 100 %; priority 0 takes load up to its
  health, the next takes what is left up to its own, and so on; when the healths add up to
  less than 100 % the loads are normalised over them (:func:`priority_loads`).
- Envoy locality weights (Istio's ``distribute``): one priority, localities picked by an EDF
  scheduler over weight x availability (availability = min(1, 1.4 x healthy share)), so
  the shares follow the weights exactly over a cycle (:class:`EdfScheduler`).
- Kubernetes topology-aware routing (what Linkerd follows): the EndpointSlice controller
  hints each endpoint for one zone, in proportion to the zones' allocatable CPU, donating
  endpoints from zones with a surplus to zones short of theirs, and sets no hints when there
  are fewer endpoints than zones or a zone would be overloaded by more than 20 %
  (:func:`allocate_hints`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = [
    "OVERLOAD_THRESHOLD",
    "OVERPROVISIONING",
    "EdfScheduler",
    "allocate_hints",
    "availability",
    "priority_loads",
]

OVERPROVISIONING = 1.4
"""Envoy's default overprovisioning factor (ClusterLoadAssignment.Policy, 140 %)."""
OVERLOAD_THRESHOLD = 0.2
"""Kubernetes' topology-aware routing safeguard: no hints if a zone would get more than 20 %
above its share of the load."""

T = TypeVar("T", bound=Hashable)


def availability(healthy: int, total: int) -> float:
    """A priority's or locality's health in [0, 1]: min(1, 1.4 x healthy / total)."""
    if total <= 0:
        return 0.0
    return min(1.0, OVERPROVISIONING * healthy / total)


def priority_loads(health: Sequence[float]) -> list[float]:
    """The share of requests each priority gets, from the priorities' health (0..1 each).

    Envoy's ``LoadBalancerBase::recalculatePriorityLoad``: priority 0 takes up to its health,
    each next one the rest up to its own; if the healths sum to less than 1 the loads are
    the healths normalised to sum to 1. All zero: no load anywhere (no healthy upstream).
    """
    total = sum(health)
    if total <= 0.0:
        return [0.0 for _ in health]
    if total < 1.0:
        return [h / total for h in health]
    left = 1.0
    loads: list[float] = []
    for h in health:
        take = min(left, h)
        loads.append(take)
        left -= take
    return loads


class EdfScheduler(Generic[T]):
    """Envoy's earliest-deadline-first weighted pick (``EdfScheduler``): each entry's next
    deadline is the current time plus 1/weight; ties go to the entry (re)added first. Over any
    run of picks each entry's count is within one of its weight's share."""

    __slots__ = ("_deadlines", "_now", "_seq", "_weights")

    def __init__(self, weights: Mapping[T, float]) -> None:
        self._weights = {k: w for k, w in weights.items() if w > 0}
        self._now = 0.0
        self._seq = 0
        self._deadlines: dict[T, tuple[float, int]] = {}
        for k, w in self._weights.items():
            self._add(k, w)

    def _add(self, key: T, weight: float) -> None:
        self._deadlines[key] = (self._now + 1.0 / weight, self._seq)
        self._seq += 1

    @property
    def weights(self) -> dict[T, float]:
        return dict(self._weights)

    def pick(self) -> T | None:
        if not self._deadlines:
            return None
        best = min(self._deadlines, key=self._deadlines.__getitem__)
        self._now = self._deadlines[best][0]
        self._add(best, self._weights[best])
        return best


def allocate_hints(
    endpoints: Sequence[tuple[T, str]], zone_cpu: Mapping[str, float]
) -> dict[T, str] | None:
    """Each endpoint's hinted zone, or None when Kubernetes would set no hints.

    ``endpoints``: (endpoint, its zone) in creation order; ``zone_cpu``: each zone's
    allocatable CPU (only zones with ready nodes). Endpoints stay in their own zone unless it
    has more than its share; surplus ones (the newest first) go to the zones furthest below
    theirs.
    """
    zones = [z for z, cpu in zone_cpu.items() if cpu > 0]
    n = len(endpoints)
    if not zones or n < len(zones):
        return None
    total_cpu = sum(zone_cpu[z] for z in zones)
    expected = {z: n * zone_cpu[z] / total_cpu for z in zones}
    # Whole endpoints per zone by largest remainder, ties in the zones' order.
    target = {z: math.floor(expected[z]) for z in zones}
    rest = n - sum(target.values())
    for z in sorted(zones, key=lambda z: -(expected[z] - target[z]))[:rest]:
        target[z] += 1
    by_zone: dict[str, list[T]] = {z: [] for z in zones}
    homeless: list[T] = []
    for ep, zone in endpoints:
        by_zone.get(zone, homeless).append(ep)
    hints: dict[T, str] = {}
    spare: list[T] = list(homeless)
    for z in zones:
        keep = by_zone[z][: target[z]]
        spare.extend(by_zone[z][target[z] :])
        for ep in keep:
            hints[ep] = z
    for z in sorted(zones, key=lambda z: len(by_zone[z]) - target[z]):
        while sum(1 for h in hints.values() if h == z) < target[z] and spare:
            hints[spare.pop()] = z
    for z in zones:
        given = sum(1 for h in hints.values() if h == z)
        if given == 0 or expected[z] / given > 1.0 + OVERLOAD_THRESHOLD:
            return None
    return hints
