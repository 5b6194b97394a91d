"""Issue 16: Cilium as a fifth mesh (eBPF datapath, per-node Envoy, WireGuard/IPsec, SPIRE)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.models import default_model
from meshsim.policy.mapping import map_traffic
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.sim.dataplanes.cilium import CiliumDataPlane
from meshsim.sim.engine import Simulation

BASE: dict[str, Any] = {
    "meshsim": 1,
    "name": "cilium",
    "seed": 5,
    "duration_s": 3,
    "warmup_s": 1,
    "meshes": ["none", "cilium"],
    "cluster": {"nodes": 2, "cores_per_node": 8},
    "services": [
        {"name": "front", "replicas": 1, "cpu_ms": {"dist": "constant", "mean": 0.2},
         "response_bytes": 1000, "calls": [{"service": "back", "request_bytes": 2000}]},
        {"name": "back", "replicas": 1, "cpu_ms": {"dist": "constant", "mean": 0.1},
         "response_bytes": 3000},
    ],
    "workloads": [{"name": "users", "target": "front", "arrival": "constant", "rate_rps": 50,
                   "request_bytes": 500}],
}  # fmt: skip


def _doc(**cilium: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    if cilium:
        doc["mesh_options"] = {"cilium": cilium}
    return doc


def _run(doc: dict[str, Any], mesh: str = "cilium", **kw: Any) -> Simulation:
    sim = Simulation(from_dict(doc), mesh, 1, **kw)
    sim.run()
    return sim


def _latencies(sim: Simulation) -> list[float]:
    """The workload's latencies in the order the requests were sent (arrivals are constant,
    so two runs' lists pair request by request; the order they finish in can differ: under
    the fair scheduler those a handshake released together end in turn, not in order)."""
    assert sim.recorder.records is not None
    sent = sorted(
        (r for r in sim.recorder.records if r.kind == "workload"), key=lambda r: r.started_at
    )
    return [r.finished_at - r.started_at for r in sent]


def test_l4_only_has_no_user_space_hop_and_adds_only_kernel_work() -> None:
    """No proxy exists, no request passes one; at low load every request is slower than
    the `none` run by exactly the eBPF work and the datapath's per-node latency."""
    doc = _doc(encryption="none", mutual_auth=False)
    sim = _run(doc, keep_records=True)
    dp = sim.data_plane
    assert isinstance(dp, CiliumDataPlane)
    assert dp.proxies == []
    assert dp.envoys == {}
    plain = _run(doc, "none", keep_records=True)
    agent = default_model("cilium-agent").value
    packet = agent("ebpf_packet_cpu_us") * 1e-6
    hop = agent("ebpf_hop_latency_us") * 1e-6
    mss = agent("mss_bytes")

    def transfer(nbytes: int, ends: int) -> float:
        return ends * math.ceil(nbytes / mss) * packet + 2 * hop

    # users (outside) -> front: only front's node runs eBPF; front -> back: both ends.
    added = (transfer(500, 1) + transfer(1000, 1)
             + transfer(2000, 2) + transfer(3000, 2))  # fmt: skip
    with_cilium, without = _latencies(sim), _latencies(plain)
    assert len(with_cilium) == len(without) > 100
    for a, b in zip(with_cilium, without, strict=True):
        assert a - b == pytest.approx(added, abs=1e-9)
    assert sim.measure().kernel_cpu_s > 0


def test_an_l7_rule_sends_that_service_through_the_node_envoy() -> None:
    doc = _doc(encryption="none", mutual_auth=False)
    doc["warmup_s"] = 0  # the window is the whole run: every call is counted
    doc["traffic"] = [{"service": "back", "timeout_ms": 500}]
    sim = _run(doc)
    dp = sim.data_plane
    assert isinstance(dp, CiliumDataPlane)
    assert dp.l7_services == {"back"}
    front_node = sim.services["front"].pods[0].node
    passes = {node.name: sum(w.requests for w in e.workers) for node, e in dp.envoys.items()}
    # Every call to back entered the Envoy of front's node once; calls to front (no L7 rule)
    # entered none.
    calls_to_back = sim.recorder.edges[("front", "back")].requests
    assert calls_to_back > 100
    assert passes[front_node.name] == calls_to_back
    assert sum(passes.values()) == calls_to_back
    summary = build_summary(run_scenario(from_dict({**doc, "meshes": ["cilium"]})))
    proxies = summary["runs"]["cilium"]["proxies"]
    assert proxies["count"] == 2  # one Envoy per node
    assert proxies["handshakes"] == 0  # no TLS between pods
    assert proxies["kernel_cpu_vcpu"] > 0


