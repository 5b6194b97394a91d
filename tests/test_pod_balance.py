"""How a service's pods shared its requests: summary.json's ``pods`` block, the CLI's and the
report's "Uneven pods", and the finding that names them."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from cli.render import summary_renderable, uneven_pods_table
from meshsim.api import run_scenario
from meshsim.report.findings import uneven_balance
from meshsim.results.summary import build_summary, shares_text, uneven_pods
from meshsim.scenario import from_dict


def grpc_scenario(meshes: list[str]) -> dict[str, Any]:
    """One caller pod, a gRPC service of three pods, which gains two pods at 2 s."""
    return {
        "meshsim": 1, "name": "balance", "seed": 3, "duration_s": 6.0, "warmup_s": 1.0,
        "meshes": meshes, "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [
            {"name": "web", "replicas": 1, "calls": [{"service": "api"}],
             "cpu_ms": {"dist": "constant", "mean": 0.2}},
            {"name": "api", "replicas": 3, "protocol": "grpc",
             "cpu_ms": {"dist": "constant", "mean": 0.5}},
        ],
        "workloads": [{"name": "load", "target": "web", "rate_rps": 150.0}],
        "events": [{"at_s": 2.0, "action": "scale", "target": "api", "replicas": 5}],
        "mesh_options": {"meshed_clients": True},
    }  # fmt: skip


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    return dict(build_summary(run_scenario(from_dict(grpc_scenario(["none", "istio"])))))


def test_each_pods_requests_add_up_to_its_services(summary: dict[str, Any]) -> None:
    for run in summary["runs"].values():
        pods = run["pods"]
        assert list(pods) == ["web-v1-0", "api-v1-0", "api-v1-1", "api-v1-2", "api-v1-3",
                              "api-v1-4"]  # fmt: skip
        for service in ("web", "api"):
            mine = [p for p in pods.values() if p["service"] == service]
            assert sum(p["requests"] for p in mine) == run["services"][service]["requests"]
            assert sum(p["app_cpu_vcpu"] for p in mine) == pytest.approx(
                run["app_cpu_vcpu"][service], rel=1e-12
            )
        # The two pods the scale-up added at 2 s did not serve the whole window.
        assert [p["whole_window"] for p in pods.values()] == [True] * 4 + [False] * 2


def test_an_l4_balancer_shows_as_uneven_pods_and_a_sidecar_does_not(
    summary: dict[str, Any],
) -> None:
    """Under `none` the one caller's gRPC connection sends every call to one of the three
    pods there from the start (exact: shares 1 and 0); Istio's sidecar spreads them (and the
    pods added later, out of the comparison, take calls too)."""
    (none,) = uneven_pods(summary["runs"]["none"]["pods"])
    assert none[0] == "api v1"
    assert sorted(none[1]) == [0.0, 0.0, 1.0]
    assert uneven_pods(summary["runs"]["istio"]["pods"]) == []
    added = [p for n, p in summary["runs"]["istio"]["pods"].items() if n >= "api-v1-3"]
    assert all(p["requests"] > 0 for p in added)

    table = uneven_pods_table(summary)
    assert table is not None
    out = io.StringIO()
    Console(file=out, width=120).print(summary_renderable(summary))
    text = out.getvalue()
    assert "Uneven pods" in text
    shares = " / ".join("100" if s == 1.0 else "0" for s in none[1])
    rows = [line.split() for line in text.splitlines() if "api v1" in line]
    assert rows == [["none", "api", "v1", *shares.split()]]


def test_uneven_pods_compares_within_a_version_among_pods_of_the_whole_window() -> None:
    def pod(service: str, version: str, requests: float, whole: bool = True) -> dict[str, Any]:
        return {"service": service, "version": version, "requests": requests,
                "app_cpu_vcpu": 0.0, "whole_window": whole}  # fmt: skip

    pods = {
        # a traffic split across versions (90/10) is not unevenness
        "a-v1-0": pod("a", "v1", 900), "a-v2-0": pod("a", "v2", 100),
        # 150 against 100: exactly the threshold
        "b-v1-0": pod("b", "v1", 150), "b-v1-1": pod("b", "v1", 100),
        # 149 against 100: even
        "c-v1-0": pod("c", "v1", 149), "c-v1-1": pod("c", "v1", 100),
        # a pod rolled out mid-window is left out, leaving one pod: nothing to compare
        "d-v1-0": pod("d", "v1", 10, whole=False), "d-v1-1": pod("d", "v1", 500),
    }  # fmt: skip
    assert uneven_pods(pods) == [("b v1", [0.6, 0.4])]


def test_the_finding_names_the_meshes_that_share_a_spread_and_the_even_ones() -> None:
    def pods(a: float, b: float) -> dict[str, Any]:
        return {"pods": {
            "s-v1-0": {"service": "s", "version": "v1", "requests": a, "app_cpu_vcpu": 0.0,
                       "whole_window": True},
            "s-v1-1": {"service": "s", "version": "v1", "requests": b, "app_cpu_vcpu": 0.0,
                       "whole_window": True},
        }}  # fmt: skip

    runs = {"none": pods(3, 1), "istio": pods(1, 1), "cilium": pods(3, 1),
            "linkerd": pods(1, 3)}  # fmt: skip
    (f,) = uneven_balance(runs)
    assert f.topic == "balance"
    assert f.text.startswith(
        "s v1's pods took 75 / 25 % of its requests under none and cilium; 25 / 75 % under "
        "linkerd; evenly under istio ("
    )
    assert f.size == pytest.approx(0.5)  # the busiest pod at 1.5 times its even share


def test_shares_print_in_per_cent_and_as_a_range_beyond_six_pods() -> None:
    assert shares_text([2 / 3, 1 / 3, 0.0]) == "67 / 33 / 0"
    assert shares_text([0.3, *[0.1] * 7]) == "8 pods, 10..30"
