"""Linkerd failure accrual (docs/mesh-semantics.md §6.4)."""

from __future__ import annotations

import numpy as np
import pytest

from meshsim.policy import (
    AccrualState,
    ConsecutiveFailures,
    FailureAccrual,
    GrpcStatus,
    LinkerdBackOff,
    Outcome,
    SuccessRateAccrual,
    is_accrual_failure,
)

ERR = Outcome.response(500)
OK = Outcome.ok()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_s6_4_consecutive_defaults() -> None:
    b = ConsecutiveFailures()
    assert b.max_failures == 7
    assert b.backoff == LinkerdBackOff(1.0, 60.0, 0.5)


def test_s6_4_failure_classification() -> None:
    assert is_accrual_failure(ERR)
    assert is_accrual_failure(Outcome.reset())  # the proxy's own 503
    for code in (15, 4, 13, 7, 14):
        assert is_accrual_failure(Outcome.response(200, grpc_status=code))
    assert not is_accrual_failure(Outcome.response(200, grpc_status=GrpcStatus.CANCELLED))
    assert not is_accrual_failure(Outcome.response(429))
    assert is_accrual_failure(Outcome.response(429), success_rate_mode=True)
    rex = Outcome.response(200, grpc_status=GrpcStatus.RESOURCE_EXHAUSTED)
    assert is_accrual_failure(rex, success_rate_mode=True)
    assert not is_accrual_failure(rex)


def test_s6_4_shuts_after_seven_consecutive_failures() -> None:
    b = ConsecutiveFailures()
    g = rng()
    for _ in range(6):
        b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.OPEN
    b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.SHUT
    assert not b.is_ready(0.0)


def test_s6_4_success_resets_the_count() -> None:
    b = ConsecutiveFailures()
    g = rng()
    for _ in range(6):
        b.record(ERR, 0.0, g)
    b.record(OK, 0.0, g)
    for _ in range(6):
        b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.OPEN


def test_s6_4_first_penalty_between_1_and_1_5_s_then_one_probe() -> None:
    b = ConsecutiveFailures()
    for _ in range(7):
        b.record(ERR, 10.0, rng(5))
    probation_at = b.probation_at
    assert probation_at is not None
    assert 11.0 <= probation_at < 11.5
    assert b.state(probation_at - 1e-9) is AccrualState.SHUT
    assert b.state(probation_at) is AccrualState.PROBATION
    assert b.is_ready(probation_at)
    b.on_dispatch(probation_at)  # exactly one request is admitted
    assert not b.is_ready(probation_at)
    with pytest.raises(RuntimeError, match="not ready"):
        b.on_dispatch(probation_at)


def test_s6_4_failed_probe_shuts_again_with_doubled_penalty() -> None:
    b = ConsecutiveFailures(backoff=LinkerdBackOff(1.0, 60.0, 0.0))
    g = rng()
    for _ in range(7):
        b.record(ERR, 0.0, g)
    assert b.probation_at == 1.0
    b.on_dispatch(1.0)
    b.record(ERR, 1.2, g)
    assert b.probation_at == pytest.approx(3.2)  # 2 s
    b.on_dispatch(3.2)
    b.record(ERR, 3.2, g)
    assert b.probation_at == pytest.approx(7.2)  # 4 s


def test_s6_4_successful_probe_reopens_and_resets() -> None:
    b = ConsecutiveFailures(backoff=LinkerdBackOff(1.0, 60.0, 0.0))
    g = rng()
    for _ in range(7):
        b.record(ERR, 0.0, g)
    b.on_dispatch(1.0)
    b.record(ERR, 1.0, g)  # fails: next penalty 2 s
    b.on_dispatch(3.0)
    b.record(OK, 3.0, g)
    assert b.state(3.0) is AccrualState.OPEN
    for _ in range(7):
        b.record(ERR, 4.0, g)
    assert b.probation_at == 5.0  # back-off restarted at 1 s


