"""The shared policy core (DESIGN principle 1: one policy, two clocks).

Plain, typed state machines for retries, retry budgets, timeouts, circuit breakers,
outlier detection, failure accrual, load balancers, traffic splits and fault injection.
Each takes the current time (``now``, float seconds) and a ``numpy.random.Generator``
(``rng``) as arguments and knows nothing of simpy or asyncio, so the simulator (simulated
time) and the real proxy (monotonic clock) drive the very same code. Behaviour follows
``docs/mesh-semantics.md``; docstrings cite its sections.
"""

from __future__ import annotations

from meshsim.policy.backoff import EnvoyBackOff, LinkerdBackOff
from meshsim.policy.balancer import (
    HashKey,
    LeastRequest,
    LoadBalancer,
    PeakEwma,
    RandomBalancer,
    RoundRobin,
)
from meshsim.policy.budget import EnvoyRetryBudget, TpsBudget
from meshsim.policy.circuit_breaker import MAX_UINT32, CircuitBreaker, Resource, Thresholds
from meshsim.policy.failure_accrual import (
    AccrualState,
    ConsecutiveFailures,
    FailureAccrual,
    SuccessRateAccrual,
    is_accrual_failure,
)
from meshsim.policy.fault import FaultAbort, FaultDecision, FaultDelay, FaultInjection
from meshsim.policy.hash_balancer import Maglev, RingHash, hash64
from meshsim.policy.linkerd_retry import (
    MAX_RETRY_BODY_BYTES,
    LinkerdRetryPolicy,
    LinkerdRetryState,
    ServiceProfileRetry,
    parse_status_ranges,
)
from meshsim.policy.outcome import GrpcStatus, Outcome, OutcomeKind, grpc_to_http_status
from meshsim.policy.outlier import EjectionEvent, OutlierConfig, OutlierDetector
from meshsim.policy.retry import (
    RetryDecision,
    RetryOn,
    RetryPolicy,
    RetryResource,
    RetryState,
    StopReason,
)
from meshsim.policy.split import (
    HTTPMatch,
    MirrorPolicy,
    StringMatch,
    WeightedSplit,
    first_match,
    fractional_percent,
    sample_per_million,
)
from meshsim.policy.timeout import (
    ENVOY_CONNECT_TIMEOUT_S,
    LINKERD_CONNECT_TIMEOUT_S,
    FailFast,
    FailFastVerdict,
    LinkerdTimeouts,
    RouteTimeout,
    per_try_deadline,
)

BALANCERS: dict[str, type[LoadBalancer]] = {
    "round_robin": RoundRobin,
    "least_request": LeastRequest,
    "random": RandomBalancer,
    "ring_hash": RingHash,
    "maglev": Maglev,
    "peak_ewma": PeakEwma,
}
"""Balancers by the names a scenario's ``load_balancer`` uses (one mapping for both clocks)."""

__all__ = [
    "BALANCERS",
    "ENVOY_CONNECT_TIMEOUT_S",
    "LINKERD_CONNECT_TIMEOUT_S",
    "MAX_RETRY_BODY_BYTES",
    "MAX_UINT32",
    "AccrualState",
    "CircuitBreaker",
    "ConsecutiveFailures",
    "EjectionEvent",
    "EnvoyBackOff",
    "EnvoyRetryBudget",
    "FailFast",
    "FailFastVerdict",
    "FailureAccrual",
    "FaultAbort",
    "FaultDecision",
    "FaultDelay",
    "FaultInjection",
    "GrpcStatus",
    "HTTPMatch",
    "HashKey",
    "LeastRequest",
    "LinkerdBackOff",
    "LinkerdRetryPolicy",
    "LinkerdRetryState",
    "LinkerdTimeouts",
    "LoadBalancer",
    "Maglev",
    "MirrorPolicy",
    "Outcome",
    "OutcomeKind",
    "OutlierConfig",
    "OutlierDetector",
    "PeakEwma",
    "RandomBalancer",
    "Resource",
    "RetryDecision",
    "RetryOn",
    "RetryPolicy",
    "RetryResource",
    "RetryState",
    "RingHash",
    "RoundRobin",
    "RouteTimeout",
    "ServiceProfileRetry",
    "StopReason",
    "StringMatch",
    "SuccessRateAccrual",
    "Thresholds",
    "TpsBudget",
    "WeightedSplit",
    "first_match",
    "fractional_percent",
    "grpc_to_http_status",
    "hash64",
    "is_accrual_failure",
    "parse_status_ranges",
    "per_try_deadline",
    "sample_per_million",
]
