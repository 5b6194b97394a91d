"""Gateways' requests and limits (``gateways[].resources``): Istio's gateway chart's by default,
an Envoy whose workers follow its CPU limit, a CPU limit that throttles the gateway's pods
under either scheduler, ingress-nginx's chart's for Linkerd's ingress controller, the HPA's
CPU request given once, and a memory limit that the run says it does not enforce."""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.resources import INGRESS_NGINX_RESOURCES, ISTIO_GATEWAY_RESOURCES
from meshsim.sim.cpu.cgroups import resources_of
from meshsim.sim.engine import Simulation
from meshsim.sim.gateways import spec_request_m

WINDOW_S = 6.0


def _doc(gateway: dict[str, Any], *, scheduler: str = "cfs", rps: float = 2000.0) -> dict[str, Any]:
    return {
        "meshsim": 1, "name": "gw-resources", "seed": 3, "duration_s": 2 + WINDOW_S,
        "warmup_s": 2, "meshes": ["istio", "linkerd"],
        "cluster": {"nodes": 2, "cores_per_node": 4, "scheduler": scheduler},
        "services": [{"name": "web", "cpu_ms": {"dist": "constant", "mean": 0.05},
                      "concurrency": 16}],
        "gateways": [{"name": "ingress", "replicas": 1, "routes": [{"service": "web"}],
                      **gateway}],
        "workloads": [{"name": "users", "target": "web", "via": "ingress",
                       "arrival": "poisson", "rate_rps": rps, "connections": 32}],
    }  # fmt: skip


def _proxies(sim: Simulation) -> dict[str, Any]:
    return {p.name: p for p in sim.data_plane.proxies if p.kind == "gateway"}


def _workers(proxy: Any) -> int:
    return sum(int(w.res.capacity) for w in proxy.workers)


def test_the_defaults_are_the_charts() -> None:
    sim = Simulation(from_dict(_doc({})), "istio", 1)
    gw = _proxies(sim)["gateway/ingress-0"]
    assert resources_of(gw, sim.scenario, "istio") == ("gateway/ingress-0", ISTIO_GATEWAY_RESOURCES)
    assert _workers(gw) == 2  # 2000m
    sim = Simulation(from_dict(_doc({})), "linkerd", 1)
    pod = _proxies(sim)
    nginx, sidecar = pod["ingress/ingress-0/controller"], pod["ingress/ingress-0/linkerd-proxy"]
    assert resources_of(nginx, sim.scenario, "linkerd")[1] == INGRESS_NGINX_RESOURCES
    assert resources_of(sidecar, sim.scenario, "linkerd")[1].limits.cpu is None


def test_the_envoy_workers_follow_the_cpu_limit() -> None:
    half = {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}}
    sim = Simulation(from_dict(_doc(half)), "istio", 1)
    assert _workers(_proxies(sim)["gateway/ingress-0"]) == 1
    free = {"resources": {"requests": {"cpu": "100m"}}}
    sim = Simulation(from_dict(_doc(free)), "istio", 1)
    assert _workers(_proxies(sim)["gateway/ingress-0"]) == 4  # the node's allocatable cores


@pytest.mark.parametrize("scheduler", ["fcfs", "cfs"])
def test_a_tight_cpu_limit_throttles_the_gateway(scheduler: str) -> None:
    # At 2000 rps the gateway's Envoy uses about 0.25 core: a 100m limit binds every period.
    tight = {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}}
    summary = dict(build_summary(run_scenario(from_dict(_doc(tight, scheduler=scheduler)))))
    istio = summary["runs"]["istio"]
    gw = istio["cgroups"]["gateway/ingress-0"]
    assert (gw["cpu_limit_m"], gw["threads"]) == (100.0, 1)
    assert gw["cpu_vcpu"] == pytest.approx(0.1, rel=0.03)  # held at its quota
    assert gw["throttled_share"] > 0.9
    free = dict(build_summary(run_scenario(from_dict(_doc({}, scheduler=scheduler)))))
    p99 = istio["workloads"]["users"]["latency_ms"]["p99"]
    assert p99 > 5 * free["runs"]["istio"]["workloads"]["users"]["latency_ms"]["p99"]
    nginx = summary["runs"]["linkerd"]["cgroups"]["ingress/ingress-0/controller"]
    assert nginx["cpu_limit_m"] == 100.0
    assert nginx["throttled_share"] > 0.5


def test_the_hpa_divides_by_the_containers_request() -> None:
    given = {"autoscale": {"min_replicas": 1, "max_replicas": 9},
             "resources": {"requests": {"cpu": "250m"}}}  # fmt: skip
    spec = from_dict(_doc(given)).gateways[0]
    assert spec_request_m(spec) == 250.0
    assert spec_request_m(from_dict(_doc({"autoscale": {}})).gateways[0]) == 100.0
    clash = {"autoscale": {"cpu_request_m": 200}, "resources": {"requests": {"cpu": "250m"}}}
    with pytest.raises(ScenarioError) as err:
        from_dict(_doc(clash))
    text = str(err.value)
    assert "gateways[0]" in text
    assert "disagree" in text


def test_a_memory_limit_is_said_to_be_unenforced() -> None:
    capped = {"resources": {"limits": {"cpu": "2", "memory": "64Mi"}}}
    summary = dict(build_summary(run_scenario(from_dict(_doc(capped, rps=100.0)))))
    for mesh in ("istio", "linkerd"):
        warnings = " ".join(summary["runs"][mesh]["warnings"])
        assert "'ingress' has a memory limit, which is not enforced" in warnings
