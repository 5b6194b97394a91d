"""Zones, locality load balancing and zone failures (issue 15, step 1).

Deterministic cases with exact outcomes: constant arrivals and constant service times, so
that Envoy's EDF locality pick gives the weights' shares to within one try per proxy, and
a dead zone costs each client proxy exactly ``consecutive_5xx`` tries per failed host
before outlier detection ejects it (docs/mesh-semantics.md §3.2, §14).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsim.errors import ScenarioError
from meshsim.policy.locality import EdfScheduler, allocate_hints, availability, priority_loads
from meshsim.policy.reconnect import reconnected_at
from meshsim.rng import Streams
from meshsim.scenario import load_scenario
from meshsim.scenario.loader import loads
from meshsim.sim.app import CONNECT_FAILURE, RESET
from meshsim.sim.engine import Simulation
from meshsim.sim.topology import Topology, ZonedNetwork

BASE = """\
meshsim: 1
name: zones
seed: 3
duration_s: 20
warmup_s: 0
meshes: [istio, linkerd]
cluster:
  cores_per_node: 4
  zones:
    - {name: zone-a, nodes: 1}
    - {name: zone-b, nodes: 1}
services:
  - name: front
    replicas: 2
    cpu_ms: {dist: constant, mean: 0.2}
    calls: [{service: back}]
  - name: back
    replicas: 4
    cpu_ms: {dist: constant, mean: 0.2}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 100, connections: 4}
traffic:
  - service: back
    retries: {attempts: 0}
