"""Linkerd failure accrual: per-endpoint, client-side circuit breaking.

docs/mesh-semantics.md §6.4.

Opt-in per Service (``balancer.linkerd.io/failure-accrual``); unset means no breaker. Each
endpoint of a backend gets one breaker. Linkerd's words for the gate are used: **open**
means the endpoint is available, **shut** means it is left out of P2C (not ready), and
**probation** admits exactly one real request after the back-off.

A caller (per backend, :class:`FailureAccrual`):

* balances only over :meth:`FailureAccrual.ready` endpoints;
* calls :meth:`FailureAccrual.on_dispatch` when it sends a request to an endpoint (this
  takes the single probation permit);
* calls :meth:`FailureAccrual.record` with each response.

Times and durations are in seconds.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from meshsim.policy.backoff import LinkerdBackOff
from meshsim.policy.outcome import GrpcStatus, Outcome

__all__ = [
    "GRPC_FAILURES",
    "AccrualState",
    "ConsecutiveFailures",
    "FailureAccrual",
    "SuccessRateAccrual",
    "is_accrual_failure",
]

GRPC_FAILURES = frozenset(
    {
        GrpcStatus.DATA_LOSS,
        GrpcStatus.DEADLINE_EXCEEDED,
        GrpcStatus.INTERNAL,
        GrpcStatus.PERMISSION_DENIED,
        GrpcStatus.UNAVAILABLE,
    }
)
"""The gRPC statuses linkerd2-proxy classifies as failures by default (§6.4)."""


def is_accrual_failure(outcome: Outcome, *, success_rate_mode: bool = False) -> bool:
    """Failure classification for accrual (§6.4).

    HTTP 5xx (including the proxy's own 502/503/504 for errors) or gRPC DATA_LOSS,
    DEADLINE_EXCEEDED, INTERNAL, PERMISSION_DENIED, UNAVAILABLE. The success-rate
    (``unified``) mode also counts 429 and RESOURCE_EXHAUSTED.
    """
    if outcome.is_5xx:
        return True
    grpc = outcome.grpc_status
    if grpc is not None and grpc in GRPC_FAILURES:
        return True
    if success_rate_mode:
        return outcome.effective_status == 429 or grpc == GrpcStatus.RESOURCE_EXHAUSTED
    return False


class AccrualState(enum.Enum):
    OPEN = "open"
    """Available: requests flow, results are counted."""
    SHUT = "shut"
    """Not ready; responses that arrive are ignored."""
    PROBATION = "probation"
    """Back-off over: one request may go; its response decides."""


class _Breaker(ABC):
    """The shared shut / probation / open state machine of one endpoint."""

    def __init__(self, backoff: LinkerdBackOff, *, success_rate_mode: bool) -> None:
        self.backoff = backoff
        self.success_rate_mode = success_rate_mode
        self._state = AccrualState.OPEN
        self._reopen_at = 0.0
        self._backoff_iteration = 0
        self._probe_sent = False
        self.trips = 0
        """How many times the breaker has shut (from open)."""

    def state(self, now: float) -> AccrualState:
        """The state at ``now`` (a shut breaker enters probation once its back-off ends)."""
        if self._state is AccrualState.SHUT and now >= self._reopen_at:
            self._state = AccrualState.PROBATION
            self._probe_sent = False
        return self._state

    @property
    def probation_at(self) -> float | None:
        """When a shut breaker goes to probation (``None`` unless shut)."""
        return self._reopen_at if self._state is AccrualState.SHUT else None

    def is_ready(self, now: float) -> bool:
        """True if a request may be sent now (open, or probation with the permit free)."""
        state = self.state(now)
        return state is AccrualState.OPEN or (
            state is AccrualState.PROBATION and not self._probe_sent
        )

    def on_dispatch(self, now: float) -> None:
        """A request is being sent; in probation this takes the single permit."""
        state = self.state(now)
        if state is AccrualState.SHUT or (state is AccrualState.PROBATION and self._probe_sent):
            raise RuntimeError("failure accrual: dispatch to an endpoint that is not ready")
        if state is AccrualState.PROBATION:
            self._probe_sent = True

    def record(self, outcome: Outcome, now: float, rng: np.random.Generator) -> None:
        """Count one response from this endpoint."""
        failure = is_accrual_failure(outcome, success_rate_mode=self.success_rate_mode)
        state = self.state(now)
        if state is AccrualState.SHUT:
            return  # ignored while shut
        if state is AccrualState.PROBATION:
            # The first response in probation decides (linkerd2-proxy waits for any one).
            if failure:
                self._shut(now, rng)
            else:
                self._state = AccrualState.OPEN
                self._backoff_iteration = 0
                self._reset_counts()
            return
        if self._count(outcome, failure, now):
            self.trips += 1
            self._backoff_iteration = 0
            self._shut(now, rng)

    def _shut(self, now: float, rng: np.random.Generator) -> None:
        penalty = self.backoff.delay_s(self._backoff_iteration, rng)
        self._backoff_iteration += 1
        self._state = AccrualState.SHUT
        self._reopen_at = now + penalty
        self._reset_counts()

    @abstractmethod
    def _count(self, outcome: Outcome, failure: bool, now: float) -> bool:
        """Count ``outcome`` (``failure`` as this mode classifies it) while open; True if the
        breaker must shut."""
        ...

    @abstractmethod
    def _reset_counts(self) -> None: ...


class ConsecutiveFailures(_Breaker):
    """``failure-accrual: consecutive`` (§6.4): shut after ``max_failures`` in a row.

    Defaults: 7 failures; penalty ``1 s·2^k + U[0, 0.5·base]``, capped at 60 s; a success
    resets the count; a failed probe shuts again with the next (doubled) penalty; a
    successful probe re-opens and resets the back-off.
    """

    def __init__(self, max_failures: int = 7, backoff: LinkerdBackOff | None = None) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1 (not {max_failures})")
        super().__init__(
            backoff if backoff is not None else LinkerdBackOff.accrual_default(),
            success_rate_mode=False,
        )
        self.max_failures = max_failures
        self.failures = 0

    def _count(self, outcome: Outcome, failure: bool, now: float) -> bool:
        self.failures = self.failures + 1 if failure else 0
        return self.failures >= self.max_failures

    def _reset_counts(self) -> None:
        self.failures = 0


class SuccessRateAccrual(_Breaker):
    """``failure-accrual: unified`` (§6.4): two rules in one breaker, either of which shuts
    it. The success rate over a sliding ``window_s`` (10 buckets) falls below ``threshold``
    with at least ``min_requests`` responses in the window (defaults 0.8, 10 s, 5; 429 and
    RESOURCE_EXHAUSTED count as failures; threshold 0 turns the rule off); or
    ``max_failures`` failures in a row, counted as consecutive mode counts them (default
    7, from the same annotation; 0 turns the rule off).

    The shut/probation cycle and the back-off are the consecutive mode's, and both counts
    restart on re-open (linkerd2-proxy ``breaker/unified.rs``).
    """

    BUCKETS = 10

    def __init__(
        self,
        threshold: float = 0.8,
        window_s: float = 10.0,
        min_requests: int = 5,
        backoff: LinkerdBackOff | None = None,
        max_failures: int = 7,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] (not {threshold})")
        if max_failures < 0:
            raise ValueError(f"max_failures must be >= 0 (not {max_failures})")
        super().__init__(
            backoff if backoff is not None else LinkerdBackOff.accrual_default(),
            success_rate_mode=True,
        )
        self.threshold = threshold
        self.window_s = window_s
        self.min_requests = min_requests
        self._bucket_s = window_s / self.BUCKETS
        self._buckets: dict[int, list[int]] = {}  # bucket number -> [requests, failures]
        self.max_failures = max_failures
        self.failures = 0
        """Failures in a row (a 429 is a soft failure: it counts for the success rate only)."""

    def _count(self, outcome: Outcome, failure: bool, now: float) -> bool:
        if self.max_failures:
            self.failures = self.failures + 1 if is_accrual_failure(outcome) else 0
            if self.failures >= self.max_failures:
                return True
        current = int(now // self._bucket_s)
        oldest = current - self.BUCKETS + 1
        for key in [k for k in self._buckets if k < oldest]:
            del self._buckets[key]
        bucket = self._buckets.setdefault(current, [0, 0])
        bucket[0] += 1
        bucket[1] += int(failure)
        requests = sum(b[0] for b in self._buckets.values())
        failures = sum(b[1] for b in self._buckets.values())
        if requests < self.min_requests:
            return False
        return (requests - failures) / requests < self.threshold

    def _reset_counts(self) -> None:
        self._buckets.clear()
        self.failures = 0


@dataclass(slots=True)
class FailureAccrual:
    """The breakers of one backend's endpoints, created on first sight.

    ``mode`` is ``"consecutive"`` or ``"unified"`` (consecutive failures and success
    rate); parameters go to the per-endpoint breaker constructor.
    """

    mode: str = "consecutive"
    max_failures: int = 7
    backoff: LinkerdBackOff = field(default_factory=LinkerdBackOff.accrual_default)
    success_rate_threshold: float = 0.8
    success_rate_window_s: float = 10.0
    success_rate_min_requests: int = 5
    breakers: dict[Hashable, _Breaker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("consecutive", "unified"):
            raise ValueError(f'mode: expected "consecutive" or "unified" (not {self.mode!r})')

    def breaker(self, endpoint: Hashable) -> _Breaker:
        found = self.breakers.get(endpoint)
        if found is None:
            if self.mode == "consecutive":
                found = ConsecutiveFailures(self.max_failures, self.backoff)
            else:
                found = SuccessRateAccrual(
                    self.success_rate_threshold,
                    self.success_rate_window_s,
                    self.success_rate_min_requests,
                    self.backoff,
                    self.max_failures,
                )
            self.breakers[endpoint] = found
        return found

    def ready(self, endpoints: Sequence[Hashable], now: float) -> list[Hashable]:
        """The endpoints P2C may choose from now."""
        return [e for e in endpoints if self.breaker(e).is_ready(now)]

    def on_dispatch(self, endpoint: Hashable, now: float) -> None:
        self.breaker(endpoint).on_dispatch(now)

    def record(
        self, endpoint: Hashable, outcome: Outcome, now: float, rng: np.random.Generator
    ) -> None:
        self.breaker(endpoint).record(outcome, now, rng)
