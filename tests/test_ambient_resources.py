"""Istio ambient's ztunnel and waypoint resources (mesh_options.istio-ambient.
ztunnel_resources, waypoint_resources) through whole runs: the charts' defaults, CPU limits
that throttle under either scheduler, OOM kills that take a node's data path (or a waypoint's
service) away until the restart, and bad input named by its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from meshsim.api import run_scenario
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict, load_scenario
from meshsim.scenario.options import AmbientOptions
from meshsim.scenario.resources import WAYPOINT_RESOURCES, ZTUNNEL_RESOURCES
from meshsim.sim.app import is_success
from meshsim.sim.engine import Simulation

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 10.0
PERIOD_S = 0.1


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    return dict(build_summary(run_scenario(from_dict(data))))


def _one_node(
    scheduler: Literal["fcfs", "cfs"], ambient: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One node: a meshed client and a service, so both ztunnel roles run on its ztunnel,
    at 1000 rps (about 0.14 core of ztunnel without a limit)."""
    return {
        "meshsim": 1, "name": "ztunnel-limit", "seed": 5, "duration_s": 2 + WINDOW_S,
        "warmup_s": 2, "meshes": ["istio-ambient"],
        "cluster": {"nodes": 1, "cores_per_node": 4, "scheduler": scheduler,
                    "cfs_period_ms": PERIOD_S * 1e3},
        "services": [{"name": "a", "cpu_ms": {"dist": "lognormal", "mean": 0.5, "cv": 1.0},
                      "concurrency": 16}],
        "mesh_options": {"meshed_clients": True, "istio-ambient": ambient or {}},
        "workloads": [{"name": "w", "target": "a", "arrival": "poisson", "rate_rps": 1000,
                       "connections": 32}],
    }  # fmt: skip


def _ztunnel_vcpu(run: dict[str, Any]) -> float:
    return float(run["proxies"]["by_kind"]["ztunnel"]["cpu_s_total"]) / WINDOW_S


# --------------------------------------------------------------------------- defaults


def test_the_defaults_are_the_charts() -> None:
    opts = AmbientOptions()
    zt = opts.ztunnel_resources
    assert zt is ZTUNNEL_RESOURCES
    assert (zt.requests.cpu_m, zt.requests.memory_mb) == (200.0, 512 * 2**20 / 1e6)
    assert (zt.limits.cpu, zt.limits.memory) == (None, None)
    wp = opts.waypoint_resources
    assert wp is WAYPOINT_RESOURCES  # global.waypoint.resources, not the sidecars' option
    assert (wp.requests.cpu_m, wp.limits.cpu_m) == (100.0, 2000.0)
    assert (wp.requests.memory_mb, wp.limits.memory_mb) == (128 * 2**20 / 1e6, 1024 * 2**20 / 1e6)


WAYPOINTED = {
    "meshsim": 1, "name": "waypointed", "duration_s": 3, "warmup_s": 1,
    "meshes": ["istio-ambient"], "cluster": {"nodes": 2, "scheduler": "cfs"},
    "services": [{"name": "a", "calls": [{"service": "b"}]}, {"name": "b"}],
    "workloads": [{"name": "w", "target": "a", "rate_rps": 50}],
}  # fmt: skip


def _cgroups(istio: dict[str, Any], ambient: dict[str, Any]) -> dict[str, Any]:
    data = {
        **WAYPOINTED,
        "mesh_options": {"istio": istio, "istio-ambient": {"waypoints": ["b"], **ambient}},
    }
    return dict(_summary(data)["runs"]["istio-ambient"]["cgroups"])


def _weight_and_limit(groups: dict[str, Any], name: str) -> tuple[int, float | None]:
    return groups[name]["cpu_weight"], groups[name]["cpu_limit_m"]