"""


def run(text: str, mesh: str) -> dict[str, Any]:
    scenario = loads(text)
    sim = Simulation(scenario, mesh, scenario.seed)
    sim.run()
    m = sim.measure()
    assert m.topology is not None
    return {"topology": dict(m.topology), "m": m, "sim": sim}


# --------------------------------------------------------------------------- policy


def test_edf_gives_each_weight_its_share_within_one() -> None:
    edf = EdfScheduler({"a": 80.0, "b": 20.0})
    picks = [edf.pick() for _ in range(1000)]
    assert picks.count("a") == 800
    assert picks[:5].count("b") == 1  # every cycle of five holds one 'b'
    three = EdfScheduler({"x": 1.0, "y": 1.0, "z": 1.0})
    assert [three.pick() for _ in range(6)] == ["x", "y", "z", "x", "y", "z"]


def test_priority_loads_follow_envoy_with_overprovisioning() -> None:
    # Priority 0 with 1 of 2 hosts healthy: 1.4 x 0.5 = 0.7 of the load stays.
    assert availability(1, 2) == pytest.approx(0.7)
    assert priority_loads([0.7, 1.0]) == pytest.approx([0.7, 0.3])
    assert priority_loads([1.0, 1.0]) == [1.0, 0.0]
    # Degraded (healths add up to less than 1): normalised.
    assert priority_loads([0.3, 0.2]) == pytest.approx([0.6, 0.4])
    assert priority_loads([0.0, 0.0]) == [0.0, 0.0]


def test_hints_stay_in_zone_donate_and_refuse_as_kubernetes_does() -> None:
    cpu = {"a": 4.0, "b": 4.0, "c": 4.0}
    even = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
    assert allocate_hints(even, cpu) == {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    # Zone c has none: the newest surplus endpoint of a is hinted for c.
    lopsided = [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "b")]
    hints = allocate_hints(lopsided, cpu)
    assert hints is not None
    assert sorted(hints.values()) == ["a", "a", "b", "b", "c", "c"]
    # Fewer endpoints than zones, and 4 over 3 zones (one zone 33 % over its share): none.
    assert allocate_hints([(1, "a"), (2, "b")], cpu) is None
    assert allocate_hints([(1, "a"), (2, "a"), (3, "b"), (4, "c")], cpu) is None


# --------------------------------------------------------------------------- network


def test_zoned_network_charges_zone_and_cluster_crossings() -> None:
    text = BASE.replace(
        "    - {name: zone-b, nodes: 1}\n",
        "    - {name: zone-b, nodes: 1}\n    - {name: west-a, nodes: 1, cluster: west}\n"
        "  network: {cross_node_us: 150, cross_zone_us: 600, cross_cluster_us: 2000,"
        " bandwidth_gbps: 10, cross_zone_bandwidth_gbps: 1}\n",
    )
    scenario = loads(text)
    topo = Topology(scenario)
    net = ZonedNetwork(scenario.cluster.network, topo)

    class N:
        def __init__(self, index: int) -> None:
            self.index = index

    a, b, w = N(0), N(1), N(2)
    assert net.delay(a, b, 0) == pytest.approx(600e-6)
    assert net.delay(a, w, 0) == pytest.approx(2000e-6)
    assert net.delay(a, b, 1000) == pytest.approx(600e-6 + 8000 / 1e9)
    assert net.delay(a, a, 0) == pytest.approx(25e-6)
    assert [loc.zone for loc in topo.by_index] == ["zone-a", "zone-b", "west-a"]
    assert scenario.cluster.nodes == 3


# --------------------------------------------------------------------------- locality


def test_without_locality_a_zone_sends_half_its_tries_across() -> None:
    out = run(BASE, "istio")
    back = out["topology"]["tries"]["back"]
    # P2C over four endpoints, two per zone: about half cross (a statistical check,
    # 2,000 tries: the binomial's 3-sigma band is +-0.034).
    assert back["cross_zone_share"] == pytest.approx(0.5, abs=0.034)


def test_istio_distribute_weights_are_the_cross_zone_shares() -> None:
    text = BASE + (
        "    locality_lb:\n      distribute:\n"
        "        - {from: zone-a, to: {zone-a: 80, zone-b: 20}}\n"
        "        - {from: zone-b, to: {zone-b: 70, zone-a: 30}}\n"
    )
    back = run(text, "istio")["topology"]["tries"]["back"]["by_zone"]
    from_a = back["zone-a->zone-a"] + back["zone-a->zone-b"]
    from_b = back["zone-b->zone-b"] + back["zone-b->zone-a"]
    # One client proxy per zone; EDF is within one try of the weights.
    assert abs(back["zone-a->zone-b"] - 0.2 * from_a) <= 1
    assert abs(back["zone-b->zone-a"] - 0.3 * from_b) <= 1
    assert from_a + from_b == 1999


FAILOVER = BASE + (
    "    outlier_detection: {consecutive_5xx: 5, max_ejection_percent: 100}\n"
    "    locality_lb: {}\n"
    "events:\n"
    "  - {at_s: 10, action: fail-zone, target: zone-a, services: [back],"
    " endpoints_removed_after_s: 5, mode: refuse}\n"
)


def test_istio_failover_keeps_traffic_in_zone_then_moves_it_after_ejections() -> None:
    out = run(FAILOVER, "istio")
    topo = out["topology"]
    back = topo["tries"]["back"]["by_zone"]
    # Before the failure priority 0 (own zone) takes everything: nothing crosses from b,
    # and a's crossings all come after the failure.
    assert "zone-b->zone-a" not in back
    (failure,) = topo["zone_failures"]
    assert failure["pods"] == 2
    # The zone-a client proxy meets each dead host exactly consecutive_5xx times before
    # ejecting it (no success resets the count): 2 x 5 failed tries, then failover.
    assert failure["failed_tries"] == 10
    assert out["m"].resilience["back"].counts["ejections"] == 2
    # At ~50 rps on that proxy the ten tries take ~0.2 s: traffic moved long before the
    # endpoints were removed (5 s).
    assert 0 < failure["failover_s"] < 1.0
    assert failure["caller_errors"] == 10
    assert failure["caller_errors_until_s"] == 11.0
    assert failure["caller_max_latency_s"] < 0.01
    assert failure["endpoints_removed_s"] == pytest.approx(15.0)


def test_istio_failover_needs_outlier_detection() -> None:
    text = BASE + "    locality_lb: {}\n"
    out = run(text, "istio")
    assert any("needs outlier_detection" in w for w in out["m"].warnings)
    assert out["topology"]["tries"]["back"]["cross_zone_share"] > 0.4


def test_linkerd_hints_keep_traffic_in_zone_until_the_endpoints_change() -> None:
    out = run(FAILOVER, "linkerd")
    topo = out["topology"]
    back = topo["tries"]["back"]["by_zone"]
    (failure,) = topo["zone_failures"]
    # With hints, zone-b never crosses; zone-a's proxy sees only its own (dead) endpoints
    # until they are removed, then one zone-b endpoint donated to zone-a.
    assert "zone-b->zone-a" not in back
    assert back["zone-a->zone-b"] > 0
    # The dead pods closed their connections as they died and refuse every reconnect:
    # the balancer holds them pending and P2C picks only ready endpoints, so no try goes
    # to them. With none ready it waited for the endpoints, not for a failover: its queue
    # held the requests 3 s, failed them fast, then shed the rest (503 at once) until the
    # endpoints changed, 5 s after the failure.
    assert failure["failed_tries"] == 0
    assert failure["caller_max_latency_s"] == pytest.approx(3.0, abs=0.01)
    counts = out["m"].resilience["back"].counts
    assert failure["caller_errors"] == counts["failfasts"] + counts["load_shed"]
    assert failure["caller_errors_until_s"] == failure["endpoints_removed_s"] + 1.0


def test_linkerd_sends_no_try_to_the_pods_of_a_zone_that_refuses() -> None:
    """Two of back's four pods refuse connections from 10 s (their processes died) until
    they leave the endpoints at 15 s; no locality, no retries. Istio's sidecars keep
    sending them their share, and each such try fails. Linkerd's balancers hold them
    pending (their HTTP/2 connections closed as they died, every reconnect is refused)
    and P2C picks only ready endpoints: the two live pods take every call. Exact."""
    text = BASE + (
        "events:\n"
        "  - {at_s: 10, action: fail-zone, target: zone-a, services: [back],"
        " endpoints_removed_after_s: 5, mode: refuse}\n"
    )
    (istio,) = run(text, "istio")["topology"]["zone_failures"]
    assert istio["failed_tries"] > 0.4 * 100 * 5.0
    out = run(text, "linkerd")
    (linkerd,) = out["topology"]["zone_failures"]
    assert linkerd["failed_tries"] == 0
    assert linkerd["caller_errors"] == 0
    n = out["m"].resilience["back"].counts["requests"]
    assert edge(out, "front", "back").statuses == {200: n}


def test_a_whole_zone_failure_counts_every_pod_and_leaves_hints_to_the_rest() -> None:
    text = FAILOVER.replace(" services: [back],", "")
    out = run(text, "linkerd")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["pods"] == 3  # one front and two back replicas lived in zone-a


def test_no_zones_no_topology_block() -> None:
    text = BASE.replace(
        "  zones:\n    - {name: zone-a, nodes: 1}\n    - {name: zone-b, nodes: 1}\n",
        "  nodes: 2\n",
    )
    scenario = loads(text)
    sim = Simulation(scenario, "istio", scenario.seed)
    sim.run()
    assert sim.measure().topology is None


# --------------------------------------------------------------------------- bad input


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    path = tmp_path / "zones.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


def test_weights_not_adding_up_to_100_name_file_and_line(tmp_path: Path) -> None:
    text = BASE + (
        "    locality_lb:\n      distribute:\n"
        "        - {from: zone-a, to: {zone-a: 80, zone-b: 30}}\n"
    )
    err = error_of(tmp_path, text)
    (problem,) = err.problems
    assert problem.field == "traffic[0].locality_lb.distribute[0]"
    assert problem.line == 27
    assert "add up to 110; Istio requires exactly 100" in problem.message
    assert str(tmp_path / "zones.yaml") in str(err)


def test_unknown_zones_and_empty_zones_are_refused(tmp_path: Path) -> None:
    text = BASE.replace("{name: zone-b, nodes: 1}", "{name: zone-b, nodes: 0}") + (
        "events:\n  - {at_s: 5, action: fail-zone, target: zone-q}\n"
    )
    err = error_of(tmp_path, text)
    fields = {p.field: (p.line, p.message) for p in err.problems}
    assert fields["cluster.zones[1].nodes"][0] == 11
    text = BASE + "events:\n  - {at_s: 5, action: fail-zone, target: zone-q}\n"
    err = error_of(tmp_path, text)
    (problem,) = err.problems
    assert problem.field == "events[0].target"
    assert "no zone in cluster.zones named 'zone-q'" in problem.message
    assert problem.line == 26


def test_nodes_and_zones_must_agree(tmp_path: Path) -> None:
    text = BASE.replace("  cores_per_node: 4\n", "  cores_per_node: 4\n  nodes: 3\n")
    err = error_of(tmp_path, text)
    (problem,) = err.problems
    assert "'nodes' is 3 but the zones hold 2 nodes" in problem.message


# --------------------------------------------------------------------------- black holes


DRILL = """\
meshsim: 1
name: zone-drill
seed: 3
duration_s: 30
warmup_s: 0
meshes: [istio, linkerd]
cluster:
  cores_per_node: 4
  zones:
    - {name: zone-a, nodes: 1}
    - {name: zone-b, nodes: 1}
