"""Each shared policy, observed from outside through the real proxy."""

from __future__ import annotations

import asyncio

import pytest

from meshsim.proxy.echo import bound_port, start_echo, stop_echo
from meshsim.proxy.policies import policy_for

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
        "outlier_detection": {
            "consecutive_5xx": 3,
            "interval_s": 60,
            "base_ejection_s": 60,
            "max_ejection_percent": 50,
        },
        "load_balancer": "round_robin",
    }

    async def main() -> None:
        bad_srv, bad = await start_echo(seed=1)
        good_srv, good = await start_echo(seed=2)
        # Round robin sends requests 1, 3, 5 to the first host and 2, 4, 6 to the second;
        # all answer 503, so the first host reaches 3 consecutive 5xx first and is ejected.
        async with proxy_for([bound_port(bad_srv), bound_port(good_srv)], traffic=traffic) as proxy:
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


def test_failure_accrual_shuts_a_failing_endpoint() -> None:
    traffic = {
        "failure_accrual": {"max_failures": 3, "backoff_min_s": 60, "backoff_max_s": 60},
        "load_balancer": "round_robin",
    }

    async def main() -> None:
        bad_srv, bad = await start_echo(seed=1, default_query="status=503")
        good_srv, good = await start_echo(seed=2)
        async with proxy_for([bound_port(bad_srv), bound_port(good_srv)], traffic=traffic) as proxy:
            port = proxy.port("test")
            statuses = [(await get_once(port)).status for _ in range(12)]
            ejections = proxy.metrics.ejections.labels("test")._value.get()
        await stop_echo(bad_srv, bad)
        await stop_echo(good_srv, good)
        # Three 503s in a row shut the bad endpoint for 60 s; the rest go to the good one.
        assert ejections == 1
        assert bad.served == 3
        assert good.served == 9
        assert statuses.count(503) == 3

    arun(main)


def test_traffic_split_by_subset() -> None:
    async def run(split: dict[str, float], n: int) -> tuple[int, int]:
        v1_srv, v1 = await start_echo(seed=1)
        v2_srv, v2 = await start_echo(seed=2)
        async with proxy_for(
            [bound_port(v1_srv), bound_port(v2_srv)], traffic={"split": split}, subsets=("v1", "v2")
        ) as proxy:
            port = proxy.port("test")
            client = await Client.open(port)
            for _ in range(n):
                assert (await client.get("/")).status == 200
            await client.close()
        await stop_echo(v1_srv, v1)
        await stop_echo(v2_srv, v2)
        return v1.served, v2.served

    async def main() -> None:
        assert await run({"v1": 0, "v2": 100}, 20) == (0, 20)
        v1, v2 = await run({"v1": 90, "v2": 10}, 200)
        assert v1 + v2 == 200
        assert 150 <= v1 <= 195  # 90 % of 200 = 180, sd 4.2

    arun(main)


def test_split_without_subsets_is_a_clear_error() -> None:
    from meshsim.errors import MeshsimError

    with pytest.raises(MeshsimError, match="subsets"):
        policy_for({"split": {"v1": 1}}, 2)
    with pytest.raises(MeshsimError, match="v3"):
        policy_for({"split": {"v3": 1}}, 2, ("v1", "v2"))