def test_ztunnels_and_waypoints_take_their_resources() -> None:
    # The defaults: ztunnel 200m -> cpu.shares 204 -> cpu.weight 8, no limit; the waypoint
    # Istio's global.waypoint.resources, 100m -> weight 4, limit 2000m.
    groups = _cgroups({}, {})
    assert _weight_and_limit(groups, "node-0/ztunnel") == (8, None)
    assert _weight_and_limit(groups, "node-1/ztunnel") == (8, None)
    assert _weight_and_limit(groups, "b/waypoint") == (4, 2000.0)
    # The sidecars' resources (mesh_options.istio.proxy_resources) are not the waypoint's:
    # as in Istio, changing global.proxy.resources leaves global.waypoint.resources.
    # ztunnel_resources are the ztunnels' alone (500m -> shares 512 -> weight 20).
    istio = {"proxy_resources": {"requests": {"cpu": "300m"}, "limits": {"cpu": "1500m"}}}
    zt = {"requests": {"cpu": "500m"}, "limits": {"cpu": "700m"}}
    groups = _cgroups(istio, {"ztunnel_resources": zt})
    assert _weight_and_limit(groups, "b/waypoint") == (4, 2000.0)
    assert _weight_and_limit(groups, "node-0/ztunnel") == (20, 700.0)
    # With waypoint_resources, those (50m -> shares 51 -> weight 2).
    wp = {"requests": {"cpu": "50m"}, "limits": {"cpu": "900m"}}
    groups = _cgroups(istio, {"waypoint_resources": wp})
    assert _weight_and_limit(groups, "b/waypoint") == (2, 900.0)
    assert _weight_and_limit(groups, "node-0/ztunnel") == (8, None)


# --------------------------------------------------------------------------- CPU limits


@pytest.fixture(scope="module")
def unlimited() -> dict[str, Any]:
    return _summary(_one_node("cfs"))


@pytest.fixture(scope="module")
def limited_cfs() -> dict[str, Any]:
    return _summary(_one_node("cfs", {"ztunnel_resources": {"limits": {"cpu": "80m"}}}))


def _check_throttled_at_its_quota(zt: dict[str, Any], limit_m: float) -> None:
    """A container asking more than its quota: throttled in every period of the window,
    having used its whole quota in each (so its CPU is the limit), and in each throttled
    for at most what is left of the period once its two workers have spent the quota
    together (quota / 2 in)."""
    periods = round(WINDOW_S / PERIOD_S)
    quota_s = limit_m / 1e3 * PERIOD_S
    assert zt["cpu_limit_m"] == limit_m
    assert zt["nr_periods"] == zt["nr_throttled"] == periods
    assert zt["throttled_share"] == 1.0
    assert zt["cpu_vcpu"] == pytest.approx(limit_m / 1e3, rel=1e-3)
    assert zt["cpu_vcpu"] <= limit_m / 1e3 * (1 + 1e-9)
    assert 0.0 < zt["throttled_s"] <= periods * (PERIOD_S - quota_s / 2)


@pytest.mark.long
def test_a_ztunnel_limit_below_its_use_throttles_it_in_every_period(
    unlimited: dict[str, Any], limited_cfs: dict[str, Any]
) -> None:
    free = unlimited["runs"]["istio-ambient"]
    assert _ztunnel_vcpu(free) > 0.1  # what it asks for: more than the 80m limit below
    zt_free = free["cgroups"]["node-0/ztunnel"]
    assert zt_free["cpu_limit_m"] is None
    assert (zt_free["nr_periods"], zt_free["nr_throttled"], zt_free["throttled_s"]) == (0, 0, 0.0)
    run = limited_cfs["runs"]["istio-ambient"]
    _check_throttled_at_its_quota(run["cgroups"]["node-0/ztunnel"], 80.0)
    # The option is what did it: every request waits for the node's ztunnel.
    p99 = run["workloads"]["w"]["latency_ms"]["p99"]
    assert p99 > 5 * free["workloads"]["w"]["latency_ms"]["p99"]
    assert not run["saturated"]  # it keeps up, a period at a time


