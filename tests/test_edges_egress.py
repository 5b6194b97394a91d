"""Egress (issue 15, step 3): calls to external hosts (ServiceEntry), their answer time and
errors, and Istio's egress gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsim.errors import ScenarioError
from meshsim.scenario import load_scenario
from meshsim.scenario.loader import loads
from meshsim.sim.engine import Simulation

BASE = """\
meshsim: 1
name: egress
seed: 2
duration_s: 11
warmup_s: 1
cluster: {nodes: 2, cores_per_node: 4}
services:
  - name: checkout
    replicas: 2
    cpu_ms: {dist: constant, mean: 0.5}
    calls: [{service: payments}]
  - name: payments
    replicas: 0
    response_bytes: 500
    external: {latency_ms: 40, error_rate: 0.05, egress_gateway: true}
workloads:
  - {name: users, target: checkout, arrival: constant, rate_rps: 100, connections: 8}
"""


def run(text: str, mesh: str) -> Simulation:
    scenario = loads(text)
    sim = Simulation(scenario, mesh, scenario.seed)
    sim.run()
    return sim


def test_external_host_answers_after_its_latency_with_its_errors() -> None:
    sim = run(BASE, "none")
    m = sim.measure()
    assert m.topology is not None
    block = m.topology["egress"]["payments"]
    assert block["calls"] == m.workloads["users"].requests
    assert block["calls"] == pytest.approx(1000, abs=1)  # 10 s at 100 rps
    # 5 % errors over 1,000 calls: binomial 3-sigma band is +-21.
    assert block["errors"] == pytest.approx(50, abs=21)
    assert m.workloads["users"].errors == block["errors"]  # the call is required
    # The answer time dominates: 40 ms constant plus app CPU and the network.
    p50 = m.workloads["users"].histogram.quantile(0.5) * 1e3
    assert 40.0 < p50 < 42.0


def test_istio_egress_gateway_carries_every_call_and_charges_its_model() -> None:
    sim = run(BASE, "istio")
    m = sim.measure()
    (gw,) = [p for p in m.proxies if p.kind == "gateway"]
    proxy = sim.egress.gateway  # type: ignore[union-attr]
    assert proxy is not None
    requests = sum(w.requests for w in proxy.workers)
    wakeups = sum(w.wakeups for w in proxy.workers)
    assert requests == pytest.approx(1100, abs=1)  # 11 s at 100 rps, warm-up included
    per_request = sum(proxy.costs(1024, 500, True))
    # Every second of CPU is a request's three phases or a wake-up (within 1 %: the last
    # requests' after-response work may still be pending when the run stops).
    assert proxy.cpu_s == pytest.approx(requests * per_request + wakeups * proxy.wakeup_s, rel=0.01)
    assert gw.cpu_s > 0


def test_linkerd_has_no_egress_gateway_and_says_so() -> None:
    sim = run(BASE, "linkerd")
    m = sim.measure()
    assert not [p for p in m.proxies if p.kind == "gateway"]
    assert any("linkerd has no egress gateway" in w for w in m.warnings)


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    path = tmp_path / "egress.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


def test_an_external_service_has_no_pods_and_is_not_a_workload_target(tmp_path: Path) -> None:
    err = error_of(tmp_path, BASE.replace("    replicas: 0\n", ""))
    (problem,) = err.problems
    assert problem.field == "services[1].replicas"
    assert "is external (outside the mesh): set replicas: 0" in problem.message
    assert problem.line == 12  # the service, whose replicas key is missing
    err = error_of(tmp_path, BASE.replace("target: checkout", "target: payments"))
    (problem,) = err.problems
    assert problem.field == "workloads[0].target"
    assert "'payments' is external" in problem.message
