"""The data planes (issue 4): accounting against the model files, and the mechanisms.

Deterministic cases assert exact outcomes; the others state their tolerance next to the
assertion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.models import default_model
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict, load_scenario
from meshsim.sim.dataplanes.ambient import AmbientDataPlane
from meshsim.sim.dataplanes.sidecar import SidecarDataPlane
from meshsim.sim.engine import Simulation

KIB = 1024


def scenario(**over: Any) -> dict[str, Any]:
    """One client (a workload) and one server pod, Istio-benchmark shaped by default."""
    doc: dict[str, Any] = {
        "meshsim": 1,
        "name": "dp",
        "seed": 3,
        "duration_s": 6.0,
        "warmup_s": 1.0,
        "meshes": ["none", "istio", "linkerd", "istio-ambient"],
        "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [
            {
                "name": "server",
                "replicas": 1,
                "response_bytes": KIB,
                "cpu_ms": {"dist": "constant", "mean": 0.05},
            }
        ],
        "workloads": [
            {
                "name": "load",
                "target": "server",
                "arrival": "poisson",
                "rate_rps": 1000.0,
                "request_bytes": KIB,
                "connections": 16,
            }
        ],
        "mesh_options": {"meshed_clients": True},
    }
    doc.update(over)
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    return build_summary(run_scenario(from_dict(doc)))


def simulate(doc: dict[str, Any], mesh: str) -> Simulation:
    sim = Simulation(from_dict(doc), mesh, doc["seed"])
    sim.run()
    return sim


# --------------------------------------------------------------------------- accounting


def test_istio_benchmark_shape_reproduces_the_model_anchor() -> None:
    """1 KiB, 1000 rps, 16 connections, 2 workers, mTLS: the model's inputs come back out."""
    model = default_model("envoy-sidecar")
    assert model.anchor is not None
    out = summary(scenario(meshes=["istio"]))["runs"]["istio"]["proxies"]
    assert out["count"] == 2  # the client's sidecar and the server's
    per_proxy = out["cpu_vcpu_per_1000rps"] / out["count"]
    # Tolerance 10% (the issue's): Poisson arrivals make the measured rate differ from the
    # requested one by ~1/sqrt(5000) ~ 1.4%; handshakes add ~16 x 360 us over the run.
    assert per_proxy == pytest.approx(model.anchor.vcpu_per_1000rps, rel=0.10)
    assert out["memory_mb_per_proxy"] == pytest.approx(model.anchor.memory_mb, rel=0.10)
    assert out["handshakes"] >= 1


# --------------------------------------------------------------------------- mechanisms


def closed(clients: int, **over: Any) -> dict[str, Any]:
    return scenario(
        workloads=[
            {
                "name": "load",
                "target": "server",
                "arrival": "closed",
                "clients": clients,
                "request_bytes": KIB,
                "connections": clients,
            }
        ],
        duration_s=3.0,
        warmup_s=0.5,
        **over,
    )


def client_sidecar_shares(sim: Simulation) -> list[int]:
    dp = sim.data_plane
    assert isinstance(dp, SidecarDataPlane)
    return [w.requests for w in dp.client_sidecars["load"].workers]


def test_one_connection_pins_all_work_to_one_envoy_worker() -> None:
    shares = client_sidecar_shares(simulate(closed(1), "istio"))
    assert len(shares) == 2
    assert sorted(shares)[0] == 0  # exact: the other worker never runs a request
    assert sum(shares) > 1000


@pytest.mark.long
def test_many_connections_spread_over_envoy_workers() -> None:
    shares = client_sidecar_shares(simulate(closed(64), "istio"))
    # 64 connections accepted on a random worker each: the busier worker's share is
    # binomial(64, 1/2)/64 -> within 0.5 +- 0.2 with probability > 0.999.
    assert max(shares) / sum(shares) < 0.7
    assert min(shares) > 0