def test_fcfs_enforces_a_ztunnel_limit_too() -> None:
    """Bandwidth control under either scheduler, as for sidecars: a ztunnel limit below its
    two workers binds and throttles; without one there is no cgroup to count under fcfs."""
    free = _summary(_one_node("fcfs"))["runs"]["istio-ambient"]
    assert "node-0/ztunnel" not in free.get("cgroups", {})
    run = _summary(_one_node("fcfs", {"ztunnel_resources": {"limits": {"cpu": "80m"}}}))
    _check_throttled_at_its_quota(run["runs"]["istio-ambient"]["cgroups"]["node-0/ztunnel"], 80.0)


@pytest.mark.parametrize("scheduler", ["fcfs", "cfs"])
def test_a_ztunnel_limit_well_above_its_use_never_throttles(
    scheduler: Literal["fcfs", "cfs"],
) -> None:
    limits = {"ztunnel_resources": {"limits": {"cpu": "1"}}}  # below its 2 workers: can bind
    zt = _summary(_one_node(scheduler, limits))["runs"]["istio-ambient"]["cgroups"]
    assert zt["node-0/ztunnel"]["cpu_limit_m"] == 1000.0
    assert zt["node-0/ztunnel"]["nr_periods"] == round(WINDOW_S / PERIOD_S)
    assert zt["node-0/ztunnel"]["nr_throttled"] == 0


