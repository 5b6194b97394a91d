"""Multi-cluster (issue 15, step 4): the cross-cluster endpoint discovery path and its parts,
east-west gateway hops, and the scenarios/multi-cluster.yaml drill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsim.models import load_model
from meshsim.scenario import load_scenario
from meshsim.scenario.loader import loads
from meshsim.sim.engine import Simulation

BASE = """\
meshsim: 1
name: two-clusters
seed: 5
duration_s: 6
warmup_s: 0
meshes: [istio, linkerd]
cluster:
  cores_per_node: 4
  zones:
    - {name: east-a, nodes: 1, cluster: east}
    - {name: west-a, nodes: 1, cluster: west}
  network: {cross_zone_us: 500, cross_cluster_us: 10000}
services:
  - name: front
    replicas: 2
    cpu_ms: {dist: constant, mean: 0.2}
    calls: [{service: back}]
  - name: back
    replicas: 2
    cpu_ms: {dist: constant, mean: 0.2}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 50, connections: 4}
"""


def sim_of(text: str, mesh: str) -> Simulation:
    scenario = loads(text)
    return Simulation(scenario, mesh, scenario.seed)


def test_istio_multi_primary_delay_is_watch_crossing_debounce_push() -> None:
    sim = sim_of(BASE, "istio")
    mc = sim.multicluster
    assert mc is not None
    # models/istiod.yaml: kube_event_delay 50 ms, debounce_after 100 ms, send 2 ms; and the
    # 10 ms crossing of the remote API server's watch.
    assert mc.parts == pytest.approx(
        {"remote_api_watch_s": 0.05, "watch_crossing_s": 0.01, "debounce_s": 0.1,
         "push_s": 0.002}
    )  # fmt: skip
    assert mc.delay_s("east", "west") == pytest.approx(0.162)
    assert mc.delay_s("west", "west") == 0.0


def test_istio_primary_remote_crosses_back_to_the_remote_proxies() -> None:
    sim = sim_of(BASE + "multicluster: {istio: primary-remote}\n", "istio")
    mc = sim.multicluster
    assert mc is not None
    assert mc.primary == "east"
    assert mc.delay_s("east", "west") == pytest.approx(0.162)  # istiod's own proxies
    assert mc.delay_s("west", "east") == pytest.approx(0.172)  # the push crosses back
    assert mc.delay_s("west", "west") == pytest.approx(0.02)  # to istiod and back


def test_linkerd_pod_to_pod_goes_through_the_service_mirror() -> None:
    sim = sim_of(BASE, "linkerd")
    mc = sim.multicluster
    assert mc is not None
    assert set(mc.parts) == {
        "service_mirror_watch_s", "watch_crossing_s", "mirror_endpointslice_informer_s",
        "stream_send_s",
    }  # fmt: skip
    assert mc.delay_s("east", "west") == pytest.approx(sum(mc.parts.values()))
    gateway = sim_of(BASE + "multicluster: {linkerd: gateway}\n", "linkerd").multicluster
    assert gateway is not None
    assert gateway.delay_s("east", "west") == 0.0  # the remote gateway discovers locally


def proxy_in(sim: Simulation, service: str, cluster: str) -> Any:
    for pod, proxy in sim.data_plane.sidecars.items():  # type: ignore[attr-defined]
        loc = sim.topology.of(pod.node)
        if pod.service.name == service and loc is not None and loc.cluster == cluster:
            return proxy
    raise AssertionError(f"no {service} proxy in {cluster}")


def test_a_remote_endpoint_change_reaches_a_proxy_after_the_whole_path() -> None:
    text = BASE + "events:\n  - {at_s: 2, action: kill, target: back, count: 2}\n"
    sim = sim_of(text, "istio")
    mc = sim.multicluster
    assert mc is not None
    for w in sim.workloads:
        w.start()
    sim.timeline.start()
    back = sim.services["back"]
    east = proxy_in(sim, "front", "east")
    dead_west = [p for p in back.pods if sim.topology.of(p.node).cluster == "west"]  # type: ignore[union-attr]
    delay = mc.delay_s("east", "west")

    def sees_west() -> bool:
        view = mc.visible(east, back, east.view(back))
        return any(p in view for p in dead_west)

    sim.env.run(until=2.0 + delay - 0.001)
    assert sees_west()  # the kill has not crossed yet: a stale endpoint
    sim.env.run(until=2.0 + delay + 0.001)
    assert not sees_west()


def test_east_west_gateway_adds_its_hops_to_cross_cluster_messages() -> None:
    plain = sim_of(BASE, "istio")
    gw = sim_of(BASE + "multicluster: {east_west_gateway: true}\n", "istio")
    a, b = plain.nodes[0], plain.nodes[1]
    # The gateway's Envoy hop latency, in and out (models/istio-sidecar.yaml's, the same Envoy).
    hop = 2 * load_model("istio-sidecar").hop_latency_us * 1e-6
    assert gw.network.delay(a, b, 0) - plain.network.delay(a, b, 0) == pytest.approx(hop)
    assert gw.multicluster is not None
    assert gw.multicluster.summary()["east_west_gateway"] is True


def test_multi_cluster_scenario_fails_over_in_the_region() -> None:
    path = Path(__file__).parent.parent / "scenarios" / "multi-cluster.yaml"
    scenario = load_scenario(path)
    # The refused-connection variant of the file's zone failure (a black hole there, whose
    # connect timeouts tests/test_edges_zones.py checks): outlier detection's exact count.
    refused = scenario.events[0].model_copy(update={"mode": "refuse"})
    scenario = scenario.model_copy(update={"duration_s": 34.0, "events": [refused]})
    sim = Simulation(scenario, "istio", scenario.seed)
    sim.run()
    topo = sim.measure().topology
    assert topo is not None
    (failure,) = topo["zone_failures"]
    # Two storefront proxies in east-a, two dead catalog hosts each, 5 consecutive errors
    # to eject each: exactly 20 failed tries, then east-a's calls go to east-b.
    assert failure["failed_tries"] == 20
    assert failure["failover_s"] < 1.0
    by_zone = topo["tries"]["catalog"]["by_zone"]
    assert by_zone["east-a->east-b"] > 0
    assert not any(k.startswith("east") and k.endswith("west-a") for k in by_zone)
    assert topo["multicluster"]["discovery_delay_s"]["east<-west"] == pytest.approx(0.162)
