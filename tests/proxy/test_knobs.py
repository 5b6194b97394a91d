from __future__ import annotations

import numpy as np
import pytest

from meshsim.errors import MeshsimError
from meshsim.proxy.httpcore import parse_duration_s, parse_hostport
from meshsim.proxy.knobs import Delay, parse_delay, parse_query, parse_status


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


@pytest.mark.parametrize(
    "query", ["delay=10parsecs", "status=700", "status=503:150", "size=-1", "delay=1s:60,2s:60"]
)
def test_bad_knobs_are_user_errors(query: str) -> None:
    with pytest.raises(MeshsimError):
        parse_query(query)


def test_durations_and_addresses() -> None:
    assert parse_duration_s("1.5s") == 1.5
    assert parse_duration_s("250us") == pytest.approx(250e-6)
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    with pytest.raises(MeshsimError, match="HOST:PORT"):
        parse_hostport("localhost")
