"""meshsim size: the closed forms, pinned to the models' own arithmetic, and the questions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.models import load_model
from meshsim.scenario import load_scenario
from meshsim.sim.controlplane.istiod import steady_state
from meshsim.studies.hop_latency import ProxyLoad, erlang_c, hop_samples_us, pass_wait
from meshsim.studies.sizing import Group, SizingInput, groups_from_scenario, size

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("name", "anchor_vcpu"), [("istio-sidecar", 0.20),
                                                   ("linkerd-proxy", 0.12)])  # fmt: skip
def test_utilisation_with_wakeups_is_the_fixed_point(name: str, anchor_vcpu: float) -> None:
    model = load_model(name)
    load = ProxyLoad(model, 1000.0, 1024, 1024, True, model.worker_threads)
    c = sum(model.request_cpu_us(1024, 1024, mtls=True))
    w, workers, lam = model.wakeup_cpu_us, model.worker_threads, 1000.0 / 1e6
    rho = lam * (c + 2 * w) / (workers + 2 * lam * w)
    assert load.utilisation == pytest.approx(rho, rel=1e-12)
    assert load.utilisation == pytest.approx(lam * (c + 2 * w * (1 - rho)) / workers, rel=1e-12)
    assert load.vcpu == pytest.approx(1000.0 * (c + 2 * (1 - rho) * w) / 1e6, rel=1e-12)
    # the closed form gives back the model's anchor (which the simulator reproduces) within 1 %
    assert load.vcpu == pytest.approx(anchor_vcpu, rel=0.01)
    assert load.max_rps == pytest.approx(workers * 1e6 / c, rel=1e-12)


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: the chance to wait is rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # c = 3, a = 2: (a^3/3!)(3/(3-2)) / (1 + 2 + 2 + 4) = 4 / 9
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(2, 2.5) == 1.0


def test_hop_at_no_load_is_cpu_on_path_wakeups_and_hand_offs() -> None:
    model = load_model("linkerd-proxy")
    assert model.request_cpu_cv == 0
    idle = ProxyLoad(model, 1e-6, 1024, 1024, True, 1)
    req, resp, _ = model.request_cpu_us(1024, 1024, mtls=True)
    expected = 2 * (req + resp + 2 * model.wakeup_cpu_us + 2 * model.hop_latency_us)
    x = hop_samples_us([idle, idle], 2000, 1)
    assert np.allclose(x, expected, rtol=1e-6)
    assert pass_wait(idle).p_wait < 1e-9


def test_mm1_wait_mean_matches_the_closed_form() -> None:
    """One worker, no wake-up cost: each pass waits rho/(mu - lam') on average (M/M/1)."""
    shipped = load_model("linkerd-proxy")
    without = {k: v for k, v in shipped.parameters.items() if k != "wakeup_cpu_us"}
    model = replace(shipped, parameters=MappingProxyType(without))  # an optional parameter
    assert model.wakeup_cpu_us == 0
    load = ProxyLoad(model, 4000.0, 1024, 1024, True, 1)
    s = load.cpu_us / 2  # mean job: half a request's CPU per pass
    lam = 2 * 4000.0 / 1e6
    rho = lam * s
    assert load.utilisation == pytest.approx(rho)
    assert pass_wait(load).mean_us == pytest.approx(rho / (1 / s - lam), rel=1e-12)


def inputs(**kw: Any) -> SizingInput:
    base: dict[str, Any] = {"groups": (Group("all", 20_000.0, 100, 0.5),), "services": 20,
                            "samples": 0, "simulate": "never"}  # fmt: skip
    base.update(kw)
    return SizingInput(**base)


def test_size_is_the_models_arithmetic() -> None:
    istio, linkerd = size(inputs(meshes=("istio", "linkerd"), churn_per_s=2.0))
    sidecar, proxy = load_model("istio-sidecar"), load_model("linkerd-proxy")
    rps = 20_000.0 * 1.5 / 100  # inbound plus outbound through each pod's sidecar
    (line,) = istio.proxies
    assert line.rps_per_proxy == rps
    assert line.cpu_vcpu.value == ProxyLoad(sidecar, rps, 1024, 1024, True, 2).vcpu
    # an unscoped sidecar holds every service and endpoint; 8 connections, half with TLS
    assert line.memory_mb.value == pytest.approx(sidecar.memory_mb(8, 20, 100, tls_connections=4))
    assert istio.cpu_total.value == pytest.approx(100 * line.cpu_vcpu.value)
    assert istio.memory_total_mb.value == pytest.approx(100 * line.memory_mb.value)
    # istiod: 2 pods/s churn, debounced: pushes = max(2 e^{-2 x 0.1}, 1/10) per second
    istiod = load_model("istiod")
    pushes = 2 * math.exp(-2 * istiod.value("debounce_after_ms") / 1e3)
    expected = steady_state(istiod, services=20, proxies=100, endpoints=100, view_services=20,
                            view_endpoints=100, eds_pushes_per_s=pushes, eds_endpoints=5,
                            new_proxies_per_s=2.0)  # fmt: skip
    assert istio.control_plane["cpu_vcpu"].value == pytest.approx(expected["cpu_vcpu"])
    assert istio.control_plane["memory_mb"].value == pytest.approx(expected["memory_mb"])
    # a Linkerd proxy holds what it calls: ceil(0.5) + 1 = 2 services, 10 endpoints
    (lline,) = linkerd.proxies
    assert lline.memory_mb.value == pytest.approx(proxy.memory_mb(8, 2, 10, tls_connections=4))
    cp = load_model("linkerd-control-plane").value
    watches = 100 * 2
    kb = (cp("proxy_kb") * 100 + cp("watch_kb") * watches + cp("service_kb") * 20
          + cp("registry_endpoint_kb") * 100)  # fmt: skip
    assert linkerd.control_plane["memory_mb"].value == pytest.approx(
        cp("base_memory_mb") + kb / 1024
    )
    upkeep = cp("watch_cpu_us_per_s") * watches
    updates = 2.0 * (watches / 20) * (cp("update_cpu_us") + cp("update_endpoint_us"))
    snapshots = 2.0 * 2 * (cp("update_cpu_us") + cp("snapshot_endpoint_us") * 5)
    assert linkerd.control_plane["cpu_vcpu"].value == pytest.approx(
        (upkeep + updates + snapshots) * 1e-6
    )


def test_bands_contain_the_value_and_come_from_the_ranges() -> None:
    (istio,) = size(inputs(meshes=("istio",), samples=16))
    for b in (istio.cpu_total, istio.memory_total_mb, istio.control_plane["memory_mb"]):
        assert b.low <= b.value <= b.high
        assert b.low < b.high
    assert istio.hop_p99_ms is not None
    assert istio.hop_p99_ms.low < istio.hop_p99_ms.high


def test_a_single_worker_proxy_past_its_ceiling_is_saturated_not_a_latency() -> None:
    (linkerd,) = size(inputs(meshes=("linkerd",), groups=(Group("hot", 30_000.0, 2, 0.0),)))
    (line,) = linkerd.proxies
    assert line.saturated
    assert linkerd.hop_p50_ms is None
    assert "saturated" in linkerd.hop_method
    assert "SATURATED" in linkerd.notes[0]


def test_ambient_counts_ztunnels_per_node_and_waypoints() -> None:
    (amb,) = size(inputs(meshes=("istio-ambient",), nodes=10, waypoints=2))
    zt, wp = amb.proxies
    # 20,000 rps arrive at pods, of which 10,000 come from other services: 10,000 enter and
    # cross one ztunnel, 10,000 hops cross two
    assert (zt.kind, zt.count, zt.rps_per_proxy) == ("ztunnel", 10, (10_000 + 2 * 10_000) / 10)
    assert (wp.kind, wp.count, wp.rps_per_proxy) == ("waypoint", 2, 20_000 / 2)


def test_groups_from_the_bookinfo_scenario() -> None:
    groups = groups_from_scenario(load_scenario(ROOT / "scenarios" / "bookinfo.yaml"))
    got = {g.name: (g.rps, g.pods, g.calls) for g in groups}
    assert got == {
        "productpage": (200.0, 2, 2.0),
        "details": (200.0, 1, 0.0),
        "reviews": (200.0, 3, pytest.approx(0.66)),
        "ratings": (pytest.approx(132.0), 1, 0.0),
    }


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["size", *args])