mesh_options:
  istio: {workers: 1, connect_timeout_ms: 2005}
services:
  - name: front
    replicas: 1
    zones: [zone-a]
    concurrency: 1000
    cpu_ms: {dist: constant, mean: 0.2}
    calls: [{service: back}]
  - name: back
    replicas: 2
    cpu_ms: {dist: constant, mean: 0.2}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 100, connections: 1000}
traffic:
  - service: back
    retries: {attempts: 0}
    outlier_detection: {consecutive_5xx: 3, max_ejection_percent: 100}
    locality_lb: {}
events:
  - {at_s: 10, action: fail-zone, target: zone-a, services: [back], endpoints_removed_after_s: 5}
  - {at_s: 20, action: recover-zone, target: zone-a, restart_after_s: 2}
"""
"""One caller in zone-a at a constant 100 rps; ``back`` has one replica per zone. Istio's
failover (outlier detection on) keeps every try in zone-a until the failure."""

RATE = 100.0
T = 2.005  # the connect timeout; T x RATE is not a whole number, so no arrival ties with it
N = 3  # consecutive_5xx


def edge(out: dict[str, Any], caller: str, callee: str) -> Any:
    return out["sim"].recorder.edges[(caller, callee)]


def test_istio_blackholed_connects_take_the_connect_timeout_until_ejection() -> None:
    out = run(DRILL, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["mode"] == "blackhole"
    assert failure["connect_timeout_s"] == pytest.approx(T)
    # One worker, one pooled HTTP/1.1 connection to back-a when it failed: the first try
    # after the failure goes out on it and hangs (no timeout; Linux would give up after
    # 924.6 s); every later try opens a connection, whose SYN goes unanswered for T.
    h = 1
    assert failure["hung_tries"] == h
    # The N-th connect failure (the (h+N)-th try, sent at t1 + (h+N-1)/r) ejects back-a at
    # its end, T later; every arrival before that went to back-a: h + N - 1 + floor(T r) + 1.
    assert failure["connect_timeouts"] == N + int(T * RATE)
    assert failure["failed_tries"] == h + N + int(T * RATE)
    assert out["m"].resilience["back"].counts["ejections"] == 1
    assert out["m"].resilience["back"].counts["connect_failures"] == failure["connect_timeouts"]
    # Failover: the last try to the dead host came within one arrival of the ejection,
    # T + (h+N-1)/r after the first try.
    assert failure["failover_s"] == pytest.approx(T + (h + N - 1) / RATE, abs=1 / RATE)
    # Each failed try took exactly T (plus the caller sidecar's sub-millisecond request path)
    # and failed as a connect failure (Envoy's UF); the hung one never returned in the run.
    statuses = edge(out, "front", "back").statuses
    assert statuses[CONNECT_FAILURE] == failure["connect_timeouts"]
    assert RESET not in statuses
    assert T <= failure["caller_max_latency_s"] < T + 1e-3
    assert failure["caller_errors"] == failure["connect_timeouts"]


def test_cilium_node_envoy_waits_envoys_own_connect_timeout_not_istios() -> None:
    """§2.1, §12.2: Cilium's node Envoy is Envoy as a CiliumEnvoyConfig writes it, whose
    clusters connect for 5 s (Envoy's default, and what Cilium's operator writes), whatever
    meshConfig.connectTimeout (mesh_options.istio) says. The endpoints leave 5 s after the
    failure, before the first connect timeout ends: every try in between waits exactly 5 s."""
    out = run(DRILL.replace("meshes: [istio, linkerd]", "meshes: [cilium]"), "cilium")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["connect_timeout_s"] == 5.0
    assert failure["connect_timeouts"] == failure["failed_tries"] == int(5.0 * RATE)
    assert 5.0 <= failure["caller_max_latency_s"] < 5.0 + 1e-3
    statuses = edge(out, "front", "back").statuses
    assert statuses[CONNECT_FAILURE] == failure["connect_timeouts"]


def test_a_per_try_timeout_does_not_cut_a_blackholed_connect() -> None:
    """§1.1: Envoy starts the per-try timer once the pool has a connection, so a try that
    opens one to a black-holed pod waits the whole connect timeout T (bounded by the route
    timeout alone) and fails as a connect failure, not as a per-try timeout (which Istio's
    retry_on lists would not retry without 5xx). The try that goes out on the connection
    held at the failure has its connection: its per-try timer (500 ms) cuts it, and that
    timeout is the first of the N consecutive errors that eject the host (§3.2)."""
    text = DRILL.replace(
        "retries: {attempts: 0}",
        "retries: {attempts: 1, per_try_timeout_ms: 500, retry_on: [retriable-4xx]}",
    )
    out = run(text, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["hung_tries"] == 1
    assert failure["connect_timeouts"] == N - 1 + int(T * RATE)
    counts = out["m"].resilience["back"].counts
    assert counts["per_try_timeouts"] == 1
    assert counts["connect_failures"] == failure["connect_timeouts"]
    assert counts["ejections"] == 1
    statuses = edge(out, "front", "back").statuses
    assert statuses[CONNECT_FAILURE] == failure["connect_timeouts"]
    assert statuses[504] == 1
    assert T <= failure["caller_max_latency_s"] < T + 1e-3


def test_connect_timeouts_are_gateway_errors_too() -> None:
    # consecutiveGatewayErrors alone (the 5xx count set out of reach): a connect timeout is
    # a 503 (UF), a gateway error, so the same N ejects after the same tries.
    text = DRILL.replace(
        "outlier_detection: {consecutive_5xx: 3,",
        "outlier_detection: {consecutive_5xx: 1000, consecutive_gateway_errors: 3,",
    )
    out = run(text, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["connect_timeouts"] == N + int(T * RATE)
    assert out["m"].resilience["back"].counts["ejections"] == 1


def test_refused_connects_fail_at_once_and_eject_after_n_tries() -> None:
    text = DRILL.replace(
        "endpoints_removed_after_s: 5}", "endpoints_removed_after_s: 5, mode: refuse}"
    )
    (failure,) = run(text, "istio")["topology"]["zone_failures"]
    assert failure["mode"] == "refuse"
    assert failure["connect_timeout_s"] is None
    assert failure["hung_tries"] == failure["connect_timeouts"] == 0
    assert failure["failed_tries"] == N
    assert failure["failover_s"] == pytest.approx((N - 1) / RATE, abs=1e-3)


def test_istio_traffic_returns_to_the_restarted_zone_with_the_new_pods() -> None:
    out = run(DRILL, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["endpoints_removed_s"] == pytest.approx(15.0)
    assert failure["recovered_at_s"] == pytest.approx(20.0)
    # The pods start 2 s after the zone is back, then get a certificate and their
    # configuration; the endpoint change reaches the caller's proxy through istiod.
    back_after = failure["first_recovered_try_s"]
    assert 2.0 < back_after < 2.5
    # Failover priority: the share is all or nothing, so the share is back (0: all in-zone)
    # with the first try to the new pod, to the second (recovery_s's resolution).
    assert failure["pre_failure_cross_zone_share"] == 0.0
    assert abs(failure["recovery_s"] - back_after) <= 1.0
    assert failure["post_recovery_cross_zone_share"] == 0.0
    assert failure["caller_errors_recovery"] == 0
    assert failure["caller_errors_failover"] == failure["caller_errors"]
    new = [p for p in out["sim"].services["back"].pods if p.alive and p.index == 2]
    assert [out["sim"].zones.zone_of(p.node) for p in new] == ["zone-a"]


def test_a_healed_partition_returns_its_ejected_host_after_the_ejection_time() -> None:
    # Back at 14 s, before the grace period runs out (removal at 50 s): the same pod answers
    # again, but back-a stays ejected for base_ejection_s (30 s), un-ejected at the first
    # interval sweep (every 10 s) after that.
    text = (
        DRILL.replace("duration_s: 30", "duration_s: 60")
        .replace(" endpoints_removed_after_s: 5}", "}")
        .replace("at_s: 20, action: recover-zone", "at_s: 14, action: recover-zone")
    )
    out = run(text, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["endpoints_removed_s"] is None
    ejected_at = failure["at_s"] + failure["failover_s"]
    back_at = failure["recovered_at_s"] + failure["first_recovered_try_s"]
    assert ejected_at + 30.0 <= back_at < ejected_at + 30.0 + 10.0 + 1 / RATE
    assert abs(failure["recovery_s"] - (back_at - 14.0)) <= 1.0
    # Afterwards all in-zone, but for the tries of the un-ejection's own second that still
    # crossed (within the 5 % tolerance, so that second counts as back): one of 500 here.
    assert failure["post_recovery_cross_zone_share"] <= 1 / 500


def test_linkerd_requests_hang_on_the_held_connection_until_the_user_timeout() -> None:
    out = run(DRILL, "linkerd")
    (failure,) = out["topology"]["zone_failures"]
    # HTTP/2 between proxies: every try to back-a multiplexes onto the connection the
    # caller held, until the endpoints change (zone hints: back-a is the only endpoint
    # hinted for zone-a). None waits for the 1 s connect timeout.
    assert failure["connect_timeout_s"] == 1.0
    assert failure["connect_timeouts"] == 0
    assert failure["hung_tries"] == failure["failed_tries"]
    assert (
        failure["endpoints_removed_s"]
        < failure["last_failed_try_s"]
        < failure["endpoints_removed_s"] + 0.5
    )
    # They all end together when TCP_USER_TIMEOUT (30 s) drops the connection: a reset.
    statuses = edge(out, "front", "back").statuses
    assert statuses[RESET] == failure["hung_tries"]
    assert failure["caller_max_latency_s"] == pytest.approx(30.0, abs=1 / RATE)


def test_linkerd_holds_the_endpoint_pending_once_its_connection_is_found_dead() -> None:
    # The node controller's default grace period (40 s): the connection is found dead at
    # F + 30 s, ten seconds before back-a leaves the endpoints. (Enough client connections
    # and app workers that the hung requests never run out of them.)
    text = (
        DRILL.replace("concurrency: 1000", "concurrency: 10000")
        .replace("connections: 1000", "connections: 10000")
        .replace("duration_s: 30", "duration_s: 60")
        .replace(" endpoints_removed_after_s: 5}", "}")
        .replace("  - {at_s: 20, action: recover-zone, target: zone-a, restart_after_s: 2}\n", "")
    )
    out = run(text, "linkerd")
    (failure,) = out["topology"]["zone_failures"]
    # Every try in the first 30 s hangs on the held HTTP/2 connection: r x 30 of them.
    assert failure["hung_tries"] == failure["failed_tries"] == int(RATE * 30.0)
    assert failure["last_failed_try_s"] < failure["at_s"] + 30.0
    # Then back-a is pending (reconnecting, every SYN unanswered) and P2C picks only ready
    # endpoints: no request waits for a connect; with no other endpoint hinted for zone-a
    # the balancer queues, fails fast after 3 s (r x 3 of them, and the requests the
    # sidecar's worker held while it answered the resets), and sheds every new request
    # while it fails fast until the endpoints change at 50 s: r x 10 in all, plus those
    # sent while the destination controller's update travels.
    assert failure["connect_timeouts"] == 0
    counts = out["m"].resilience["back"].counts
    assert int(RATE * 3.0) <= counts["failfasts"] <= int(RATE * 3.0) + 20
    refused = counts["failfasts"] + counts["load_shed"]
    assert int(RATE * 10.0) <= refused <= int(RATE * 10.0) + 10
    statuses = edge(out, "front", "back").statuses
    assert statuses[503] == refused
    assert statuses[RESET] == failure["hung_tries"]
    assert failure["caller_errors"] == failure["hung_tries"] + refused
    assert failure["caller_errors_until_s"] == 51.0
    assert out["topology"]["tries"]["back"]["by_zone"]["zone-a->zone-b"] > 0


def test_linkerd_reconnects_to_a_healed_pod_at_its_next_attempt_not_at_once() -> None:
    """§5.1: a Linkerd endpoint whose connection is down is pending while the proxy
    reconnects, 100 ms, then 200 ms, 400 ms ... (jitter 0.1) apart, each attempt failing at
    once when refused. Zone-a's pods refuse from 10 s and answer again from 14 s: back-a,
    the one endpoint hinted for zone-a, is ready at the first attempt from 14 s on (about
    16.3-16.9 s), not at 14 s, and zone-a's calls fail until then. Exact: the attempt is
    computed from the run's own stream."""
    text = DRILL.replace("endpoints_removed_after_s: 5}", "mode: refuse}").replace(
        "at_s: 20, action: recover-zone", "at_s: 14, action: recover-zone"
    )
    out = run(text, "linkerd")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["recovered_at_s"] == 14.0
    ready_at = reconnected_at(10.0, 14.0, 0.0, Streams(3)("reconnects"))
    assert 16.3 <= ready_at <= 16.93
    back_at = failure["recovered_at_s"] + failure["first_recovered_try_s"]
    assert ready_at <= back_at <= ready_at + 1 / RATE
    assert failure["caller_errors_recovery"] >= int(RATE * (ready_at - 15.0))