def test_the_mapping_programs_envoy_rules_and_says_what_cilium_needs() -> None:
    doc = _doc()
    doc["services"][1]["versions"] = [{"name": "v1", "replicas": 1}, {"name": "v2", "replicas": 1}]
    del doc["services"][1]["replicas"]
    doc["traffic"] = [{"service": "back", "split": {"v1": 50, "v2": 50},
                       "retries": {"attempts": 2}}]  # fmt: skip
    policies = map_traffic(from_dict(doc), "cilium", l7_services={"back"})
    assert policies.flavour == "envoy"
    assert policies.policy("back").cluster is not None
    assert any("backend Service per version" in n for n in policies.notes)


def test_a_cilium_envoy_config_has_envoys_defaults_where_istio_has_istiods() -> None:
    """What a rule leaves out: istiod fills in 2 retries, no route timeout, LEAST_REQUEST and
    breakers that cannot overflow; a CiliumEnvoyConfig is Envoy as written, so Envoy's own
    defaults apply: no retries, a 15 s route timeout, ROUND_ROBIN, 1024/1024/1024/3."""
    from meshsim.policy import MAX_UINT32, Thresholds

    doc = _doc()
    doc["traffic"] = [
        {"service": "back", "match": {"path_prefix": "/api"}, "timeout_ms": 300},
        {"service": "front", "circuit_breaker": {"max_requests": 10}},
    ]
    cilium = map_traffic(from_dict(doc), "cilium")
    istio = map_traffic(from_dict(doc), "istio")
    matched, unmatched = cilium.policy("back").routes
    assert (matched.timeout_s, matched.envoy_retry) == (0.3, None)
    assert (unmatched.timeout_s, unmatched.envoy_retry) == (15.0, None)
    assert cilium.policy("back").cluster.balancer == "round_robin"
    assert cilium.policy("back").cluster.thresholds == Thresholds.envoy_default()
    assert cilium.policy("front").cluster.thresholds == Thresholds(1024, 1024, 10, 3)
    i_matched, i_unmatched = istio.policy("back").routes
    assert (i_matched.timeout_s, i_unmatched.timeout_s) == (0.3, None)
    assert i_matched.envoy_retry is not None
    assert i_matched.envoy_retry.num_retries == 2
    assert istio.policy("back").cluster.balancer == "least_request"
    assert istio.policy("back").cluster.thresholds is None
    assert istio.policy("front").cluster.thresholds == Thresholds(
        MAX_UINT32, MAX_UINT32, 10, MAX_UINT32
    )
    assert any("no retries, a 15 s route timeout" in n for n in cilium.notes)


