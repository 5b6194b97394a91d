"""Envoy circuit-breaker thresholds as counters (docs/mesh-semantics.md §2.1, §2.2, §1.2).

One :class:`CircuitBreaker` stands for one Envoy cluster (per client proxy, per destination
cluster or subset, per priority): the thresholds are summed over all hosts of the cluster,
not per host (§2.2 "Semantic caveat"). The caller decides what an overflow means:

* ``CONNECTIONS`` overflow: no new connection; the request waits in the pending queue;
* ``PENDING_REQUESTS`` or ``REQUESTS`` overflow: a local 503 UO with ``x-envoy-overloaded``
  (use :meth:`meshsim.policy.outcome.Outcome.overflow`), never retried;
* ``RETRIES`` overflow: the retry is skipped and the original failure returned
  (:class:`meshsim.policy.retry.RetryState` does this for you).

Envoy's counters are shared by worker threads through atomics and may briefly overshoot;
these counters are exact (the simulator and the proxy drive them from one thread).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshsim.policy.budget import EnvoyRetryBudget

__all__ = ["MAX_UINT32", "CircuitBreaker", "Resource", "Thresholds"]

MAX_UINT32 = 2**32 - 1
"""Istio's value for every threshold a DestinationRule leaves unset (§2.2)."""


class Resource(enum.Enum):
    """The four per-cluster resources Envoy counts."""

    CONNECTIONS = "max_connections"
    PENDING_REQUESTS = "max_pending_requests"
    REQUESTS = "max_requests"
    RETRIES = "max_retries"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``CircuitBreakers.Thresholds`` for one priority.

    The bare constructor gives raw Envoy's defaults (1024 / 1024 / 1024 / 3, §2.1);
    :meth:`istio_default` gives what istiod programs with no DestinationRule.
    """

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget: EnvoyRetryBudget | None = None
    """If set, overrides ``max_retries`` (§1.2)."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @classmethod
    def envoy_default(cls) -> Thresholds:
        """Raw Envoy: 1024 connections, 1024 pending, 1024 requests, 3 retries (§2.1)."""
        return cls()

    @classmethod
    def istio_default(cls, *, retry_budget: EnvoyRetryBudget | None = None) -> Thresholds:
        """Istio with no DestinationRule connectionPool: every threshold 2^32-1 (§2.2, §1.3).

        ``retry_budget`` models a DR ``trafficPolicy.retryBudget``.
        """
        return cls(MAX_UINT32, MAX_UINT32, MAX_UINT32, MAX_UINT32, retry_budget)

    def limit(self, resource: Resource) -> int:
        """The static limit of ``resource`` (for RETRIES, ignoring any budget)."""
        return int(getattr(self, resource.value))


class CircuitBreaker:
    """Per-cluster resource counters with ``try_acquire`` / ``release``.

    Invariant: ``active(r) <= limit(r)`` for every resource at every moment, because
    ``try_acquire`` refuses (and counts an overflow) instead of exceeding the limit. For
    RETRIES under a budget the limit moves with the active and pending request counts, so a
    later drop in load may leave ``active(RETRIES)`` above the new limit; new retries are
    refused until it falls below again, as in Envoy.
    """

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self._active: dict[Resource, int] = dict.fromkeys(Resource, 0)
        self.overflows: dict[Resource, int] = dict.fromkeys(Resource, 0)
        """Overflow counts: ``upstream_cx_overflow``, ``upstream_rq_pending_overflow`` (for
        both pending and requests), ``upstream_rq_retry_overflow``."""

    def active(self, resource: Resource) -> int:
        """How many units of ``resource`` are held now."""
        return self._active[resource]

    def limit(self, resource: Resource) -> int:
        """The limit of ``resource`` now (the retry budget's, if one is set)."""
        budget = self.thresholds.retry_budget
        if resource is Resource.RETRIES and budget is not None:
            return budget.max_active_retries(
                self._active[Resource.REQUESTS], self._active[Resource.PENDING_REQUESTS]
            )
        return self.thresholds.limit(resource)

    def can_acquire(self, resource: Resource) -> bool:
        """Envoy's ``canCreate()``: True if one more unit fits under the limit."""
        return self._active[resource] < self.limit(resource)

    def try_acquire(self, resource: Resource) -> bool:
        """Take one unit of ``resource`` if it fits; otherwise count an overflow, return False."""
        if self.can_acquire(resource):
            self._active[resource] += 1
            return True
        self.overflows[resource] += 1
        return False

    def release(self, resource: Resource) -> None:
        """Give back one unit of ``resource`` taken by :meth:`try_acquire`."""
        if self._active[resource] <= 0:
            raise RuntimeError(f"release of {resource.value} with nothing held")
        self._active[resource] -= 1

    # The retry-resource protocol that meshsim.policy.retry.RetryState uses.
    def try_acquire_retry(self) -> bool:
        """Take a retry slot (``max_retries`` or budget); False counts a retry overflow."""
        return self.try_acquire(Resource.RETRIES)

    def release_retry(self) -> None:
        """Give back a retry slot."""
        self.release(Resource.RETRIES)
