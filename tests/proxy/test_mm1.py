"""The load generator against an M/M/1 queue: ``echo --concurrency 1`` with exponential delays.

Two checks. (1) The measured corrected latencies equal the M/M/1 *sample path* (Lindley's
recursion over the very arrival and service times the seeded generator and echo server
draw) to within the timer accuracy: this isolates measurement error from sampling noise.
(2) They agree with the closed form (sojourn ~ Exp(mu - lambda)) within sampling error.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from meshsim.proxy.echo import bound_port, start_echo
from meshsim.proxy.loadgen import LoadSpec, measure

from .helpers import arun

pytestmark = [pytest.mark.statistical, pytest.mark.integration, pytest.mark.timing]

SERVICE_S = 0.010  # mean service time: 1/mu
RATE = 50.0  # lambda: utilisation 0.5
DURATION_S = 8.0
ECHO_SEED, LOAD_SEED = 11, 12
# Asyncio timers fire up to ~1 ms late (millisecond-granular epoll/libuv timeouts). The mean
# lateness is measured and added to the service times; the spread around it is the accuracy.
TIMER_S = 0.001


async def timer_overshoot_s() -> float:
    """Mean lateness of the loop's timers, which lengthens every echo delay alike."""
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    late = []
    for delay in rng.uniform(0.001, 0.02, 60):
        fired = loop.create_future()
        t0 = time.perf_counter()
        loop.call_later(float(delay), fired.set_result, None)
        await fired
        late.append(time.perf_counter() - t0 - delay)
    return float(np.mean(late))


def lindley_sojourns(n: int, overshoot_s: float) -> np.ndarray:
    arrivals = np.cumsum(np.random.default_rng(LOAD_SEED).exponential(1 / RATE, n + 10))[:n]
    services = np.random.default_rng(ECHO_SEED).exponential(SERVICE_S, n) + overshoot_s
    sojourn = np.empty(n)
    free_at = 0.0
    for i in range(n):
        start = max(arrivals[i], free_at)
        free_at = start + services[i]
        sojourn[i] = free_at - arrivals[i]
    return sojourn


def test_corrected_latency_matches_mm1() -> None:
    async def main() -> tuple[np.ndarray, dict[float, float], float, int]:
        overshoot = await timer_overshoot_s()
        server, _ = await start_echo(concurrency=1, seed=ECHO_SEED)
        url = f"http://127.0.0.1:{bound_port(server)}/?delay=exp:{SERVICE_S * 1000:g}ms"
        spec = LoadSpec(
            url, rps=RATE, connections=16, duration_s=DURATION_S, poisson=True, seed=LOAD_SEED
        )
        result = await measure(spec)
        server.close()
        qs = {float(q): float(result.corrected.get_value_at_percentile(q)) / 1e6 for q in (50, 90)}
        mean = float(result.corrected.get_mean_value()) / 1e6
        return lindley_sojourns(result.completed, overshoot), qs, mean, result.completed

    path, measured, mean, n = arun(main, timeout=60)
    assert n > 0.8 * RATE * DURATION_S
    for q, value in measured.items():
        expected = float(np.percentile(path, q))
        print(f"p{q}: measured {value * 1e3:.2f} ms, sample path {expected * 1e3:.2f} ms")
        assert value == pytest.approx(expected, abs=TIMER_S + 0.05 * expected), f"p{q}"
    # Closed form: sojourn time is exponential with rate mu - lambda.
    theory_mean = 1 / (1 / SERVICE_S - RATE)
    assert mean == pytest.approx(theory_mean, rel=0.35)
    assert measured[50] == pytest.approx(theory_mean * math.log(2), rel=0.35)