@pytest.mark.long
def test_a_waypoint_limit_throttles_the_waypoint() -> None:
    data = {
        **WAYPOINTED, "duration_s": 2 + WINDOW_S, "warmup_s": 2,
        "workloads": [{"name": "w", "target": "a", "arrival": "poisson", "rate_rps": 1000,
                       "connections": 32}],
        "mesh_options": {"istio-ambient": {
            "waypoints": ["b"],
            "waypoint_resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "100m"}}}},
    }  # fmt: skip
    groups = _summary(data)["runs"]["istio-ambient"]["cgroups"]
    _check_throttled_at_its_quota(groups["b/waypoint"], 100.0)


def test_the_cli_shows_the_ztunnel_by_its_node(
    limited_cfs: dict[str, Any], cgroups_text: Any
) -> None:
    text = cgroups_text(limited_cfs)
    assert "node-0/ztunnel" in text
    assert "80m" in text
    assert "100.0%" in text


@pytest.mark.long
def test_the_scenario_throttles_the_busiest_ztunnel_only() -> None:
    data = load_scenario(ROOT / "scenarios" / "ambient-cpu-limits.yaml").to_dict()
    data.update(duration_s=7, warmup_s=2)
    groups = _summary(data)["runs"]["istio-ambient"]["cgroups"]
    assert groups["node-2/ztunnel"]["throttled_share"] > 0.9  # the clients' node
    assert groups["node-0/ztunnel"]["nr_throttled"] == groups["node-1/ztunnel"]["nr_throttled"] == 0
    assert groups["routed/waypoint"]["nr_throttled"] > 0


# --------------------------------------------------------------------------- memory limits


def test_a_ztunnel_over_its_memory_limit_is_killed_and_restarted_with_backoff() -> None:
    # ztunnel's modelled memory (about 12 MiB at rest) is over 10Mi from the start: each
    # node's ztunnel is killed at the first check (1 s), restarted after 10 s and killed
    # again, then after 20 s (CrashLoopBackOff); meanwhile no pod has a data path.
    data = {
        **WAYPOINTED, "seed": 3, "duration_s": 40,
        "mesh_options": {"istio-ambient": {"ztunnel_resources": {"limits": {"memory": "10Mi"}}}},
    }  # fmt: skip
    run = _summary(data)["runs"]["istio-ambient"]
    kills = [e["at_s"] for e in run["timeline"] if e["event"].startswith("OOM kill")]
    restarts = [e["at_s"] for e in run["timeline"] if "restarted" in e["event"]]
    assert kills == [1.0, 1.0, 11.0, 11.0, 31.0, 31.0]
    assert restarts == [11.0, 11.0, 31.0, 31.0]
    assert run["cgroups"]["node-0/ztunnel"]["oom_kills"] == 3
    assert run["cgroups"]["node-1/ztunnel"]["oom_kills"] == 3
    assert run["workloads"]["w"]["success_rate"] == 0.0
    # The report's limits table shows them, though ztunnel has no CPU limit.
    from meshsim.report.sections import _cpu_limits_section

    section = _cpu_limits_section({"istio-ambient": run})
    assert section is not None
    (table,) = section.tables
    rows = {row[1]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    assert rows["node-0/ztunnel"]["limit"] == "-"
    assert rows["node-0/ztunnel"]["OOM kills"] == "3"
    # ztunnel's chart asks for 200m / 512Mi: a Burstable pod of its own on each node.
    assert rows["node-0/ztunnel"]["QoS"] == "Burstable"


def test_a_waypoint_over_its_memory_limit_takes_its_service_away() -> None:
    data = {
        **WAYPOINTED, "seed": 3, "duration_s": 12,
        "mesh_options": {"istio-ambient": {
            "waypoints": ["b"], "waypoint_resources": {"limits": {"memory": "16Mi"}}}},
    }  # fmt: skip
    run = _summary(data)["runs"]["istio-ambient"]
    kills = [e["at_s"] for e in run["timeline"] if e["event"].startswith("OOM kill")]
    assert kills == [1.0, 11.0]
    assert run["cgroups"]["b/waypoint"]["oom_kills"] == 2
    # a's ztunnel refuses its calls to b (nothing listens for the waypoint): a answers 500.
    assert set(run["edges"]["a->b"]["statuses"]) == {"1"}
    assert set(run["workloads"]["w"]["statuses"]) == {"500"}


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("down", ["node-0", "node-1"])
def test_a_dead_ztunnel_takes_its_nodes_data_path_until_it_restarts(
    keep_alive: bool, down: str
) -> None:
    """a (node-0) calls b (node-1); the ztunnel of one node is down from 2 s to 4 s. Every
    request sent meanwhile fails: from outside, a's node is unreachable (refused, or reset
    in flight); b's node refuses a's calls. None fails before or after (in flight then, or
    sent after the restart, with a tunnel opened afresh). Every ztunnel's connection count
    is what it holds at the end: none leaks, none is closed twice."""
    doc = {
        "meshsim": 1, "name": "zt-down", "seed": 4, "duration_s": 6, "warmup_s": 0.5,
        "meshes": ["istio-ambient"], "cluster": {"nodes": 2, "cores_per_node": 2},
        "services": [
            {"name": "a", "cpu_ms": 0.2, "calls": [{"service": "b"}], "concurrency": 8},
            {"name": "b", "cpu_ms": {"dist": "exponential", "mean": 0.5}, "concurrency": 8},
        ],
        "mesh_options": {"keep_alive": keep_alive},
        "workloads": [{"name": "w", "target": "a", "rate_rps": 1500}],
    }  # fmt: skip
    sim = Simulation(from_dict(doc), "istio-ambient", 1, keep_records=True)
    dp: Any = sim.data_plane
    ztunnels = {node.name: zt for node, zt in dp.ztunnels.items()}
    assert [(p.name, p.node.name) for n in sim.nodes for p in n.pods] == [
        ("a-v1-0", "node-0"),
        ("b-v1-0", "node-1"),
    ]
    for t, change in ((2.0, dp.proxy_down), (4.0, dp.proxy_up)):
        ev = sim.env.timeout(t)
        ev.callbacks.append(lambda _e, change=change: change(ztunnels[down]))
    sim.run()
    assert sim.in_flight() == 0
    assert sim.recorder.records is not None
    sent = [r for r in sim.recorder.records if r.kind == "workload"]
    failed = [r for r in sent if not is_success(r.status)]
    during = [r for r in sent if 2.0 <= r.started_at < 3.99]
    assert during
    assert all(not is_success(r.status) for r in during)
    assert all(1.99 < r.started_at < 4.0 for r in failed)  # in flight at 2 s, or sent since
    statuses = {r.status for r in failed}
    assert statuses == ({1, 2} if down == "node-0" else {500})
    held = dict.fromkeys(ztunnels.values(), 0)
    tls = dict.fromkeys(ztunnels.values(), 0)
    for idle in dp._streams.values():
        for stream in idle:
            held[stream.tunnel.client] += 1
            held[stream.tunnel.server] += 1
    for table in (dp.tunnels._idle, dp.tunnels._h2):
        for conns in table.values():
            for conn in conns:
                for end in (conn.client, conn.server):
                    held[end] += 1
                    tls[end] += conn.tls
    for zt in ztunnels.values():
        assert (zt.connections, zt.tls_connections) == (held[zt], tls[zt])
    assert all(zt.alive for zt in ztunnels.values())


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ztunnel_resources", "{limits: {cpu: 100x}}",
         "ztunnel_resources.limits.cpu: '100x' is not a CPU quantity"),
        ("ztunnel_resources", "{requests: {memory: 1Gb}}",
         "ztunnel_resources.requests.memory: '1Gb' is not a memory quantity"),
        ("waypoint_resources", "{limits: {cpu: 0}}",
         "waypoint_resources.limits.cpu: 0: a CPU quantity must be above 0"),
        ("waypoint_resources", "{limit: {cpu: 1}}", "waypoint_resources.limit"),
    ],
)  # fmt: skip
def test_bad_resources_name_the_file_line_and_field(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "meshsim: 1\nname: bad\nduration_s: 3\nmeshes: [istio-ambient]\n"
        "services:\n  - {name: a}\n"
        "mesh_options:\n  istio-ambient:\n"
        f"    {key}: {value}\n"
        "workloads:\n  - {name: w, target: a, rate_rps: 10}\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert f"{path}:9: mesh_options.istio-ambient.{message}" in text
    assert "Traceback" not in text


def test_the_ztunnel_with_the_most_connections_dies_alone_and_the_same_each_time() -> None:
    # The meshed client's 64 connections are on node-0 (a's node): its ztunnel holds them,
    # passes 12Mi and is killed; node-1's stays below it. After the restart the client
    # opens them again and it is killed at the next check.
    data = {
        **WAYPOINTED, "seed": 3, "duration_s": 14,
        "mesh_options": {"meshed_clients": True,
                         "istio-ambient": {"ztunnel_resources": {"limits": {"memory": "12Mi"}}}},
        "workloads": [{"name": "w", "target": "a", "rate_rps": 200, "connections": 64}],
    }  # fmt: skip
    summary = _summary(data)
    run = summary["runs"]["istio-ambient"]
    kills = [(e["at_s"], e["event"]) for e in run["timeline"] if e["event"].startswith("OOM")]
    assert kills == [(t, "OOM kill of node-0/ztunnel (memory limit)") for t in (1.0, 12.0)]
    assert run["cgroups"]["node-1/ztunnel"]["oom_kills"] == 0
    assert 0.0 < run["workloads"]["w"]["success_rate"] < 0.2  # up from 11 s to 12 s only
    assert json.dumps(_summary(data), sort_keys=True) == json.dumps(summary, sort_keys=True)


def test_ztunnels_and_waypoints_count_against_their_nodes_allocatable() -> None:
    # ztunnel requests 200m on every node; the waypoint 100m on its node. With 250m
    # allocatable and no pod requests, a node with a waypoint asks 300m: only it warns.
    data = {
        **WAYPOINTED,
        "cluster": {"nodes": 2, "scheduler": "cfs", "allocatable": {"cpu": "250m"}},
        "mesh_options": {"istio-ambient": {"waypoints": ["b"]}},
    }
    warnings = _summary(data)["runs"]["istio-ambient"]["warnings"]
    over = [w for w in warnings if "of CPU, more than its allocatable 250m" in w]
    assert len(over) == 1
    assert "request 300m of CPU" in over[0]