def test_a_cilium_retries_block_is_envoys_retry_policy_as_written() -> None:
    """§12.2: a retry policy without num_retries retries once in Envoy, with no host
    predicate and one host selection; istiod's 2 retries, previous_hosts and 5 re-picks are
    istiod's. Without retry_on the VirtualService's list is written (Envoy has none of its
    own), and the warnings say both. Run: every try of back fails with a 503, so each
    request gets exactly one retry decision that retries (or overflows max_retries) and one
    that finds the retries exhausted."""
    from meshsim.policy import RetryOn

    doc = _doc()
    doc["traffic"] = [{"service": "back", "retries": {"per_try_timeout_ms": 500}}]
    cilium = map_traffic(from_dict(doc), "cilium")
    retry = cilium.policy("back").routes[0].envoy_retry
    assert retry is not None
    assert (retry.num_retries, retry.previous_hosts, retry.host_selection_retry_max_attempts) == (
        1, False, 1)  # fmt: skip
    assert retry.retry_on == {RetryOn.CONNECT_FAILURE, RetryOn.REFUSED_STREAM,
                              RetryOn.UNAVAILABLE, RetryOn.CANCELLED,
                              RetryOn.RETRIABLE_STATUS_CODES}  # fmt: skip
    assert retry.per_try_timeout_s == 0.5
    assert any("1 retry where attempts is unset" in n for n in cilium.notes)
    assert any("retries without retry_on" in n for n in cilium.notes)
    istio = map_traffic(from_dict(doc), "istio").policy("back").routes[0].envoy_retry
    assert istio is not None
    assert (istio.num_retries, istio.previous_hosts, istio.host_selection_retry_max_attempts) == (
        2, True, 5)  # fmt: skip
    doc["traffic"] = [{"service": "back", "retries": {"attempts": 3, "retry_on": ["5xx"]}}]
    given = map_traffic(from_dict(doc), "cilium").policy("back").routes[0].envoy_retry
    assert given is not None
    assert (given.num_retries, given.retry_on, given.previous_hosts) == (3, {RetryOn.FIVE_XX},
                                                                         False)  # fmt: skip
    doc["traffic"] = [{"service": "back", "retries": {"attempts": 0}}]
    assert map_traffic(from_dict(doc), "cilium").policy("back").routes[0].envoy_retry is None
    doc["traffic"] = [{"service": "back", "retries": {"retry_on": ["5xx"]}}]
    doc["events"] = [{"at_s": 0.0, "action": "errors", "target": "back", "rate": 1.0,
                      "status": 503}]  # fmt: skip
    doc["meshes"] = ["cilium"]
    res = build_summary(run_scenario(from_dict(doc)))["runs"]["cilium"]["resilience"]["back"]
    assert res["requests"] > 50
    assert res["retries"] + res["retry_overflows"] == res["requests"]
    assert res["retries_exhausted"] == res["retries"]
    assert res["attempts"] == res["requests"] + res["retries"]


def _crypt_cpu(request_bytes: int, response_bytes: int, rate: float, encryption: str) -> float:
    """Kernel CPU of a run minus that of the same run without encryption."""

    def kernel(enc: str) -> float:
        doc = _doc(encryption=enc, mutual_auth=False)
        doc["cluster"]["nodes"] = 2
        doc["services"][0]["calls"][0]["request_bytes"] = request_bytes
        doc["services"][1]["response_bytes"] = response_bytes
        doc["workloads"][0]["rate_rps"] = rate
        sim = _run(doc)
        # front and back land on different nodes (spread placement): every call crosses.
        assert sim.services["front"].pods[0].node is not sim.services["back"].pods[0].node
        return sum(k.cpu_s for k in sim.data_plane.kernels.values())  # type: ignore[attr-defined]

    return kernel(encryption) - kernel("none")


@pytest.mark.parametrize("encryption", ["wireguard", "ipsec"])
def test_encryption_costs_scale_with_bytes_not_requests(encryption: str) -> None:
    mss = int(default_model("cilium-agent").value("mss_bytes"))
    crypt = default_model("cilium-encryption").value
    # Whole packets, so that bytes and packets scale together.
    small = _crypt_cpu(4 * mss, 4 * mss, 40.0, encryption)
    double_bytes = _crypt_cpu(8 * mss, 8 * mss, 40.0, encryption)
    double_requests = _crypt_cpu(4 * mss, 4 * mss, 80.0, encryption)
    same_bytes_twice_the_requests = _crypt_cpu(2 * mss, 2 * mss, 80.0, encryption)
    assert double_bytes == pytest.approx(2 * small, rel=0.01)
    assert double_requests == pytest.approx(2 * small, rel=0.01)
    assert same_bytes_twice_the_requests == pytest.approx(small, rel=0.01)
    # Per call, exactly the model: each message encrypted at one end and decrypted at the other.
    per_message = (4 * mss + 4 * crypt(f"{encryption}_overhead_bytes")) / 1024 * crypt(
        f"{encryption}_cpu_us_per_kib"
    ) + 4 * crypt(f"{encryption}_packet_cpu_us")
    calls = small / (4 * per_message * 1e-6)
    assert calls == pytest.approx(round(calls), abs=1e-6)