@pytest.mark.long
def test_linkerd_h2_opens_fewer_connections_than_envoy_h1() -> None:
    # 1 s (0.5 s after the warm-up) rather than closed()'s 3 s: the counts are over the whole
    # run and exact, and 32 closed-loop clients open their connections on their first
    # requests, in the first milliseconds; the rest of the run only reuses them.
    out = summary(closed(32, meshes=["istio", "linkerd"]) | {"duration_s": 1.0})["runs"]
    istio, linkerd = out["istio"]["proxies"], out["linkerd"]["proxies"]
    # One multiplexed HTTP/2 connection from the client's proxy to the one server pod.
    assert linkerd["connections_opened"] == 1
    assert linkerd["handshakes"] == 1
    # HTTP/1.1: a connection per concurrent request, per worker pool (32 in flight).
    assert istio["connections_opened"] >= 16
    assert istio["handshakes"] > linkerd["handshakes"]


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_keep_alive_off_makes_one_handshake_per_request(mesh: str) -> None:
    doc = scenario(meshes=[mesh], duration_s=2.0, warmup_s=0.5)
    doc["mesh_options"] = {"meshed_clients": True, "keep_alive": False}
    sim = simulate(doc, mesh)
    sent = sim.workloads[0].sent
    assert sent > 1000
    handshakes = sim.measure().handshakes
    assert handshakes is not None
    assert handshakes.total == sent  # exact


def test_ambient_without_waypoint_adds_no_l7_cost() -> None:
    sim = simulate(scenario(meshes=["istio-ambient"]), "istio-ambient")
    dp = sim.data_plane
    assert isinstance(dp, AmbientDataPlane)
    assert not dp.waypoints
    assert {p.kind for p in dp.proxies} == {"ztunnel"}
    zt = default_model("ztunnel")
    assert zt.value("http_parse_request_us") == 0.0
    # CPU per request is two ztunnel passes of the L4 model and the wake-ups the workers
    # counted, plus per-connection set-up amortised over ~6000 requests (tolerance 2%).
    completed = sim.workloads[0].completed
    per_request_us = 1e6 * sum(p.cpu_s for p in dp.proxies) / completed
    wakeups = sum(w.wakeups for p in dp.proxies for w in p.workers)
    l4 = 2 * sum(zt.request_cpu_us(KIB, KIB, mtls=True)) + zt.wakeup_cpu_us * wakeups / completed
    assert per_request_us == pytest.approx(l4, rel=0.02)


def test_ambient_waypoint_takes_the_l7_hop() -> None:
    doc = scenario(meshes=["istio-ambient"])
    doc["mesh_options"] = {"meshed_clients": True, "istio-ambient": {"waypoints": ["server"]}}
    sim = simulate(doc, "istio-ambient")
    dp = sim.data_plane
    assert isinstance(dp, AmbientDataPlane)
    wp = dp.waypoints["server"]
    wp_model = default_model("waypoint")
    completed = sim.workloads[0].completed
    per_request_us = 1e6 * wp.cpu_s / completed
    wakeups_us = wp_model.wakeup_cpu_us * sum(w.wakeups for w in wp.workers) / completed
    assert per_request_us == pytest.approx(
        sum(wp_model.request_cpu_us(KIB, KIB, mtls=True)) + wakeups_us, rel=0.02
    )


def two_tier(waypoint: bool, nodes: int) -> dict[str, Any]:
    """Clients outside the mesh (no tunnel of theirs) call a (4 pods), which calls b (2 pods),
    at a load where no pool needs a second tunnel (far below 100 streams)."""
    doc = scenario(
        meshes=["istio-ambient"],
        duration_s=2.0,
        warmup_s=0.5,
        cluster={"nodes": nodes, "cores_per_node": 8},
        services=[
            {"name": "a", "replicas": 4, "calls": [{"service": "b"}],
             "cpu_ms": {"dist": "constant", "mean": 0.1}},
            {"name": "b", "replicas": 2, "cpu_ms": {"dist": "constant", "mean": 0.1}},
        ],
        workloads=[{"name": "load", "target": "a", "rate_rps": 400.0, "connections": 16}],
    )  # fmt: skip
    doc["mesh_options"] = {"istio-ambient": {"waypoints": ["b"] if waypoint else []}}
    return doc


