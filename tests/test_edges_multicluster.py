"""Multi-cluster (issue 15, item 3): a control plane per cluster (or one for all under Istio
primary-remote), cross-cluster endpoint discovery measured from the run's own changes, the
east-west and Linkerd gateways as pods with their CPU, bad input, and the
scenarios/multi-cluster.yaml drill.

The scenario below puts ``front`` (2 pods) in east and ``back`` (2 pods) in west, so every
call crosses, and a kill at 2 s changes west's endpoints only. Arrivals are constant and CPU
constant: every figure is exact."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from meshsim.errors import ScenarioError
from meshsim.models import load_model
from meshsim.results.run import proxy_block
from meshsim.scenario import load_scenario
from meshsim.scenario.loader import loads
from meshsim.sim.controlplane.clusters import ClusterControlPlanes
from meshsim.sim.controlplane.istiod import Istiod, push_throttle
from meshsim.sim.controlplane.linkerd import LinkerdControlPlane
from meshsim.sim.engine import Simulation
from meshsim.sim.multicluster import MultiCluster, l4_passthrough_us, linkerd_gateway_us

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
    zones: [east-a]
    cpu_ms: {dist: constant, mean: 0.2}
    calls: [{service: back}]
  - name: back
    replicas: 2
    zones: [west-a]
    cpu_ms: {dist: constant, mean: 0.2}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 50, connections: 4}
"""
KILL = "events:\n  - {at_s: 2, action: kill, target: back, count: 1}\n"
CROSS_S = 0.01


def sim_of(text: str, mesh: str) -> Simulation:
    scenario = loads(text)
    return Simulation(scenario, mesh, scenario.seed)


def planes_of(sim: Simulation) -> ClusterControlPlanes:
    cp = sim.control_plane
    assert isinstance(cp, ClusterControlPlanes)
    return cp


def multicluster(sim: Simulation) -> MultiCluster:
    assert sim.multicluster is not None
    return sim.multicluster


def run_until(sim: Simulation, t: float) -> None:
    for w in sim.workloads:
        w.start()
    sim.timeline.start()
    sim.env.run(until=t)


def proxy_in(sim: Simulation, service: str) -> Any:
    for pod, proxy in sim.data_plane.sidecars.items():  # type: ignore[attr-defined]
        if pod.service.name == service:
            return proxy
    raise AssertionError(f"no {service} proxy")


def istio_push_s(istiod: Istiod, endpoints: int) -> float:
    """istiod's CPU from the debounce's end to a proxy's push being done, with every push
    of it running at once: the endpoint-only PushContext, then one EDS push stretched by
    the throttle over the cores its connected proxies' upkeep leaves (models/istiod.yaml)."""
    v = istiod.model.value
    context = v("push_context_base_us") * 1e-6
    push = (v("eds_push_base_us") + v("push_endpoint_us") * endpoints) * 1e-6
    replica = istiod.replicas[0]
    free = istiod.cores - istiod.upkeep_s * len(replica.proxies)
    return context + push * max(1.0, push_throttle(istiod.model, istiod.cores) / free)


# --------------------------------------------------------------------------- control planes


def test_multi_primary_runs_an_istiod_per_cluster_that_pushes_only_to_its_own() -> None:
    sim = sim_of(BASE + KILL, "istio")
    planes = planes_of(sim)
    east, west = planes.home["east"], planes.home["west"]
    assert isinstance(east, Istiod)
    assert isinstance(west, Istiod)
    assert east is not west
    assert {e.proxy.name for e in east.replicas[0].proxies.values()} == {
        "front-v1-0/sidecar", "front-v1-1/sidecar",
    }  # fmt: skip
    run_until(sim, 6.0)
    # One push each after the kill: east's to its 2 front proxies, west's to the back proxy
    # that is left (the killed pod's proxy is gone before west's push).
    assert (east.pushes, east.pushes_by_cluster) == (1, {"east": 2})
    assert (west.pushes, west.pushes_by_cluster) == (1, {"west": 1})
    summary = planes.summary(0.0, 6.0)
    assert summary["control_planes"] == 2
    assert summary["proxy_pushes"] == 3
    assert summary["by_cluster"]["east"]["proxy_pushes_by_cluster"] == {"east": 2}
    assert summary["by_cluster"]["west"]["connected_proxies"] == 1
    # Each istiod holds the whole registry and its own proxies' state: the total is theirs.
    assert summary["memory_mb"] == pytest.approx(
        summary["by_cluster"]["east"]["memory_mb"] + summary["by_cluster"]["west"]["memory_mb"]
    )
    assert summary["cpu_vcpu"] == pytest.approx(
        summary["by_cluster"]["east"]["cpu_vcpu"] + summary["by_cluster"]["west"]["cpu_vcpu"]
    )


