"""Load balancers (docs/mesh-semantics.md §4, §5)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.policy import (
    LeastRequest,
    LoadBalancer,
    Maglev,
    PeakEwma,
    RandomBalancer,
    RingHash,
    RoundRobin,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    "lb", [RoundRobin(), LeastRequest(), RandomBalancer(), RingHash(), Maglev(251), PeakEwma()]
)
def test_every_balancer_follows_the_protocol(lb: LoadBalancer) -> None:
    assert isinstance(lb, LoadBalancer)
    assert lb.pick([], 0.0, rng()) is None
    host = lb.pick(["a", "b"], 0.0, rng())
    assert host in ("a", "b")
    lb.on_start(host, 0.0)
    lb.on_complete(host, 0.01, 0.01)


def test_on_complete_without_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no request in flight"):
        LeastRequest().on_complete("a", 0.1, 0.1)


# -- round robin ----------------------------------------------------------------------------


@settings(deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), k=st.integers(1, 200))
def test_property_round_robin_is_fair_within_one(seed: int, n: int, k: int) -> None:
    """§4: equal weights: after k picks every endpoint has floor(k/n) or ceil(k/n)."""
    lb, g = RoundRobin(), rng(seed)
    endpoints = [f"e{i}" for i in range(n)]
    counts = Counter(lb.pick(endpoints, 0.0, g) for _ in range(k))
    values = [counts[e] for e in endpoints]
    assert max(values) - min(values) <= 1
    assert sum(values) == k


def test_s4_weighted_round_robin_follows_weights_exactly() -> None:
    lb = RoundRobin()
    counts = Counter(lb.pick(["a", "b"], 0.0, rng(), weights={"a": 3, "b": 1}) for _ in range(400))
    assert counts == {"a": 300, "b": 100}


# -- least request --------------------------------------------------------------------------


def test_s4_least_request_defaults() -> None:
    lb = LeastRequest()
    assert (lb.choice_count, lb.active_request_bias) == (2, 1.0)


def test_s4_p2c_prefers_fewer_active_and_first_draw_wins_ties() -> None:
    """§4: strict '<': the first of the two draws wins ties; draws are with replacement."""
    endpoints = ["a", "b"]
    lb = LeastRequest()
    for _ in range(3):
        lb.on_start("a", 0.0)
    # Whenever the draws are (a, b) or (b, a), b wins; only (a, a) gives a: P = 1/4.
    g = rng(1)
    picks = Counter(lb.pick(endpoints, 0.0, g) for _ in range(8000))
    assert abs(picks["a"] / 8000 - 0.25) < 0.02  # statistical: sd ~ 0.005
    # Ties: replicate the generator to know the first draw.
    idle = LeastRequest()
    for seed in range(20):
        first = int(rng(seed).integers(2))
        assert idle.pick(endpoints, 0.0, rng(seed)) == endpoints[first]


def test_s4_weighted_least_request_uses_dynamic_weights() -> None:
    """§4: unequal weights -> EDF with w / (active + 1)^bias."""
    lb = LeastRequest()
    weights = {"a": 2.0, "b": 1.0}
    counts = Counter(lb.pick(["a", "b"], 0.0, rng(), weights=weights) for _ in range(300))
    assert counts == {"a": 200, "b": 100}  # nothing active: plain weights
    busy = LeastRequest()
    for _ in range(3):
        busy.on_start("a", 0.0)  # a: 2/4 = 0.5 < b: 1/1
    counts = Counter(busy.pick(["a", "b"], 0.0, rng(), weights=weights) for _ in range(300))
    assert counts["b"] > counts["a"]
    assert counts == {"a": 100, "b": 200}


def test_s4_random_is_uniform() -> None:
    lb, g = RandomBalancer(), rng(2)
    counts = Counter(lb.pick(["a", "b", "c", "d"], 0.0, g) for _ in range(40_000))
    for e in "abcd":
        assert abs(counts[e] / 40_000 - 0.25) < 0.01  # sd ~ 0.002


# -- consistent hashing ---------------------------------------------------------------------


@pytest.mark.parametrize("lb_type", [RingHash, Maglev])
def test_s4_consistent_hash_is_deterministic(lb_type: type[RingHash] | type[Maglev]) -> None:
    endpoints = [f"10.0.0.{i}:8080" for i in range(5)]
    a = lb_type() if lb_type is RingHash else Maglev(251)
    b = lb_type() if lb_type is RingHash else Maglev(251)
    for key in ("user-1", "user-2", b"cookie", 42):
        first = a.pick(endpoints, 0.0, rng(1), hash_key=key)
        assert first == b.pick(endpoints, 9.0, rng(2), hash_key=key)
        assert first == a.pick(endpoints, 1.0, rng(3), hash_key=key)


def test_s4_ring_hash_ring_size_and_balance() -> None:
    """§4: min ring 1024: 4 equal hosts get 256 entries each."""
    lb = RingHash()
    endpoints = ["a", "b", "c", "d"]
    keys = [f"k{i}" for i in range(4000)]
    counts = Counter(lb.pick(endpoints, 0.0, rng(), hash_key=k) for k in keys)
    assert lb.ring_size() == 1024
    for e in endpoints:
        assert 0.15 < counts[e] / 4000 < 0.35  # ketama with 256 points/host: within ~±10 %


def test_s4_ring_hash_mostly_keeps_keys_when_a_host_leaves() -> None:
    """Removing one of 4 hosts: its keys move; of the others only those caught by the extra
    points the remaining hosts get (256 -> 342 each) move, ~20 % in expectation, against
    ~67 % for a modulo hash. Tolerance: at least 70 % stay."""
    lb = RingHash()
    keys = [str(i) for i in range(2000)]
    before = {k: lb.pick(["a", "b", "c", "d"], 0.0, rng(), hash_key=k) for k in keys}
    after = {k: lb.pick(["a", "b", "c"], 0.0, rng(), hash_key=k) for k in keys}
    assert all(after[k] != "d" for k in keys)
    kept = [k for k in keys if before[k] != "d"]
    stayed = sum(before[k] == after[k] for k in kept)
    assert stayed / len(kept) >= 0.70


def test_s4_maglev_table_size_and_balance() -> None:
    """§4: table size 65537 by default; each of 3 equal hosts owns ~1/3 of the table."""
    assert Maglev().table_size == 65537
    lb = Maglev()
    lb.pick(["a", "b", "c"], 0.0, rng(), hash_key="x")
    owned = Counter(lb.table)
    assert len(lb.table) == 65537
    for e in "abc":
        assert abs(owned[e] - 65537 / 3) <= 1  # Maglev fills in turns: at most one apart


def test_maglev_table_size_must_be_prime() -> None:
    with pytest.raises(ValueError, match="prime"):
        Maglev(100)


def test_hash_without_key_is_random() -> None:
    lb = RingHash()
    picks = {lb.pick(["a", "b", "c"], 0.0, rng(s)) for s in range(50)}
    assert picks == {"a", "b", "c"}


# -- peak EWMA ------------------------------------------------------------------------------


def test_s5_peak_ewma_defaults_and_cost() -> None:
    """§5: default RTT 30 ms, decay 10 s, cost = rtt x (pending + 1)."""
    lb = PeakEwma()
    assert (lb.default_rtt_s, lb.decay_s) == (0.030, 10.0)
    lb.on_start("a", 0.0)
    lb.on_start("a", 0.0)
    assert lb.load("a", 0.0) == pytest.approx(0.030 * 3)
    assert PeakEwma(default_rtt_s=0.0).default_rtt_s == 0.001  # floored at 1 ms


def test_s5_peak_ewma_peak_then_decay() -> None:
    lb = PeakEwma()
    lb.on_start("a", 0.0)
    lb.on_complete("a", 0.200, 0.2)  # above the estimate: jumps to the sample
    assert lb.rtt_estimate_s("a") == pytest.approx(0.200)
    lb.on_start("a", 0.2)
    lb.on_complete("a", 0.010, 10.2)  # 10 s later: w = e^-1
    w = np.exp(-1.0)
    assert lb.rtt_estimate_s("a") == pytest.approx(0.200 * w + 0.010 * (1 - w))


def test_s5_reading_load_decays_an_idle_endpoint() -> None:
    lb = PeakEwma()
    lb.load("a", 0.0)
    assert lb.load("a", 10.0) == pytest.approx(0.030 * np.exp(-1.0))


def test_s5_p2c_picks_two_distinct_endpoints() -> None:
    """§5: with two endpoints P2C always compares both, so the cheaper always wins."""
    lb = PeakEwma()
    lb.on_start("slow", 0.0)
    for seed in range(50):
        assert lb.pick(["slow", "fast"], 0.0, rng(seed)) == "fast"


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    fast_ms=st.floats(30.0, 300.0),
    ratio=st.floats(1.5, 20.0),
)
def test_property_peak_ewma_prefers_the_faster_endpoint(
    seed: int, fast_ms: float, ratio: float
) -> None:
    """Serial requests, one observed sample each: for the next second every pick goes to
    the faster endpoint. Latencies at or above the 30 ms default RTT make the first sample
    a peak, so both estimates are exact; the idle slow one decays by at most e^-0.1 < 1/1.5
    in a second (decay 10 s)."""
    g = rng(seed)
    lat = {"fast": fast_ms / 1000, "slow": ratio * fast_ms / 1000}
    lb = PeakEwma()
    t = 0.0
    for e in ("fast", "slow"):  # warm both estimates with one real sample
        lb.on_start(e, t)
        t += lat[e]
        lb.on_complete(e, lat[e], t)
    picks: Counter[str] = Counter()
    end = t + 1.0
    while t < end:
        e = str(lb.pick(["slow", "fast"], t, g))
        lb.on_start(e, t)
        t += lat[e]
        lb.on_complete(e, lat[e], t)
        picks[e] += 1
    assert picks["slow"] == 0
    assert picks["fast"] >= 1


def test_s5_peak_ewma_learns_endpoints_faster_than_the_default_rtt() -> None:
    """Below the 30 ms default both start equal and the estimates fall with tau = 10 s; after
    20 s of serial traffic (1 ms vs 5 ms) the fast endpoint takes > 90 % of picks (the slow
    one is re-probed only when its idle estimate decays under 1 ms, every ~16 s)."""
    lat = {"fast": 0.001, "slow": 0.005}
    lb, g, t = PeakEwma(), rng(7), 0.0
    picks: Counter[str] = Counter()
    while t < 40.0:
        e = str(lb.pick(["slow", "fast"], t, g))
        lb.on_start(e, t)
        t += lat[e]
        lb.on_complete(e, lat[e], t)
        if t >= 20.0:
            picks[e] += 1
    assert picks["fast"] / sum(picks.values()) > 0.9