def test_ztunnel_pools_a_tunnel_per_source_pod_and_destination_pod() -> None:
    """ztunnel keys its HBONE pool on (source identity, destination identities, destination
    address, source IP), and in in-pod mode every pod has a pool of its own
    (istio/ztunnel src/proxy/pool.rs, src/proxy/h2/client.rs WorkloadKey): each of a's 4 pods
    holds a tunnel to each of b's 2 pods, 8 in all (exact), where one per pair of ztunnels
    gave 4. Each tunnel is a TLS connection held at both ends, so each ztunnel holds the
    tunnels of its node's pods, sent and received (memory follows them)."""
    sim = simulate(two_tier(waypoint=False, nodes=2), "istio-ambient")
    dp = sim.data_plane
    assert isinstance(dp, AmbientDataPlane)
    a, b = sim.services["a"].pods, sim.services["b"].pods
    assert {p.node.name for p in a} == {p.node.name for p in b} == {"node-0", "node-1"}
    zt = {node.name: z for node, z in dp.ztunnels.items()}
    expected = {
        (f"{s.node.name}/ztunnel", s.name, f"{d.node.name}/ztunnel", d.name) for s in a for d in b
    }
    assert {key for key, _, _ in dp.tunnels.held()} == expected
    assert dp.tunnels.counter.connections_opened == 8
    for name, z in zt.items():
        ends = sum(p.node.name == name for p in a) * 2 + sum(p.node.name == name for p in b) * 4
        assert z.tls_connections == ends


def test_waypoint_tunnels_are_per_source_pod_in_and_per_worker_and_pod_out() -> None:
    """Through b's waypoint: each of a's 4 pods has its own tunnel to the waypoint (the
    waypoint's address is the destination of ztunnel's key), accepted on one of its workers;
    the waypoint pools its tunnels out as Envoy pools, per worker per upstream host, the host
    being b's pod on port 15008 (istio pilot/pkg/networking/core/cluster_waypoint.go,
    connect_originate: ORIGINAL_DST, port 15008): 2 workers x 2 pods. All on one node, where
    the old keys gave one tunnel in (per pair of ztunnels), so every request ran on the one
    worker that accepted it, and one tunnel out. Exact (this seed's four tunnels in were
    accepted on both workers)."""
    sim = simulate(two_tier(waypoint=True, nodes=1), "istio-ambient")
    dp = sim.data_plane
    assert isinstance(dp, AmbientDataPlane)
    wp = dp.waypoints["b"]
    assert len(wp.workers) == 2
    a, b = sim.services["a"].pods, sim.services["b"].pods
    held = {key for key, _, _ in dp.tunnels.held()}
    assert held == {("node-0/ztunnel", s.name, "b/waypoint", "") for s in a} | {
        ("b/waypoint", w, "node-0/ztunnel", d.name) for w in (0, 1) for d in b
    }
    assert dp.tunnels.counter.connections_opened == 8
    assert wp.tls_connections == 8  # 4 accepted, 4 opened
    [zt] = dp.ztunnels.values()
    assert zt.tls_connections == 8  # 4 opened, 4 accepted


@pytest.mark.parametrize("mesh", ["none", "istio-ambient", "cilium"])
def test_l4_balancing_spreads_a_keep_alive_apps_calls_as_kube_proxy_does(mesh: str) -> None:
    """ztunnel and Cilium's socket-LB, like kube-proxy, pick an endpoint per connection; all
    are modelled as pooled keep-alive connections spread evenly, so the three pods of a
    service behind one caller each serve a third of its calls (multinomial: 900 calls, sd 1.6
    points; 4.5 sd allowed). Binding the app's few long-lived connections under ambient
    alone gave one mesh another traffic mix: shares of 0 to 100 %."""
    doc = scenario(
        meshes=[mesh],
        services=[
            {"name": "web", "replicas": 1, "calls": [{"service": "api"}],
             "cpu_ms": {"dist": "constant", "mean": 0.2}},
            {"name": "api", "replicas": 3, "cpu_ms": {"dist": "constant", "mean": 0.5}},
        ],
        workloads=[{"name": "load", "target": "web", "rate_rps": 150.0}],
    )  # fmt: skip
    sim = simulate(doc, mesh)
    served = [pod.cpu_s / 0.5e-3 for pod in sim.services["api"].pods]
    assert sum(served) == pytest.approx(900, rel=0.1)
    for n in served:
        assert n / sum(served) == pytest.approx(1 / 3, abs=0.07)


