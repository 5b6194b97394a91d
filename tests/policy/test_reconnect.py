"""linkerd2-proxy's endpoint reconnects (docs/mesh-semantics.md §5, §5.1), exact with the
back-off's jitter at 0."""

from __future__ import annotations

import numpy as np
import pytest

from meshsim.policy import LinkerdBackOff
from meshsim.policy.reconnect import (
    CONNECT_BACKOFF,
    EndpointConnections,
    Reconnect,
    reconnected_at,
)

NO_JITTER = LinkerdBackOff(min_s=0.1, max_s=60.0, jitter=0.0)
RNG = np.random.default_rng(0)


def test_the_outbound_connect_back_off_is_linkerds_default() -> None:
    assert (CONNECT_BACKOFF.min_s, CONNECT_BACKOFF.max_s, CONNECT_BACKOFF.jitter) == (
        0.1, 60.0, 0.1,
    )  # fmt: skip


def test_a_loss_starts_the_back_off_and_each_failed_attempt_goes_on_with_it() -> None:
    r = Reconnect(NO_JITTER)
    assert r.connected
    assert r.failed(10.0, RNG) == pytest.approx(10.1)
    assert r.failed(10.1, RNG) == pytest.approx(10.3)
    assert r.failed(10.3, RNG) == pytest.approx(10.7)
    r.connect()
    assert r.connected
    assert r.failed(20.0, RNG) == pytest.approx(20.1)  # afresh


def test_a_healed_peer_is_reconnected_at_the_next_attempt() -> None:
    # Refused: attempts at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 12.7, 25.5, 51.1 after the loss.
    assert reconnected_at(0.0, 30.0, 0.0, RNG, NO_JITTER) == pytest.approx(51.1)
    assert reconnected_at(0.0, 12.7, 0.0, RNG, NO_JITTER) == pytest.approx(12.7)
    # Unanswered: each attempt takes the 1 s connect timeout, 0.1, 1.3, 2.7, 4.5, 7.1,
    # 11.3, 18.7, 32.5.
    assert reconnected_at(0.0, 30.0, 1.0, RNG, NO_JITTER) == pytest.approx(32.5)
    # The delays stop growing at 60 s: 51.1, 102.3 (51.2 later), 162.3, ..., 582.3, 642.3.
    assert reconnected_at(0.0, 600.0, 0.0, RNG, NO_JITTER) == pytest.approx(642.3)


def test_jitter_adds_up_to_a_tenth_of_each_delay() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        at = reconnected_at(0.0, 30.0, 0.0, rng)
        assert 51.1 <= at <= 51.1 * 1.1


def test_a_host_whose_connect_failed_is_pending_until_its_next_attempt() -> None:
    c = EndpointConnections(NO_JITTER)
    hosts = [0, 1, 2]
    assert c.ready(hosts, 0.0) is hosts
    c.failed(1, 0.0, RNG)
    assert c.ready(hosts, 0.05) == [0, 2]
    assert c.ready(hosts, 0.1) == hosts
    c.failed(1, 0.1, RNG)
    assert c.ready(hosts, 0.29) == [0, 2]
    c.connected(1)
    assert c.ready(hosts, 0.29) == hosts
