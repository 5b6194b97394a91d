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
) -> tuple[ConnectionBalancer, list[int], dict[str, Stream]]:
    """A balancer whose per-call picks and whose named connection streams are scripted
    (``connections``: by ``caller->service``)."""
    it, drawn = scripted(per_call)
    streams = {name: Stream(v) for name, v in (connections or {}).items()}

    def stream(name: str) -> Any:
        return streams[name.removeprefix("l4-connection/")]

    return ConnectionBalancer(lambda: next(it), stream, keep_alive), drawn, streams


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