def grpc_backend(mesh: str, replicas: int = 3, **over: Any) -> dict[str, Any]:
    """One caller pod (web) sending 900 calls to a gRPC service (api) of ``replicas`` pods,
    each call 0.5 ms of api's CPU, so a pod's calls are its CPU over 0.5 ms."""
    return scenario(
        meshes=[mesh],
        services=[
            {"name": "web", "replicas": 1, "calls": [{"service": "api"}],
             "cpu_ms": {"dist": "constant", "mean": 0.2}},
            {"name": "api", "replicas": replicas, "protocol": "grpc",
             "cpu_ms": {"dist": "constant", "mean": 0.5}},
        ],
        workloads=[{"name": "load", "target": "web", "rate_rps": 150.0}],
        **over,
    )  # fmt: skip


def calls_served(sim: Simulation, service: str) -> list[float]:
    return [pod.cpu_s / 0.5e-3 for pod in sim.services[service].pods]


@pytest.mark.parametrize(
    ("mesh", "options"),
    [
        ("none", {}),
        ("istio-ambient", {}),
        ("cilium", {}),
        ("cilium", {"cilium": {"l7_services": ["api"]}}),
    ],
    ids=["none", "istio-ambient", "cilium", "cilium-l7-policy"],
)
def test_l4_balancing_sends_a_grpc_callers_calls_where_its_one_connection_went(
    mesh: str, options: dict[str, Any]
) -> None:
    """A gRPC client multiplexes its calls on one connection per service, and kube-proxy,
    ztunnel and Cilium's socket-LB pick an endpoint per connection: every call of the one
    caller pod reaches the same api pod (exact), and two pods added at 2 s get none of them
    (the classic scale-up that gRPC over an L4 balancer does not use). Cilium's Envoy for an
    L7 policy parses each call but forwards it to the connection's original destination, so
    the policy changes nothing here (every call passes that Envoy, exact)."""
    doc = grpc_backend(mesh, events=[{"at_s": 2.0, "action": "scale", "target": "api",
                                      "replicas": 5}])  # fmt: skip
    doc["mesh_options"] = {"meshed_clients": True, **options}
    sim = simulate(doc, mesh)
    if options:
        passes = sum(w.requests for p in sim.data_plane.proxies for w in p.workers)
        assert passes == sum(pod.served for pod in sim.services["api"].pods)
    served = calls_served(sim, "api")
    assert len(served) == 5
    assert sum(served) == pytest.approx(900, rel=0.1)
    assert sorted(n > 0 for n in served) == [False, False, False, False, True]


@pytest.mark.parametrize("mesh", ["none", "istio-ambient", "cilium"])
def test_a_capped_connection_age_makes_a_grpc_caller_pick_again(mesh: str) -> None:
    """The api's server closes each connection 1 s (+-10 %) after it opened, so over the
    6 s run the one caller reconnects 5 or 6 times (exact range: the ages' sum stays within
    0.9-1.1 s each) and reaches more than one pod, where without the cap it reaches one."""
    doc = grpc_backend(mesh)
    doc["services"][1]["max_connection_age_s"] = 1.0
    sim = simulate(doc, mesh)
    assert sim.data_plane.l4_balancer.reconnects in (5, 6)  # type: ignore[attr-defined]
    assert sum(n > 0 for n in calls_served(sim, "api")) > 1