def test_a_west_change_reaches_east_proxies_after_exactly_the_documented_path() -> None:
    sim = sim_of(BASE + KILL, "istio")
    planes = planes_of(sim)
    mc = multicluster(sim)
    east = planes.home["east"]
    assert isinstance(east, Istiod)
    doc = mc.parts  # models/istiod.yaml: informer 50 ms, debounce 100 ms, send 2 ms; 10 ms
    assert doc == pytest.approx(
        {"remote_api_watch_s": 0.05, "watch_crossing_s": CROSS_S, "debounce_s": 0.1,
         "push_s": 0.002}
    )  # fmt: skip
    # One back endpoint is left in the EDS push.
    arrives = 2.0 + sum(doc.values()) + istio_push_s(east, 1)
    front = proxy_in(sim, "front")
    back = sim.services["back"]
    killed = back.pods[0]
    run_until(sim, arrives - 1e-6)
    assert killed in front.view(back)  # still stale: the kill has not reached it
    sim.env.run(until=arrives + 1e-6)
    assert killed not in front.view(back)
    (change,) = planes.convergence()["changes"]
    assert (change["service"], change["cluster"], change["at_s"]) == ("back", "west", 2.0)
    reached = change["reached"]["east"]
    assert reached["total_s"] == pytest.approx(arrives - 2.0, abs=1e-12)
    assert reached["remote_api_watch_s"] == pytest.approx(0.05, abs=1e-12)
    assert reached["watch_crossing_s"] == pytest.approx(CROSS_S, abs=1e-12)
    assert reached["debounce_s"] == pytest.approx(0.1, abs=1e-12)
    assert reached["push_s"] == pytest.approx(0.002 + istio_push_s(east, 1), abs=1e-12)
    # West's own proxy takes the local path: no crossing.
    west = planes.home["west"]
    assert isinstance(west, Istiod)
    assert change["reached"]["west"]["total_s"] == pytest.approx(
        0.05 + 0.1 + 0.002 + istio_push_s(west, 1), abs=1e-12
    )


def test_a_scale_up_in_west_is_measured_from_the_new_pod_becoming_ready() -> None:
    text = BASE + "events:\n  - {at_s: 2, action: scale, target: back, replicas: 3}\n"
    sim = sim_of(text, "istio")
    planes = planes_of(sim)
    east = planes.home["east"]
    assert isinstance(east, Istiod)
    run_until(sim, 6.0)
    (change,) = planes.convergence()["changes"]
    # The new pod is ready once west's istiod has signed its certificate and pushed to it.
    assert change["cluster"] == "west"
    assert change["at_s"] > 2.0
    reached = change["reached"]["east"]
    assert reached["total_s"] == pytest.approx(
        0.05 + CROSS_S + 0.1 + 0.002 + istio_push_s(east, 3), abs=1e-12
    )
    front = proxy_in(sim, "front")
    new = sim.services["back"].pods[-1]
    assert new in front.view(sim.services["back"])


def test_primary_remote_pushes_to_the_remote_cluster_cross_back() -> None:
    sim = sim_of(BASE + KILL + "multicluster: {istio: primary-remote}\n", "istio")
    planes = planes_of(sim)
    (istiod,) = planes.planes
    assert planes.home["west"] is istiod
    assert isinstance(istiod, Istiod)
    run_until(sim, 6.0)
    assert istiod.pushes_by_cluster == {"east": 2, "west": 1}
    (change,) = planes.convergence()["changes"]
    east, west = change["reached"]["east"], change["reached"]["west"]
    # The same push reaches west's proxy exactly one crossing later than east's.
    assert west["total_s"] - east["total_s"] == pytest.approx(CROSS_S, abs=1e-12)
    assert west["push_crossing_s"] == CROSS_S
    assert east["total_s"] == pytest.approx(
        0.05 + CROSS_S + 0.1 + 0.002 + istio_push_s(istiod, 1), abs=1e-12
    )
    assert multicluster(sim).delay_s("west", "east") == pytest.approx(0.172)


