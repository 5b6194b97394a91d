"""Envoy circuit-breaker thresholds and Istio's defaults.

docs/mesh-semantics.md §2.1, §2.2, §1.3.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.policy import (
    MAX_UINT32,
    CircuitBreaker,
    EnvoyRetryBudget,
    Resource,
    Thresholds,
)


def test_s2_1_raw_envoy_defaults() -> None:
    t = Thresholds.envoy_default()
    assert (t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries) == (
        1024,
        1024,
        1024,
        3,
    )
    assert t.retry_budget is None


def test_s2_2_istio_defaults_are_max_uint32() -> None:
    """§2.2 / §1.3: Istio fills every unset threshold with 2^32-1 (no circuit breaking)."""
    t = Thresholds.istio_default()
    assert MAX_UINT32 == 4_294_967_295
    assert {t.limit(r) for r in Resource} == {MAX_UINT32}


def test_s1_3_istio_retry_budget_defaults() -> None:
    budget = EnvoyRetryBudget()
    assert (budget.budget_percent, budget.min_retry_concurrency) == (20.0, 3)
    breaker = CircuitBreaker(Thresholds.istio_default(retry_budget=budget))
    assert breaker.limit(Resource.RETRIES) == 3  # the budget overrides max_retries


def test_s2_1_overflow_counts_and_refuses() -> None:
    breaker = CircuitBreaker(Thresholds(max_pending_requests=2))
    assert breaker.try_acquire(Resource.PENDING_REQUESTS)
    assert breaker.try_acquire(Resource.PENDING_REQUESTS)
    assert not breaker.try_acquire(Resource.PENDING_REQUESTS)
    assert breaker.overflows[Resource.PENDING_REQUESTS] == 1
    breaker.release(Resource.PENDING_REQUESTS)
    assert breaker.try_acquire(Resource.PENDING_REQUESTS)


def test_s1_2_envoy_max_retries_three() -> None:
    breaker = CircuitBreaker()
    assert [breaker.try_acquire_retry() for _ in range(4)] == [True, True, True, False]
    assert breaker.overflows[Resource.RETRIES] == 1


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="nothing held"):
        CircuitBreaker().release(Resource.REQUESTS)


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    limits=st.tuples(*[st.integers(0, 8)] * 4),
    steps=st.integers(1, 300),
)
def test_property_breaker_never_admits_more_than_its_limits(
    seed: int, limits: tuple[int, int, int, int], steps: int
) -> None:
    rng = np.random.default_rng(seed)
    breaker = CircuitBreaker(Thresholds(*limits))
    held = dict.fromkeys(Resource, 0)
    resources = list(Resource)
    for _ in range(steps):
        resource = resources[int(rng.integers(4))]
        if rng.random() < 0.6:
            if breaker.try_acquire(resource):
                held[resource] += 1
        elif held[resource] > 0:
            breaker.release(resource)
            held[resource] -= 1
        for r in Resource:
            assert breaker.active(r) == held[r] <= breaker.limit(r)


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    percent=st.floats(0.0, 100.0),
    floor=st.integers(0, 5),
)
def test_property_retry_budget_never_admits_more_than_its_limit(
    seed: int, percent: float, floor: int
) -> None:
    """§1.2: at the moment a retry is admitted, active retries <= the budget's limit."""
    rng = np.random.default_rng(seed)
    breaker = CircuitBreaker(Thresholds(retry_budget=EnvoyRetryBudget(percent, floor)))
    for _ in range(200):
        u = rng.random()
        if u < 0.3:
            breaker.try_acquire(Resource.REQUESTS)
        elif u < 0.45 and breaker.active(Resource.REQUESTS):
            breaker.release(Resource.REQUESTS)
        elif u < 0.8:
            if breaker.try_acquire_retry():
                assert breaker.active(Resource.RETRIES) <= breaker.limit(Resource.RETRIES)
        elif breaker.active(Resource.RETRIES):
            breaker.release_retry()
