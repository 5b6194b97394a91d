"""The seam between the proxy and the shared policies of :mod:`meshsim.policy`.

The proxy never decides policy itself (DESIGN principle 1: one policy, two clocks). At each
decision point it asks a :class:`RoutePolicy`, passing ``now`` from ``time.monotonic()`` and
a numpy generator. :class:`PassThrough` is the policy of a route with no ``traffic`` entry:
no faults, no retries, no limits, hosts taken in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np


class Attempt(NamedTuple):
    """What one try against one host produced, in the proxy's words (a tuple: cheap)."""

    host: int
    status: int | None
    """HTTP status when a response head arrived, else None."""
    failure: str | None = None
    """``reset``, ``connect_failure``, ``per_try_timeout`` when no response arrived."""
    duration_s: float = 0.0


@dataclass(frozen=True)
class Fault:
    delay_s: float = 0.0
    abort_status: int | None = None


NO_FAULT = Fault()


class RetryTracker(Protocol):
    """The retry state of one request."""

    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> float | None:
        """Back-off before another try, or None to give up."""

    def close(self) -> None:
        """The request is over: release any held retry resource."""


class NoRetry:
    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> float | None:
        return None

    def close(self) -> None:
        return None


class RoutePolicy(Protocol):
    """Every decision the proxy delegates, for one route (one upstream service)."""

    timeout_s: float | None
    """Whole-request timeout (retries included); None for none."""
    per_try_timeout_s: float | None

    def fault(self, now: float, rng: np.random.Generator) -> Fault: ...

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        """Index of the host for the next try; None when every host is ejected."""

    def admit(self, host: int, now: float) -> bool:
        """Circuit breaker admission; False is an overflow (503, never retried)."""

    def release(self, host: int, now: float) -> None: ...

    def record(self, attempt: Attempt, now: float) -> list[int]:
        """Feed outlier detection / failure accrual; returns hosts newly ejected."""

    def retry_state(self) -> RetryTracker:
        """Fresh retry state for one request."""


class PassThrough:
    """No traffic policy configured for the route."""

    timeout_s: float | None = None
    per_try_timeout_s: float | None = None
    simple = True
    """No timers, faults or retries: the proxy may serve requests without a task."""

    def __init__(self) -> None:
        self._next = 0

    def fault(self, now: float, rng: np.random.Generator) -> Fault:
        return NO_FAULT

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        # Not a balancing policy: just spreads connections when several hosts are listed.
        self._next = (self._next + 1) % hosts
        return self._next

    def admit(self, host: int, now: float) -> bool:
        return True

    def release(self, host: int, now: float) -> None:
        return None

    def record(self, attempt: Attempt, now: float) -> list[int]:
        return []

    def retry_state(self) -> RetryTracker:
        return NoRetry()
