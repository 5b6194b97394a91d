"""Envoy router retries, with Istio's defaults (docs/mesh-semantics.md §1.1, §1.3).

A caller drives one request like this::

    state = RetryState(policy, retries=breaker)       # breaker: a CircuitBreaker, or None
    while True:
        host = balancer.pick(endpoints, now, rng,
                             previous_hosts=state.previous_hosts,
                             reselect_attempts=state.reselect_attempts)
        state.on_attempt(host)
        outcome = ...                                  # run the try (per-try timeout etc.)
        decision = state.decide(outcome, now, rng)
        if not decision.retry:
            break                                      # outcome is the final answer
        wait until decision.retry_at                   # then loop and re-pick a host
    # If the route timeout cancels the request mid-way: state.close()

``decide`` applies Envoy's order of checks (§1.1): retryable? -> retries left? -> take one
-> retry resource available (``max_retries`` breaker or budget)? -> back-off. The retry
resource is held from the moment a retry is scheduled until the next decision (or
``close``), as Envoy's ``resetRetry`` does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from meshsim.policy.backoff import EnvoyBackOff
from meshsim.policy.outcome import GrpcStatus, Outcome, OutcomeKind

__all__ = [
    "RetryDecision",
    "RetryOn",
    "RetryPolicy",
    "RetryResource",
    "RetryState",
    "StopReason",
]


class RetryOn(enum.StrEnum):
    """Envoy ``retry_on`` / ``x-envoy-retry-on`` (and ``-grpc-on``) conditions (§1.1)."""

    FIVE_XX = "5xx"
    GATEWAY_ERROR = "gateway-error"
    RESET = "reset"
    CONNECT_FAILURE = "connect-failure"
    RETRIABLE_4XX = "retriable-4xx"
    REFUSED_STREAM = "refused-stream"
    RETRIABLE_STATUS_CODES = "retriable-status-codes"
    ENVOY_RATELIMITED = "envoy-ratelimited"
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline-exceeded"
    INTERNAL = "internal"
    RESOURCE_EXHAUSTED = "resource-exhausted"
    UNAVAILABLE = "unavailable"


_GRPC_CONDITIONS: dict[RetryOn, int] = {
    RetryOn.CANCELLED: GrpcStatus.CANCELLED,
    RetryOn.DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
    RetryOn.INTERNAL: GrpcStatus.INTERNAL,
    RetryOn.RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
    RetryOn.UNAVAILABLE: GrpcStatus.UNAVAILABLE,
}

ISTIO_DEFAULT_RETRY_ON: frozenset[RetryOn] = frozenset(
    {
        RetryOn.CONNECT_FAILURE,
        RetryOn.REFUSED_STREAM,
        RetryOn.UNAVAILABLE,
        RetryOn.CANCELLED,
        RetryOn.RETRIABLE_STATUS_CODES,
    }
)


class StopReason(enum.Enum):
    """Why a request is not retried."""

    NOT_RETRYABLE = "not_retryable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Envoy URX, ``upstream_rq_retry_limit_exceeded``."""
    RETRY_OVERFLOW = "retry_overflow"
    """The ``max_retries`` breaker or retry budget refused: ``upstream_rq_retry_overflow``."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """Linkerd's TpsBudget refused a withdrawal (§6.1)."""
    BODY_TOO_LARGE = "body_too_large"
    """Linkerd does not retry requests with bodies over 64 KiB (§6.1, §6.2)."""
    NO_POLICY = "no_policy"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after an attempt: retry after ``delay_s`` (at ``retry_at``), or stop."""

    retry: bool
    delay_s: float = 0.0
    retry_at: float = 0.0
    reason: StopReason | None = None


class RetryResource(Protocol):
    """A cluster's retry concurrency limit; :class:`CircuitBreaker` implements it."""

    def try_acquire_retry(self) -> bool: ...
    def release_retry(self) -> None: ...


