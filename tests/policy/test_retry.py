"""Envoy retries and Istio's defaults (docs/mesh-semantics.md §1.1, §1.2, §1.3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.policy import (
    CircuitBreaker,
    EnvoyBackOff,
    EnvoyRetryBudget,
    GrpcStatus,
    Outcome,
    Resource,
    RetryOn,
    RetryPolicy,
    RetryState,
    RoundRobin,
    StopReason,
    Thresholds,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- defaults -------------------------------------------------------------------------------


def test_s1_1_raw_envoy_policy_defaults_to_one_retry() -> None:
    """§1.1: a policy that sets no count retries once; host selection retries once."""
    policy = RetryPolicy()
    assert policy.num_retries == 1
    assert policy.host_selection_retry_max_attempts == 1
    assert policy.per_try_timeout_s is None
    assert policy.retry_on == frozenset()


def test_s1_3_istio_default_policy() -> None:
    """§1.3: 2 retries, the five conditions, previous_hosts, 5 host-selection attempts."""
    policy = RetryPolicy.istio_default()
    assert policy.num_retries == 2
    assert policy.retry_on == {
        RetryOn.CONNECT_FAILURE,
        RetryOn.REFUSED_STREAM,
        RetryOn.UNAVAILABLE,
        RetryOn.CANCELLED,
        RetryOn.RETRIABLE_STATUS_CODES,
    }
    assert policy.retriable_status_codes == frozenset()
    assert policy.previous_hosts is True
    assert policy.host_selection_retry_max_attempts == 5
    assert policy.per_try_timeout_s is None
    assert policy.backoff == EnvoyBackOff(0.025)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 409, 429])
def test_s1_3_istio_1_24_retries_no_http_status_by_default(status: int) -> None:
    """§1.3: since Istio 1.24 the retriable_status_codes list is empty (503 no longer)."""
    assert not RetryPolicy.istio_default().would_retry(Outcome.response(status))


def test_s1_3_istio_default_retries_connect_failure_refused_stream_and_grpc() -> None:
    policy = RetryPolicy.istio_default()
    assert policy.would_retry(Outcome.connect_failure())
    assert policy.would_retry(Outcome.refused_stream())
    assert policy.would_retry(Outcome.response(200, grpc_status=GrpcStatus.UNAVAILABLE))
    assert policy.would_retry(Outcome.response(200, grpc_status=GrpcStatus.CANCELLED))
    assert not policy.would_retry(Outcome.response(200, grpc_status=GrpcStatus.INTERNAL))
    # A plain reset is not a connect failure nor a refused stream.
    assert not policy.would_retry(Outcome.reset())
    assert not policy.would_retry(Outcome.per_try_timeout())


def test_s1_1_grpc_status_only_from_headers_never_trailers() -> None:
    policy = RetryPolicy.istio_default()
    trailers = Outcome.response(200, grpc_status=GrpcStatus.UNAVAILABLE, grpc_in_trailers=True)
    assert not policy.would_retry(trailers)


def test_s1_3_consistent_hash_omits_previous_hosts() -> None:
    assert RetryPolicy.istio_default(consistent_hash=True).previous_hosts is False


def test_s1_3_virtual_service_attempts_zero_disables_retries() -> None:
    assert RetryPolicy.istio(0) is None
    vs = RetryPolicy.istio(3, retry_on="5xx,503", per_try_timeout_s=0.2, backoff_base_s=0.05)
    assert vs is not None
    assert vs.num_retries == 3
    assert vs.retry_on == {RetryOn.FIVE_XX, RetryOn.RETRIABLE_STATUS_CODES}
    assert vs.retriable_status_codes == {503}
    assert vs.per_try_timeout_s == 0.2
    assert vs.backoff.cap_s == pytest.approx(0.5)  # only the base is set; cap is 10 x base


# -- retry_on conditions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "outcome", "expected"),
    [
        ("5xx", Outcome.response(500), True),
        ("5xx", Outcome.response(599), True),
        ("5xx", Outcome.response(499), False),
        ("5xx", Outcome.reset(), True),
        ("5xx", Outcome.connect_failure(), True),
        ("5xx", Outcome.refused_stream(), True),
        ("5xx", Outcome.per_try_timeout(), True),
        ("gateway-error", Outcome.response(502), True),
        ("gateway-error", Outcome.response(503), True),
        ("gateway-error", Outcome.response(504), True),
        ("gateway-error", Outcome.response(500), False),
        ("gateway-error", Outcome.per_try_timeout(), True),
        ("gateway-error", Outcome.reset(), True),
        ("reset", Outcome.reset(), True),
        ("reset", Outcome.response(503), False),
        ("reset", Outcome.per_try_timeout(), False),
        ("connect-failure", Outcome.connect_failure(), True),
        ("connect-failure", Outcome.reset(), False),
        ("retriable-4xx", Outcome.response(409), True),
        ("retriable-4xx", Outcome.response(404), False),
        ("refused-stream", Outcome.refused_stream(), True),
        ("refused-stream", Outcome.reset(), False),
        ("retriable-status-codes", Outcome.response(503), False),  # no codes listed
        ("envoy-ratelimited", Outcome.response(429, rate_limited=True), True),
        ("5xx", Outcome.response(503, rate_limited=True), False),
    ],
)
def test_s1_1_retry_on_conditions(condition: str, outcome: Outcome, expected: bool) -> None:
    assert RetryPolicy.envoy(condition).would_retry(outcome) is expected


def test_s1_1_retriable_status_codes_only_listed_codes() -> None:
    policy = RetryPolicy.envoy("retriable-status-codes", retriable_status_codes=[418])
    assert policy.would_retry(Outcome.response(418))
    assert not policy.would_retry(Outcome.response(503))


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome.overflow(),
        Outcome.response(503, overloaded=True),
        Outcome.route_timeout(),
        Outcome.fault_abort(503),
    ],
)
def test_s1_1_never_retried_whatever_retry_on(outcome: Outcome) -> None:
    """§1.1 / §7.2: overflow (UO, x-envoy-overloaded), route timeout (UT), fault aborts."""
    everything = RetryPolicy(retry_on=frozenset(RetryOn), retriable_status_codes=frozenset({503}))
    assert not everything.would_retry(outcome)


def test_unknown_retry_on_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown retry_on 'five-xx'"):
        RetryPolicy.envoy("five-xx")


# -- the retry loop -------------------------------------------------------------------------


def test_s1_1_total_attempts_is_one_plus_num_retries() -> None:
    state = RetryState(RetryPolicy.envoy("5xx", num_retries=2))
    decisions = []
    for _ in range(5):
        state.on_attempt("h")
        decision = state.decide(Outcome.response(503), 0.0, rng())
        decisions.append(decision)
        if not decision.retry:
            break
    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[-1].reason is StopReason.RETRIES_EXHAUSTED
    assert state.attempts == 3


def test_s1_1_not_retryable_stops_before_counting() -> None:
    state = RetryState(RetryPolicy.envoy("5xx", num_retries=1))
    assert state.decide(Outcome.ok(), 0.0, rng()).reason is StopReason.NOT_RETRYABLE
    assert state.retries_remaining == 1


def test_no_policy_never_retries() -> None:
    assert RetryState(None).decide(Outcome.reset(), 0.0, rng()).reason is StopReason.NO_POLICY


def test_s1_1_order_overflow_consumes_a_retry_then_stops() -> None:
    """§1.1 steps 2-4: retries_remaining is decremented before the resource check."""
    breaker = CircuitBreaker(Thresholds(max_retries=0))
    state = RetryState(RetryPolicy.envoy("5xx", num_retries=2), retries=breaker)
    decision = state.decide(Outcome.response(503), 0.0, rng())
    assert decision.retry is False
    assert decision.reason is StopReason.RETRY_OVERFLOW
    assert state.retries_remaining == 1
    assert breaker.overflows[Resource.RETRIES] == 1


def test_s1_1_exhausted_is_checked_before_the_resource() -> None:
    breaker = CircuitBreaker(Thresholds(max_retries=0))
    state = RetryState(RetryPolicy.envoy("5xx", num_retries=0), retries=breaker)
    assert state.decide(Outcome.response(503), 0.0, rng()).reason is StopReason.RETRIES_EXHAUSTED
    assert breaker.overflows[Resource.RETRIES] == 0


def test_s1_1_retry_resource_held_until_next_outcome() -> None:
    breaker = CircuitBreaker(Thresholds(max_retries=1))
    policy = RetryPolicy.envoy("5xx", num_retries=3)
    a, b = RetryState(policy, retries=breaker), RetryState(policy, retries=breaker)
    assert a.decide(Outcome.response(503), 0.0, rng()).retry
    assert breaker.active(Resource.RETRIES) == 1
    # A second request cannot retry while a's retry is outstanding (max_retries 1).
    assert b.decide(Outcome.response(503), 0.0, rng()).reason is StopReason.RETRY_OVERFLOW
    # a's retry resolves: the slot is released, then taken again for a's next retry.
    assert a.decide(Outcome.response(503), 0.1, rng()).retry
    assert breaker.active(Resource.RETRIES) == 1
    assert a.decide(Outcome.ok(), 0.2, rng()).retry is False
    assert breaker.active(Resource.RETRIES) == 0


def test_close_releases_a_held_retry_once() -> None:
    breaker = CircuitBreaker(Thresholds(max_retries=1))
    state = RetryState(RetryPolicy.envoy("5xx", num_retries=1), retries=breaker)
    assert state.decide(Outcome.reset(), 0.0, rng()).retry
    state.close()
    state.close()
    assert breaker.active(Resource.RETRIES) == 0


def test_s1_2_retry_budget_overrides_max_retries() -> None:
    """§1.2: max(20% x (active + pending), 3) concurrent retries."""
    breaker = CircuitBreaker(Thresholds(max_retries=0, retry_budget=EnvoyRetryBudget()))
    assert breaker.limit(Resource.RETRIES) == 3
    for _ in range(30):
        assert breaker.try_acquire(Resource.REQUESTS)
    for _ in range(10):
        assert breaker.try_acquire(Resource.PENDING_REQUESTS)
    assert breaker.limit(Resource.RETRIES) == 8  # floor(0.2 * 40)
    for _ in range(8):
        assert breaker.try_acquire_retry()
    assert not breaker.try_acquire_retry()


def test_s1_2_budget_truncates_toward_zero() -> None:
    assert EnvoyRetryBudget().max_active_retries(24, 0) == 4  # 4.8 -> 4
    assert EnvoyRetryBudget(50.0, 0).max_active_retries(3, 0) == 1


def test_retry_at_is_now_plus_delay() -> None:
    state = RetryState(RetryPolicy.envoy("5xx"))
    decision = state.decide(Outcome.response(500), 12.5, rng(3))
    assert decision.retry_at == pytest.approx(12.5 + decision.delay_s)


# -- back-off -------------------------------------------------------------------------------


def test_s1_1_envoy_backoff_bounds_with_defaults() -> None:
    """§1.1: 1st retry [0, 25) ms, 2nd [0, 75), 3rd [0, 175), later [0, 250)."""
    b = EnvoyBackOff()
    assert [b.upper_bound_s(n) for n in (1, 2, 3, 4, 10)] == pytest.approx(
        [0.025, 0.075, 0.175, 0.25, 0.25]
    )


def test_s1_1_envoy_backoff_is_uniform_full_jitter() -> None:
    """Statistical: the mean of U[0, 75 ms) is 37.5 ms; 20 000 draws, tolerance 1 ms (> 5 sd)."""
    b, g = EnvoyBackOff(), rng(11)
    draws = np.array([b.delay_s(2, g) for _ in range(20_000)])
    assert draws.min() >= 0.0
    assert draws.max() < 0.075
    assert abs(draws.mean() - 0.0375) < 0.001


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    base_ms=st.integers(1, 500),
    cap_factor=st.floats(1.0, 20.0),
    retry=st.integers(1, 80),
)
def test_property_envoy_backoff_within_bounds(
    seed: int, base_ms: int, cap_factor: float, retry: int
) -> None:
    base = base_ms / 1000
    b = EnvoyBackOff(base, base * cap_factor)
    delay = b.delay_s(retry, rng(seed))
    assert 0.0 <= delay < min((2**retry - 1) * base, base * cap_factor) + 1e-12


def test_s1_1_previous_hosts_repicks_up_to_max_attempts() -> None:
    """§1.1: the predicate rejects tried hosts; at most 5 re-picks (Istio), then the last."""
    state = RetryState(RetryPolicy.istio_default())
    state.on_attempt("a")
    assert state.previous_hosts == {"a"}
    assert state.reselect_attempts == 5
    lb = RoundRobin()
    g = rng(0)
    lb.pick(["a", "b", "c"], 0.0, g)  # fixes the random starting point
    for _ in range(10):
        host = lb.pick(
            ["a", "b", "c"],
            0.0,
            g,
            previous_hosts=state.previous_hosts,
            reselect_attempts=state.reselect_attempts,
        )
        assert host != "a"


def test_s1_1_previous_hosts_falls_back_to_last_pick() -> None:
    """With only tried hosts available the last selected host is used."""
    lb = RoundRobin()
    host = lb.pick(["a"], 0.0, rng(), previous_hosts={"a"}, reselect_attempts=5)
    assert host == "a"


def test_without_predicate_no_reselect() -> None:
    state = RetryState(RetryPolicy.envoy("5xx"))
    state.on_attempt("a")
    assert state.previous_hosts == frozenset()
    assert state.reselect_attempts == 0