def test_the_l4_data_planes_bind_each_grpc_caller_to_the_same_pod() -> None:
    """Common random numbers for connections: four caller pods' connections to a gRPC
    service of four pods reach the same pods under `none`, ambient and Cilium (exact), at
    each of three seeds, though each mesh balanced its own sequence of calls to an HTTP/1.1
    cache before them (drawn from the stream the per-call picks share, the bindings
    differed between the meshes at all three); and the bindings differ between seeds (they
    are drawn, not fixed)."""
    seen = []
    for seed in range(1, 4):
        per_mesh = []
        for mesh in ("none", "istio-ambient", "cilium"):
            doc = grpc_backend(mesh, replicas=4, seed=seed)
            doc["services"][0]["replicas"] = 4
            doc["services"][0]["calls"] = [{"service": "cache"}, {"service": "api"}]
            doc["services"].append({"name": "cache", "replicas": 3,
                                    "cpu_ms": {"dist": "exponential", "mean": 0.3}})  # fmt: skip
            doc["workloads"][0]["rate_rps"] = 400.0
            dp = simulate(doc, mesh).data_plane
            per_mesh.append(dp.l4_balancer.bindings)  # type: ignore[attr-defined]
        assert len(per_mesh[0]) == 4
        assert per_mesh[0] == per_mesh[1] == per_mesh[2]
        seen.append(tuple(sorted(per_mesh[0].items())))
    assert len(set(seen)) > 1


@pytest.mark.parametrize(
    ("mesh", "options"),
    [
        ("istio", {}),
        ("linkerd", {}),
        ("istio-ambient", {"istio-ambient": {"waypoints": ["api"]}}),
        ("cilium", {}),
        ("cilium", {"cilium": {"lb_l7_services": ["api"]}}),
    ],
    ids=["istio", "linkerd", "ambient-waypoint", "cilium-envoy-config", "cilium-lb-l7"],
)
def test_l7_proxies_spread_a_grpc_connections_calls_per_request(
    mesh: str, options: dict[str, Any]
) -> None:
    """Envoy (sidecar, waypoint, Cilium's node Envoy with a CiliumEnvoyConfig) and
    linkerd2-proxy balance each request, so the one caller's multiplexed calls spread over
    the three api pods. Envoy's
    least-request gives each a third (multinomial-like: 900 calls, 4.5 sd = 0.07 allowed).
    linkerd2-proxy's peak-EWMA P2C favours the pods it sees answer fastest (here the two on
    the caller's node, 25 us away where the third is 150 us: 3-6 % of calls reach the third
    over seeds 1-5, the same as for an HTTP/1.1 app): every pod serves, none two thirds."""
    doc = grpc_backend(mesh)
    doc["mesh_options"] = {"meshed_clients": True, **options}
    if mesh == "cilium" and not options:
        # Cilium balances per request where a CiliumEnvoyConfig sends the service through
        # its node's Envoy: a rule in the traffic block (or the lb-l7 annotation's).
        doc["traffic"] = [{"service": "api", "load_balancer": "least_request"}]
    served = calls_served(simulate(doc, mesh), "api")
    shares = [n / sum(served) for n in served]
    assert sum(served) == pytest.approx(900, rel=0.1)
    if mesh == "linkerd":
        assert min(shares) > 0.0
        assert max(shares) < 2 / 3
    else:
        assert shares == pytest.approx([1 / 3] * 3, abs=0.07)


def test_sidecar_scoping_shrinks_envoy_memory_in_a_500_service_mesh() -> None:
    services = [{"name": f"svc-{i}", "replicas": 1} for i in range(500)]
    services[0] = {"name": "svc-0", "replicas": 1, "calls": [{"service": "svc-1"}]}
    base = scenario(
        meshes=["istio"],
        services=services,
        duration_s=1.0,
        warmup_s=0.2,
        cluster={"nodes": 4, "cores_per_node": 8},
        workloads=[{"name": "load", "target": "svc-0", "rate_rps": 50.0}],
    )
    base["mesh_options"] = {}
    unscoped = summary(base)["runs"]["istio"]["proxies"]
    base["mesh_options"] = {"istio": {"sidecar_scoping": True}}
    scoped = summary(base)["runs"]["istio"]["proxies"]
    model = default_model("envoy-sidecar")
    assert unscoped["count"] == scoped["count"] == 500
    # Exact: an idle sidecar holds 500 clusters and 500 endpoints unscoped...
    idle = model.memory_mb(0, 500, 500)
    assert unscoped["memory_mb_per_proxy"] >= idle
    assert unscoped["memory_mb_per_proxy"] < idle + 0.01
    # ... and one cluster (its inbound) and its own endpoint when scoped.
    assert scoped["memory_mb_per_proxy"] < model.memory_mb(0, 2, 3) + 0.01
    assert unscoped["memory_mb_total"] - scoped["memory_mb_total"] > 500 * 19.0