def test_mutual_auth_delays_only_the_first_connection_of_an_identity_pair() -> None:
    doc = _doc(encryption="none", mutual_auth=True)
    sim = _run(doc, keep_records=True)
    spire = default_model("spire").value
    wait = spire("auth_handshake_latency_ms") * 1e-3
    assert sim.data_plane.auth_handshakes == 1  # type: ignore[attr-defined]
    plain = _run(_doc(encryption="none", mutual_auth=False), keep_records=True)
    slow = [a - b for a, b in zip(_latencies(sim), _latencies(plain), strict=False) if a - b > 1e-6]
    # The first waits the whole handshake (plus the queue of those released with it), those
    # sent while it ran wait for its end, none after: at 50 rps about 50 requests.
    assert slow
    assert slow[0] == pytest.approx(wait, abs=1e-3)
    assert all(s <= wait + 1e-3 for s in slow)
    assert len(slow) <= 50 * wait + 5
    cp = sim.measure().control_plane
    assert cp.name == "cilium"
    assert cp.memory_mb > 0
    assert cp.cpu_vcpu > 0


def test_new_pods_wait_for_identity_propagation() -> None:
    doc = _doc(encryption="none", mutual_auth=True)
    doc["events"] = [{"at_s": 1, "action": "scale", "target": "back", "replicas": 2}]
    sim = _run(doc)
    agent, spire = default_model("cilium-agent").value, default_model("spire").value
    delay = agent("identity_propagation_ms") * 1e-3 + spire("svid_sync_interval_s")
    report = sim.control_plane.summary(sim.warmup_s, sim.end_s)
    assert report["convergence_s"]["max"] == pytest.approx(delay)
    new = sim.services["back"].pods[-1]
    assert not new.ready  # 1 s + 5.5 s is past the 3 s run


def test_the_node_envoy_takes_the_cilium_charts_resources_not_istios_sidecars() -> None:
    # The Cilium chart's envoy.resources are empty: no request and no limit (before, the node
    # Envoy took Istio's global.proxy.resources, 2000m / 1024Mi, which throttled and
    # OOM-killed a mesh that sets neither). Given, they apply: a 100m limit throttles it.
    from meshsim.scenario.resources import CILIUM_ENVOY_RESOURCES
    from meshsim.sim.cpu.cgroups import resources_of

    doc = _doc(encryption="none", mutual_auth=False, l7_services="all")
    sim = Simulation(from_dict(doc), "cilium", 1)
    assert isinstance(sim.data_plane, CiliumDataPlane)
    envoy = next(iter(sim.data_plane.envoys.values()))
    _name, res = resources_of(envoy, sim.scenario, "cilium")
    assert res == CILIUM_ENVOY_RESOURCES
    assert (res.cpu_request_m, res.limits.cpu_m, res.limits.memory_mb) == (None, None, None)
    limited = _doc(
        encryption="none", mutual_auth=False, l7_services="all",
        envoy_resources={"limits": {"cpu": "20m"}}, envoy_workers=1,
    )  # fmt: skip
    limited["workloads"][0]["rate_rps"] = 400
    cgroups = build_summary(run_scenario(from_dict(limited)))["runs"]["cilium"]["cgroups"]
    throttled = {k: v for k, v in cgroups.items() if k.endswith("/envoy")}
    assert throttled, cgroups
    assert all(v["cpu_limit_m"] == 20 for v in throttled.values())
    assert sum(v["nr_throttled"] for v in throttled.values()) > 0


def test_the_datapaths_kernel_work_runs_as_a_kernel_thread_beside_the_pods() -> None:
    # Under the fair scheduler the eBPF and encryption work is ksoftirqd's: a nice-0 thread
    # on the node's run queue, outside kubepods (not a BestEffort container of weight 10).
    doc = _doc()
    doc["cluster"] = {**doc["cluster"], "scheduler": "cfs"}
    sim = Simulation(from_dict(doc), "cilium", 1)
    assert isinstance(sim.data_plane, CiliumDataPlane)
    node = sim.nodes[0]
    kernel = sim.data_plane.kernels[node]
    g = node.cgroup(kernel)
    assert (g.name, g.weight, g.parent) == (f"{node.name}/kernel", 1024.0, None)
