from __future__ import annotations

import numpy as np
import pytest

from meshsim.errors import MeshsimError
from meshsim.proxy.httpcore import grpc_status_of, parse_duration_s, parse_hostport
from meshsim.proxy.knobs import Delay, parse_delay, parse_grpc_status, parse_query, parse_status


def test_fortio_probability_lists() -> None:
    assert parse_delay("10ms:50,100ms:5") == ((Delay(0.01), 0.5), (Delay(0.1), 0.05))
    assert parse_status("503:5") == ((503, 0.05),)
    assert parse_status("503") == ((503, 1.0),)
    assert parse_delay("exp:10ms") == ((Delay(0.01, exponential=True), 1.0),)
    assert parse_delay("exp:10ms:20") == ((Delay(0.01, exponential=True), 0.2),)


def test_status_frequencies_follow_the_percentages() -> None:
    knobs = parse_query("status=503:20,404:10")
    rng = np.random.default_rng(1)
    draws = [knobs.pick_status(rng) for _ in range(20000)]
    assert draws.count(503) / len(draws) == pytest.approx(0.20, abs=0.015)
    assert draws.count(404) / len(draws) == pytest.approx(0.10, abs=0.015)


def test_exponential_delay_mean() -> None:
    knobs = parse_query("delay=exp:10ms")
    rng = np.random.default_rng(2)
    mean = np.mean([knobs.pick_delay_s(rng) for _ in range(20000)])
    assert mean == pytest.approx(0.010, rel=0.05)


def test_grpc_status_knob_and_the_head_that_carries_it() -> None:
    """``grpc-status=14:10``: a gRPC code for 10 % of the 200s; the proxy reads it from the
    response head (a Trailers-Only response), whatever the field's case."""
    assert parse_grpc_status("14:10,13:5") == ((14, 0.1), (13, 0.05))
    assert parse_query("grpc-status=14").grpc_statuses == ((14, 1.0),)
    assert parse_query("status=503").pick_grpc_status(np.random.default_rng(0)) is None
    assert grpc_status_of([(b"Content-Type", b"application/grpc"), (b"Grpc-Status", b"14")]) == 14
    assert grpc_status_of([(b"grpc-status", b" 0 ")]) == 0
    assert grpc_status_of([(b"grpc-status", b"x")]) is None
    assert grpc_status_of([(b"grpc-message", b"14")]) is None


def test_the_proxy_s_policies_read_the_grpc_status_of_a_try() -> None:
    """An Istio listener's default retry policy retries a try answered UNAVAILABLE in its
    head, not INTERNAL; outlier detection and failure accrual see the status (§1.3, §3.2,
    §6.4), through the same chain as the simulator's."""
    from meshsim.policy import GrpcStatus, OutcomeKind
    from meshsim.proxy.policies import outcome_of, policy_for
    from meshsim.proxy.seam import Attempt

    outcome = outcome_of(Attempt(0, 200, None, 0.001, GrpcStatus.UNAVAILABLE))
    assert (outcome.kind, outcome.status, outcome.grpc_status) == (OutcomeKind.RESPONSE, 200, 14)
    assert not outcome.grpc_in_trailers
    rng = np.random.default_rng(0)
    policy = policy_for({}, 1, mesh="istio")
    ex = policy.retry_state()
    assert ex.decide(Attempt(0, 200, None, 0.001, GrpcStatus.UNAVAILABLE), 0.0, rng).retry
    ex = policy.retry_state()
    assert not ex.decide(Attempt(0, 200, None, 0.001, GrpcStatus.INTERNAL), 0.0, rng).retry
    accrual = {"failure_accrual": {"max_failures": 3}, "retries": {"attempts": 0}}
    breaker = policy_for(accrual, 2, mesh="linkerd")
    unavailable = Attempt(0, 200, None, 0.001, GrpcStatus.UNAVAILABLE)
    assert [breaker.record(unavailable, 1.0) for _ in range(3)] == [[], [], [0]]


@pytest.mark.parametrize(
    "query",
    ["delay=10parsecs", "status=700", "status=503:150", "size=-1", "delay=1s:60,2s:60",
     "grpc-status=17", "grpc-status=unavailable"],
)  # fmt: skip
def test_bad_knobs_are_user_errors(query: str) -> None:
    with pytest.raises(MeshsimError):
        parse_query(query)


def test_durations_and_addresses() -> None:
    assert parse_duration_s("1.5s") == 1.5
    assert parse_duration_s("250us") == pytest.approx(250e-6)
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    with pytest.raises(MeshsimError, match="HOST:PORT"):
        parse_hostport("localhost")
