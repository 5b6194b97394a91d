"""Timeouts (docs/mesh-semantics.md §1.1, §5.1, §6.3, §7.1)."""

from __future__ import annotations

import math

from meshsim.policy import (
    FailFast,
    FailFastVerdict,
    LinkerdTimeouts,
    RouteTimeout,
    per_try_deadline,
)


def test_s7_1_istio_route_timeout_off_by_default() -> None:
    t = RouteTimeout.istio_default()
    assert not t.enabled
    assert t.deadline(5.0) == math.inf


def test_s1_1_raw_envoy_route_timeout_15_s_and_zero_disables() -> None:
    assert RouteTimeout.envoy_default().deadline(2.0) == 17.0
    assert RouteTimeout(0.0).deadline(2.0) == math.inf


def test_s1_1_per_try_deadline_bounded_by_route_deadline() -> None:
    assert per_try_deadline(None, 1.0, 10.0) == 10.0
    assert per_try_deadline(0.2, 1.0, 10.0) == 1.2
    assert per_try_deadline(0.2, 9.9, 10.0) == 10.0
    assert per_try_deadline(None, 1.0) == math.inf


def test_s6_3_linkerd_timeouts_default_none() -> None:
    t = LinkerdTimeouts()
    assert (t.request_s, t.response_s, t.idle_s) == (None, None, None)
    assert t.request_deadline(1.0) == math.inf
    assert LinkerdTimeouts(request_s=2.0).request_deadline(1.0) == 3.0


def test_s5_1_failfast_defaults() -> None:
    assert FailFast.outbound().timeout_s == 3.0
    assert FailFast.inbound().timeout_s == 1.0
    assert FailFast.outbound().queue_capacity == 10_000


def test_s5_1_failfast_after_3_s_without_ready_endpoint() -> None:
    gate = FailFast.outbound()
    gate.set_ready(False, 10.0)
    assert gate.trips_at is None  # nobody waits yet, no timer
    assert gate.admit(11.0, queued=0) is FailFastVerdict.ENQUEUE
    assert gate.trips_at == 14.0
    assert not gate.poll(13.999)
    assert gate.poll(14.0)
    assert gate.admit(14.5, queued=0) is FailFastVerdict.FAILFAST
    # An endpoint becomes ready: the gate opens again.
    gate.set_ready(True, 20.0)
    assert gate.admit(20.0, queued=0) is FailFastVerdict.ENQUEUE
    assert gate.trips_at is None


def test_s5_1_endpoint_ready_in_time_prevents_failfast() -> None:
    gate = FailFast.outbound()
    gate.set_ready(False, 0.0, queued=1)
    assert gate.trips_at == 3.0
    gate.set_ready(True, 2.0)
    assert not gate.poll(5.0)


def test_s5_1_queue_capacity() -> None:
    gate = FailFast(queue_capacity=2)
    assert gate.admit(0.0, queued=1) is FailFastVerdict.ENQUEUE
    assert gate.admit(0.0, queued=2) is FailFastVerdict.QUEUE_FULL
