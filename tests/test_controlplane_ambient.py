"""istiod under Istio ambient (issue 6): ztunnels and waypoints see endpoints as of their last
update from istiod, through the same debounce and push throttle as sidecars; istiod serves
one connection per node (plus waypoints), not one per pod; ztunnel holds its node's
certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

# The same two-service topology as the sidecar control-plane tests (tests/ is on sys.path).
from test_controlplane import _scenario

from meshsim.models import default_model, load_model, models_dir
from meshsim.results.run import Replication
from meshsim.scenario import from_dict
from meshsim.sim.engine import Simulation

AMBIENT = "istio-ambient"
KILL = [{"at_s": 10, "action": "kill", "target": "api"}]
GRACEFUL_KILL = [{"at_s": 10, "action": "kill", "target": "api", "graceful": True, "prestop_s": 5}]


def _run(data: dict[str, Any], mesh: str = AMBIENT) -> tuple[Simulation, Replication]:
    sim = Simulation(from_dict(data), mesh, 5)
    sim.run()
    return sim, Replication.of(sim, 0)


NEW_CONN_PER_REQUEST = {"mesh_options": {"keep_alive": False}}
"""Every call opens an app connection, so ztunnel picks an endpoint for every request."""


def _debounce_model(tmp_path: Path, debounce_ms: float) -> str:
    data = yaml.safe_load((models_dir() / "istiod.yaml").read_text(encoding="utf-8"))
    data["parameters"]["debounce_after_ms"]["value"] = debounce_ms
    data["parameters"]["debounce_after_ms"]["range"] = [debounce_ms, debounce_ms]  # must hold it
    path = tmp_path / f"istiod-{debounce_ms:g}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    load_model(path)
    return str(path)


# --------------------------------------------------------------------------- stale endpoints


def test_killed_pod_gets_connections_until_the_ztunnels_converge() -> None:
    _sim, rep = _run(_scenario([AMBIENT], KILL, **NEW_CONN_PER_REQUEST))
    cp = rep.control_plane
    assert cp["mesh_control_plane"] == "istiod"
    assert cp["stale_endpoint_attempts"] > 0
    # ztunnel does not retry a refused connection: each stale pick is a failed request.
    assert rep.workloads["users"].errors >= cp["stale_endpoint_attempts"]


def test_graceful_termination_leaves_no_stale_attempts_under_ambient() -> None:
    _sim, rep = _run(_scenario([AMBIENT], GRACEFUL_KILL, **NEW_CONN_PER_REQUEST))
    cp = rep.control_plane
    assert cp["stale_endpoint_attempts"] == 0
    assert cp["terminating_endpoint_attempts"] > 0  # stale, but the pod still serves
    assert rep.workloads["users"].errors == 0


@pytest.mark.long
def test_waypoint_retries_absorb_stale_endpoints() -> None:
    opts = {"mesh_options": {AMBIENT: {"waypoints": ["api"]}}}
    _sim, rep = _run(_scenario([AMBIENT], KILL, **opts))
    cp = rep.control_plane
    assert cp["connected_by_kind"] == {"ztunnel": 2, "waypoint": 1}
    assert cp["stale_endpoint_attempts"] > 0  # the waypoint's view was stale...
    assert rep.workloads["users"].errors == 0  # ...and its retries went to another host


@pytest.mark.long
def test_stale_attempts_fall_as_convergence_gets_faster(tmp_path: Path) -> None:
    convs, stale = [], []
    for debounce in (1000.0, 300.0, 100.0):
        extra = {
            "mesh_options": {
                "keep_alive": False,
                "istio": {"istiod_model": _debounce_model(tmp_path, debounce)},
            }
        }
        _sim, rep = _run(_scenario([AMBIENT], KILL, **extra))
        convs.append(rep.control_plane["convergence_s"]["p99"])
        stale.append(rep.control_plane["stale_endpoint_attempts"])
    assert convs == sorted(convs, reverse=True)
    assert convs[0] > 1.0 > convs[-1] > 0.1
    assert stale == sorted(stale, reverse=True)
    assert stale[0] > 3 * stale[-1] > 0


def test_ambient_convergence_of_one_kill_is_hand_computed() -> None:
    _sim, rep = _run(_scenario([AMBIENT], KILL))
    v = default_model("istiod").value
    # kill at 10 -> informer +50 ms -> debounce +100 ms -> PushContext (EDS: base only) ->
    # the 2 ztunnels (2 nodes; not the 4 pods) in parallel on 35 throttle slots, each an EDS
    # push with the 2 api endpoints left, stretched by 35 / free cores -> +2 ms send.
    free = 4 - v("connected_proxy_cpu_us_per_s") * 1e-6 * 2
    push = (v("eds_push_base_us") + 2 * v("push_endpoint_us")) * 1e-6 * 35 / free
    expected = (
        (v("kube_event_delay_ms") + v("debounce_after_ms")) * 1e-3
        + v("push_context_base_us") * 1e-6
        + push
        + v("send_latency_ms") * 1e-3
    )
    cp = rep.control_plane
    assert cp["convergence_s"]["count"] == 1
    assert cp["convergence_s"]["p99"] == pytest.approx(expected, abs=1e-9)
    assert cp["proxy_pushes"] == 2


@pytest.mark.long
def test_new_pod_gets_no_traffic_until_the_ztunnels_know_it() -> None:
    data = _scenario(
        [AMBIENT],
        [{"at_s": 10, "action": "scale", "target": "api", "replicas": 4}],
        **NEW_CONN_PER_REQUEST,
    )
    sim, rep = _run(data)
    new = sim.services["api"].pods[3]
    assert new.ready
    assert rep.control_plane["convergence_s"]["count"] == 1
    assert rep.control_plane["stale_endpoint_attempts"] == 0


# --------------------------------------------------------------------------- istiod's load


@pytest.mark.long
def test_istiod_pushes_to_ztunnels_and_waypoints_not_pods() -> None:
    services = [
        {"name": "web", "replicas": 4, "cpu_ms": 0.2, "calls": [{"service": "api"}]},
        {"name": "api", "replicas": 12, "cpu_ms": 0.2},
    ]
    opts = {AMBIENT: {"waypoints": ["api"]}}
    data = _scenario([AMBIENT, "istio"], KILL, services=services, mesh_options=opts)
    _s, ambient = _run(data, AMBIENT)
    _s, sidecars = _run(data, "istio")
    a, s = ambient.control_plane, sidecars.control_plane
    assert a["connected_proxies"] == 2 + 1  # nodes + waypoints
    assert s["connected_proxies"] == 15  # one per pod (16, less the killed one)
    # One kill: one EDS push, to every ztunnel and the api waypoint; to every sidecar left.
    assert a["proxy_pushes"] == 3
    assert s["proxy_pushes"] == 15
    assert a["memory_mb"] < s["memory_mb"]
    assert a["cpu_vcpu"] < s["cpu_vcpu"]


def test_waypoint_holds_only_its_service() -> None:
    services = [
        {"name": "web", "replicas": 1, "cpu_ms": 0.2, "calls": [{"service": "api"}]},
        {"name": "api", "replicas": 3, "cpu_ms": 0.2},
        {"name": "other", "replicas": 3, "cpu_ms": 0.2},
    ]
    opts = {AMBIENT: {"waypoints": ["other"]}}
    _s, rep = _run(_scenario([AMBIENT], KILL, services=services, mesh_options=opts))
    # The api kill goes to both ztunnels (they hold every workload), not to other's waypoint.
    assert rep.control_plane["proxy_pushes"] == 2


# --------------------------------------------------------------------------- outages, identity


def test_control_plane_down_keeps_existing_ambient_traffic() -> None:
    events = [
        {"at_s": 5, "action": "control-plane-down"},
        {"at_s": 10, "action": "scale", "target": "api", "replicas": 5},
    ]
    sim, rep = _run(_scenario([AMBIENT], events, **NEW_CONN_PER_REQUEST))
    assert rep.workloads["users"].errors == 0
    new = sim.services["api"].pods[3:]
    # Their node's ztunnel already holds api's identity: they start, but no ztunnel hears
    # of them while istiod is down, so they get no traffic.
    assert all(p.ready for p in new)
    assert rep.control_plane["convergence_s"] is None


def test_control_plane_back_resyncs_the_ztunnels() -> None:
    events = [
        {"at_s": 5, "action": "control-plane-down", "duration_s": 10},
        {"at_s": 8, "action": "kill", "target": "api"},
    ]
    _s, rep = _run(_scenario([AMBIENT], events, **NEW_CONN_PER_REQUEST))
    cp = rep.control_plane
    stale, errors = cp["stale_endpoint_attempts"], rep.workloads["users"].errors
    # Stale from the kill at 8 until istiod is back at 15 and pushes to every ztunnel.
    assert stale > 100
    assert errors == stale
    series = rep.workloads["users"].series["errors"]
    assert sum(series[16:]) == 0


def test_expired_certificates_stop_ambient_traffic() -> None:
    events = [{"at_s": 5, "action": "control-plane-down"}]
    security = {"certificates": {"lifetime_s": 20, "renew_fraction": 0.5}}
    _s, rep = _run(_scenario([AMBIENT], events, security=security))
    series = rep.workloads["users"].series["errors"]
    assert sum(series[:19]) == 0
    assert sum(series[21:]) > 0
    assert rep.control_plane["certificate_failures"] > 0


@pytest.mark.long
def test_ztunnel_holds_one_certificate_per_identity_on_its_node() -> None:
    # Two nodes; api's 3 pods cover both: a 4th api pod needs no CSR under ambient, while
    # its sidecar would ask for its own. A new service's first pod needs one.
    events = [{"at_s": 10, "action": "scale", "target": "api", "replicas": 4}]
    _s, ambient = _run(_scenario([AMBIENT], events))
    _s, sidecars = _run(_scenario(["istio"], events), "istio")
    assert ambient.control_plane["certificates_issued"] == 0
    assert sidecars.control_plane["certificates_issued"] == 1
    # A third node has no api pod: a new api pod placed there needs a CSR through its ztunnel.
    events = [{"at_s": 10, "action": "scale", "target": "api", "replicas": 4}]
    sim, ambient = _run(_scenario([AMBIENT], events, cluster={"nodes": 3, "cores_per_node": 4}))
    new = sim.services["api"].pods[3]
    others = {p.node.index for p in sim.services["api"].pods[:3]}
    assert ambient.control_plane["certificates_issued"] == (new.node.index not in others)
    assert new.ready