def test_linkerd_pod_to_pod_goes_through_the_service_mirror() -> None:
    sim = sim_of(BASE + KILL, "linkerd")
    planes = planes_of(sim)
    east = planes.home["east"]
    assert isinstance(east, LinkerdControlPlane)
    assert planes.home["west"] is not east
    run_until(sim, 6.0)
    (change,) = planes.convergence()["changes"]
    reached = change["reached"]["east"]
    kube = east.kube_delay_s
    assert reached["service_mirror_watch_s"] == pytest.approx(kube, abs=1e-12)
    assert reached["watch_crossing_s"] == pytest.approx(CROSS_S, abs=1e-12)
    assert reached["mirror_endpointslice_informer_s"] == pytest.approx(kube, abs=1e-12)
    # Two front proxies watch back: one update each (1 endpoint changed) on the
    # destination controller's FIFO cores, then the send.
    cpu = east.update_s + east.update_ep_s * 1
    last = math.ceil(2 / east.cores) * cpu
    assert reached["stream_send_s"] == pytest.approx(last + east.send_s, abs=1e-12)
    assert reached["total_s"] == pytest.approx(2 * kube + CROSS_S + last + east.send_s, abs=1e-12)
    assert east.updates == 2


def test_linkerd_gateway_mode_discovers_in_the_linked_cluster() -> None:
    sim = sim_of(BASE + KILL + "multicluster: {linkerd: gateway}\n", "linkerd")
    planes = planes_of(sim)
    run_until(sim, 6.0)
    (change,) = planes.convergence()["changes"]
    reached = change["reached"]["east"]
    assert set(reached) == {"remote_gateway_informer_s", "stream_send_s", "total_s"}
    assert multicluster(sim).delay_s("east", "west") == 0.0


# --------------------------------------------------------------------------- gateways


def gateway_cpu_case(mesh: str, extra: str) -> tuple[Simulation, dict[str, Any]]:
    sim = sim_of(BASE + extra, mesh)
    sim.run()
    topo = sim.measure().topology
    assert topo is not None
    return sim, topo["multicluster"]["gateways"]


def test_istio_east_west_gateway_cpu_is_requests_times_its_l4_cost() -> None:
    sim, gateways = gateway_cpu_case("istio", "multicluster: {east_west_gateway: true}\n")
    west = gateways["west"]
    assert (west["kind"], west["replicas"], west["nodes"]) == ("east-west-gateway", 1, ["node-1"])
    assert gateways["east"]["requests"] == 0  # nothing goes from west to east
    sent = sum(w.sent_in_window for w in sim.workloads)
    assert west["requests"] == sent == 300  # 50 rps x 6 s, each front call crosses once
    model = load_model("istio-sidecar")
    req_us, resp_us = l4_passthrough_us(model, 512, 1024)  # a call's default sizes
    # socket I/O 10.5 us + 1.5 KiB x 2.0 us/KiB: no TLS, HTTP or telemetry work.
    assert req_us + resp_us == pytest.approx(13.5)
    expected = (
        west["requests"] * (req_us + resp_us)
        + west["wakeups"] * model.wakeup_cpu_us
        + west["connections"] * west["connection_cpu_us"]
    ) * 1e-6
    assert west["cpu_s"] == pytest.approx(expected, rel=1e-12)
    # Reported like any proxy: its kind in the proxies block.
    by_kind = proxy_block(sim.measure())["by_kind"]
    assert by_kind["east-west-gateway"]["count"] == 2
    assert by_kind["east-west-gateway"]["cpu_s_total"] == pytest.approx(west["cpu_s"])
    # One Envoy hop each way on every message between the clusters.
    a, b = sim.nodes[0], sim.nodes[1]
    assert sim.network.delay(a, b, 0) == pytest.approx(CROSS_S + model.hop_latency_us * 1e-6)


