"""linkerd2-proxy retries: route annotations (2.16+) and legacy ServiceProfiles.

* :class:`LinkerdRetryPolicy` / :class:`LinkerdRetryState`: HTTPRoute, GRPCRoute or Service
  ``retry.linkerd.io/*`` annotations (docs/mesh-semantics.md §6.2). A fixed limit (default 1), no
  budget, jittered back-off 25 ms..250 ms.
* :class:`ServiceProfileRetry`: ``isRetryable`` routes of a ServiceProfile (§6.1). No limit
  and no back-off; a :class:`meshsim.policy.budget.TpsBudget` decides.

Both return :class:`meshsim.policy.retry.RetryDecision`, so a caller drives them exactly
like Envoy's :class:`meshsim.policy.retry.RetryState`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from meshsim.policy.backoff import LinkerdBackOff
from meshsim.policy.budget import TpsBudget
from meshsim.policy.failure_accrual import GRPC_FAILURES
from meshsim.policy.outcome import GrpcStatus, Outcome, OutcomeKind
from meshsim.policy.retry import RetryDecision, StopReason

__all__ = [
    "MAX_RETRY_BODY_BYTES",
    "LinkerdRetryPolicy",
    "LinkerdRetryState",
    "ServiceProfileRetry",
    "parse_status_ranges",
]

MAX_RETRY_BODY_BYTES = 64 * 1024
"""Requests with bodies larger than this are never retried (§6.1, §6.2)."""

_GRPC_NAMES: dict[str, int] = {
    "cancelled": GrpcStatus.CANCELLED,
    "deadline-exceeded": GrpcStatus.DEADLINE_EXCEEDED,
    "internal": GrpcStatus.INTERNAL,
    "resource-exhausted": GrpcStatus.RESOURCE_EXHAUSTED,
    "unavailable": GrpcStatus.UNAVAILABLE,
}


def parse_status_ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """Parse ``retry.linkerd.io/http``: CSV of ``5xx``, ``gateway-error``, ``NNN``, ``NNN-MMM``.

    Returns inclusive ``(low, high)`` ranges; ``5xx`` is 500-599, ``gateway-error`` 502-504.
    """
    ranges: list[tuple[int, int]] = []
    for raw in spec.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "5xx":
            ranges.append((500, 599))
        elif item == "gateway-error":
            ranges.append((502, 504))
        elif "-" in item:
            low, high = item.split("-", 1)
            ranges.append((int(low), int(high)))
        elif item.isdigit():
            ranges.append((int(item), int(item)))
        else:
            raise ValueError(
                f"retry.linkerd.io/http: expected 5xx, gateway-error, NNN or NNN-MMM (not {raw!r})"
            )
    for lo, hi in ranges:
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"retry.linkerd.io/http: bad status range {lo}-{hi}")
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class LinkerdRetryPolicy:
    """Route retry policy from ``retry.linkerd.io/*`` annotations (§6.2).

    Defaults: ``limit`` 1; *no* HTTP status retryable unless listed; no gRPC codes; no
    per-try timeout; back-off 25 ms..250 ms with jitter 1.0; no retry budget.

    Retryable: a response whose status is in ``http_statuses``; a gRPC status (headers *or*
    trailers) in ``grpc_codes``; a per-try (response-headers) timeout; a fail-fast error;
    an HTTP/2 REFUSED_STREAM. Not retryable: load shed, connection errors (not inspected
    yet in linkerd2-proxy), resets, and request/response timeouts (§6.3).
    """

    limit: int = 1
    http_statuses: tuple[tuple[int, int], ...] = ()
    grpc_codes: frozenset[int] = frozenset()
    timeout_s: float | None = None
    """``retry.linkerd.io/timeout``: per-try timeout on response headers."""
    backoff: LinkerdBackOff = field(default_factory=LinkerdBackOff.retry_default)
    max_body_bytes: int = MAX_RETRY_BODY_BYTES

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"retry limit must be >= 0 (not {self.limit})")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("retry timeout must be > 0 or None")

    @classmethod
    def from_annotations(
        cls,
        *,
        http: str | None = None,
        grpc: str | Iterable[str] | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> LinkerdRetryPolicy:
        """Build from annotation values (``None`` means the annotation is absent)."""
        codes: set[int] = set()
        if grpc is not None:
            names = grpc.split(",") if isinstance(grpc, str) else grpc
            for name in names:
                key = name.strip().lower()
                if not key:
                    continue
                if key not in _GRPC_NAMES:
                    raise ValueError(
                        f"retry.linkerd.io/grpc: expected one of {', '.join(_GRPC_NAMES)} "
                        f"(not {name!r})"
                    )
                codes.add(_GRPC_NAMES[key])
        return cls(
            limit=1 if limit is None else limit,
            http_statuses=parse_status_ranges(http) if http else (),
            grpc_codes=frozenset(codes),
            timeout_s=timeout_s,
        )

    def is_retryable(self, outcome: Outcome) -> bool:
        """linkerd2-proxy's route retry classification (``route/retry.rs``)."""
        kind = outcome.kind
        if kind is OutcomeKind.RESPONSE:
            status = outcome.effective_status
            if any(lo <= status <= hi for lo, hi in self.http_statuses):
                return True
            return outcome.grpc_status is not None and outcome.grpc_status in self.grpc_codes
        if kind is OutcomeKind.PER_TRY_TIMEOUT:
            return self.timeout_s is not None
        return kind in (OutcomeKind.FAILFAST, OutcomeKind.REFUSED_STREAM)


class LinkerdRetryState:
    """One request's retries under a :class:`LinkerdRetryPolicy` (§6.2).

    ``request_body_bytes`` over 64 KiB disables retries for the request.
    """

    def __init__(self, policy: LinkerdRetryPolicy | None, request_body_bytes: int = 0) -> None:
        self.policy = policy
        self.request_body_bytes = request_body_bytes
        self.retries_used = 0
        self.attempts = 0

    @property
    def per_try_timeout_s(self) -> float | None:
        return self.policy.timeout_s if self.policy is not None else None

    def on_attempt(self, host: object) -> None:
        """Record that an attempt is being sent (``host`` kept for symmetry with Envoy)."""
        self.attempts += 1

    def decide(self, outcome: Outcome, now: float, rng: np.random.Generator) -> RetryDecision:
        """Retry (after the exp-backoff delay for this retry) or stop."""
        policy = self.policy
        if policy is None:
            return RetryDecision(False, reason=StopReason.NO_POLICY)
        if not policy.is_retryable(outcome):
            return RetryDecision(False, reason=StopReason.NOT_RETRYABLE)
        if self.request_body_bytes > policy.max_body_bytes:
            return RetryDecision(False, reason=StopReason.BODY_TOO_LARGE)
        if self.retries_used >= policy.limit:
            return RetryDecision(False, reason=StopReason.RETRIES_EXHAUSTED)
        delay = policy.backoff.delay_s(self.retries_used, rng)
        self.retries_used += 1
        return RetryDecision(True, delay_s=delay, retry_at=now + delay)


class ServiceProfileRetry:
    """Legacy ServiceProfile retries for one route (§6.1), sharing a ``TpsBudget``.

    Only *responses* classified as failures are retried (transport errors are not); by
    default a failure is HTTP 5xx (``failure_statuses``, the profile's ``responseClasses``,
    overrides it), and a response no class matches is a failure when its headers carry a
    gRPC failure status (Trailers-Only: the classifier is asked before trailers come).
    There is no attempt limit and no back-off: a retry fires at once if the budget allows.
    Every result that is not retried deposits into the budget; every retry withdraws.
    Bodies over 64 KiB are not retried (and so deposit).
    """

    def __init__(
        self,
        budget: TpsBudget,
        *,
        is_retryable: bool = True,
        failure_statuses: tuple[tuple[int, int], ...] = ((500, 599),),
    ) -> None:
        self.budget = budget
        self.is_retryable = is_retryable
        self.failure_statuses = failure_statuses

    def is_failure(self, outcome: Outcome) -> bool:
        """The response classifier; only upstream responses can be failures here."""
        if outcome.kind is not OutcomeKind.RESPONSE:
            return False
        status = outcome.effective_status
        if any(lo <= status <= hi for lo, hi in self.failure_statuses):
            return True
        # No response class matched: linkerd2-proxy classifies by the grpc-status header
        # (classify.rs, ProfileUnmatched); the retry policy classifies with eos(None), so
        # a status in trailers is never seen.
        grpc = outcome.grpc_status
        return grpc is not None and not outcome.grpc_in_trailers and grpc in GRPC_FAILURES

    def decide(self, outcome: Outcome, now: float, request_body_bytes: int = 0) -> RetryDecision:
        """Retry immediately if the response is a failure and the budget pays; else stop."""
        if not self.is_retryable:
            return RetryDecision(False, reason=StopReason.NO_POLICY)
        retryable = self.is_failure(outcome) and request_body_bytes <= MAX_RETRY_BODY_BYTES
        if not retryable:
            self.budget.deposit(now)
            reason = (
                StopReason.BODY_TOO_LARGE if self.is_failure(outcome) else StopReason.NOT_RETRYABLE
            )
            return RetryDecision(False, reason=reason)
        if not self.budget.withdraw(now):
            return RetryDecision(False, reason=StopReason.BUDGET_EXHAUSTED)
        return RetryDecision(True, delay_s=0.0, retry_at=now)
