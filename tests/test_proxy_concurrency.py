"""Proxy worker threads from CPU limits, as each mesh sizes them (docs/mesh-semantics.md §10):
an Istio sidecar's or waypoint's Envoy gets its container's CPU limit in whole cores, rounded
up (pilot-agent's ISTIO_CPU_LIMIT), or its node's allocatable cores without a limit (the
downward API's fallback); a ProxyConfig concurrency given wins; Linkerd's proxy stays at its
runtime's one worker; the count shows in each cgroup's block of summary.json and in the CLI."""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.resources import (
    ISTIO_PROXY_RESOURCES,
    Quantities,
    Resources,
    envoy_concurrency,
)
from meshsim.sim.engine import Simulation


def _limit(cpu: str | float | None) -> Resources:
    return Resources(limits=Quantities(cpu=cpu))


@pytest.mark.parametrize(
    ("cpu", "workers"),
    [("2000m", 2), (2, 2), ("2.0", 2), ("500m", 1), ("100m", 1), ("2500m", 3), ("2001m", 3),
     (6.5, 7), ("1.1", 2), ("3", 3)],
)  # fmt: skip
def test_a_cpu_limit_gives_its_whole_cores_rounded_up(cpu: str | float, workers: int) -> None:
    # Istio's own examples: 500m -> 1, 2500m -> 3, 6500m -> 7 (pilot-agent's config.go).
    assert envoy_concurrency(_limit(cpu), allocatable_cpu_m=64_000.0) == workers


def test_without_a_limit_the_node_allocatable_cores() -> None:
    no_limit = Resources(requests=Quantities(cpu="100m"))
    assert envoy_concurrency(no_limit, allocatable_cpu_m=4000.0) == 4
    assert envoy_concurrency(no_limit, allocatable_cpu_m=3500.0) == 4
    assert envoy_concurrency(ISTIO_PROXY_RESOURCES, allocatable_cpu_m=64_000.0) == 2