def test_linkerd_gateway_cpu_is_a_proxied_request_with_two_tls_legs() -> None:
    _, gateways = gateway_cpu_case("linkerd", "multicluster: {linkerd: gateway}\n")
    west = gateways["west"]
    assert west["kind"] == "linkerd-gateway"
    assert west["requests"] == 300
    model = load_model("linkerd-proxy")
    per_request = sum(linkerd_gateway_us(model, 512, 1024))
    one_leg = sum(model.request_cpu_us(512, 1024, mtls=True))
    assert per_request - one_leg == pytest.approx(1.5 * model.value("tls_record_cpu_us_per_kib"))
    assert west["connection_cpu_us"] == pytest.approx(
        model.handshake_cpu_us("server") + model.handshake_cpu_us("client")
    )
    assert west["connections"] >= 1
    expected = (
        west["requests"] * per_request
        + west["wakeups"] * model.wakeup_cpu_us
        + west["connections"] * west["connection_cpu_us"]
    ) * 1e-6
    assert west["cpu_s"] == pytest.approx(expected, rel=1e-12)


def test_gateway_replicas_spread_over_their_cluster_and_connect_to_its_istiod() -> None:
    text = BASE.replace("{name: west-a, nodes: 1, cluster: west}",
                        "{name: west-a, nodes: 2, cluster: west}")  # fmt: skip
    sim = sim_of(text + "multicluster: {east_west_gateway: true, gateway_replicas: 2}\n", "istio")
    west = multicluster(sim).gateways["west"]
    # back's two pods went to node-1 and node-2, one each: the replicas follow the spread.
    assert [p.node.name for p in west.proxies] == ["node-1", "node-2"]
    planes = planes_of(sim)
    summary = planes.summary(0.0, 6.0)["by_cluster"]
    assert summary["west"]["connected_by_kind"] == {"sidecar": 2, "east-west-gateway": 2}
    assert summary["east"]["connected_by_kind"] == {"sidecar": 2, "east-west-gateway": 2}


def test_pod_to_pod_has_no_gateway() -> None:
    sim = sim_of(BASE, "linkerd")
    assert multicluster(sim).gateways == {}
    assert all(p.kind == "sidecar" for p in sim.data_plane.proxies)


# --------------------------------------------------------------------------- summary.json


def test_summary_breaks_the_measured_delay_down_by_path() -> None:
    text = BASE.replace("duration_s: 6", "duration_s: 4") + KILL
    sim = sim_of(text, "istio")
    sim.run()
    topo = sim.measure().topology
    assert topo is not None
    mc = topo["multicluster"]
    assert mc["control_planes"] == 2
    path = mc["convergence"]["by_path"]["east<-west"]
    assert path["changes"] == 1
    assert set(path["parts_s"]) == {"remote_api_watch_s", "watch_crossing_s", "debounce_s",
                                    "push_s"}  # fmt: skip
    assert path["total_s"]["max"] == pytest.approx(sum(path["parts_s"].values()))
    assert path["total_s"]["max"] > mc["discovery_delay_s"]["east<-west"]  # plus push CPU
    cp = sim.measure().control_plane
    assert set(cp.details["by_cluster"]) == {"east", "west"}


# --------------------------------------------------------------------------- bad input


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    path = tmp_path / "clusters.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    return info.value


def test_a_cluster_without_nodes_is_refused(tmp_path: Path) -> None:
    text = BASE.replace(
        "{name: west-a, nodes: 1, cluster: west}",
        "{name: west-a, nodes: 1, cluster: west, vm: true}",
    )
    err = error_of(tmp_path, text)
    (problem,) = [p for p in err.problems if "no nodes" in p.message]
    assert problem.field == "cluster.zones[1].cluster"
    assert problem.line == 11
    assert "cluster 'west' has no nodes" in problem.message
    err = error_of(tmp_path, BASE.replace("nodes: 1, cluster: west", "nodes: 0, cluster: west"))
    (problem,) = err.problems
    assert (problem.field, problem.line) == ("cluster.zones[1].nodes", 11)


def test_a_multicluster_model_of_the_other_mesh_is_refused(tmp_path: Path) -> None:
    err = error_of(tmp_path, BASE + "multicluster: {linkerd: primary-remote}\n")
    (problem,) = err.problems
    assert problem.field == "multicluster.linkerd"
    assert problem.line == 25
    assert "'primary-remote' is one of Istio's multi-cluster models" in problem.message
    assert "'pod-to-pod' or 'gateway'" in problem.message


# --------------------------------------------------------------------------- the drill


@pytest.mark.long
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
