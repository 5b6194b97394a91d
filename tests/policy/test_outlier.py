"""Envoy outlier detection (docs/mesh-semantics.md §3)."""

from __future__ import annotations

import numpy as np
import pytest

from meshsim.policy import Outcome, OutlierConfig, OutlierDetector

ERR = Outcome.response(500)


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def hosts(n: int) -> list[str]:
    return [f"h{i}" for i in range(n)]


def fail(det: OutlierDetector, host: str, times: int, now: float) -> list[bool]:
    return [det.record(host, ERR, now, rng()) for _ in range(times)]


def test_s3_1_envoy_defaults() -> None:
    c = OutlierConfig.envoy_default()
    assert (c.consecutive_5xx, c.enforcing_consecutive_5xx) == (5, 100.0)
    assert (c.consecutive_gateway_failure, c.enforcing_consecutive_gateway_failure) == (5, 0.0)
    assert (c.interval_s, c.base_ejection_time_s, c.max_ejection_time_s) == (10.0, 30.0, 300.0)
    assert c.max_ejection_percent == 10.0
    assert c.enforcing_success_rate == 100.0
    assert (c.success_rate_minimum_hosts, c.success_rate_request_volume) == (5, 100)
    assert c.success_rate_stdev_factor == 1.9
    assert c.healthy_panic_threshold == 50.0
    assert c.always_eject_one_host is False


def test_s3_1_istio_values() -> None:
    c = OutlierConfig.istio()
    assert c.consecutive_5xx == 5
    assert c.enforcing_consecutive_gateway_failure == 0.0
    assert c.enforcing_success_rate == 0.0  # Istio forces success-rate detection off
    assert c.healthy_panic_threshold == 0.0  # minHealthPercent 0: panic never happens
    assert OutlierConfig.istio(consecutive_5xx_errors=0).enforcing_consecutive_5xx == 0.0
    gw = OutlierConfig.istio(consecutive_gateway_errors=3)
    assert (gw.consecutive_gateway_failure, gw.enforcing_consecutive_gateway_failure) == (3, 100)


def test_s3_2_eject_inline_on_fifth_consecutive_5xx() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(10))
    assert fail(det, "h0", 5, 1.0) == [False] * 4 + [True]
    assert det.is_ejected("h0")
    assert det.events[-1].cause == "consecutive_5xx"


def test_s3_2_success_resets_consecutive_count() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(10))
    fail(det, "h0", 4, 1.0)
    det.record("h0", Outcome.ok(), 1.0, rng())
    assert fail(det, "h0", 4, 1.0) == [False] * 4
    assert not det.is_ejected("h0")


def test_s3_2_locally_originated_errors_count_overflow_does_not() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(10))
    for outcome in (Outcome.reset(), Outcome.connect_failure(), Outcome.per_try_timeout()):
        det.record("h0", outcome, 1.0, rng())
    det.record("h0", Outcome.overflow(), 1.0, rng())  # ignored, does not reset either
    det.record("h0", Outcome.reset(), 1.0, rng())
    assert det.record("h0", Outcome.response(503), 1.0, rng())


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_s3_2_max_ejection_percent_never_ejects_below_ten_hosts(n: int) -> None:
    """§3.2: eject only if 100·(ejected+1)/N <= 10: with fewer than 10 hosts, never."""
    det = OutlierDetector(OutlierConfig.istio(), hosts(n))
    for h in hosts(n):
        fail(det, h, 20, 1.0)
    assert det.ejected == frozenset()


def test_s3_2_max_ejection_percent_exact_rule_with_ten_and_twenty_hosts() -> None:
    det10 = OutlierDetector(OutlierConfig.istio(), hosts(10))
    for h in hosts(10):
        fail(det10, h, 5, 1.0)
    assert len(det10.ejected) == 1  # 100·1/10 = 10 <= 10; 100·2/10 = 20 > 10
    det20 = OutlierDetector(OutlierConfig.istio(), hosts(20))
    for h in hosts(20):
        fail(det20, h, 5, 1.0)
    assert len(det20.ejected) == 2


def test_s3_2_always_eject_one_host() -> None:
    cfg = OutlierConfig(always_eject_one_host=True)
    det = OutlierDetector(cfg, hosts(3))
    for h in hosts(3):
        fail(det, h, 5, 1.0)
    assert len(det.ejected) == 1


def test_s3_2_unejection_only_at_interval_sweeps() -> None:
    """Ejected at 12 s for 30 s: eligible at 42 s, un-ejected at the 50 s sweep."""
    det = OutlierDetector(OutlierConfig.istio(), hosts(10), now=0.0)
    fail(det, "h0", 5, 12.0)
    assert det.poll(42.0, rng()) == []
    assert det.is_ejected("h0")
    events = det.poll(50.0, rng())
    assert [(e.time, e.host, e.ejected) for e in events] == [(50.0, "h0", False)]
    assert det.next_sweep_at == 60.0