def _doc(mesh: str, mesh_options: dict[str, Any], **cluster: Any) -> dict[str, Any]:
    return {
        "meshsim": 1, "name": "concurrency", "duration_s": 2, "warmup_s": 1, "meshes": [mesh],
        "cluster": {"nodes": 1, "cores_per_node": 8, **cluster},
        "services": [
            {"name": "default", "calls": [{"service": "tight"}]},
            {"name": "tight", "calls": [{"service": "wide"}],
             "proxy_resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}},
            {"name": "wide", "calls": [{"service": "free"}],
             "proxy_resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "2500m"}}},
            {"name": "free", "proxy_resources": {"requests": {"cpu": "100m"}}},
        ],
        "mesh_options": {"meshed_clients": True, **mesh_options},
        "workloads": [{"name": "w", "target": "default", "rate_rps": 50}],
    }  # fmt: skip


def _workers(sim: Simulation) -> dict[str, int]:
    return {p.name: sum(int(w.res.capacity) for w in p.workers) for p in sim.data_plane.proxies}


def test_each_istio_sidecar_follows_its_own_cpu_limit() -> None:
    sim = Simulation(from_dict(_doc("istio", {})), "istio", 1)
    sim.run()  # a meshed client's sidecar starts with its first request
    workers = _workers(sim)
    assert workers["default-v1-0/sidecar"] == 2  # global.proxy.resources: limit 2000m
    assert workers["tight-v1-0/sidecar"] == 1
    assert workers["wide-v1-0/sidecar"] == 3
    assert workers["free-v1-0/sidecar"] == 8  # no limit: the node's 8 allocatable cores
    assert workers["client/w/sidecar"] == 2  # a meshed client's: the mesh's default
    # Envoy's workers are pinned threads, one per connection (no work stealing).
    tight = next(p for p in sim.data_plane.proxies if p.name == "wide-v1-0/sidecar")
    assert [int(w.res.capacity) for w in tight.workers] == [1, 1, 1]


def test_the_node_allocatable_not_its_cores_without_a_limit() -> None:
    doc = _doc("istio", {}, allocatable={"cpu": "6500m"})
    assert _workers(Simulation(from_dict(doc), "istio", 1))["free-v1-0/sidecar"] == 7


def test_a_mesh_wide_limit_and_a_given_concurrency() -> None:
    limited = {"istio": {"proxy_resources": {"limits": {"cpu": "1"}}}}
    sim = Simulation(from_dict(_doc("istio", limited)), "istio", 1)
    sim.run()
    workers = _workers(sim)
    assert (workers["default-v1-0/sidecar"], workers["client/w/sidecar"]) == (1, 1)
    assert workers["tight-v1-0/sidecar"] == 1  # a pod's own resources still win
    given = {"istio": {"workers": 4}}  # ProxyConfig concurrency: every sidecar, any limit
    assert set(_workers(Simulation(from_dict(_doc("istio", given)), "istio", 1)).values()) == {4}


def test_linkerd_keeps_its_runtime_workers() -> None:
    # linkerd2-proxy's cores come from runtime.workers (1), not from its CPU limit.
    workers = _workers(Simulation(from_dict(_doc("linkerd", {})), "linkerd", 1))
    assert set(workers.values()) == {1}


def test_a_waypoint_follows_its_cpu_limit() -> None:
    def waypoint(ambient: dict[str, Any]) -> int:
        doc = _doc("istio-ambient", {"istio-ambient": {"waypoints": ["tight"], **ambient}})
        return _workers(Simulation(from_dict(doc), "istio-ambient", 1))["tight/waypoint"]

    assert waypoint({}) == 2  # global.waypoint.resources: limit 2000m
    assert waypoint({"waypoint_resources": {"limits": {"cpu": "200m"}}}) == 1
    assert waypoint({"waypoint_resources": {"requests": {"cpu": "100m"}}}) == 8
    assert waypoint({"waypoint_resources": {"limits": {"cpu": "200m"}}, "waypoint_workers": 3}) == 3


def test_the_threads_are_in_the_summary_and_the_cli(cgroups_text: Any) -> None:
    doc = _doc("istio", {}, scheduler="cfs")
    summary = dict(build_summary(run_scenario(from_dict(doc))))
    cgroups = summary["runs"]["istio"]["cgroups"]
    assert cgroups["tight-v1-0/sidecar"]["threads"] == 1
    assert cgroups["wide-v1-0/sidecar"]["threads"] == 3
    assert cgroups["default-v1-0/app"]["threads"] == 64  # the app's concurrency (default 64)
    assert cgroups["free-v1-0/sidecar"]["threads"] == 8
    assert cgroups["client/w/sidecar"]["threads"] == 2
    lines = cgroups_text(summary).splitlines()
    header = next(line for line in lines if "container" in line)
    assert "threads" in header
    assert "every pod Burstable" in " ".join(lines[:2])  # one QoS class: in the title
    tight = next(line for line in lines if "tight-v1-0/sidecar" in line).split()
    assert tight[2:4] == ["500m", "1"]  # limit, threads


def test_each_injector_combines_a_pods_resources_with_the_meshs_its_own_way() -> None:
    from meshsim.scenario.options import MeshOptions

    opts = MeshOptions.model_validate(
        {"linkerd": {"proxy_resources": {"requests": {"cpu": "100m", "memory": "20Mi"},
                                         "limits": {"memory": "250Mi"}}}}
    )  # fmt: skip
    pod = Resources(limits=Quantities(cpu="1"))
    # Istio: one annotation and global.proxy.resources is gone (only the annotated values)
    assert opts.sidecar_resources("istio", pod) == pod
    # Linkerd: each annotation over its own field of the chart's proxy.resources
    merged = opts.sidecar_resources("linkerd", pod)
    assert (merged.requests.cpu, merged.requests.memory) == ("100m", "20Mi")
    assert (merged.limits.cpu, merged.limits.memory) == ("1", "250Mi")
    assert opts.sidecar_resources("linkerd", None) == opts.linkerd.proxy_resources


def test_a_merge_kubernetes_would_refuse_is_named_by_its_field() -> None:
    from meshsim.errors import ScenarioError

    doc = _doc("linkerd", {"linkerd": {"proxy_resources": {"requests": {"cpu": "800m"}}}})
    # A limit alone on the pod, under a mesh-wide 800m request: the merge asks 800m of 500m.
    doc["services"][3]["proxy_resources"] = {"limits": {"cpu": "500m"}}
    with pytest.raises(ScenarioError) as err:
        from_dict(doc)
    text = str(err.value)
    assert "services[3].proxy_resources" in text
    assert "requests.cpu '800m' is above limits.cpu '500m'" in text
    doc["meshes"] = ["istio"]  # Istio's injector drops the mesh's values: nothing to refuse
    from_dict(doc)