def test_linkerd_reconnects_to_a_healed_black_hole_after_connect_timeouts() -> None:
    """§5.1: black-holed, each reconnect attempt fails at the 1 s connect timeout. The
    connection zone-a's caller held is found dead at 40 s (TCP_USER_TIMEOUT, 30 s after
    the failure), and the zone answers again at 45 s, before back-a leaves the endpoints
    (50 s): attempts at 40 s + 0.1, then 1 s + 0.2, 1 s + 0.4 ... later, and back-a is ready
    at the first from 45 s on (about 47.1-47.4 s). Exact, as above."""
    text = (
        DRILL.replace("concurrency: 1000", "concurrency: 10000")
        .replace("connections: 1000", "connections: 10000")
        .replace("duration_s: 30", "duration_s: 60")
        .replace(" endpoints_removed_after_s: 5}", "}")
        .replace("at_s: 20, action: recover-zone", "at_s: 45, action: recover-zone")
    )
    out = run(text, "linkerd")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["endpoints_removed_s"] is None
    ready_at = reconnected_at(40.0, 45.0, 1.0, Streams(3)("reconnects"))
    assert 47.1 <= ready_at <= 47.41
    back_at = failure["recovered_at_s"] + failure["first_recovered_try_s"]
    assert ready_at <= back_at <= ready_at + 1 / RATE