# --------------------------------------------------------------------------- saturation


def per_request_cpu_s(mesh: str, app_s: float) -> float:
    """App plus proxy CPU per request from outside the mesh, from the model files."""
    kind = {"istio": "envoy-sidecar", "linkerd": "linkerd-proxy", "istio-ambient": "ztunnel"}[mesh]
    proxy = sum(default_model(kind).request_cpu_us(KIB, KIB, mtls=False)) * 1e-6  # type: ignore[arg-type]
    return app_s + proxy


def _without_wakeups(tmp_path: Any, mesh: str) -> dict[str, Any]:
    """mesh_options running this mesh's proxy model with wake-ups off (a per-request cost
    only), so that capacity is 1 / CPU per request at every load."""
    import yaml

    from meshsim.models import models_dir

    name, key = {
        "istio": ("istio-sidecar", "model"),
        "linkerd": ("linkerd-proxy", "model"),
        "istio-ambient": ("ztunnel", "ztunnel_model"),
    }[mesh]
    data = yaml.safe_load((models_dir() / f"{name}.yaml").read_text())
    data["parameters"].pop("wakeup_cpu_us", None)
    data.pop("anchor", None)  # its CPU identity counts wake-ups
    path = tmp_path / f"{name}-no-wakeups.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return {mesh: {key: str(path)}}


@pytest.mark.parametrize("mesh", ["istio", "linkerd", "istio-ambient"])
@pytest.mark.long
def test_saturation_at_the_load_the_proxy_cost_predicts(mesh: str, tmp_path: Any) -> None:
    app_s = 0.0001
    capacity = 1.0 / per_request_cpu_s(mesh, app_s)  # one core
    results = {}
    for fraction in (0.5, 0.85, 1.15):
        doc = scenario(
            meshes=[mesh],
            duration_s=4.0,
            warmup_s=1.0,
            cluster={"nodes": 1, "cores_per_node": 1},
            services=[
                {
                    "name": "server",
                    "replicas": 1,
                    "response_bytes": KIB,
                    "concurrency": 1000,
                    "cpu_ms": {"dist": "constant", "mean": 0.1},
                }
            ],
            workloads=[
                {
                    "name": "load",
                    "target": "server",
                    "arrival": "poisson",
                    "rate_rps": fraction * capacity,
                    "request_bytes": KIB,
                }
            ],
        )
        doc["mesh_options"] = _without_wakeups(tmp_path, mesh)
        run = summary(doc)["runs"][mesh]
        results[fraction] = run
    util = {f: r["nodes"]["node-0"]["utilisation"] for f, r in results.items()}
    # Utilisation = offered load x predicted CPU per request (tolerance 5%: Poisson counts).
    assert util[0.5] == pytest.approx(0.5, rel=0.05)
    assert util[0.85] == pytest.approx(0.85, rel=0.05)
    assert not results[0.5]["saturated"]
    assert not results[0.85]["saturated"]
    assert results[1.15]["saturated"]
    p99 = {f: r["workloads"]["load"]["latency_ms"]["p99"] for f, r in results.items()}
    assert p99[0.5] < p99[0.85] < p99[1.15]


# --------------------------------------------------------------------------- CPU variability


