"""Back-off schedules: Envoy's fully jittered exponential and linkerd2-proxy's exp-backoff.

Both are pure functions of the retry (or iteration) number and a draw from ``rng``, so a
caller keeps no hidden state and the simulator and the real proxy get the same delays from
the same random stream. All durations are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EnvoyBackOff", "LinkerdBackOff"]


@dataclass(frozen=True, slots=True)
class EnvoyBackOff:
    """Envoy's fully jittered exponential retry back-off (docs/mesh-semantics.md §1.1).

    For base ``B`` and retry number ``N`` (1 for the first retry) the delay is uniform in
    ``[0, (2^N - 1)·B)``, the interval capped at ``max_interval_s``. With the defaults
    (25 ms, 250 ms): 1st retry 0-25 ms, 2nd 0-75 ms, 3rd 0-175 ms, later ones 0-250 ms,
    upper ends excluded.

    Note: Envoy's current ``backoff_strategy.cc`` doubles from ``B`` (``[0, 2^(N-1)·B)``);
    meshsim follows the documented formula that the spec gives.
    """

    base_interval_s: float = 0.025
    """``RetryBackOff.base_interval``; 25 ms (runtime ``upstream.base_retry_backoff_ms``)."""
    max_interval_s: float | None = None
    """``RetryBackOff.max_interval``; ``None`` means the default, 10 x base."""

    def __post_init__(self) -> None:
        if self.base_interval_s <= 0:
            raise ValueError(f"base_interval_s must be > 0 (not {self.base_interval_s})")
        if self.max_interval_s is not None and self.max_interval_s < self.base_interval_s:
            raise ValueError("max_interval_s must be >= base_interval_s")

    @property
    def cap_s(self) -> float:
        """The effective ``max_interval`` in seconds."""
        return self.max_interval_s if self.max_interval_s is not None else 10 * self.base_interval_s

    def upper_bound_s(self, retry_number: int) -> float:
        """The exclusive upper end of the delay interval for retry ``retry_number`` (>= 1)."""
        if retry_number < 1:
            raise ValueError(f"retry_number counts from 1 (not {retry_number})")
        # 2**63 overflows nothing in Python, but the cap makes anything past ~60 moot.
        n = min(retry_number, 62)
        return min(float(2**n - 1) * self.base_interval_s, self.cap_s)

    def delay_s(self, retry_number: int, rng: np.random.Generator) -> float:
        """A delay drawn for retry ``retry_number``; always in ``[0, upper_bound_s)``."""
        return float(rng.random()) * self.upper_bound_s(retry_number)


@dataclass(frozen=True, slots=True)
class LinkerdBackOff:
    """linkerd2-proxy's jittered exponential back-off (``linkerd/exp-backoff``).

    For iteration ``n`` (0 for the first wait): ``base_n = min(min·2^n, max)`` and the delay
    is ``base_n + U[0, 1)·jitter·base_n``, the jitter capped at ``max - base_n`` so the total
    never exceeds ``max`` (docs/mesh-semantics.md §6.2 retries: 25 ms..250 ms, jitter 1.0, the first
    retry waits [25, 50) ms; §6.4 failure accrual: 1 s..60 s, jitter 0.5).
    """

    min_s: float
    max_s: float
    jitter: float

    def __post_init__(self) -> None:
        if self.min_s > self.max_s:
            raise ValueError("maximum must not be less than minimum")
        if self.max_s <= 0:
            raise ValueError("maximum must be non-zero")
        if not 0.0 <= self.jitter <= 100.0:
            raise ValueError(f"jitter must be in [0, 100] (not {self.jitter})")

    @classmethod
    def retry_default(cls) -> LinkerdBackOff:
        """The back-off the policy controller fixes for route retries (§6.2)."""
        return cls(min_s=0.025, max_s=0.25, jitter=1.0)

    @classmethod
    def accrual_default(cls) -> LinkerdBackOff:
        """Consecutive failure accrual's default penalty (§6.4): 1 s..60 s, jitter 0.5."""
        return cls(min_s=1.0, max_s=60.0, jitter=0.5)

    def base_s(self, iteration: int) -> float:
        """``min(min·2^iteration, max)``; ``iteration`` counts from 0."""
        if iteration < 0:
            raise ValueError(f"iteration counts from 0 (not {iteration})")
        return min(self.min_s * 2.0 ** min(iteration, 1000), self.max_s)

    def delay_s(self, iteration: int, rng: np.random.Generator) -> float:
        """A delay for ``iteration``; always in ``[base_s, min(base_s·(1+jitter), max))``
        (or exactly ``max`` once the base reaches it)."""
        base = self.base_s(iteration)
        if self.jitter == 0.0:
            return base
        jitter = float(rng.random()) * self.jitter * base
        return base + min(jitter, self.max_s - base)
