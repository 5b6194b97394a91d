"""Balancing per connection (meshsim.sim.dataplanes.l4_balancing): exact outcomes with a
scripted sequence of uniforms."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from meshsim.scenario.model import Service
from meshsim.sim.app import Client, Pod
from meshsim.sim.dataplanes.l4_balancing import ConnectionBalancer


def pod(name: str) -> Pod:
    p = Pod.__new__(Pod)
    p.name = name
    p.alive = True
    p.ready = True
    return p


def service(name: str, protocol: str, max_connection_age_s: float | None = None) -> Any:
    spec = {"name": name, "protocol": protocol}
    if max_connection_age_s is not None:
        spec["max_connection_age_s"] = max_connection_age_s
    return SimpleNamespace(name=name, spec=Service.model_validate(spec))


def scripted(values: list[float]) -> tuple[Iterator[float], list[int]]:
    """Uniforms in order, and a counter of how many were drawn."""
    drawn = [0]

    def gen() -> Iterator[float]:
        for v in values:
            drawn[0] += 1
            yield v

    return gen(), drawn


class Stream:
    """A named stream that hands out scripted draws, and counts them."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return self.values.pop(0)


def balancer(
    per_call: list[float],
    connections: dict[str, list[float]] | None = None,
    keep_alive: bool = True,
    clock: list[float] | None = None,
) -> tuple[ConnectionBalancer, list[int], dict[str, Stream]]:
    """A balancer whose per-call picks and whose named connection streams are scripted
    (``connections``: by ``caller->service``); ``clock``: a one-item list, the time now."""
    it, drawn = scripted(per_call)
    streams = {name: Stream(v) for name, v in (connections or {}).items()}
    now = clock if clock is not None else [0.0]

    def stream(name: str) -> Any:
        return streams[name.removeprefix("l4-connection/")]

    lb = ConnectionBalancer(lambda: next(it), stream, keep_alive, lambda: now[0])
    return lb, drawn, streams


def test_a_grpc_callers_calls_stay_on_the_pod_its_connection_reached() -> None:
    pods = [pod("api-0"), pod("api-1"), pod("api-2")]
    api = service("api", "grpc")
    web0, web1 = pod("web-0"), pod("web-1")
    lb, per_call, streams = balancer([], {"web-0->api": [0.5], "web-1->api": [0.9]})
    assert [lb.pick(web0, api, pods) for _ in range(5)] == [pods[1]] * 5
    assert streams["web-0->api"].drawn == 1  # one pick, when the connection opened
    # Another caller pod has a connection of its own, bound by a draw of its own stream.
    assert lb.pick(web1, api, pods) is pods[2]
    assert lb.pick(web0, api, pods) is pods[1]
    # A pod added later gets no bound caller's calls (no reconnect).
    assert lb.pick(web0, api, [*pods, pod("api-3")]) is pods[1]
    # The per-call picks' stream is never drawn for a connection: however many calls a mesh
    # balanced before it, a caller binds where it binds under every L4 data plane.
    assert per_call == [0]


def test_a_connection_whose_pod_stops_serving_is_opened_again_by_a_new_pick() -> None:
    pods = [pod("api-0"), pod("api-1"), pod("api-2")]
    api = service("api", "http2")
    web = pod("web-0")
    lb, _, streams = balancer([], {"web-0->api": [0.5, 0.0, 0.99]})
    assert lb.pick(web, api, pods) is pods[1]
    pods[1].ready = False  # terminating: out of the endpoints, its server sends GOAWAY
    live = [pods[0], pods[2]]
    assert lb.pick(web, api, live) is pods[0]
    assert lb.pick(web, api, live) is pods[0]
    pods[0].alive = pods[0].ready = False  # killed
    assert lb.pick(web, api, [pods[2]]) is pods[2]
    assert streams["web-0->api"].drawn == 3
    assert lb.pick(web, api, []) is None


def test_http1_apps_clients_outside_and_calls_without_keep_alive_are_drawn_per_call() -> None:
    pods = [pod("api-0"), pod("api-1")]
    web = pod("web-0")
    lb, _, _ = balancer([0.1, 0.6, 0.2, 0.7])
    assert [lb.pick(web, service("api", "http1"), pods) for _ in range(2)] == pods
    assert [lb.pick(Client("load"), service("api", "grpc"), pods) for _ in range(2)] == pods
    lb, _, _ = balancer([0.1, 0.6], keep_alive=False)
    assert [lb.pick(web, service("api", "grpc"), pods) for _ in range(2)] == pods


def test_a_server_that_caps_connection_age_makes_its_callers_pick_again() -> None:
    """MaxConnectionAge 10 s with grpc-go's +-10 % jitter: a connection opened at 0 with a
    jitter draw of 0.5 closes at 10 s (0.9 + 0.2 x 0.5 = 1.0); the reconnect picks again and
    draws its own jitter (0.0: 9 s, so it closes at 19 s)."""
    pods = [pod("api-0"), pod("api-1"), pod("api-2")]
    api = service("api", "grpc", max_connection_age_s=10.0)
    web = pod("web-0")
    now = [0.0]
    lb, _, streams = balancer([], {"web-0->api": [0.1, 0.5, 0.9, 0.0, 0.5, 0.5]}, clock=now)
    assert lb.pick(web, api, pods) is pods[0]
    now[0] = 9.999
    assert lb.pick(web, api, pods) is pods[0]
    assert lb.reconnects == 0
    now[0] = 10.0
    assert lb.pick(web, api, pods) is pods[2]
    now[0] = 18.999
    assert lb.pick(web, api, pods) is pods[2]
    now[0] = 19.0
    assert lb.pick(web, api, pods) is pods[1]
    assert lb.reconnects == 2
    assert streams["web-0->api"].drawn == 6


def test_a_connection_age_on_an_http1_service_is_refused_with_its_field() -> None:
    from meshsim.errors import ScenarioError
    from meshsim.scenario import from_dict

    doc = {
        "meshsim": 1, "name": "x", "seed": 1, "duration_s": 2, "warmup_s": 1, "meshes": ["none"],
        "services": [{"name": "a", "max_connection_age_s": 5}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip
    with pytest.raises(ScenarioError, match=r"services\[0\]: max_connection_age_s is a gRPC"):
        from_dict(doc)
    doc["services"][0]["protocol"] = "grpc"  # type: ignore[index]
    assert from_dict(doc).services[0].max_connection_age_s == 5.0