def test_s6_4_responses_while_shut_are_ignored() -> None:
    b = ConsecutiveFailures(backoff=LinkerdBackOff(1.0, 60.0, 0.0))
    g = rng()
    for _ in range(7):
        b.record(ERR, 0.0, g)
    b.record(OK, 0.5, g)
    assert b.state(0.5) is AccrualState.SHUT
    assert b.probation_at == 1.0


def test_s6_4_penalty_capped_at_60_s() -> None:
    b = ConsecutiveFailures(backoff=LinkerdBackOff.accrual_default())
    g = rng(9)
    t = 0.0
    for _ in range(7):
        b.record(ERR, t, g)
    for _ in range(12):
        at = b.probation_at
        assert at is not None
        assert at - t <= 60.0
        t = at
        b.on_dispatch(t)
        b.record(ERR, t, g)
    at = b.probation_at
    assert at is not None
    assert at - t == 60.0


def test_s6_4_success_rate_mode_defaults_and_trip() -> None:
    b = SuccessRateAccrual()
    assert (b.threshold, b.window_s, b.min_requests) == (0.8, 10.0, 5)
    g = rng()
    for _ in range(4):
        b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.OPEN  # fewer than 5 requests
    b.record(OK, 0.0, g)
    assert b.state(0.0) is AccrualState.SHUT  # 1/5 = 0.2 < 0.8


def test_s6_4_success_rate_window_slides() -> None:
    b = SuccessRateAccrual()
    g = rng()
    for _ in range(3):
        b.record(ERR, 0.0, g)
    for _ in range(20):
        b.record(OK, 10.5, g)  # the failures at t=0 have left the 10 s window
    b.record(ERR, 10.5, g)
    assert b.state(10.5) is AccrualState.OPEN


def test_s6_4_unified_keeps_the_consecutive_failures_rule() -> None:
    """linkerd2's policy controller reads the consecutive annotations for unified mode too
    (default 7, 0 turns that rule off) and linkerd2-proxy's unified breaker shuts on either
    rule: after 1000 successes the success rate stays above 0.8 long after 7 failures in a
    row, yet the 7th shuts the breaker."""
    g = rng()
    for max_failures, shut_after in ((7, 7), (5, 5), (0, 251)):
        acc = FailureAccrual("unified", max_failures)
        b = acc.breaker("a")
        assert isinstance(b, SuccessRateAccrual)
        assert b.max_failures == max_failures
        t = 0.0
        for _ in range(1000):
            b.record(OK, t, g)
            t += 0.001
        n = 0
        while b.state(t) is AccrualState.OPEN:
            b.record(ERR, t, g)
            t += 0.001
            n += 1
        # Without the consecutive rule: the 10 s window holds 1000 + n results, and
        # 1000 / (1000 + n) falls below 0.8 at n = 251.
        assert (n, b.trips) == (shut_after, 1)


def test_s6_4_unified_a_429_breaks_a_run_of_failures_but_counts_for_the_success_rate() -> None:
    """A 429 is a soft failure: not a consecutive failure (it resets the count, as a
    success does), but a failure for the success rate."""
    g = rng()
    b = SuccessRateAccrual(threshold=0.5, min_requests=100)
    for _ in range(6):
        b.record(ERR, 0.0, g)
    b.record(Outcome.response(429), 0.0, g)
    for _ in range(6):
        b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.OPEN
    b.record(ERR, 0.0, g)
    assert b.state(0.0) is AccrualState.SHUT
    with pytest.raises(ValueError, match="max_failures"):
        SuccessRateAccrual(max_failures=-1)


def test_failure_accrual_per_endpoint_ready_set() -> None:
    acc = FailureAccrual()
    g = rng()
    for _ in range(7):
        acc.on_dispatch("a", 0.0)
        acc.record("a", ERR, 0.0, g)
    assert acc.ready(["a", "b"], 0.5) == ["b"]
    with pytest.raises(ValueError, match="mode"):
        FailureAccrual(mode="bogus")
