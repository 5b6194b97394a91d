"""Linkerd retries: route annotations (§6.2) and ServiceProfiles (§6.1); back-off bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.policy import (
    GrpcStatus,
    LinkerdBackOff,
    LinkerdRetryPolicy,
    LinkerdRetryState,
    Outcome,
    ServiceProfileRetry,
    StopReason,
    TpsBudget,
    parse_status_ranges,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_s6_2_defaults_limit_one_no_status_no_budget() -> None:
    p = LinkerdRetryPolicy.from_annotations()
    assert p.limit == 1
    assert p.http_statuses == ()
    assert p.timeout_s is None
    assert p.max_body_bytes == 64 * 1024
    assert p.backoff == LinkerdBackOff(0.025, 0.25, 1.0)


def test_s6_2_unset_http_annotation_retries_no_status() -> None:
    p = LinkerdRetryPolicy.from_annotations(limit=3)
    assert not p.is_retryable(Outcome.response(503))


def test_s6_2_status_ranges() -> None:
    assert parse_status_ranges("5xx,gateway-error,429,520-530") == (
        (500, 599),
        (502, 504),
        (429, 429),
        (520, 530),
    )
    p = LinkerdRetryPolicy.from_annotations(http="gateway-error,429")
    assert p.is_retryable(Outcome.response(503))
    assert p.is_retryable(Outcome.response(429))
    assert not p.is_retryable(Outcome.response(500))
    with pytest.raises(ValueError, match=r"retry\.linkerd\.io/http"):
        parse_status_ranges("6xx")


def test_s6_2_grpc_codes_in_headers_or_trailers() -> None:
    p = LinkerdRetryPolicy.from_annotations(grpc="unavailable")
    trailers = Outcome.response(200, grpc_status=GrpcStatus.UNAVAILABLE, grpc_in_trailers=True)
    assert p.is_retryable(trailers)
    assert not p.is_retryable(Outcome.response(200, grpc_status=GrpcStatus.INTERNAL))


def test_s6_2_retryable_errors_failfast_refused_stream_and_timeout() -> None:
    p = LinkerdRetryPolicy.from_annotations(timeout_s=0.5)
    assert p.is_retryable(Outcome.failfast())
    assert p.is_retryable(Outcome.refused_stream())
    assert p.is_retryable(Outcome.per_try_timeout())
    # LoadShed is not retryable; connection errors are not inspected; request timeouts
    # (timeout.linkerd.io/*) are not retried (§6.3).
    assert not p.is_retryable(Outcome.load_shed())
    assert not p.is_retryable(Outcome.connect_failure())
    assert not p.is_retryable(Outcome.reset())
    assert not p.is_retryable(Outcome.route_timeout())
    # A per-try timeout without retry.linkerd.io/timeout cannot happen, so is not retried.
    assert not LinkerdRetryPolicy().is_retryable(Outcome.per_try_timeout())


def test_s6_2_limit_and_first_backoff_window() -> None:
    """§6.2: limit 1 -> one retry; the first retry waits [25, 50) ms."""
    state = LinkerdRetryState(LinkerdRetryPolicy.from_annotations(http="5xx"))
    first = state.decide(Outcome.response(500), 1.0, rng(4))
    assert first.retry
    assert 0.025 <= first.delay_s < 0.050
    assert first.retry_at == pytest.approx(1.0 + first.delay_s)
    assert state.decide(Outcome.response(500), 1.1, rng()).reason is StopReason.RETRIES_EXHAUSTED


def test_s6_2_bodies_over_64_kib_are_not_retried() -> None:
    policy = LinkerdRetryPolicy.from_annotations(http="5xx")
    assert (
        LinkerdRetryState(policy, request_body_bytes=65_536)
        .decide(Outcome.response(500), 0.0, rng())
        .retry
    )
    big = LinkerdRetryState(policy, request_body_bytes=65_537)
    assert big.decide(Outcome.response(500), 0.0, rng()).reason is StopReason.BODY_TOO_LARGE


def test_s6_2_backoff_sequence_bases() -> None:
    b = LinkerdBackOff.retry_default()
    assert [b.base_s(n) for n in range(6)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25])


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    iteration=st.integers(0, 64),
    min_ms=st.integers(1, 2000),
    factor=st.floats(1.0, 100.0),
    jitter=st.floats(0.0, 3.0),
)
def test_property_linkerd_backoff_within_bounds(
    seed: int, iteration: int, min_ms: int, factor: float, jitter: float
) -> None:
    lo = min_ms / 1000
    b = LinkerdBackOff(lo, lo * factor, jitter)
    base = b.base_s(iteration)
    delay = b.delay_s(iteration, rng(seed))
    assert lo <= base <= b.max_s
    assert base <= delay <= min(base * (1 + jitter), b.max_s) + 1e-12


# -- ServiceProfile (§6.1) ----------------------------------------------------------------


def test_s6_1_profile_retries_failures_immediately_while_budget_lasts() -> None:
    budget = TpsBudget(ttl_s=10.0, min_per_s=0, ratio=0.2)
    route = ServiceProfileRetry(budget)
    for _ in range(5):  # five successes deposit five tokens = one retry
        assert route.decide(Outcome.ok(), 0.0).reason is StopReason.NOT_RETRYABLE
    decision = route.decide(Outcome.response(503), 0.0)
    assert decision.retry
    assert decision.delay_s == 0.0  # no back-off
    assert route.decide(Outcome.response(503), 0.0).reason is StopReason.BUDGET_EXHAUSTED


def test_s6_1_profile_does_not_retry_transport_errors() -> None:
    route = ServiceProfileRetry(TpsBudget.linkerd_default())
    assert not route.decide(Outcome.reset(), 0.0).retry
    assert not route.decide(Outcome.connect_failure(), 0.0).retry


def test_s6_1_profile_default_classification_is_5xx() -> None:
    route = ServiceProfileRetry(TpsBudget.linkerd_default())
    assert route.decide(Outcome.response(500), 0.0).retry
    assert not route.decide(Outcome.response(429), 0.0).retry


def test_s6_1_profile_large_bodies_not_retried() -> None:
    route = ServiceProfileRetry(TpsBudget.linkerd_default())
    decision = route.decide(Outcome.response(500), 0.0, request_body_bytes=70_000)
    assert decision.reason is StopReason.BODY_TOO_LARGE


def test_s6_1_non_retryable_route_touches_no_budget() -> None:
    budget = TpsBudget(ttl_s=10.0, min_per_s=0, ratio=1.0)
    route = ServiceProfileRetry(budget, is_retryable=False)
    assert route.decide(Outcome.ok(), 0.0).reason is StopReason.NO_POLICY
    assert budget.balance(0.0) == 0
