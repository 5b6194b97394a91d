"""TLS session resumption between proxies (docs/mesh-semantics.md §8.3): who resumes, and
Envoy's one single-use ticket per cluster.

All cases are deterministic and assert exact counts.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import Any

import numpy as np
import pytest
import simpy

from meshsim.models import default_model
from meshsim.models.parameters import ProxyKind
from meshsim.scenario import from_dict
from meshsim.sim.cluster import Node
from meshsim.sim.dataplanes.connections import Pools
from meshsim.sim.dataplanes.proxy import Proxy
from meshsim.sim.engine import Simulation
from meshsim.sim.sampling import Uniforms

ONE_WAY_S = 100e-6


def _proxy(env: simpy.Environment, name: str, kind: ProxyKind) -> Proxy:
    node = Node(env, 0, 8)
    return Proxy(
        env, name, "sidecar", default_model(kind), node, 1, stealing=False,
        pick=Uniforms(np.random.default_rng(0)),
    )  # fmt: skip


class Opener:
    """Opens new mTLS connections (keep-alive off) from one client, and records whether
    each handshake resumed."""

    def __init__(self, env: simpy.Environment, client: Proxy) -> None:
        self.env = env
        self.client = client
        self.pools = Pools(env, keep_alive=False)
        self.resumed: list[bool] = []

    def _open(self, server: Proxy, cluster: Hashable) -> Generator[simpy.Event, Any, None]:
        before = self.pools.counter.resumed
        conn = yield from self.pools.acquire(
            ("k", server.name), self.client, self.client.workers[0], server, True, False,
            ONE_WAY_S, cluster,
        )  # fmt: skip
        self.resumed.append(self.pools.counter.resumed > before)
        self.pools.release(conn, False)

    def one(self, server: Proxy, cluster: Hashable = "svc") -> bool:
        """One connection, opened after every earlier one has completed."""
        self.env.process(self._open(server, cluster))
        self.env.run()
        return self.resumed[-1]

    def together(self, server: Proxy, n: int, cluster: Hashable = "svc") -> list[bool]:
        """``n`` connections opened at the same instant."""
        start = len(self.resumed)
        for _ in range(n):
            self.env.process(self._open(server, cluster))
        self.env.run()
        return self.resumed[start:]


def test_an_envoy_client_resumes_with_the_last_ticket_of_the_cluster_only() -> None:
    """Envoy keeps max_session_keys = 1 ticket per cluster, the last handshake's: a
    connection to another host of the cluster takes it and pays a full handshake, and
    replaces it with that host's."""
    env = simpy.Environment()
    client = _proxy(env, "client", "envoy-sidecar")
    a, b = _proxy(env, "a", "envoy-sidecar"), _proxy(env, "b", "envoy-sidecar")
    opener = Opener(env, client)
    assert [opener.one(s) for s in (a, a, a, b, a, a)] == [
        False, True, True, False, False, True,
    ]  # fmt: skip
    # Each cluster its own ticket: b's cluster does not take a's.
    assert opener.one(b, cluster="other") is False
    assert opener.one(a) is True
    assert opener.one(b, cluster="other") is True


def test_an_envoy_ticket_is_used_once_so_connections_opened_together_pay_full() -> None:
    """A TLS 1.3 ticket is removed when a connection takes it: of three connections opened
    at once after a completed handshake, one resumes; the next one resumes again with the
    ticket the last of them to complete stored."""
    env = simpy.Environment()
    client, a = _proxy(env, "client", "envoy-sidecar"), _proxy(env, "a", "envoy-sidecar")
    opener = Opener(env, client)
    assert opener.one(a) is False
    assert opener.together(a, 3) == [True, False, False]
    assert opener.one(a) is True


def test_a_restarted_server_does_not_resume_its_old_tickets() -> None:
    env = simpy.Environment()
    client, a = _proxy(env, "client", "envoy-sidecar"), _proxy(env, "a", "envoy-sidecar")
    opener = Opener(env, client)
    assert opener.one(a) is False
    a.killed()
    a.restarted()
    assert opener.one(a) is False
    assert opener.one(a) is True


@pytest.mark.parametrize(
    ("client_kind", "server_kind"),
    [
        ("linkerd-proxy", "linkerd-proxy"),  # rustls Resumption::disabled() (store.rs)
        ("ztunnel", "ztunnel"),  # the same in ztunnel's outbound_connector
        ("ztunnel", "waypoint"),
        ("waypoint", "ztunnel"),  # ztunnel's server: a new session cache per connection
    ],
)
def test_linkerd_and_ztunnel_never_resume(client_kind: ProxyKind, server_kind: ProxyKind) -> None:
    env = simpy.Environment()
    client, server = _proxy(env, "client", client_kind), _proxy(env, "s", server_kind)
    opener = Opener(env, client)
    assert [opener.one(server) for _ in range(4)] == [False] * 4


def _keep_alive_off(mesh: str, clients: int, replicas: int, **over: Any) -> Simulation:
    doc: dict[str, Any] = {
        "meshsim": 1,
        "name": "resumption",
        "seed": 3,
        "duration_s": 1.0,
        "warmup_s": 0.2,
        "meshes": [mesh],
        "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [
            {"name": "server", "replicas": replicas, "cpu_ms": {"dist": "constant", "mean": 0.05}}
        ],
        "workloads": [
            {
                "name": "load",
                "target": "server",
                "arrival": "closed",
                "clients": clients,
                "connections": clients,
            }
        ],
        "mesh_options": {"meshed_clients": True, "keep_alive": False},
    }
    doc.update(over)
    sim = Simulation(from_dict(doc), mesh, 3)
    sim.run()
    return sim


@pytest.mark.parametrize("mesh", ["linkerd", "istio-ambient"])
def test_keep_alive_off_linkerd_and_ambient_do_a_full_handshake_per_connection(mesh: str) -> None:
    sim = _keep_alive_off(mesh, clients=4, replicas=2)
    handshakes = sim.measure().handshakes
    assert handshakes is not None
    assert handshakes.total > 100
    assert handshakes.resumed == 0
    assert handshakes.full == handshakes.total


def test_keep_alive_off_one_envoy_caller_of_one_pod_resumes_all_but_its_first() -> None:
    """One closed-loop client, one pod: each connection opens after the last completed, to
    the host whose ticket the client holds."""
    sim = _keep_alive_off("istio", clients=1, replicas=1)
    handshakes = sim.measure().handshakes
    assert handshakes is not None
    assert handshakes.total > 100
    assert handshakes.full == 1
    assert handshakes.resumed == handshakes.total - 1


def test_a_split_by_version_gives_each_subset_cluster_its_own_ticket() -> None:
    """Istio programs a cluster per subset a split names, each with its TLS context: one
    sequential caller of two versions, one pod each, resumes every connection but the first
    to each subset."""
    service = {
        "name": "server",
        "cpu_ms": {"dist": "constant", "mean": 0.05},
        "versions": [{"name": "v1", "replicas": 1}, {"name": "v2", "replicas": 1}],
    }
    sim = _keep_alive_off(
        "istio", clients=1, replicas=1,
        services=[service], traffic=[{"service": "server", "split": {"v1": 50, "v2": 50}}],
    )  # fmt: skip
    handshakes = sim.measure().handshakes
    assert handshakes is not None
    assert handshakes.total > 100
    assert handshakes.full == 2
    assert handshakes.resumed == handshakes.total - 2
