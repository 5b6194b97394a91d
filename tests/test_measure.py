"""Simulation.measure(): what the engine hands to meshsim.results, as typed data."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from meshsim.results.run import Replication, control_plane_block, proxy_block
from meshsim.scenario import from_dict
from meshsim.sim.engine import Simulation
from meshsim.sim.measure import Measurement

CPU_MS = 0.5


def scenario(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "meshsim": 1,
        "name": "measured",
        "seed": 5,
        "duration_s": 3.0,
        "warmup_s": 1.0,
        "meshes": ["none", "istio"],
        "cluster": {"nodes": 2, "cores_per_node": 4},
        "services": [
            {"name": "front", "replicas": 2, "cpu_ms": CPU_MS, "calls": [{"service": "back"}]},
            {"name": "back", "replicas": 1, "cpu_ms": CPU_MS},
        ],
        "workloads": [{"name": "users", "target": "front", "arrival": "constant",
                       "rate_rps": 100}],
    }  # fmt: skip
    doc.update(over)
    return doc


def run(mesh: str) -> tuple[Simulation, Measurement]:
    doc = scenario()
    sim = Simulation(from_dict(doc), mesh, doc["seed"])
    sim.run()
    return sim, sim.measure()


@pytest.mark.parametrize("mesh", ["none", "istio"])
def test_counts_and_cpu_add_up(mesh: str) -> None:
    _, m = run(mesh)
    assert m.window_s == 2.0
    assert m.in_flight == 0
    (client,) = m.clients
    assert client.requested_rps == 100.0
    # Constant arrivals at 100 rps over a 2 s window: 200, give or take the one send that
    # summed 10 ms gaps put a rounding error either side of an edge.
    n = client.sent_in_window
    assert abs(n - 200) <= 1
    users = m.workloads["users"]
    # Every one answered after the drain.
    assert users.requests == n
    assert users.errors == 0
    assert users.statuses == {200: n}
    assert users.histogram.count == n
    # Every front request makes one call to back. Services and edges count the requests
    # that *arrived* in the window, a little later than sent: one may cross an edge.
    for subject in (m.services["front"], m.services["back"], m.edges[("front", "back")]):
        assert abs(subject.requests - n) <= 1
        assert subject.errors == 0
    # Application CPU: 0.5 ms per request per service, counted when the burst ends, so a
    # request at each edge of the window may fall either side.
    for app in m.apps:
        cpu = sum(p.cpu_s for p in app.pods)
        assert abs(cpu - n * CPU_MS * 1e-3) <= 2 * CPU_MS * 1e-3, app.service
    assert [p.name for p in m.apps[0].pods] == ["front-v1-0", "front-v1-1"]
    node_busy = sum(n.busy_s for n in m.nodes)
    app_busy = sum(p.cpu_s for a in m.apps for p in a.pods)
    proxy_busy = sum(p.cpu_s for p in m.proxies)
    # The nodes' cores ran the apps and the proxies, nothing else.
    assert node_busy == pytest.approx(app_busy + proxy_busy, rel=1e-9)


def test_no_mesh_has_no_proxies_and_no_handshakes() -> None:
    _, m = run("none")
    assert m.proxies == ()
    assert m.handshakes is None
    assert m.resilience == {}
    assert proxy_block(m) == {
        "count": 0, "cpu_vcpu_total": 0.0, "cpu_vcpu_per_1000rps": 0.0,
        "memory_mb_per_proxy": 0.0, "memory_mb_total": 0.0, "handshakes": 0,
    }  # fmt: skip


def test_istio_proxies_block_is_made_of_the_measured_proxies() -> None:
    _, m = run("istio")
    # One sidecar per pod (three pods); nothing died.
    assert sorted(p.kind for p in m.proxies) == ["sidecar"] * 3
    assert all(p.live and p.memory_mb is not None for p in m.proxies)
    assert m.handshakes is not None
    assert m.handshakes.total >= 1
    block = proxy_block(m)
    assert block["count"] == 3
    assert block["cpu_vcpu_total"] == sum(p.cpu_s for p in m.proxies) / m.window_s
    assert block["cpu_vcpu_per_1000rps"] == block["cpu_vcpu_total"] / 0.1
    assert block["memory_mb_total"] == sum(p.memory_mb or 0.0 for p in m.proxies)
    assert block["handshakes"] == m.handshakes.total
    # Resilience: the chain counted every request to back, one try each.
    back = m.resilience["back"]
    assert back.counts["requests"] == back.counts["attempts"]
    assert abs(back.counts["requests"] - m.services["back"].requests) <= 1
    assert sum(back.by_endpoint.values()) == back.counts["attempts"]


def test_control_plane_block_is_the_control_planes_report_in_its_order() -> None:
    sim, m = run("istio")
    report = sim.control_plane.summary(sim.warmup_s, sim.end_s)
    assert control_plane_block(m) == report
    assert list(control_plane_block(m)) == list(report)


def test_replication_of_a_simulation_or_its_measurement_is_the_same() -> None:
    sim, m = run("istio")
    a, b = Replication.of(sim, 0), Replication.of(m, 0)
    assert a.proxies == b.proxies
    assert a.control_plane == b.control_plane
    assert a.node_utilisation == b.node_utilisation
    assert a.proxy_worker_utilisation == b.proxy_worker_utilisation
    assert set(a.proxy_worker_utilisation) == {w.name for p in m.proxies for w in p.workers}


def test_measurements_are_frozen() -> None:
    _, m = run("none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.mesh = "istio"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.nodes[0].busy_s = 0.0  # type: ignore[misc]


def test_a_run_never_started_measures_zero() -> None:
    doc = scenario()
    sim = Simulation(from_dict(doc), "istio", doc["seed"])
    m = sim.measure()
    assert all(n.busy_s == 0.0 for n in m.nodes)
    assert all(p.cpu_s == 0.0 for p in m.proxies)
    assert m.workloads == {}