def _parse_retry_on(items: Iterable[str | int]) -> tuple[frozenset[RetryOn], frozenset[int]]:
    conditions: set[RetryOn] = set()
    codes: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text.isdigit():
            # Istio turns numeric retryOn entries into retriable_status_codes (retry.go).
            codes.add(int(text))
            conditions.add(RetryOn.RETRIABLE_STATUS_CODES)
        else:
            try:
                conditions.add(RetryOn(text))
            except ValueError:
                known = ", ".join(sorted(c.value for c in RetryOn))
                raise ValueError(f"unknown retry_on {text!r}; expected one of {known}") from None
    return frozenset(conditions), frozenset(codes)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """An Envoy route ``retry_policy`` (§1.1).

    The bare constructor gives raw Envoy's defaults for a policy that exists but sets
    nothing: ``num_retries`` 1, no ``retry_on`` (so nothing is retried), no per-try timeout,
    25 ms / 250 ms back-off, no host predicate, ``host_selection_retry_max_attempts`` 1.
    """

    retry_on: frozenset[RetryOn] = frozenset()
    num_retries: int = 1
    """Retries after the first attempt; total attempts = 1 + num_retries."""
    retriable_status_codes: frozenset[int] = frozenset()
    """Statuses retried under ``retriable-status-codes`` (and only those)."""
    per_try_timeout_s: float | None = None
    """Per-try timeout; ``None`` means only the route timeout bounds a try."""
    backoff: EnvoyBackOff = field(default_factory=EnvoyBackOff)
    previous_hosts: bool = False
    """``retry_host_predicate: previous_hosts``: re-pick hosts already tried."""
    host_selection_retry_max_attempts: int = 1
    """Re-picks allowed when the predicate rejects a host; then the last pick is used."""

    def __post_init__(self) -> None:
        if self.num_retries < 0:
            raise ValueError(f"num_retries must be >= 0 (not {self.num_retries})")
        if self.per_try_timeout_s is not None and self.per_try_timeout_s <= 0:
            raise ValueError("per_try_timeout_s must be > 0 or None")
        if self.host_selection_retry_max_attempts < 0:
            raise ValueError("host_selection_retry_max_attempts must be >= 0")

    @classmethod
    def envoy(
        cls,
        retry_on: Iterable[str | int] | str,
        num_retries: int = 1,
        *,
        retriable_status_codes: Iterable[int] = (),
        per_try_timeout_s: float | None = None,
        backoff: EnvoyBackOff | None = None,
        previous_hosts: bool = False,
        host_selection_retry_max_attempts: int = 1,
    ) -> RetryPolicy:
        """A raw Envoy policy from a ``retry_on`` CSV or list (numbers become status codes)."""
        items = retry_on.split(",") if isinstance(retry_on, str) else retry_on
        conditions, codes = _parse_retry_on(items)
        return cls(
            retry_on=conditions,
            num_retries=num_retries,
            retriable_status_codes=codes | frozenset(retriable_status_codes),
            per_try_timeout_s=per_try_timeout_s,
            backoff=backoff if backoff is not None else EnvoyBackOff(),
            previous_hosts=previous_hosts,
            host_selection_retry_max_attempts=host_selection_retry_max_attempts,
        )

    @classmethod
    def istio_default(cls, *, consistent_hash: bool = False) -> RetryPolicy:
        """What istiod programs with no VirtualService retries (§1.3, Istio >= 1.24).

        2 retries; ``connect-failure,refused-stream,unavailable,cancelled,
        retriable-status-codes`` with an *empty* code list, so no HTTP status is retried;
        ``previous_hosts`` with 5 host-selection attempts (omitted under consistent-hash
        load balancing); Envoy's default back-off; no per-try timeout.
        """
        return cls(
            retry_on=ISTIO_DEFAULT_RETRY_ON,
            num_retries=2,
            retriable_status_codes=frozenset(),
            previous_hosts=not consistent_hash,
            host_selection_retry_max_attempts=5,
        )

    @classmethod
    def istio(
        cls,
        attempts: int | None = None,
        *,
        retry_on: Iterable[str | int] | str | None = None,
        per_try_timeout_s: float | None = None,
        backoff_base_s: float | None = None,
        consistent_hash: bool = False,
    ) -> RetryPolicy | None:
        """A VirtualService ``retries`` block as istiod converts it (§1.3).

        ``attempts`` is the number of *retries*; 0 disables retries (returns ``None``);
        ``None`` keeps the default 2. ``retry_on`` replaces the default condition list.
        ``backoff_base_s`` sets only the base interval (the cap stays 10 x base).
        """
        base = cls.istio_default(consistent_hash=consistent_hash)
        if attempts == 0:
            return None
        conditions, codes = base.retry_on, base.retriable_status_codes
        if retry_on is not None:
            items = retry_on.split(",") if isinstance(retry_on, str) else retry_on
            conditions, codes = _parse_retry_on(items)
        return cls(
            retry_on=conditions,
            num_retries=base.num_retries if attempts is None else attempts,
            retriable_status_codes=codes,
            per_try_timeout_s=per_try_timeout_s,
            backoff=EnvoyBackOff(backoff_base_s) if backoff_base_s else base.backoff,
            previous_hosts=base.previous_hosts,
            host_selection_retry_max_attempts=base.host_selection_retry_max_attempts,
        )

    def would_retry(self, outcome: Outcome) -> bool:
        """Envoy's ``wouldRetryFromHeaders`` / ``wouldRetryFromReset`` for one outcome.

        Never retried whatever ``retry_on`` says: local overflow and ``x-envoy-overloaded``
        responses, the route timeout, fault-injection aborts; ``x-envoy-ratelimited`` only
        under ``envoy-ratelimited``. Upstream resets count as 5xx for ``5xx`` and
        ``gateway-error`` (``retry_state_impl.cc``); a per-try timeout is retried only under
        ``5xx`` or ``gateway-error``.
        """
        on = self.retry_on
        kind = outcome.kind
        if kind is OutcomeKind.RESPONSE:
            return self._would_retry_response(outcome)
        if kind is OutcomeKind.PER_TRY_TIMEOUT:
            return bool(on & {RetryOn.FIVE_XX, RetryOn.GATEWAY_ERROR})
        if kind in (OutcomeKind.RESET, OutcomeKind.CONNECT_FAILURE, OutcomeKind.REFUSED_STREAM):
            if kind is OutcomeKind.CONNECT_FAILURE and RetryOn.CONNECT_FAILURE in on:
                return True
            if on & {RetryOn.RESET, RetryOn.FIVE_XX, RetryOn.GATEWAY_ERROR}:
                return True
            return kind is OutcomeKind.REFUSED_STREAM and RetryOn.REFUSED_STREAM in on
        # OVERFLOW, ROUTE_TIMEOUT, FAULT_ABORT and Linkerd-only kinds.
        return False

    def _would_retry_response(self, outcome: Outcome) -> bool:
        on = self.retry_on
        status = outcome.effective_status
        if outcome.overloaded:
            return False
        if outcome.rate_limited:
            return RetryOn.ENVOY_RATELIMITED in on
        if RetryOn.FIVE_XX in on and 500 <= status <= 599:
            return True
        if RetryOn.GATEWAY_ERROR in on and status in (502, 503, 504):
            return True
        if RetryOn.RETRIABLE_4XX in on and status == 409:
            return True
        if RetryOn.RETRIABLE_STATUS_CODES in on and status in self.retriable_status_codes:
            return True
        # gRPC conditions look only at grpc-status in response headers, never trailers.
        if outcome.grpc_status is not None and not outcome.grpc_in_trailers:
            for condition, code in _GRPC_CONDITIONS.items():
                if condition in on and outcome.grpc_status == code:
                    return True
        return False


