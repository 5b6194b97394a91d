"""Retry budgets: Envoy's concurrency budget and Linkerd's (tower's) TpsBudget.

Envoy limits *concurrent* retries per cluster (docs/mesh-semantics.md §1.2): either the fixed
``max_retries`` circuit-breaker threshold or, when ``retry_budget`` is set, a share of the
cluster's active plus pending requests. The counter itself lives in
:class:`meshsim.policy.circuit_breaker.CircuitBreaker`; :class:`EnvoyRetryBudget` only
computes the limit.

Linkerd's ServiceProfile retries (§6.1) use tower's ``TpsBudget``: a token bucket over a
sliding window of ten slots. :class:`TpsBudget` reproduces tower's arithmetic exactly,
including its integer token amounts and the way slots expire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EnvoyRetryBudget", "TpsBudget"]


@dataclass(frozen=True, slots=True)
class EnvoyRetryBudget:
    """Envoy ``CircuitBreakers.Thresholds.retry_budget`` (docs/mesh-semantics.md §1.2).

    ``max_active_retries = max(budget_percent/100 x (active + pending), min_retry_concurrency)``.
    When set, it overrides ``max_retries``. Istio sets it only when a DestinationRule has
    ``trafficPolicy.retryBudget`` (then with these same defaults, §1.3).
    """

    budget_percent: float = 20.0
    """Share of active plus pending requests that may be retries, in percent."""
    min_retry_concurrency: int = 3
    """Floor on concurrent retries, so a quiet cluster can still retry."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget_percent <= 100.0:
            raise ValueError(f"budget_percent must be in [0, 100] (not {self.budget_percent})")
        if self.min_retry_concurrency < 0:
            raise ValueError("min_retry_concurrency must be >= 0")

    def max_active_retries(self, active_requests: int, pending_requests: int) -> int:
        """The current limit on concurrent retries.

        Envoy multiplies a double by the request count and stores the result in a
        ``uint64_t`` (``RetryBudgetImpl::max``), so the share is truncated toward zero.
        """
        share = math.floor(self.budget_percent / 100.0 * (active_requests + pending_requests))
        return max(share, self.min_retry_concurrency)


class TpsBudget:
    """tower's ``TpsBudget``, as linkerd2-proxy uses it for ServiceProfile retries (§6.1).

    Token arithmetic (integers, as in tower):

    * ratio ``r`` = 0: deposit 0, withdraw 1 (only the reserve can pay for retries);
    * ``r <= 1``: deposit 1, withdraw ``floor(1/r)`` (5 for the default 0.2);
    * ``r > 1``: deposit 1000, withdraw ``floor(1000/r)``.

    ``reserve = min_per_s x floor(ttl_s) x withdraw`` is a constant floor added to the sum,
    never refilled (500 tokens = 100 free retries with the defaults). Deposits and
    withdrawals go into a ``writer`` that is committed into one of ten slots of
    ``ttl/10`` when the slot expires; a withdrawal succeeds iff
    ``writer + sum(slots) + reserve >= withdraw``.

    Expiry follows tower's ``expire`` exactly: it runs on every deposit and withdrawal,
    commits the writer to the current slot once ``window`` has passed, zeroes one further
    slot for every extra ``window`` that passed, and restarts the generation at ``now``.

    Time is in seconds and must not go backwards.
    """

    SLOTS = 10

    def __init__(
        self, ttl_s: float = 10.0, min_per_s: int = 10, ratio: float = 0.2, *, now: float = 0.0
    ) -> None:
        # The bounds are tower's (taken from finagle).
        if not 1.0 <= ttl_s <= 60.0:
            raise ValueError(f"ttl_s must be in [1, 60] (not {ttl_s})")
        if not 0.0 <= ratio <= 1000.0:
            raise ValueError(f"ratio must be in [0, 1000] (not {ratio})")
        if not 0 <= min_per_s < 2**31 - 1:
            raise ValueError(f"min_per_s must be in [0, 2^31-1) (not {min_per_s})")
        if ratio == 0.0:
            self.deposit_amount, self.withdraw_amount = 0, 1
        elif ratio <= 1.0:
            self.deposit_amount, self.withdraw_amount = 1, int(1.0 / ratio)
        else:
            self.deposit_amount, self.withdraw_amount = 1000, int(1000.0 / ratio)
        self.ttl_s = ttl_s
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.reserve = min_per_s * int(ttl_s) * self.withdraw_amount
        self.window_s = ttl_s / self.SLOTS
        self._slots = [0] * self.SLOTS
        self._writer = 0
        self._index = 0
        self._generation_start = now

    @classmethod
    def linkerd_default(cls, *, now: float = 0.0) -> TpsBudget:
        """ServiceProfile ``retryBudget`` defaults: ratio 0.2, 10 retries/s, ttl 10 s (§6.1)."""
        return cls(ttl_s=10.0, min_per_s=10, ratio=0.2, now=now)

    def _expire(self, now: float) -> None:
        diff = now - self._generation_start
        if diff < 0:
            raise ValueError(f"time went backwards: {now} < {self._generation_start}")
        if diff < self.window_s:
            return
        self._slots[self._index] = self._writer
        self._writer = 0
        idx = (self._index + 1) % self.SLOTS
        # tower zeroes a slot per *extra* window (strict >), and leaves the new current slot
        # holding old tokens until its own commit overwrites it.
        while diff > self.window_s:
            self._slots[idx] = 0
            diff -= self.window_s
            idx = (idx + 1) % self.SLOTS
        self._index = idx
        self._generation_start = now

    def balance(self, now: float) -> int:
        """Tokens available at ``now`` (``writer + slots + reserve``), after expiry."""
        self._expire(now)
        return self._writer + sum(self._slots) + self.reserve

    def deposit(self, now: float) -> None:
        """Credit one request that ended without being retried."""
        self._expire(now)
        self._writer += self.deposit_amount

    def withdraw(self, now: float) -> bool:
        """Try to pay for one retry; True if the retry may go ahead."""
        if self.balance(now) >= self.withdraw_amount:
            self._writer -= self.withdraw_amount
            return True
        return False
