"""Traffic split, matching, mirroring (§7.3, §7.4) and fault injection (§7.2)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from meshsim.policy import (
    FaultAbort,
    FaultDelay,
    FaultInjection,
    HTTPMatch,
    MirrorPolicy,
    Outcome,
    RetryPolicy,
    RetryState,
    StopReason,
    StringMatch,
    WeightedSplit,
    first_match,
    fractional_percent,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_s7_2_percent_to_parts_per_million() -> None:
    assert fractional_percent(100.0) == 1_000_000
    assert fractional_percent(0.1) == 1000
    assert fractional_percent(12.34567) == 123456  # truncated, as uint32() in Go
    with pytest.raises(ValueError, match="percentage"):
        fractional_percent(101.0)


# -- split ----------------------------------------------------------------------------------


def test_s7_3_split_shares_are_weight_over_total() -> None:
    split = WeightedSplit({"v1": 90, "v2": 10})
    assert split.share("v1") == 0.9
    g = rng(1)
    counts = Counter(split.choose(g) for _ in range(20_000))
    assert abs(counts["v2"] / 20_000 - 0.10) < 0.01  # sd ~ 0.002


def test_s7_3_single_destination_gets_everything() -> None:
    split = WeightedSplit({"only": 0})
    assert split.share("only") == 1.0
    assert {split.choose(rng(s)) for s in range(10)} == {"only"}


def test_s7_3_zero_weight_never_chosen() -> None:
    split = WeightedSplit({"a": 1, "b": 0})
    assert {split.choose(rng(s)) for s in range(200)} == {"a"}
    with pytest.raises(ValueError, match="all be 0"):
        WeightedSplit({"a": 0, "b": 0})


def test_s5_linkerd_unavailable_backend_gets_weight_zero() -> None:
    split = WeightedSplit({"a": 50, "b": 50})
    assert {split.choose(rng(s), available=["b"]) for s in range(100)} == {"b"}
    assert split.choose(rng(), available=[]) is None


# -- matching -------------------------------------------------------------------------------


def test_http_match_path_headers_method() -> None:
    m = HTTPMatch(
        path=StringMatch(prefix="/api/"),
        method="get",
        headers={"X-User": StringMatch(regex="beta-.*")},
    )
    assert m.matches("/api/v1", {"x-user": "beta-7"}, "GET")
    assert not m.matches("/api/v1", {"x-user": "prod-7"}, "GET")
    assert not m.matches("/web", {"x-user": "beta-7"}, "GET")
    assert not m.matches("/api/v1", {"x-user": "beta-7"}, "POST")
    assert not m.matches("/api/v1", {}, "GET")
    assert HTTPMatch().matches("/anything", {})


def test_string_match_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        StringMatch(exact="a", prefix="b")


def test_first_match_wins_and_catch_all() -> None:
    routes = [
        ([HTTPMatch(headers={"end-user": StringMatch(exact="jason")})], "v2"),
        ([], "v1"),
    ]
    assert first_match(routes, "/", {"end-user": "jason"}) == "v2"
    assert first_match(routes, "/", {}) == "v1"
    assert first_match(routes[:1], "/", {}) is None


# -- mirroring ------------------------------------------------------------------------------


def test_s7_4_mirror_defaults_to_100_percent() -> None:
    mirror = MirrorPolicy("reviews-v3")
    assert mirror.per_million == 1_000_000
    assert all(mirror.should_mirror(rng(s)) for s in range(50))


def test_s7_4_mirror_percentage() -> None:
    mirror, g = MirrorPolicy("shadow", percent=25.0), rng(3)
    share = sum(mirror.should_mirror(g) for _ in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.015  # sd ~ 0.003


# -- fault injection ------------------------------------------------------------------------


def test_s7_2_unset_percentages_inject_nothing() -> None:
    fault = FaultInjection(FaultDelay(fixed_delay_s=5.0), FaultAbort(503))
    for s in range(100):
        decision = fault.decide(rng(s))
        assert not decision.delayed
        assert not decision.aborted


def test_s7_2_full_delay_and_abort() -> None:
    decision = FaultInjection(FaultDelay(0.05, 100.0), FaultAbort(500, 100.0)).decide(rng())
    assert decision.delay_s == 0.05
    assert decision.abort_status == 500


def test_s7_2_delay_then_independent_abort() -> None:
    """§7.2: P(delay and abort) = P(delay)·P(abort) = 0.5 x 0.2; 40 000 draws, sd ~ 0.0015."""
    fault, g = FaultInjection(FaultDelay(0.01, 50.0), FaultAbort(503, 20.0)), rng(5)
    decisions = [fault.decide(g) for _ in range(40_000)]
    both = sum(d.delayed and d.aborted for d in decisions) / 40_000
    delayed = sum(d.delayed for d in decisions) / 40_000
    aborted = sum(d.aborted for d in decisions) / 40_000
    assert abs(delayed - 0.5) < 0.01
    assert abs(aborted - 0.2) < 0.01
    assert abs(both - 0.1) < 0.008


def test_s7_2_aborts_are_never_retried() -> None:
    state = RetryState(RetryPolicy.envoy("5xx,gateway-error,retriable-status-codes,503", 5))
    decision = state.decide(Outcome.fault_abort(503), 0.0, rng())
    assert decision.reason is StopReason.NOT_RETRYABLE
