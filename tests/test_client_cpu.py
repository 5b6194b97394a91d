"""The workload's optional client_cpu_ms: the client's own CPU on its meshed pod's node."""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict


def _doc(client_cpu: float | None, meshed: bool = True) -> dict[str, Any]:
    workload: dict[str, Any] = {
        "name": "load",
        "target": "echo",
        "arrival": "poisson",
        "rate_rps": 2000.0,
        "connections": 8,
    }
    if client_cpu is not None:
        workload["client_cpu_ms"] = client_cpu
    return {
        "meshsim": 1,
        "name": "client-cpu",
        "seed": 3,
        "duration_s": 2.0,
        "warmup_s": 0.2,
        "meshes": ["istio"],
        "cluster": {"nodes": 2, "cores_per_node": 1},
        "services": [{"name": "echo", "replicas": 1, "concurrency": 1, "cpu_ms": 0.05}],
        "workloads": [workload],
        "mesh_options": {"meshed_clients": meshed, "istio": {"workers": 1}},
    }


def _run(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    return out


def test_client_cpu_queues_the_client_sidecar() -> None:
    base = _run(_doc(None))["workloads"]["load"]["latency_ms"]
    # 0.3 ms per request at 2000 rps keeps the client node 60% busy with the client alone.
    busy = _run(_doc(0.3))["workloads"]["load"]["latency_ms"]
    assert busy["p50"] > base["p50"]
    assert busy["p99"] > base["p99"]


def test_client_cpu_is_ignored_without_meshed_clients() -> None:
    a = _run(_doc(None, meshed=False))["workloads"]["load"]["latency_ms"]
    b = _run(_doc(0.3, meshed=False))["workloads"]["load"]["latency_ms"]
    assert a == b


def test_client_cpu_takes_the_number_shorthand() -> None:
    sc = from_dict(_doc(0.3))
    assert sc.workloads[0].client_cpu_ms is not None


def test_client_cpu_is_on_the_requests_path() -> None:
    # Constant arrivals 10 ms apart: nothing queues, so each request is slower by exactly
    # the client's CPU (half before sending, half after the response).
    def p50(client_cpu: float | None) -> float:
        doc = _doc(client_cpu)
        doc["workloads"][0].update({"arrival": "constant", "rate_rps": 100.0})
        value: float = _run(doc)["workloads"]["load"]["latency_ms"]["p50"]
        return value

    # The half after the response waits for the core while the client's sidecar finishes
    # its telemetry (46.4 us in models/istio-sidecar.yaml), which holds the core right after
    # the response; the rest is within the histogram's 2 % buckets (~0.03 ms at ~1.5 ms).
    from meshsim.models import default_model

    telemetry_ms = default_model("envoy-sidecar").value("telemetry_us") / 1000.0
    assert p50(1.0) - p50(None) == pytest.approx(1.0 + telemetry_ms, abs=0.03)


@pytest.mark.parametrize(("threads", "capacity_rps"), [(1, 2500.0), (2, 5000.0)])
def test_the_clients_threads_bound_its_throughput(threads: int, capacity_rps: float) -> None:
    """0.4 ms of client CPU per request is 2500 requests/s per thread. At 3000 rps on a
    two-core client node (the sidecar needs about a third of a core more) one thread is the
    bottleneck and completes at most its 2500, while two threads keep up with the load."""
    doc = _doc(0.4)
    doc["cluster"]["cores_per_node"] = 2
    doc["workloads"][0].update({"rate_rps": 3000.0, "client_threads": threads, "connections": 64})
    rps = _run(doc)["workloads"]["load"]["achieved_rps"]
    assert rps == pytest.approx(min(3000.0, capacity_rps), rel=0.03)


def test_without_a_mesh_a_meshed_client_spends_its_cpu_on_its_pods_node() -> None:
    # Under `none`, meshed_clients puts the client in the same pod without a proxy: its CPU
    # is on the request's path (constant arrivals 10 ms apart, nothing queues), where before
    # it was ignored and the no-mesh baseline had the client's CPU for free.
    def p50(client_cpu: float | None) -> float:
        doc = _doc(client_cpu)
        doc["meshes"] = ["none"]
        doc["workloads"][0].update({"arrival": "constant", "rate_rps": 100.0})
        summary = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]
        value: float = summary["workloads"]["load"]["latency_ms"]["p50"]
        return value

    assert p50(1.0) - p50(None) == pytest.approx(1.0, abs=0.03)
