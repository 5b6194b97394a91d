"""Each shared policy, observed from outside through the real proxy."""

from __future__ import annotations

import asyncio

import pytest

from meshsim.proxy.echo import bound_port, start_echo, stop_echo

from .helpers import Client, arun, get_once
from .lab import proxy_for

pytestmark = pytest.mark.integration


def test_retry_after_a_503_from_the_echo_service() -> None:
    traffic = {"retries": {"attempts": 3, "retry_on": ["5xx"], "backoff_base_ms": 1}}

    async def main() -> None:
        server, state = await start_echo(seed=5)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            statuses = [(await get_once(port, "/?status=503:50")).status for _ in range(40)]
            retries = proxy.metrics.retries.labels("test")._value.get()
        await stop_echo(server, state)
        # Half the tries fail; with 3 retries almost every request ends in a 200.
        assert retries > 5
        assert state.served == 40 + retries
        assert statuses.count(200) >= 36

    arun(main)


def test_circuit_breaker_overflow() -> None:
    traffic = {"circuit_breaker": {"max_requests": 1}}

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            clients = [await Client.open(port) for _ in range(3)]
            slow = asyncio.ensure_future(clients[0].get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            r = await clients[1].get("/")
            assert r.status == 503
            assert r.header(b"x-envoy-overloaded") == b"true"
            assert (await slow).status == 200
            assert (await clients[2].get("/")).status == 200  # the slot is free again
            assert proxy.metrics.overflows.labels("test")._value.get() == 1
            for c in clients:
                await c.close()
        await stop_echo(server, state)

    arun(main)


def test_outlier_ejection_moves_traffic_off_a_failing_host() -> None:
    traffic = {
        "outlier_detection": {"consecutive_5xx": 3, "interval_s": 60, "base_ejection_s": 60,
                              "max_ejection_percent": 50},
        "load_balancer": "round_robin",
    }

    async def main() -> None:
        bad_srv, bad = await start_echo(seed=1)
        good_srv, good = await start_echo(seed=2)
        # Round robin sends requests 1, 3, 5 to the first host and 2, 4, 6 to the second;
        # all answer 503, so the first host reaches 3 consecutive 5xx first and is ejected.
        async with proxy_for([bound_port(bad_srv), bound_port(good_srv)],
                             traffic=traffic) as proxy:
            port = proxy.port("test")
            for _ in range(6):
                await get_once(port, "/?status=503")
            ejections = proxy.metrics.ejections.labels("test")._value.get()
            bad_before = bad.served
            for _ in range(6):
                await get_once(port, "/")
        await stop_echo(bad_srv, bad)
        await stop_echo(good_srv, good)
        assert ejections == 1  # max_ejection_percent 50 of 2 hosts: one host at most
        # Every later request went to the one host still in rotation.
        assert bad.served == bad_before == 3
        assert good.served == 3 + 6

    arun(main)


def test_fault_injection_abort() -> None:
    traffic = {"fault": {"abort": {"percent": 100, "status": 418}}}

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            assert (await get_once(proxy.port("test"))).status == 418
        await stop_echo(server, state)
        assert state.served == 0

    arun(main)