def test_s3_2_ejection_time_is_base_times_k_and_k_decays() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(10))
    fail(det, "h0", 5, 0.5)  # k = 1: 30 s -> un-ejected at the 40 s sweep
    det.poll(40.0, rng())
    assert not det.is_ejected("h0")
    fail(det, "h0", 5, 40.5)  # k = 2: 60 s -> 100.5 is past; un-ejected at 110
    assert det.backoff_multiplier("h0") == 2
    det.poll(100.0, rng())
    assert det.is_ejected("h0")
    det.poll(110.0, rng())
    assert not det.is_ejected("h0")
    det.poll(120.0, rng())  # one healthy sweep: k 2 -> 1
    assert det.backoff_multiplier("h0") == 1
    det.poll(140.0, rng())
    assert det.backoff_multiplier("h0") == 0


def test_s3_2_ejection_time_capped_at_max() -> None:
    cfg = OutlierConfig.istio()
    det = OutlierDetector(cfg, hosts(10))
    t = 0.5
    for _ in range(15):
        fail(det, "h0", 5, t)
        t += det.time_until_uneject("h0", t) + 10.0
        det.poll(t, rng())
    # k grows while k·30 < 300 + 30, so it stops at 11, and one ejection lasts 300 s.
    assert det.backoff_multiplier("h0") == 11
    fail(det, "h0", 5, t)
    assert det.time_until_uneject("h0", t) == 300.0


def test_s3_2_counters_reset_on_unejection() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(10))
    fail(det, "h0", 5, 0.5)
    fail(det, "h0", 3, 1.0)  # while ejected: do not carry over
    det.poll(40.0, rng())
    assert fail(det, "h0", 4, 41.0) == [False] * 4


def test_s3_2_gateway_errors_when_enabled() -> None:
    det = OutlierDetector(OutlierConfig.istio(consecutive_gateway_errors=2), hosts(10))
    assert not det.record("h0", Outcome.response(503), 1.0, rng())
    assert not det.record("h0", Outcome.response(500), 1.0, rng())  # resets the gateway count
    assert not det.record("h0", Outcome.response(504), 1.0, rng())
    assert det.record("h0", Outcome.response(502), 1.0, rng())
    assert det.events[-1].cause == "consecutive_gateway_failure"


def test_s3_1_panic_threshold() -> None:
    """Envoy 50 %: below half healthy, balance over all. Istio 0 %: never, so 503 UH."""
    envoy = OutlierDetector(OutlierConfig(max_ejection_percent=100), hosts(2))
    fail(envoy, "h0", 5, 1.0)
    assert envoy.eligible(hosts(2)) == ["h1"]  # 50 % healthy is not below 50 %
    fail(envoy, "h1", 5, 1.0)
    assert envoy.eligible(hosts(2)) == ["h0", "h1"]
    istio = OutlierDetector(OutlierConfig.istio(max_ejection_percent=100), hosts(2))
    for h in hosts(2):
        fail(istio, h, 5, 1.0)
    assert istio.eligible(hosts(2)) == []


def test_s3_2_success_rate_ejection_at_sweep() -> None:
    cfg = OutlierConfig(consecutive_5xx=0, max_ejection_percent=20)
    det = OutlierDetector(cfg, hosts(5))
    g = rng()
    for h in hosts(5):
        for i in range(100):
            bad = h == "h4" and i % 2 == 0
            det.record(h, Outcome.response(500 if bad else 200), 5.0, g)
    assert det.ejected == frozenset()  # success rate is judged at the sweep
    events = det.poll(10.0, g)
    assert [(e.host, e.cause) for e in events] == [("h4", "success_rate")]


def test_s3_2_success_rate_needs_minimum_hosts_and_volume() -> None:
    det = OutlierDetector(OutlierConfig(consecutive_5xx=0, max_ejection_percent=100), hosts(4))
    g = rng()
    for h in hosts(4):
        for i in range(100):
            det.record(h, Outcome.response(500 if h == "h3" and i % 2 else 200), 5.0, g)
    assert det.poll(10.0, g) == []  # 4 hosts < success_rate_minimum_hosts 5


def test_unknown_host_is_a_clear_error() -> None:
    det = OutlierDetector(OutlierConfig.istio(), hosts(2))
    with pytest.raises(KeyError, match="unknown host 'zz'"):
        det.record("zz", ERR, 0.0, rng())