def test_max_connections_and_max_pending_requests() -> None:
    traffic = {"circuit_breaker": {"max_connections": 1, "max_pending_requests": 1}}

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            clients = [await Client.open(port) for _ in range(3)]
            first = asyncio.ensure_future(clients[0].get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            # One connection, in use: the next request waits (pending), the one after that
            # overflows.
            pending = asyncio.ensure_future(clients[1].get("/"))
            await asyncio.sleep(0.05)
            r = await clients[2].get("/")
            assert r.status == 503
            assert r.header(b"x-envoy-overloaded") == b"true"
            assert (await first).status == 200
            assert (await pending).status == 200  # served on the connection set free
            assert proxy.metrics.connections.labels("test", "upstream")._value.get() == 1
            assert proxy.metrics.overflows.labels("test")._value.get() == 1
            for c in clients:
                await c.close()
        await stop_echo(server, state)
        assert state.served == 2

    arun(main)


@pytest.mark.parametrize("path", ["fast", "coroutine"])
def test_max_requests_is_taken_when_the_request_gets_its_connection(path: str) -> None:
    """§2.1: Envoy takes the max_requests unit when it attaches a request to a connection;
    a request waiting for one holds only its pending unit. maxConnections, pending and
    requests all 1 (a common DestinationRule): the second request waits and is served on
    the connection the first frees, the third overflows. (A route timeout sends requests
    through the coroutine rather than the fast path.)"""
    traffic: dict[str, object] = {
        "circuit_breaker": {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    }
    if path == "coroutine":
        traffic["timeout_ms"] = 5000

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            clients = [await Client.open(port) for _ in range(3)]
            first = asyncio.ensure_future(clients[0].get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            pending = asyncio.ensure_future(clients[1].get("/"))
            await asyncio.sleep(0.05)
            r = await clients[2].get("/")
            assert r.status == 503
            assert r.header(b"x-envoy-overloaded") == b"true"
            assert (await first).status == 200
            assert (await pending).status == 200  # not a max_requests overflow
            assert proxy.metrics.overflows.labels("test")._value.get() == 1
            for c in clients:
                await c.close()
        await stop_echo(server, state)
        assert state.served == 2

    arun(main)


@pytest.mark.parametrize("path", ["fast", "coroutine"])
def test_a_request_over_max_requests_overflows_on_its_connection(path: str) -> None:
    """max_requests 1 under max_connections 2: the second request gets a connection of
    its own, then overflows (503 UO); the connection stays in the pool and serves the
    next request."""
    traffic: dict[str, object] = {"circuit_breaker": {"max_connections": 2, "max_requests": 1}}
    if path == "coroutine":
        traffic["timeout_ms"] = 5000

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            a, b = await Client.open(port), await Client.open(port)
            first = asyncio.ensure_future(a.get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            r = await b.get("/")
            assert r.status == 503
            assert r.header(b"x-envoy-overloaded") == b"true"
            assert (await first).status == 200
            assert (await b.get("/")).status == 200
            opened = proxy.metrics.connections.labels("test", "upstream")._value.get()
            assert opened == 2  # the overflowing request's connection was kept and reused
            assert proxy.metrics.overflows.labels("test")._value.get() == 1
            await a.close()
            await b.close()
        await stop_echo(server, state)
        assert state.served == 2

    arun(main)


def test_max_connections_slot_freed_by_a_closed_connection() -> None:
    traffic = {"circuit_breaker": {"max_connections": 1, "max_pending_requests": 4}}

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], traffic=traffic) as proxy:
            port = proxy.port("test")
            a, b = await Client.open(port), await Client.open(port)
            # Client a leaves mid-request (a reset: after a FIN alone, a half-close, the
            # proxy would still answer): the proxy abandons (closes) its one upstream
            # connection, which frees the slot for the request pending behind it.
            slow = asyncio.ensure_future(a.get("/?delay=300ms"))
            await asyncio.sleep(0.1)
            waiting = asyncio.ensure_future(b.get("/"))
            await asyncio.sleep(0.05)
            slow.cancel()
            a.reset()  # the proxy closes its upstream connection: the slot frees
            r = await asyncio.wait_for(waiting, 5)
            assert r.status == 200
            assert proxy.metrics.connections.labels("test", "upstream")._value.get() == 2
            await b.close()
        await stop_echo(server, state)

    arun(main)


def test_istio_listener_retries_a_connect_failure_on_another_host() -> None:
    """With no ``retries`` an Istio listener has istiod's default policy (2 retries on
    connect-failure, previous_hosts), as the simulator's sidecars do."""

    async def main() -> None:
        dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()  # nothing listens there: every connect is refused
        server, state = await start_echo(seed=1)
        async with proxy_for(
            [dead_port, bound_port(server)], traffic={}, policy=policy_for({}, 2, mesh="istio")
        ) as proxy:
            port = proxy.port("test")
            statuses = [(await get_once(port)).status for _ in range(8)]
            retries = proxy.metrics.retries.labels("test")._value.get()
        await stop_echo(server, state)
        assert statuses == [200] * 8
        assert state.served == 8
        assert retries >= 1  # the balancer sent some first tries to the dead host

    arun(main)


def test_a_plain_listener_does_not_retry() -> None:
    async def main() -> None:
        dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()
        async with proxy_for([dead_port]) as proxy:
            assert (await get_once(proxy.port("test"))).status == 503
            assert proxy.metrics.retries.labels("test")._value.get() == 0

    arun(main)


def test_listener_defaults_are_the_meshes() -> None:
    from meshsim.errors import MeshsimError
    from meshsim.policy import MAX_UINT32, RetryPolicy, Thresholds
    from meshsim.proxy.policies import listener_policy

    istio, flavour, _ = listener_policy({"circuit_breaker": {"max_requests": 5}}, "istio")
    assert flavour == "envoy"
    # istiod fills what the DestinationRule leaves out with 2^32-1, max_retries included.
    assert istio.cluster.thresholds == Thresholds(MAX_UINT32, MAX_UINT32, 5, MAX_UINT32)
    assert istio.routes[0].envoy_retry == RetryPolicy.istio_default()
    assert listener_policy({}, "istio")[0].cluster.thresholds is None
    linkerd, flavour, _ = listener_policy({}, "linkerd")
    assert flavour == "linkerd"
    assert not linkerd.routes[0].retries
    assert linkerd.cluster.balancer == "peak_ewma"
    with pytest.raises(MeshsimError, match=r"traffic\.fault: .*Linkerd has no fault injection"):
        listener_policy({"fault": {"abort": {"percent": 100, "status": 500}}}, "linkerd")
    with pytest.raises(MeshsimError, match=r"traffic\.retries\.attempts"):
        listener_policy({"retries": {"attempts": -1}}, "istio")


def test_linkerd_listener_with_the_retry_budget_retries_5xx_under_it() -> None:
    """ServiceProfile retries (mesh_options.linkerd.retry_budget): 5xx retried at once."""
    from meshsim.scenario.options import MeshOptions

    options = MeshOptions.model_validate({"linkerd": {"retry_budget": True}})
    traffic = {"retries": {"attempts": 2, "retry_on": ["5xx"]}}

    async def main() -> None:
        server, state = await start_echo(seed=5)
        policy = policy_for(traffic, 1, mesh="linkerd", options=options)
        async with proxy_for([bound_port(server)], policy=policy) as proxy:
            port = proxy.port("test")
            statuses = [(await get_once(port, "/?status=503:50")).status for _ in range(20)]
            retries = proxy.metrics.retries.labels("test")._value.get()
        await stop_echo(server, state)
        # No attempt limit, and 100 retries of budget reserve: every request ends in a 200.
        assert statuses == [200] * 20
        assert state.served == 20 + retries
        assert retries > 5

    arun(main)


def test_the_fast_path_times_each_try_from_its_own_start() -> None:
    """Two tries in flight to one host: the first, admitted at 100.0 and over at 101.0,
    is a 1 s sample, which Peak-EWMA takes at once (a sample above the estimate replaces
    it). Timed from the later admission (100.9) it was a 0.1 s sample, and a slow host
    looked fast under concurrency on a default Linkerd listener (the fast path)."""
    policy = policy_for({}, hosts=2, mesh="linkerd")
    assert policy.simple  # a Linkerd listener without rules serves on the fast path
    lb = policy.cluster.lb
    assert policy.admit(0, 100.0)
    assert policy.admit(0, 100.9)
    policy.release(0, 100.0, 101.0)
    assert lb.rtt_estimate_s(0) == pytest.approx(1.0)
    policy.release(0, 100.9, 101.5)  # 0.6 s, below the estimate: decays toward it
    assert 0.6 < lb.rtt_estimate_s(0) < 1.0


def test_the_upstream_connect_timeout_is_the_listeners_meshs() -> None:
    """§2.1, §12.3: a connect may take meshConfig.connectTimeout in an Istio listener (10 s,
    or mesh_options.istio.connect_timeout_ms), Linkerd's outbound 1 s, and Envoy's own 5 s
    in a plain forwarder; the pool gives a connect that long, then fails it."""
    from meshsim.proxy.metrics import ProxyMetrics
    from meshsim.proxy.upstream import HostPool
    from meshsim.scenario.options import MeshOptions

    async def pools(policy: object) -> list[float]:
        async with proxy_for([1], policy=policy) as proxy:  # type: ignore[arg-type]
            return [p.connect_timeout_s for p in proxy.states["test"].route.pools]

    async def main() -> None:
        assert await pools(policy_for({}, 1, mesh="istio")) == [10.0]
        options = MeshOptions.model_validate({"istio": {"connect_timeout_ms": 2500}})
        assert await pools(policy_for({}, 1, mesh="istio", options=options)) == [2.5]
        assert await pools(policy_for({}, 1, mesh="istio-ambient")) == [10.0]
        assert await pools(policy_for({}, 1, mesh="linkerd")) == [1.0]
        async with proxy_for([1]) as proxy:  # no traffic, no mesh: a plain forwarder
            assert [p.connect_timeout_s for p in proxy.states["test"].route.pools] == [5.0]
        # A connect that never completes (an address that answers nothing) fails when the
        # pool's timeout runs out, as a connect failure.
        pool = HostPool("127.0.0.1", 1, listener="t", metrics=ProxyMetrics(),
                        connect_timeout_s=0.01)  # fmt: skip
        loop = asyncio.get_running_loop()

        async def unanswered(*_: object, **__: object) -> object:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        loop.create_connection = unanswered  # type: ignore[method-assign,assignment]
        try:
            with pytest.raises(ConnectionError, match="cannot connect"):
                await pool.acquire()
        finally:
            del loop.create_connection  # type: ignore[method-assign]

    arun(main)


def test_the_route_timeout_bounds_the_wait_for_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§1.1: the route timeout covers everything from the router on, the wait for a pooled
    connection and the connect included (only the per-try timer leaves them out). An
    upstream whose connects never complete (an address that answers nothing), one
    connection allowed: the first request times out connecting, the second waiting for
    the connection slot; both 504 UT at their route deadline, nothing reaches the upstream,
    and the breaker's units all come back."""
    from meshsim.policy import Resource
    from meshsim.proxy.upstream import HostPool, UpstreamConn

    async def unanswered(self: HostPool) -> UpstreamConn:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(HostPool, "_connect", unanswered)
    traffic = {"timeout_ms": 200, "retries": {"attempts": 0},
               "circuit_breaker": {"max_connections": 1, "max_pending_requests": 1}}  # fmt: skip

    async def main() -> None:
        server, state = await start_echo(seed=1)
        policy = policy_for(traffic, 1, mesh="istio")
        async with proxy_for([bound_port(server)], policy=policy) as proxy:
            port = proxy.port("test")
            connecting = asyncio.ensure_future(get_once(port))
            await asyncio.sleep(0.05)
            waiting = asyncio.ensure_future(get_once(port))
            # A safety bound only: without the fix both requests wait forever.
            done = await asyncio.wait_for(asyncio.gather(connecting, waiting), 10)
            assert [r.status for r in done] == [504, 504]
            assert [r.body for r in done] == [b"upstream request timeout\n"] * 2
            breaker = policy.cluster.breaker  # type: ignore[attr-defined]
            assert {r: breaker.active(r) for r in Resource} == dict.fromkeys(Resource, 0)
        await stop_echo(server, state)
        assert state.served == 0

    arun(main)


def test_istio_listener_retries_a_grpc_unavailable_by_default_and_not_internal() -> None:
    """§1.3: an Istio listener's default policy (2 retries, ``unavailable``) retries an
    upstream's 200 whose head carries grpc-status 14 (a Trailers-Only response); the client
    gets the last one, its grpc-status passed on. INTERNAL (13) is not retried. Exact."""

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], policy=policy_for({}, 1, mesh="istio")) as proxy:
            port = proxy.port("test")
            unavailable = [await get_once(port, "/?grpc-status=14") for _ in range(5)]
            retries = proxy.metrics.retries.labels("test")._value.get()
            assert (state.served, retries) == (15, 10)
            internal = [await get_once(port, "/?grpc-status=13") for _ in range(5)]
            assert (state.served, proxy.metrics.retries.labels("test")._value.get()) == (20, 10)
        await stop_echo(server, state)
        assert {(r.status, r.header(b"grpc-status")) for r in unavailable} == {(200, b"14")}
        assert {(r.status, r.header(b"grpc-status")) for r in internal} == {(200, b"13")}

    arun(main)


