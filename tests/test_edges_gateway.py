"""Ingress gateways (issue 15, step 2): the Istio ingress gateway's model file, its anchor on
the Istio benchmark shape, TLS termination from the client population, and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsim.errors import ScenarioError
from meshsim.models import load_model
from meshsim.scenario import from_dict, load_scenario
from meshsim.sim.engine import Simulation

GATEWAY = "istio-ingressgateway"


def shape(duration_s: float, **changes: Any) -> dict[str, Any]:
    """Istio's benchmark shape (benchmarks/istio_benchmark_shape.py) entering through one
    gateway replica instead of a meshed client."""
    workload: dict[str, Any] = {
        "name": "fortio", "target": "fortio-server", "arrival": "poisson", "rate_rps": 1000.0,
        "request_bytes": 1024, "connections": 16, "via": "ingress",
    }  # fmt: skip
    gateway: dict[str, Any] = {
        "name": "ingress", "replicas": 1, "routes": [{"service": "fortio-server"}],
    }  # fmt: skip
    workload.update(changes.pop("workload", {}))
    gateway.update(changes.pop("gateway", {}))
    return {
        "meshsim": 1, "name": "gw-shape", "seed": 1, "duration_s": duration_s,
        "warmup_s": 2.0, "meshes": ["istio"], "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [{"name": "fortio-server", "replicas": 1, "response_bytes": 1024,
                      "cpu_ms": {"dist": "constant", "mean": 0.05}}],
        "workloads": [workload], "gateways": [gateway],
        "mesh_options": {"istio": {"workers": 2, "mtls": "STRICT"}},
        **changes,
    }  # fmt: skip


def run(data: dict[str, Any], mesh: str = "istio") -> Any:
    scenario = from_dict(data)
    sim = Simulation(scenario, mesh, scenario.seed)
    sim.run()
    return sim.measure()


def gateway_proxy(m: Any) -> Any:
    (proxy,) = [p for p in m.proxies if p.kind == "gateway"]
    return proxy


# --------------------------------------------------------------------------- model file


def test_gateway_model_anchor_is_an_accounting_identity() -> None:
    m = load_model(GATEWAY)
    a = m.anchor
    assert a is not None
    assert m.kind == "envoy-sidecar"
    assert m.value("tls_legs") == 2
    per_request = sum(m.request_cpu_us(a.request_bytes, a.response_bytes, mtls=a.mtls))
    # The sidecar's Envoy (110 us) plus the clients' TLS leg (2 KiB x 0.611 us).
    assert per_request == pytest.approx(111.222)
    got = m.vcpu_per_1000rps(
        a.request_bytes, a.response_bytes, mtls=a.mtls, wakeups_per_request=a.wakeups_per_request
    )
    assert got == pytest.approx(a.vcpu_per_1000rps, rel=0.005)
    mem = m.memory_mb(a.connections, a.clusters, a.endpoints, tls_connections=a.tls_connections)
    assert mem == pytest.approx(a.memory_mb, rel=0.005)
    for name, p in m.parameters.items():
        assert p.range is not None, name
        assert p.range.source.strip(), name
        assert p.range.low <= p.value <= p.range.high, name


def test_gateway_hop_reproduces_its_anchor_on_the_benchmark_shape() -> None:
    m = run(shape(12.0))
    proxy = gateway_proxy(m)
    anchor = load_model(GATEWAY).anchor
    assert anchor is not None
    rps = m.workloads["fortio"].requests / m.window_s
    vcpu_per_1000 = proxy.cpu_s / m.window_s / (rps / 1000.0)
    # Poisson arrivals: the wake-ups per request vary with the draw; 3 % covers it.
    assert vcpu_per_1000 == pytest.approx(anchor.vcpu_per_1000rps, rel=0.03)
    wakeups = sum(w.wakeups for w in proxy.workers) / sum(w.requests for w in proxy.workers)
    assert wakeups == pytest.approx(anchor.wakeups_per_request, abs=0.1)
    assert m.workloads["fortio"].errors == 0
    assert m.topology["gateways"]["ingress"]["requests"] == m.workloads["fortio"].requests


# --------------------------------------------------------------------------- TLS termination


def test_tls_termination_costs_one_handshake_per_connection_of_the_population() -> None:
    low = {"arrival": "constant", "rate_rps": 100.0, "connections": 1}
    plain = run(shape(12.0, workload=low))
    tls = run(shape(12.0, workload=low, gateway={"tls": {"requests_per_connection": 10}}))
    block = tls.topology["gateways"]["ingress"]
    requests = block["requests"]
    assert requests == plain.topology["gateways"]["ingress"]["requests"]
    assert requests == pytest.approx(1000, abs=1)  # 10 s at 100 rps
    # One connection at a time (100 rps, ~1 ms each): a new one every 10th request.
    assert block["tls_handshakes"] == pytest.approx(requests / 10, abs=1)
    model = load_model(GATEWAY)
    handshake_s = model.handshake_cpu_us("server", mutual=False) * 1e-6
    # X25519 64.65 + RSA-2048 sign 261.81 us: the gateway presents a certificate, the
    # client does not (one-way TLS).
    assert handshake_s == pytest.approx(326.46e-6)
    extra = gateway_proxy(tls).cpu_s - gateway_proxy(plain).cpu_s
    assert extra == pytest.approx(block["tls_handshakes"] * handshake_s, rel=0.01)


@pytest.mark.parametrize(("rate", "replicas"), [(100.0, 2), (1000.0, 3), (5000.0, 5)])
def test_autoscaled_replicas_are_where_an_hpa_on_cpu_settles(rate: float, replicas: int) -> None:
    from meshsim.sim.gateways import hpa_replicas

    data = shape(3.0, workload={"rate_rps": rate}, gateway={"autoscale": {}})
    sim = Simulation(from_dict(data), "istio", 1)
    # 0.198 vCPU per 1000 rps (the anchor) against 80 % of a 100m request per replica:
    # 100 rps needs 0.25 replica (min 2), 1000 rps 2.48 (3), 5000 rps 12.4 (max 5).
    spec = sim.scenario.gateways[0]
    assert hpa_replicas(sim, spec, load_model(GATEWAY)) == replicas
    assert len(sim.gateways.by_name["ingress"].proxies) == replicas  # type: ignore[union-attr]


def test_linkerd_run_says_its_ingress_is_not_modelled() -> None:
    m = run(shape(4.0), mesh="linkerd")
    assert any("ingress is not modelled yet" in w for w in m.warnings)
    assert not [p for p in m.proxies if p.kind == "gateway"]
    assert m.workloads["fortio"].errors == 0


def test_ingress_bookinfo_scenario_runs_through_the_gateway() -> None:
    scenario = load_scenario(Path(__file__).parent.parent / "scenarios" / "ingress-bookinfo.yaml")
    scenario = scenario.model_copy(update={"duration_s": 8.0})
    sim = Simulation(scenario, "istio", scenario.seed)
    sim.run()
    m = sim.measure()
    gw = m.topology["gateways"]["public"]
    assert gw["replicas"] == 2
    assert gw["requests"] == m.workloads["users"].requests
    assert gw["tls_handshakes"] == pytest.approx(gw["requests"] / 20, abs=4)
    assert m.workloads["users"].errors == 0


# --------------------------------------------------------------------------- bad input


BASE = """\
meshsim: 1
name: shop
duration_s: 10
services:
  - name: front
    cpu_ms: 1
workloads:
  - {name: users, target: front, rate_rps: 10, via: public}
gateways:
  - name: public
"""


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    path = tmp_path / "shop.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    return info.value


def test_a_gateway_with_no_route_names_file_and_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, BASE)
    (problem,) = err.problems
    assert problem.field == "gateways[0].routes"
    assert problem.message == "gateway 'public' has no route: give at least one {service: ...}"
    assert problem.line == 10


def test_routes_and_via_must_name_what_exists(tmp_path: Path) -> None:
    text = BASE + "    routes: [{service: frnt}]\n"
    err = error_of(tmp_path, text)
    fields = {p.field: p for p in err.problems}
    assert (
        "no service named 'frnt'; did you mean 'front'?"
        in fields["gateways[0].routes[0].service"].message
    )
    assert "gateway 'public' has no route to 'front'" in fields["workloads[0].target"].message
    text = BASE.replace("via: public", "via: pubic") + "    routes: [{service: front}]\n"
    (problem,) = error_of(tmp_path, text).problems
    assert problem.field == "workloads[0].via"
    assert "no gateway named 'pubic'; did you mean 'public'?" in problem.message
    assert problem.line == 8
