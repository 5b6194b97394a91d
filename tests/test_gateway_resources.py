"""Gateways' requests and limits (``gateways[].resources``): Istio's gateway chart's by default,
an Envoy whose workers follow its CPU limit, a CPU limit that throttles the gateway's pods
under either scheduler, ingress-nginx's chart's for Linkerd's ingress controller, the HPA's
CPU request given once, and a memory limit that the run says it does not enforce."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from meshsim.api import run_scenario
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.resources import INGRESS_NGINX_RESOURCES, ISTIO_GATEWAY_RESOURCES
from meshsim.sim.app import is_success
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
@pytest.mark.long
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


def _oom_doc(limit: str, replicas: int = 2) -> dict[str, Any]:
    doc = _doc({"replicas": replicas, "resources": {"limits": {"cpu": "2", "memory": limit}}},
               rps=200.0)  # fmt: skip
    # The first check kills at 1 s, inside the window; CrashLoopBackOff brings the replicas
    # back at 11 s, where that instant's check finds them over the limit again (the next
    # backoff, 20 s, outlasts the run).
    return doc | {"duration_s": 14.0, "warmup_s": 0.5}


def test_a_gateway_past_its_memory_limit_is_oom_killed() -> None:
    # Istio's gateway Envoy is modelled at 58.6 MiB here; Linkerd's NGINX at 89.1 MiB.
    summary = dict(build_summary(run_scenario(from_dict(_oom_doc("40Mi")))))
    istio = summary["runs"]["istio"]
    for i in (0, 1):
        assert istio["cgroups"][f"gateway/ingress-{i}"]["oom_kills"] == 2
    users = istio["workloads"]["users"]
    # Up only from 0.5 s (the window's start) to the kill at 1 s: 0.5 s of the 13.5 s window.
    assert users["success_rate"] == pytest.approx(0.5 / 13.5, abs=0.01)
    timeline = " ".join(e["event"] for e in istio["timeline"])
    assert "OOM kill of gateway/ingress-0 (memory limit)" in timeline
    assert "gateway/ingress-0 restarted (after an OOM kill)" in timeline
    linkerd = summary["runs"]["linkerd"]
    assert linkerd["cgroups"]["ingress/ingress-0/controller"]["oom_kills"] == 2
    assert linkerd["workloads"]["users"]["success_rate"] == pytest.approx(0.5 / 13.5, abs=0.01)


def test_a_replica_down_leaves_the_balancer_until_it_is_back() -> None:
    """Replica 0 killed at 3 s and back at 5 s (as the OOM watch does it): the requests sent
    meanwhile all go to replica 1 and succeed; those inside replica 0 at 3 s are reset."""
    doc = _doc({"replicas": 2}, rps=500.0) | {"duration_s": 7.0, "warmup_s": 1.0}
    sim = Simulation(from_dict(doc), "istio", 1, keep_records=True)
    assert sim.gateways is not None
    first, second = (_proxies(sim)[f"gateway/ingress-{i}"] for i in (0, 1))
    served: dict[str, tuple[int, int]] = {}

    killed_at: list[float] = []
    balancers: dict[str, int] = {}

    def drill() -> Generator[simpy.Event, Any, None]:
        yield sim.env.timeout(3.0)
        while not any(w.res.count for w in first.workers):  # a request inside replica 0
            yield sim.env.timeout(20e-6)
        assert sim.gateways is not None
        sim.gateways.proxy_down(first)
        killed_at.append(sim.env.now)
        served["down"] = (per_request(first), per_request(second))
        yield sim.env.timeout(2.0)
        served["up"] = (per_request(first), per_request(second))
        balancers["before"] = len(first._clusters)
        sim.gateways.proxy_up(first)
        balancers["after"] = len(first._clusters)  # a fresh Envoy: no balancer state

    sim.env.process(drill())
    sim.run()
    (down0, down1), (up0, up1) = served["down"], served["up"]
    # Nothing new reached the killed replica (the requests inside it at the kill, one per
    # worker at most, end their burst there and then fail).
    assert 0 <= up0 - down0 <= 2
    assert up1 - down1 == pytest.approx(2.0 * 500.0, rel=0.1)  # the other took it all
    assert (balancers["before"], balancers["after"]) == (1, 0)
    kill = killed_at[0]
    records = [r for r in sim.measure().records or [] if r.kind == "workload"]
    inside = [r.status for r in records if r.started_at <= kill < r.finished_at]
    assert any(not is_success(s) for s in inside)  # lost with the replica
    after = [r.status for r in records if r.started_at > kill]
    assert len(after) > 1500
    assert all(is_success(s) for s in after)


def per_request(proxy: Any) -> int:
    return sum(w.requests for w in proxy.workers)