def test_linkerd_listener_retries_unavailable_under_its_grpc_annotation() -> None:
    """§6.2: ``retry_on: [unavailable]`` is ``retry.linkerd.io/grpc: unavailable``; with
    ``attempts: 1`` each request is tried twice. Exact."""
    traffic = {"retries": {"attempts": 1, "retry_on": ["unavailable"]}}

    async def main() -> None:
        server, state = await start_echo(seed=1)
        policy = policy_for(traffic, 1, mesh="linkerd")
        async with proxy_for([bound_port(server)], policy=policy) as proxy:
            port = proxy.port("test")
            for _ in range(5):
                await get_once(port, "/?grpc-status=14")
            assert (state.served, proxy.metrics.retries.labels("test")._value.get()) == (10, 5)
        await stop_echo(server, state)

    arun(main)


@pytest.mark.parametrize("detector", ["outlier_detection", "failure_accrual"])
def test_a_host_answering_grpc_unavailable_is_ejected(detector: str) -> None:
    """§3.2 / §6.4, on the fast path (no retries): Envoy's outlier detection counts
    grpc-status 14 in the head as a 503, Linkerd's failure accrual as a failure; 3 in a row
    take the host out and the rest go to the good one. Exact (round robin)."""
    rules = {
        "outlier_detection": {"consecutive_5xx": 3, "interval_s": 60, "base_ejection_s": 60,
                              "max_ejection_percent": 50},
        "failure_accrual": {"max_failures": 3, "backoff_min_s": 60, "backoff_max_s": 60},
    }  # fmt: skip
    traffic = {detector: rules[detector], "load_balancer": "round_robin",
               "retries": {"attempts": 0}}  # fmt: skip

    async def main() -> None:
        bad_srv, bad = await start_echo(seed=1, default_query="grpc-status=14")
        good_srv, good = await start_echo(seed=2)
        async with proxy_for([bound_port(bad_srv), bound_port(good_srv)], traffic=traffic) as proxy:
            port = proxy.port("test")
            answers = [(await get_once(port)).header(b"grpc-status") for _ in range(12)]
            ejections = proxy.metrics.ejections.labels("test")._value.get()
        await stop_echo(bad_srv, bad)
        await stop_echo(good_srv, good)
        assert ejections == 1
        assert (bad.served, good.served) == (3, 9)
        assert answers.count(b"14") == 3

    arun(main)