def test_an_ambient_waypoint_hangs_its_tries_on_the_tunnel_it_held() -> None:
    """A waypoint's tunnels out are HTTP/2, one per worker per destination pod (Envoy's pool
    per upstream host, the pod on port 15008): every try to the black-holed back-a is a new
    stream on the tunnel it held and hangs; none waits for the connect timeout. (Outlier
    detection and locality off, so that the waypoint, in zone-b, still sends to back-a.)"""
    text = (
        DRILL.replace("meshes: [istio, linkerd]", "meshes: [istio-ambient]")
        .replace(
            "  istio: {workers: 1, connect_timeout_ms: 2005}\n",
            "  istio: {workers: 1, connect_timeout_ms: 2005}\n"
            "  istio-ambient: {waypoints: [back], waypoint_workers: 1}\n",
        )
        .replace("    outlier_detection: {consecutive_5xx: 3, max_ejection_percent: 100}\n", "")
        .replace("    locality_lb: {}\n", "")
    )
    out = run(text, "istio-ambient")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["connect_timeout_s"] == pytest.approx(T)
    assert failure["connect_timeouts"] == 0
    assert failure["hung_tries"] == failure["failed_tries"] > 0
    # Hung until the connection is found dead (Envoy: 924.6 s): none returned in the run.
    assert failure["caller_errors"] == 0
    assert set(edge(out, "front", "back").statuses) == {200}


