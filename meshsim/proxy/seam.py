"""The seam between the proxy and the shared policies of :mod:`meshsim.policy`.

The proxy never decides policy itself (DESIGN principle 1: one policy, two clocks). At each
decision point it asks a :class:`RoutePolicy` (fault injection, before the router) or the
request's :class:`Exchange` (the steps of :mod:`meshsim.policy.chain`: pick, admit, release,
record, decide), passing ``now`` from ``time.monotonic()`` and a numpy generator.
:class:`PassThrough` is the policy of a route with no ``traffic`` entry: no faults, no
retries, no limits, hosts taken in turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from meshsim.policy import ENVOY_CONNECT_TIMEOUT_S
from meshsim.policy.chain import Verdict


class Attempt(NamedTuple):
    """What one try against one host produced, in the proxy's words (a tuple: cheap)."""

    host: int
    status: int | None
    """HTTP status when a response head arrived, else None."""
    failure: str | None = None
    """``reset``, ``connect_failure``, ``per_try_timeout`` when no response arrived."""
    duration_s: float = 0.0
    grpc_status: int | None = None
    """The ``grpc-status`` of the response head (a gRPC Trailers-Only response), if any."""


@dataclass(frozen=True)
class Fault:
    delay_s: float = 0.0
    abort_status: int | None = None


NO_FAULT = Fault()


class Exchange(Protocol):
    """One request's walk through the chain's steps on a route (its retry state, deadline)."""

    @property
    def deadline(self) -> float:
        """The route deadline (monotonic seconds; ``inf`` for none), set after the fault."""

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        """Index of the host for the next try; None when no host is healthy."""

    def admit(self, host: int, now: float) -> bool:
        """Circuit breaker admission, once the try has its connection (the try starts);
        False is an overflow (503, never retried)."""

    def release(self, host: int, now: float) -> None:
        """The admitted try on ``host`` is over."""

    def connect_failed(self, host: int, now: float) -> None:
        """The try on ``host`` failed to get a connection (it was never admitted)."""

    def record(self, attempt: Attempt, now: float) -> list[int]:
        """Feed outlier detection / failure accrual; returns hosts newly ejected."""

    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> Verdict:
        """Retry (after ``delay_s``) or stop."""

    def backoff_overruns(self, now: float, delay_s: float) -> bool:
        """A back-off that reaches the deadline ends the request there (504)."""

    def close(self) -> None:
        """The request is over: release any held retry resource."""


RetryTracker = Exchange
"""The former name of :class:`Exchange`."""

_STOP = Verdict(False)


class NoRetry:
    """The exchange of a policy without retries: every step is the policy's own."""

    deadline = math.inf

    def __init__(self, policy: RoutePolicy) -> None:
        self.policy = policy
        self.started = 0.0

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        return self.policy.pick(hosts, now, rng)

    def admit(self, host: int, now: float) -> bool:
        self.started = now
        return self.policy.admit(host, now)

    def release(self, host: int, now: float) -> None:
        self.policy.release(host, self.started, now)

    def connect_failed(self, host: int, now: float) -> None:
        return None

    def record(self, attempt: Attempt, now: float) -> list[int]:
        return self.policy.record(attempt, now)

    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> Verdict:
        return _STOP

    def backoff_overruns(self, now: float, delay_s: float) -> bool:
        return False

    def close(self) -> None:
        return None


class RoutePolicy(Protocol):
    """Every decision the proxy delegates, for one route (one upstream service)."""

    timeout_s: float | None
    """Whole-request timeout (retries included); None for none."""
    per_try_timeout_s: float | None
    connect_timeout_s: float
    """How long the route's upstream connects may take (the mesh's, §2.1)."""

    def fault(self, now: float, rng: np.random.Generator) -> Fault: ...

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        """Index of the host for the next try; None when every host is ejected."""

    def admit(self, host: int, now: float) -> bool:
        """Circuit breaker admission, once the try has its connection; False is an
        overflow (503, never retried)."""

    def release(self, host: int, started: float, now: float) -> None:
        """The try admitted on ``host`` at ``started`` is over: each try gives its own
        start, since several may be in flight to one host (a balancer's latency sample)."""

    def record(self, attempt: Attempt, now: float) -> list[int]:
        """Feed outlier detection / failure accrual; returns hosts newly ejected."""

    def retry_state(self) -> Exchange:
        """A fresh exchange for one request, started after the fault filter."""


class PassThrough:
    """No traffic policy configured for the route."""

    timeout_s: float | None = None
    per_try_timeout_s: float | None = None
    connect_timeout_s = ENVOY_CONNECT_TIMEOUT_S
    """A plain forwarder connects as Envoy does with no cluster setting (5 s)."""
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

    def release(self, host: int, started: float, now: float) -> None:
        return None

    def record(self, attempt: Attempt, now: float) -> list[int]:
        return []

    def retry_state(self) -> Exchange:
        return NoRetry(self)