# docs/modern-anchors.md section 9: each user question, asked of meshsim size.
QUESTIONS = {
    "U1": (
        [
            "--rps",
            "5000",
            "--pods",
            "400",
            "--services",
            "40",
            "--node-cores",
            "4",
            "--mesh",
            "istio",
        ],
        ["requested by the sidecars", "nodes of 4 cores"],
    ),
    "U2": (
        [
            "--rps",
            "20000",
            "--pods",
            "4000",
            "--services",
            "300",
            "--mesh",
            "istio",
            "--istiod-replicas",
            "3",
        ],
        ["istiod x3"],
    ),
    "U3": (
        ["--rps", "150000", "--pods", "1500", "--services", "100", "--mesh", "istio"],
        ["vCPU", "MB"],
    ),
    "U4": (
        ["--workload", "api=200:1", "--workload", "api2=4000:1", "--mesh", "istio"],
        ["utilisation"],
    ),
    "U5": (
        [
            "--rps",
            "3000",
            "--pods",
            "1500",
            "--services",
            "200",
            "--churn",
            "5",
            "--mesh",
            "istio",
            "--sidecar-scoping",
        ],
        ["istiod"],
    ),
    "U6": (
        [
            "--rps",
            "1000",
            "--pods",
            "1000",
            "--services",
            "2",
            "--mesh",
            "istio",
            "--istiod-replicas",
            "2",
        ],
        ["istiod x2"],
    ),
    "U7": (
        ["--workload", "checkout=3000:6:2", "--workload", "search=800:2", "--mesh", "istio"],
        ["(checkout)", "(search)"],
    ),
    "U8": (
        [
            "--rps",
            "2000",
            "--pods",
            "40",
            "--services",
            "10",
            "--mesh",
            "istio",
            "--mesh",
            "linkerd",
        ],
        ["== istio", "== linkerd"],
    ),
    "U9": (
        ["--rps", "1000", "--pods", "20", "--services", "5"],
        ["proxy CPU on the path", "queueing"],
    ),
    "U10": (
        ["--rps", "50000", "--pods", "60", "--calls-per-request", "0", "--mesh", "linkerd"],
        ["tops out at"],
    ),
    "U11": (["--rps", "500", "--pods", "10", "--connections", "2000", "--mesh", "linkerd"], ["MB"]),
    "U12": (
        [
            "--rps",
            "500",
            "--pods",
            "2000",
            "--services",
            "100",
            "--churn",
            "20",
            "--mesh",
            "linkerd",
        ],
        ["linkerd destination"],
    ),
    "U13": (
        [
            "--rps",
            "20000",
            "--pods",
            "200",
            "--services",
            "20",
            "--mesh",
            "istio-ambient",
            "--waypoints",
            "3",
            "--nodes",
            "20",
        ],
        ["x waypoint", "x ztunnel"],
    ),
    "U14": (["--rps", "1", "--pods", "1", "--mesh", "istio"], ["MB"]),
}