DISTRIBUTE = DRILL.replace(
    "    locality_lb: {}\n",
    "    locality_lb:\n      distribute:\n        - {from: zone-a, to: {zone-a: 80, zone-b: 20}}\n",
).replace("    outlier_detection: {consecutive_5xx: 3, max_ejection_percent: 100}\n", "")


def test_distribute_weights_return_after_the_recovery() -> None:
    out = run(DISTRIBUTE, "istio")
    (failure,) = out["topology"]["zone_failures"]
    # Without outlier detection back-a keeps its 80 % until it leaves the endpoints; once
    # the restarted pod is known the weights apply again, EDF within a try of them.
    assert failure["pre_failure_cross_zone_share"] == pytest.approx(0.2, abs=1 / 1000)
    assert failure["post_recovery_cross_zone_share"] == pytest.approx(0.2, abs=1 / 500)
    assert failure["recovery_s"] is not None
    tries, cross = out["sim"].zones.per_second(["back"])
    assert all(c == t for c, t in zip(cross[16:22], tries[16:22], strict=True))


def test_a_failure_with_a_duration_recovers_by_itself() -> None:
    text = DRILL.replace(
        "endpoints_removed_after_s: 5}",
        "endpoints_removed_after_s: 5, duration_s: 10, restart_after_s: 1}",
    ).replace("  - {at_s: 20, action: recover-zone, target: zone-a, restart_after_s: 2}\n", "")
    (failure,) = run(text, "istio")["topology"]["zone_failures"]
    assert failure["recovered_at_s"] == pytest.approx(20.0)
    assert 1.0 < failure["first_recovered_try_s"] < 1.5