class RetryState:
    """The retry state of one request under an Envoy :class:`RetryPolicy` (§1.1).

    ``policy=None`` means no retry policy: every decision stops with ``NO_POLICY``.
    ``retries`` is the cluster's retry resource (a ``CircuitBreaker``); ``None`` means
    unlimited.
    """

    def __init__(self, policy: RetryPolicy | None, retries: RetryResource | None = None) -> None:
        self.policy = policy
        self.retries = retries
        self.retries_remaining = policy.num_retries if policy is not None else 0
        self.retries_scheduled = 0
        """Retries granted so far; the next back-off uses retry number this + 1."""
        self.attempts = 0
        """Attempts started (via :meth:`on_attempt`)."""
        self.hosts_tried: list[object] = []
        self._holding_retry = False

    @property
    def previous_hosts(self) -> frozenset[object]:
        """Hosts the ``previous_hosts`` predicate rejects (empty if the predicate is off)."""
        if self.policy is None or not self.policy.previous_hosts:
            return frozenset()
        return frozenset(self.hosts_tried)

    @property
    def reselect_attempts(self) -> int:
        """How many times a balancer may re-pick a rejected host."""
        if self.policy is None or not self.policy.previous_hosts:
            return 0
        return self.policy.host_selection_retry_max_attempts

    @property
    def per_try_timeout_s(self) -> float | None:
        return self.policy.per_try_timeout_s if self.policy is not None else None

    def on_attempt(self, host: object) -> None:
        """Record that an attempt is being sent to ``host``."""
        self.attempts += 1
        self.hosts_tried.append(host)

    def close(self) -> None:
        """Release a held retry resource (request finished or cancelled). Idempotent."""
        if self._holding_retry:
            self._holding_retry = False
            if self.retries is not None:
                self.retries.release_retry()

    def decide(self, outcome: Outcome, now: float, rng: np.random.Generator) -> RetryDecision:
        """Retry or stop after ``outcome``, in Envoy's order of checks (§1.1).

        1. not retryable -> stop; 2. no retries left -> stop (URX); 3. take one retry;
        4. retry resource refused -> stop (retry overflow), the original failure stands;
        5. hold the resource and back off ``delay_s``, then re-pick a host.
        """
        # The previous retry's resource is held only until this outcome is known.
        self.close()
        if self.policy is None:
            return RetryDecision(False, reason=StopReason.NO_POLICY)
        if not self.policy.would_retry(outcome):
            return RetryDecision(False, reason=StopReason.NOT_RETRYABLE)
        if self.retries_remaining == 0:
            return RetryDecision(False, reason=StopReason.RETRIES_EXHAUSTED)
        self.retries_remaining -= 1
        if self.retries is not None:
            if not self.retries.try_acquire_retry():
                return RetryDecision(False, reason=StopReason.RETRY_OVERFLOW)
            self._holding_retry = True
        self.retries_scheduled += 1
        delay = self.policy.backoff.delay_s(self.retries_scheduled, rng)
        return RetryDecision(True, delay_s=delay, retry_at=now + delay)