@pytest.mark.parametrize("question", sorted(QUESTIONS))
def test_each_sizing_question_is_answered(question: str) -> None:
    args, expected = QUESTIONS[question]
    res = run(*args, "--samples", "8", "--simulate", "never")
    assert res.exit_code == 0, res.output
    for text in expected:
        assert text in res.output, (question, text)
    assert "simulate the full scenario: meshsim" in res.output


def test_json_and_the_scenario_route(tmp_path: Path) -> None:
    res = run("--scenario", str(ROOT / "scenarios" / "bookinfo.yaml"), "--json", "--samples", "4",
              "--simulate", "never")  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["simulate"].startswith("meshsim run ")
    assert [p["name"] for p in doc["meshes"]["istio"]["proxies"]] == [
        "productpage",
        "details",
        "reviews",
        "ratings",
    ]


@pytest.mark.long
def test_near_saturation_the_hop_is_simulated() -> None:
    (linkerd,) = size(inputs(meshes=("linkerd",), groups=(Group("warm", 9000.0, 1, 0.0),),
                             simulate="auto"))  # fmt: skip
    assert linkerd.proxies[0].utilisation.value > 0.7
    assert linkerd.hop_method.startswith("short simulation")
    assert linkerd.hop_p99_ms is not None
    assert linkerd.hop_p99_ms.value > 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workload", "x=fast"], "expected NAME=RPS"),
        (["--rps", "10"], "--rps needs --pods"),
        ([], "give --rps with --pods"),
        (["--rps", "nan", "--pods", "3"], "--rps: "),
        (["--rps", "-5", "--pods", "3"], "--rps: "),
        (["--rps", "5", "--pods", "0"], "--pods: "),
        (["--rps", "5", "--pods", "3", "--churn", "inf"], "--churn: "),
    ],
)
def test_bad_sizing_input_exits_2(args: list[str], expected: str) -> None:
    res = run(*args)
    assert res.exit_code == 2
    assert expected in res.output


def test_input_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "size.yaml"
    f.write_text("rps: 1000\npods: 10\nconections: 4\n")
    res = run("--input", str(f))
    assert res.exit_code == 2
    assert "size.yaml:3" in res.output
    f.write_text("rps: 1000\npods: 10\nconnections: 4\nmeshes: [linkerd]\n")
    res = run("--input", str(f), "--samples", "0", "--simulate", "never")
    assert res.exit_code == 0, res.output
    assert "== linkerd" in res.output


def test_a_model_file_per_mesh(tmp_path: Path) -> None:
    calibrated = ROOT / "models" / "calibrated" / "lab.yaml"
    model = load_model(calibrated)
    res = run("--rps", "1000", "--pods", "10", "--mesh", "istio", "--model",
              f"istio={calibrated}", "--samples", "0", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    (line,) = json.loads(res.output)["meshes"]["istio"]["proxies"]
    expected = ProxyLoad(model, line["rps_per_proxy"], 1024, 1024, True, model.worker_threads)
    assert line["cpu_vcpu"]["value"] == pytest.approx(expected.vcpu, rel=1e-12)
    bad = run("--rps", "1000", "--pods", "10", "--model", "istio=no-such-model.yaml")
    assert bad.exit_code == 2
    assert "no-such-model.yaml" in bad.output


def test_a_proxy_on_the_edge_of_saturation_is_reported_saturated_not_a_crash() -> None:
    """At exactly the two-worker ceiling (18,181.8 rps for the shipped Envoy sidecar), the
    utilisation and the M/M/c pass could straddle 1 by rounding: a ZeroDivisionError before."""
    from meshsim.studies.sizing import size
    from meshsim.studies.sizing_plan import sizing_inputs

    (answer,) = size(sizing_inputs(18181.818181818182, 1, 1, 0.0, ["istio"], samples=0))
    assert answer.hop_p50_ms is None
    assert answer.hop_method.startswith("saturated")
