"""Balancing per connection (meshsim.sim.dataplanes.l4_balancing): exact outcomes with a
scripted sequence of uniforms."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from meshsim.sim.app import Client, Pod
from meshsim.sim.dataplanes.l4_balancing import ConnectionBalancer


def pod(name: str) -> Pod:
    p = Pod.__new__(Pod)
    p.name = name
    p.alive = True
    p.ready = True
    return p


def service(name: str, protocol: str) -> Any:
    return SimpleNamespace(name=name, spec=SimpleNamespace(protocol=protocol))


def scripted(values: list[float]) -> tuple[Iterator[float], list[int]]:
    """Uniforms in order, and a counter of how many were drawn."""
    drawn = [0]

    def gen() -> Iterator[float]:
        for v in values:
            drawn[0] += 1
            yield v

    return gen(), drawn


def balancer(values: list[float], keep_alive: bool = True) -> tuple[ConnectionBalancer, list[int]]:
    it, drawn = scripted(values)
    return ConnectionBalancer(lambda: next(it), keep_alive), drawn


def test_a_grpc_callers_calls_stay_on_the_pod_its_connection_reached() -> None:
    pods = [pod("api-0"), pod("api-1"), pod("api-2")]
    api = service("api", "grpc")
    web0, web1 = pod("web-0"), pod("web-1")
    lb, drawn = balancer([0.5, 0.9, 0.1])
    assert [lb.pick(web0, api, pods) for _ in range(5)] == [pods[1]] * 5
    assert drawn == [1]  # one pick, when the connection opened
    # Another caller pod has a connection of its own, bound by a pick of its own.
    assert lb.pick(web1, api, pods) is pods[2]
    assert lb.pick(web0, api, pods) is pods[1]
    # A pod added later gets no bound caller's calls (no reconnect).
    assert lb.pick(web0, api, [*pods, pod("api-3")]) is pods[1]


def test_a_connection_whose_pod_stops_serving_is_opened_again_by_a_new_pick() -> None:
    pods = [pod("api-0"), pod("api-1"), pod("api-2")]
    api = service("api", "http2")
    web = pod("web-0")
    lb, drawn = balancer([0.5, 0.0, 0.99])
    assert lb.pick(web, api, pods) is pods[1]
    pods[1].ready = False  # terminating: out of the endpoints, its server sends GOAWAY
    live = [pods[0], pods[2]]
    assert lb.pick(web, api, live) is pods[0]
    assert lb.pick(web, api, live) is pods[0]
    pods[0].alive = pods[0].ready = False  # killed
    assert lb.pick(web, api, [pods[2]]) is pods[2]
    assert drawn == [3]
    assert lb.pick(web, api, []) is None


def test_http1_apps_clients_outside_and_calls_without_keep_alive_are_drawn_per_call() -> None:
    pods = [pod("api-0"), pod("api-1")]
    web = pod("web-0")
    lb, _ = balancer([0.1, 0.6, 0.2, 0.7])
    assert [lb.pick(web, service("api", "http1"), pods) for _ in range(2)] == pods
    assert [lb.pick(Client("load"), service("api", "grpc"), pods) for _ in range(2)] == pods
    lb, _ = balancer([0.1, 0.6], keep_alive=False)
    assert [lb.pick(web, service("api", "grpc"), pods) for _ in range(2)] == pods
