"""Control planes (issue 6): debounce and throttle timing, propagation of endpoint changes to
the proxies' views, stale endpoints during kills and rollouts, certificates, outages."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsim.models import default_model, load_model, models_dir
from meshsim.results.run import Replication
from meshsim.scenario import from_dict
from meshsim.sim.controlplane.debounce import Debouncer
from meshsim.sim.controlplane.fifo import FifoServers
from meshsim.sim.controlplane.istiod import Istiod, push_throttle, steady_state
from meshsim.sim.engine import Simulation

# --------------------------------------------------------------------------- debounce


def _drive(
    d: Debouncer, events: list[float], push_s: float = 0.0, until: float = 60.0
) -> list[float]:
    """Run the debouncer on ``events`` (times); a push takes ``push_s``; return push times."""
    pushes: list[float] = []
    queue = sorted(events)
    done_at: float | None = None
    t = 0.0
    while t <= until:
        candidates = [
            x for x in (queue[0] if queue else None, d.timer_at, done_at) if x is not None
        ]
        if not candidates:
            break
        t = min(candidates)
        if done_at is not None and t == done_at:
            done_at = None
            if d.push_done(t) is not None:
                pushes.append(t)
                done_at = t + push_s
        elif queue and t == queue[0]:
            queue.pop(0)
            d.event(t, False, {"svc"})
        else:
            if d.timer(t) is not None:
                pushes.append(t)
                done_at = t + push_s
    return pushes


def test_debounce_waits_for_100ms_of_quiet() -> None:
    d = Debouncer(0.1, 10.0)
    # Timer armed at 0 for 0.1; at 0.1 the last event (0.05) is 0.05 old: re-armed for 0.15;
    # the event at 0.12 moves "last"; at 0.15 quiet is 0.03: re-armed for 0.22; push at 0.22.
    assert _drive(d, [0.0, 0.05, 0.12]) == pytest.approx([0.22])


def test_debounce_single_event_pushes_after_100ms() -> None:
    assert _drive(Debouncer(0.1, 10.0), [1.0]) == pytest.approx([1.1])


def test_debounce_max_forces_a_push_after_10s() -> None:
    # An event every 70 ms never leaves 100 ms of quiet: the timer fires 30 ms after each
    # event (at 0.07k + 0.03) and re-arms, until 10 s have passed since the first event (0):
    # the first check at or after 10 s is at k = 143, 10.04. The next burst starts at 10.08;
    # its last event is at 19.95, so it is pushed after 100 ms of quiet, at 20.05.
    events = [round(0.07 * i, 10) for i in range(0, 286)]  # 0 .. 19.95
    pushes = _drive(Debouncer(0.1, 10.0), events)
    assert pushes == pytest.approx([10.04, 20.05])


def test_only_one_push_in_flight() -> None:
    # A push takes 1 s. Events at 0 and 0.5: the first pushes at 0.1; the timer of the second
    # fires at 0.6 during the push and does nothing; the end of the push (1.1) pushes it.
    assert _drive(Debouncer(0.1, 10.0), [0.0, 0.5], push_s=1.0) == pytest.approx([0.1, 1.1])


# --------------------------------------------------------------------------- throttle


def test_push_throttle_formula() -> None:
    m = default_model("istiod")
    assert [push_throttle(m, c) for c in (1, 2, 4, 16, 17, 64)] == [20, 25, 35, 95, 100, 100]


def test_fifo_servers_hand_timeline() -> None:
    q = FifoServers(2)
    got = [q.assign(0.0, 1.0) for _ in range(5)]
    assert got == [(0.0, 1.0), (0.0, 1.0), (1.0, 2.0), (1.0, 2.0), (2.0, 3.0)]
    assert q.assign(2.5, 0.5) == (2.5, 3.0)  # a server freed at 2.0
    assert q.assign(2.6, 1.0) == (3.0, 4.0)  # both busy until 3.0
    assert q.busy_s == pytest.approx(6.5)


# --------------------------------------------------------------------------- end to end


def _scenario(meshes: list[str], events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "meshsim": 1,
        "name": "cp",
        "seed": 3,
        "duration_s": 30,
        "warmup_s": 1,
        "meshes": meshes,
        "cluster": {"nodes": 2, "cores_per_node": 4},
        "services": [
            {"name": "web", "replicas": 1, "cpu_ms": 0.2, "calls": [{"service": "api"}]},
            {"name": "api", "replicas": 3, "cpu_ms": 0.2},
        ],
        "workloads": [{"name": "users", "target": "web", "rate_rps": 400, "arrival": "constant"}],
        "events": events,
    }
    data.update(extra)
    return data


def _run(data: dict[str, Any], mesh: str) -> tuple[Simulation, Replication]:
    sim = Simulation(from_dict(data), mesh, 5)
    sim.run()
    return sim, Replication.of(sim, 0)


@pytest.mark.long
def test_istiod_convergence_of_one_kill_is_hand_computed() -> None:
    data = _scenario(["istio"], [{"at_s": 10, "action": "kill", "target": "api"}])
    _sim, rep = _run(data, "istio")
    m = default_model("istiod")
    v = m.value
    # kill at 10 -> informer +50 ms -> debounce +100 ms -> PushContext (EDS: base only) ->
    # 3 proxies (web + 2 api left) in parallel on 35 throttle slots, each EDS push with the
    # 2 endpoints left stretched by 35 / free cores -> +2 ms send.
    cores = 4
    free = cores - v("connected_proxy_cpu_us_per_s") * 1e-6 * 3
    push = (v("eds_push_base_us") + 2 * v("push_endpoint_us")) * 1e-6 * 35 / free
    expected = (
        (v("kube_event_delay_ms") + v("debounce_after_ms")) * 1e-3
        + v("push_context_base_us") * 1e-6
        + push
        + v("send_latency_ms") * 1e-3
    )
    conv = rep.control_plane["convergence_s"]
    assert conv["count"] == 1
    assert conv["p99"] == pytest.approx(expected, abs=1e-9)


def _stale(mesh: str, events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    _sim, rep = _run(_scenario([mesh], events, **extra), mesh)
    cp = rep.control_plane
    users = rep.workloads["users"]
    return {
        "stale": cp["stale_endpoint_attempts"],
        "errors": users.errors,
        "conv": cp["convergence_s"]["p99"] if cp["convergence_s"] else 0.0,
    }


def _slow_istiod(tmp_path: Path, debounce_ms: float) -> str:
    data = yaml.safe_load((models_dir() / "istiod.yaml").read_text(encoding="utf-8"))
    data["parameters"]["debounce_after_ms"]["value"] = debounce_ms
    data["parameters"]["debounce_after_ms"]["range"] = [debounce_ms, debounce_ms]  # must hold it
    path = tmp_path / f"istiod-{debounce_ms:g}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    load_model(path)
    return str(path)


ROLLOUT_KILL = [
    {"at_s": 10, "action": "kill", "target": "api"},
    {"at_s": 15, "action": "rollout", "target": "api", "graceful": False},
]


@pytest.mark.long
def test_stale_endpoint_failures_fall_as_convergence_gets_faster(tmp_path: Path) -> None:
    results = []
    for debounce in (1000.0, 300.0, 100.0):
        opts = {"istio": {"istiod_model": _slow_istiod(tmp_path, debounce)}}
        results.append(_stale("istio", ROLLOUT_KILL, mesh_options=opts))
    convs = [r["conv"] for r in results]
    stale = [r["stale"] for r in results]
    assert convs == sorted(convs, reverse=True)
    assert stale == sorted(stale, reverse=True)
    assert stale[0] > stale[-1] > 0
    # Istio retries connect failures (2 retries, another host): stale tries rarely surface;
    # what the client sees are the resets of requests in flight on the killed pods.
    assert all(r["errors"] < r["stale"] for r in results[:1])


@pytest.mark.long
def test_linkerd_sends_no_try_to_a_killed_pod_its_view_still_holds() -> None:
    """docs/mesh-semantics.md §5: until its view drops a killed pod, a Linkerd balancer
    holds it pending (its connections closed as it died, every reconnect is refused) and
    P2C picks only ready endpoints, so it needs no retries to spare its callers: no try
    reaches a dead pod (the killed pods held no request here)."""
    r = _stale("linkerd", ROLLOUT_KILL)
    assert r["stale"] == 0
    assert r["errors"] == 0


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.long
def test_graceful_termination_removes_stale_failures(mesh: str) -> None:
    graceful = [
        {"at_s": 10, "action": "kill", "target": "api", "graceful": True, "prestop_s": 5},
        {"at_s": 15, "action": "rollout", "target": "api", "graceful": True, "prestop_s": 5},
    ]
    r = _stale(mesh, graceful)
    assert r["stale"] == 0
    assert r["errors"] == 0


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.long
def test_new_pods_get_no_traffic_until_the_proxies_know_them(mesh: str) -> None:
    data = _scenario([mesh], [{"at_s": 10, "action": "scale", "target": "api", "replicas": 4}])
    sim, rep = _run(data, mesh)
    new = sim.services["api"].pods[3]
    assert new.ready
    # The new pod's first request came after its certificate, its readiness and the update.
    assert new.started_at == pytest.approx(10.0)
    assert rep.control_plane["certificates_issued"] == 1
    assert rep.control_plane["convergence_s"]["count"] == 1
    served = rep.services["api"].requests
    assert served > 0


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.long
def test_certificate_issuance_gates_new_pods(mesh: str) -> None:
    events = [
        {"at_s": 5, "action": "control-plane-down"},
        {"at_s": 10, "action": "scale", "target": "api", "replicas": 5},
    ]
    sim, rep = _run(_scenario([mesh], events), mesh)
    new = sim.services["api"].pods[3:]
    assert len(new) == 2
    assert not any(p.ready for p in new)  # no certificate: never ready
    assert rep.control_plane["csr_unanswered"] > 0
    assert rep.workloads["users"].errors == 0  # what existed keeps working


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.long
def test_control_plane_down_keeps_existing_traffic_until_certificates_expire(mesh: str) -> None:
    events = [{"at_s": 5, "action": "control-plane-down"}]
    security = {"certificates": {"lifetime_s": 20, "renew_fraction": 0.5}}
    _sim, rep = _run(_scenario([mesh], events, security=security), mesh)
    series = rep.workloads["users"].series["errors"]
    # Certificates issued at 0 expire at 20 (renewal at 10 finds no CA): fine until then.
    assert sum(series[:19]) == 0
    assert sum(series[21:]) > 0
    assert rep.control_plane["certificate_failures"] > 0


class _Pod:
    alive = True


def _renewals(lifetime_s: float, until_s: float, **clamp: float) -> list[float]:
    """When a certificate issued at 0 is renewed (Linkerd's 70 %), with the CA answering at
    once."""
    import simpy

    from meshsim.sim.controlplane.identity import CertificateAuthority

    env = simpy.Environment()
    issued: list[float] = []
    ca = CertificateAuthority(
        env, cores=1, sign_s=0.0, lifetime_s=lifetime_s, renew_fraction=0.7, retry_s=1.0,
        horizon_s=until_s, is_down=lambda: False, slow=lambda: 1.0,
        account=lambda _t, _cpu: issued.append(env.now), **clamp,
    )  # fmt: skip
    ca.install(_Pod())
    env.run(until=until_s)
    return issued


def test_linkerds_renewal_wait_is_clamped_to_10s_and_24h() -> None:
    """linkerd2-proxy's refresh_in: 70 % of the remaining validity, never under
    DEFAULT_IDENTITY_MIN_REFRESH (10 s) nor over DEFAULT_IDENTITY_MAX_REFRESH (24 h)."""
    clamp = {"min_refresh_s": 10.0, "max_refresh_s": 86400.0}
    assert _renewals(48 * 3600.0, 3 * 86400.0, **clamp) == [86400.0, 172800.0]
    assert _renewals(10.0, 35.0, **clamp) == [10.0, 20.0, 30.0]
    assert _renewals(100.0, 200.0, **clamp) == pytest.approx([70.0, 140.0])  # unclamped
    # Istio's CA has no clamp: 70 % here, whatever the lifetime.
    assert _renewals(10.0, 22.0) == pytest.approx([7.0, 14.0, 21.0])


def test_linkerd_scenario_takes_the_clamp_from_its_control_plane_model() -> None:
    """A 10 s certificate (security.certificates) is renewed every 10 s, not every 7 s."""
    security = {"certificates": {"lifetime_s": 10}}
    data = _scenario(["linkerd"], [], security=security) | {"duration_s": 25}
    sim, _rep = _run(data, "linkerd")
    ca = sim.control_plane.ca  # type: ignore[attr-defined]
    # 4 pods, renewed at 10 and 20 each (7, 14 and 21 without the clamp).
    assert ca.issued == 8
    assert ca.refresh_s == 10.0


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.long
def test_control_plane_back_resyncs_and_new_pods_start(mesh: str) -> None:
    events = [
        {"at_s": 5, "action": "control-plane-down", "duration_s": 10},
        {"at_s": 8, "action": "scale", "target": "api", "replicas": 4},
    ]
    sim, rep = _run(_scenario([mesh], events), mesh)
    assert sim.services["api"].pods[3].ready
    assert rep.workloads["users"].errors == 0


@pytest.mark.long
def test_slow_control_plane_slows_convergence() -> None:
    fast = _stale("istio", [{"at_s": 10, "action": "kill", "target": "api"}])
    slow = _stale(
        "istio",
        [
            {"at_s": 9, "action": "control-plane-slow", "factor": 1000},
            {"at_s": 10, "action": "kill", "target": "api"},
        ],
    )
    assert slow["conv"] > fast["conv"]


@pytest.mark.long
def test_sidecar_scoping_shrinks_pushes_and_memory() -> None:
    data = _scenario(["istio"], [{"at_s": 10, "action": "kill", "target": "api"}])
    data["services"].append({"name": "other", "replicas": 3, "cpu_ms": 0.2})
    _s, unscoped = _run(data, "istio")
    data["mesh_options"] = {"istio": {"sidecar_scoping": True}}
    _s, scoped = _run(data, "istio")
    # Scoped: the api change goes to web (which calls api) only.
    assert scoped.control_plane["proxy_pushes"] < unscoped.control_plane["proxy_pushes"]
    assert scoped.control_plane["memory_mb"] < unscoped.control_plane["memory_mb"]


def test_none_keeps_kube_proxy_semantics() -> None:
    _sim, rep = _run(_scenario(["none"], ROLLOUT_KILL), "none")
    assert rep.control_plane["convergence_s"] is None
    assert rep.control_plane["stale_endpoint_attempts"] == 0
    assert rep.workloads["users"].errors == 0


@pytest.mark.long
def test_linkerd_queue_overflow_resets_the_stream() -> None:
    data = _scenario(
        ["linkerd"],
        [
            {"at_s": 5, "action": "control-plane-slow", "factor": 100000, "duration_s": 1},
            {"at_s": 5.5, "action": "config", "target": "api", "count": 150, "interval_s": 0.001},
        ],
    )
    _sim, rep = _run(data, "linkerd")
    assert rep.control_plane["stream_resets"] >= 1


def test_istiod_steady_state_reproduces_anchor_memory() -> None:
    m = default_model("istiod")
    aks = steady_state(
        m, services=1, proxies=25000, endpoints=25000, view_services=1, view_endpoints=25000
    )
    assert aks["memory_mb"] / 1024 == pytest.approx(32.1, rel=0.05)
    aks1000 = steady_state(
        m, services=1000, proxies=20000, endpoints=20000, view_services=1000, view_endpoints=20000
    )
    assert aks1000["memory_mb"] / 1024 == pytest.approx(40.4, rel=0.05)
    docs = steady_state(
        m, services=1000, proxies=2000, endpoints=2000, view_services=10, view_endpoints=20
    )
    assert docs["memory_mb"] / 1024 == pytest.approx(1.5, rel=0.05)
    assert docs["cpu_vcpu"] == pytest.approx(1.0, rel=0.05)
    churn = steady_state(
        m,
        services=1,
        proxies=15000,
        endpoints=15000,
        view_services=1,
        view_endpoints=15000,
        eds_pushes_per_s=0.1,
        eds_endpoints=15000,
        new_proxies_per_s=31.2,
    )
    assert churn["cpu_vcpu"] == pytest.approx(15.0, rel=0.05)


# --------------------------------------------------------------------------- authorization


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_deny_by_default_blocks_unlisted_caller_and_admits_listed(mesh: str) -> None:
    from meshsim.scenario import load_scenario

    path = Path(__file__).resolve().parent.parent / "scenarios" / "authz.yaml"
    sim = Simulation(load_scenario(path), mesh, 1)
    sim.run()
    rep = Replication.of(sim, 0)
    allowed = rep.edges["web->api"]
    denied = rep.edges["batch->api"]
    assert allowed.errors == 0
    assert allowed.statuses.get(200, 0) > 0
    assert set(denied.statuses) == {403}
    cp = rep.control_plane
    assert cp["authz_denied"] >= denied.requests > 0
    assert cp["authz_checks"] > cp["authz_denied"]
    # The caller's own request succeeds: the call is optional (required: false).
    assert rep.workloads["jobs"].errors == 0


@pytest.mark.parametrize("name", ["rollout.yaml", "authz.yaml"])
def test_example_scenarios_load(name: str) -> None:
    from meshsim.scenario import load_scenario

    load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / name)


def test_istiod_admits_reconnecting_proxies_at_its_request_limit() -> None:
    """After an outage every proxy reconnects through istiod's request limiter
    (PILOT_MAX_REQUESTS_PER_SECOND, automatic value min(15 + 5 x cores, 100) per second,
    burst 1, a second's wait at most, else Envoy's jittered back-off). With 1 core, 20 a
    second: the first 20 streams wait under a second in the limiter, one token apart; the
    rest are refused at first and come back later, never two within a token's time."""
    data = _scenario(["istio"], [])
    data["services"][1]["replicas"] = 59
    data["mesh_options"] = {"istio": {"istiod_cores": 1}}
    sim = Simulation(from_dict(data), "istio", 5)
    cp = sim.control_plane
    assert isinstance(cp, Istiod)
    assert cp.request_limit == 20.0
    entries = [e for r in cp.replicas for e in r.proxies.values()]
    assert len(entries) == 60  # web, 59 api
    admitted = cp._admit_together(entries)
    assert admitted[:20] == pytest.approx([k / 20.0 for k in range(20)])
    assert cp.rejected_streams >= 60 - 21
    ordered = sorted(admitted)
    assert all(b - a >= 1 / 20.0 - 1e-12 for a, b in pairwise(ordered))
    assert ordered[-1] >= 59 / 20.0


@pytest.mark.long
def test_a_restarted_istiod_reconfigures_the_mesh_at_its_request_limit() -> None:
    """End to end: istiod down 5-8 s with 60 sidecars and 1 core; the last proxy has its
    configuration no sooner than 59 / 20 s after the restart (it took ~0.1 s before the
    limiter was modelled: every proxy was pushed at once)."""
    data = _scenario(["istio"], [{"at_s": 5, "action": "control-plane-down", "duration_s": 3}])
    data["services"][1]["replicas"] = 59
    data["mesh_options"] = {"istio": {"istiod_cores": 1}}
    data["duration_s"] = 20
    sim, rep = _run(data, "istio")
    cp = sim.control_plane
    assert isinstance(cp, Istiod)
    applied = [e.sched.at for r in cp.replicas for e in r.proxies.values() if e.sched]
    assert max(applied) >= 8.0 + 59 / 20.0
    assert rep.control_plane["rejected_streams"] > 0
    assert rep.control_plane["request_limit_per_s"] == 20.0


@pytest.mark.long
def test_linkerd_retries_a_failed_csr_after_its_refresh_wait() -> None:
    """linkerd2-proxy's identity loop sleeps refresh_in after a failed CSR too (certify.rs):
    without a certificate that is its 10 s minimum. A pod scaled up at 8 s while the
    identity controller is down (5-25 s) asks at 8, 18 and 28 s, and is ready after 28 s;
    with a 1 s retry it asked 18 times and was ready at 25 s."""
    events = [
        {"at_s": 5, "action": "control-plane-down", "duration_s": 20},
        {"at_s": 8, "action": "scale", "target": "api", "replicas": 4},
    ]
    sim, _rep = _run(_scenario(["linkerd"], events), "linkerd")
    ca = sim.control_plane.ca
    assert ca.retry_s is None
    assert ca.failed_requests == 2
    new = sim.services["api"].pods[3]
    assert new.ready
    assert ca.expiry[ca.holder(new)] > 28.0 + ca.lifetime_s - 1.0