def _model_with_cv(tmp_path: Any, cv: float | None) -> str:
    import yaml

    from meshsim.models import models_dir

    data = yaml.safe_load((models_dir() / "istio-sidecar.yaml").read_text())
    if cv is not None:
        data["parameters"]["request_cpu_cv"] = {
            "value": cv,
            "unit": "ratio",
            "source": "test: a chosen value",
        }
    path = tmp_path / f"sidecar-cv{cv}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _cv_run(model: str) -> dict[str, Any]:
    doc = scenario(
        meshes=["istio"],
        duration_s=5.0,
        warmup_s=0.5,
        cluster={"nodes": 1, "cores_per_node": 1},
        services=[
            {
                "name": "server",
                "replicas": 1,
                "response_bytes": KIB,
                "concurrency": 1000,
                "cpu_ms": {"dist": "constant", "mean": 0.02},
            }
        ],
        workloads=[
            {
                "name": "load",
                "target": "server",
                "arrival": "poisson",
                "rate_rps": 1500.0,
                "request_bytes": KIB,
            }
        ],
    )
    doc["mesh_options"] = {"istio": {"workers": 1, "model": model}}
    return summary(doc)["runs"]["istio"]


def test_request_cpu_cv_absent_or_zero_is_the_fixed_cost(tmp_path: Any) -> None:
    # The optional parameter left out, or 0, gives bit-identical results (no draws taken).
    without = _cv_run(_model_with_cv(tmp_path, None))
    zero = _cv_run(_model_with_cv(tmp_path, 0.0))
    assert without["workloads"] == zero["workloads"]
    assert without["nodes"] == zero["nodes"]


def test_request_cpu_cv_keeps_the_mean_cpu_and_widens_the_tail(tmp_path: Any) -> None:
    fixed = _cv_run(_model_with_cv(tmp_path, None))
    varied = _cv_run(_model_with_cv(tmp_path, 0.8))
    u_fixed = fixed["nodes"]["node-0"]["utilisation"]
    u_varied = varied["nodes"]["node-0"]["utilisation"]
    assert u_varied == pytest.approx(u_fixed, rel=0.05)  # mean-preserving draws
    lat_f, lat_v = (
        fixed["workloads"]["load"]["latency_ms"],
        varied["workloads"]["load"]["latency_ms"],
    )
    assert lat_v["p99"] > 1.15 * lat_f["p99"]
    assert lat_v["p99"] / lat_v["p50"] > lat_f["p99"] / lat_f["p50"]


def test_gamma_factor_has_mean_one_and_the_cv() -> None:
    import numpy as np

    from meshsim.sim.sampling import gamma_factor

    assert gamma_factor(0.0, np.random.default_rng(1)) is None
    f = gamma_factor(0.4, np.random.default_rng(1))
    assert f is not None
    xs = np.array([f() for _ in range(40_000)])
    assert xs.mean() == pytest.approx(1.0, abs=0.01)
    assert xs.std() / xs.mean() == pytest.approx(0.4, abs=0.01)


@pytest.mark.long
def test_grpc_balancing_scenario_shows_what_its_comment_says() -> None:
    """scenarios/grpc-balancing.yaml: under `none` two of the three api pods'
    connections reach one inventory pod (two thirds of the calls, CPU-throttled against its
    limit), one inventory pod idles, and the p99 is about twice Istio's, whose sidecars
    spread the calls (each pod within 10 % of a third)."""
    path = Path(__file__).parent.parent / "scenarios" / "grpc-balancing.yaml"
    doc = load_scenario(path).to_dict()
    # Ambient and Cilium bind as `none` does (the common-random-numbers test above).
    doc["meshes"] = ["none", "istio"]
    doc["duration_s"] = 25.0  # 15 s after the warm-up, not 30: the same bindings and split
    s = summary(doc)

    def inventory_cpu(mesh: str) -> list[float]:
        # A container that ran nothing in the window has no cgroup entry: 0.0 for it.
        cgroups = s["runs"][mesh]["cgroups"]
        return [cgroups.get(f"inventory-v1-{i}/app", {}).get("cpu_vcpu", 0.0) for i in range(3)]

    for mesh in ("none",):
        cpu = sorted(inventory_cpu(mesh))
        assert cpu[0] == 0.0
        assert cpu[2] == pytest.approx(2 * cpu[1], rel=0.1)
    istio_cpu = inventory_cpu("istio")
    assert istio_cpu == pytest.approx([sum(istio_cpu) / 3] * 3, rel=0.1)
    p99 = {m: s["runs"][m]["workloads"]["users"]["latency_ms"]["p99"] for m in s["runs"]}
    assert p99["none"] > 1.7 * p99["istio"]