def test_recover_zone_needs_a_failed_zone_and_a_known_mode(tmp_path: Path) -> None:
    events = "events:\n  - {at_s: 5, action: recover-zone, target: zone-a}\n"
    err = error_of(tmp_path, BASE + events)
    (problem,) = err.problems
    assert problem.field == "events[0].target"
    assert problem.line == 26
    assert "zone 'zone-a' is not down at 5 s" in problem.message
    assert str(tmp_path / "zones.yaml") in str(err)
    events = (
        "events:\n  - {at_s: 5, action: fail-zone, target: zone-a, duration_s: 2}\n"
        "  - {at_s: 9, action: recover-zone, target: zone-a}\n"
    )
    (problem,) = error_of(tmp_path, BASE + events).problems
    assert (problem.field, problem.line) == ("events[1].target", 27)
    events = "events:\n  - {at_s: 5, action: recover-zone, target: zone-q}\n"
    (problem,) = error_of(tmp_path, BASE + events).problems
    assert problem.field == "events[0].target"
    assert "no zone in cluster.zones named 'zone-q'" in problem.message
    events = "events:\n  - {at_s: 5, action: fail-zone, target: zone-a, mode: unplug}\n"
    (problem,) = error_of(tmp_path, BASE + events).problems
    assert problem.field == "events[0].mode"
    assert problem.line == 26
    assert "'blackhole' or 'refuse'" in problem.message


def test_the_cli_shows_each_failure_with_its_failover_and_recovery() -> None:
    from meshsim.cli.render import zone_failures_table
    from rich.console import Console

    out = run(DRILL, "istio")
    summary = {"runs": {"istio": {"topology": out["topology"]}}}
    table = zone_failures_table(summary)
    assert table is not None
    console = Console(width=200, record=True)
    console.print(table)
    lines = console.export_text().splitlines()
    (row,) = [line.split() for line in lines if line.split()[:1] == ["istio"]]
    (f,) = out["topology"]["zone_failures"]
    assert row == [
        "istio", "zone-a", "blackhole", "10-20", "204", f"{f['failover_s']:.2f}", "203",
        f"{f['recovery_s']:.2f}", "0",
    ]  # fmt: skip
    assert zone_failures_table({"runs": {"istio": {"topology": None}}}) is None


def test_the_report_table_has_the_recovery_columns() -> None:
    from meshsim.report.topology import topology_section

    out = run(DRILL, "istio")
    (f,) = out["topology"]["zone_failures"]

    class Runs:
        def __init__(self) -> None:
            self.scenario = {"cluster": {"zones": [{"name": "zone-a", "nodes": 1}]}}

        def runs_summary(self) -> dict[str, Any]:
            return {"istio": {"topology": out["topology"]}}

    section = topology_section(Runs())  # type: ignore[arg-type]
    assert section is not None
    (table,) = [t for t in section.tables if t.caption.startswith("Zone failures")]
    (row,) = table.rows
    assert dict(zip(table.columns, row, strict=True)) == {
        "mesh": "istio", "zone": "zone-a", "mode": "blackhole", "at s": "10",
        "failed tries": "204", "failover s": f"{f['failover_s']:.3f}", "caller errors": "203",
        "slowest call s": f"{f['caller_max_latency_s']:.3f}", "back at s": "20",
        "recovery s": "3", "errors after": "0",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_the_multi_cluster_drill_fails_over_and_recovers(mesh: str) -> None:
    path = Path(__file__).parent.parent / "scenarios" / "multi-cluster.yaml"
    scenario = load_scenario(path)
    sim = Simulation(scenario, mesh, scenario.seed)
    sim.run()
    topo = sim.measure().topology
    assert topo is not None
    (f,) = topo["zone_failures"]
    assert (f["mode"], f["at_s"], f["recovered_at_s"]) == ("blackhole", 30.0, 75.0)
    assert f["endpoints_removed_s"] == pytest.approx(70.0)  # the 40 s grace period
    # The pods restart 5 s after the zone is back, then the mesh's readiness path: the first
    # try to them, and the share back at its pre-failure value (all in-zone), within 1 s.
    assert 5.0 < f["first_recovered_try_s"] < 6.0
    assert f["recovery_s"] in (5.0, 6.0)
    assert f["caller_errors_recovery"] == 0
    if mesh == "istio":
        # Each east-a storefront proxy ejects a dead catalog host on its 5th connect
        # timeout (10 s): the traffic moves to east-b 10 s and a few arrivals in.
        assert f["connect_timeouts"] > 0
        assert 10.0 < f["failover_s"] < 11.0
    else:
        # Every call to the dead pods hangs on the held HTTP/2 connection for up to 30 s,
        # until the two east-a storefronts' app workers (16 each) are all waiting on one.
        assert f["connect_timeouts"] == 0
        assert 0 < f["hung_tries"] <= 2 * 16
        assert 29.0 < f["caller_max_latency_s"] <= 30.0


def test_failover_with_every_endpoint_removed_answers_no_healthy_upstream() -> None:
    """The caller in zone-b and both ``back`` pods in zone-a: when the failed zone's pods
    leave the endpoints (t = 15 s) Istio's locality failover has no endpoint at all. Envoy
    answers 503 (no healthy upstream); meshsim's failover raised IndexError on an empty
    priority list and the run died."""
    text = DRILL.replace("zones: [zone-a]\n    concurrency", "zones: [zone-b]\n    concurrency")
    assert text != DRILL
    out = run(text, "istio")
    (failure,) = out["topology"]["zone_failures"]
    assert failure["caller_errors"] > 0
    assert out["m"].workloads["users"].errors > 0
