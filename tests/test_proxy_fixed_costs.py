"""Costs that do not scale with requests: wake-ups of an idle worker, TCP connection ends, and
the size-independent TLS record cost (optional model parameters, measured by calibration).

The wake-up tests use constant arrivals far apart (every burst finds its worker asleep: exact
counts) and a saturating closed loop (the worker never sleeps: the cost vanishes), which is the
behaviour that makes an event loop's CPU per request fall with load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsim.api import run_scenario
from meshsim.models import load_model, models_dir
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict

KIB = 1024


def model_with(tmp_path: Path, **extra: float) -> str:
    data = yaml.safe_load((models_dir() / "istio-sidecar.yaml").read_text())
    data.pop("anchor", None)  # the anchor's CPU identity no longer holds with extra costs
    data["parameters"].pop("wakeup_cpu_us", None)  # the shipped file's; each test sets its own
    for name, value in extra.items():
        data["parameters"][name] = {"value": value, "unit": "us", "source": "test: chosen"}
    path = tmp_path / ("sidecar-" + "-".join(f"{k}{v:g}" for k, v in extra.items()) + ".yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def run(
    model: str,
    workload: dict[str, Any],
    *,
    keep_alive: bool = True,
    meshed_clients: bool = False,
    mtls: str = "DISABLE",
) -> dict[str, Any]:
    doc = {
        "meshsim": 1,
        "name": "fixed-costs",
        "seed": 5,
        "duration_s": 4.0,
        "warmup_s": 0.5,
        "meshes": ["istio"],
        "cluster": {"nodes": 1, "cores_per_node": 1},
        "services": [
            {
                "name": "server",
                "replicas": 1,
                "response_bytes": KIB,
                "concurrency": 1000,
                "cpu_ms": {"dist": "constant", "mean": 0.02},
            }
        ],
        "workloads": [{"name": "load", "target": "server", "request_bytes": KIB, **workload}],
        "mesh_options": {
            "meshed_clients": meshed_clients,
            "keep_alive": keep_alive,
            "istio": {"workers": 1, "mtls": mtls, "telemetry": True, "model": model},
        },
    }
    out: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    return out


SPARSE = {"arrival": "constant", "rate_rps": 100.0}
"""10 ms apart, against well under 1 ms of work per request: every burst finds its worker idle."""
SATURATING = {"arrival": "closed", "clients": 64, "connections": 64}


def sidecars(out: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, Any] = out["proxies"]["by_kind"]["sidecar"]
    return by_kind


def test_without_the_optional_costs_nothing_changes(tmp_path: Path) -> None:
    base = run(model_with(tmp_path), SPARSE)
    zero = run(model_with(tmp_path, wakeup_cpu_us=0.0, tcp_connection_cpu_us=0.0), SPARSE)
    assert base["workloads"] == zero["workloads"]
    assert base["nodes"] == zero["nodes"]
    assert sidecars(zero)["wakeups"] == 0


def test_every_burst_of_a_sparse_load_pays_one_wakeup(tmp_path: Path) -> None:
    w_us = 40.0
    base = sidecars(run(model_with(tmp_path), SPARSE))
    woken = sidecars(run(model_with(tmp_path, wakeup_cpu_us=w_us), SPARSE))
    # One sidecar (the client is outside the mesh), two bursts per request: the request path
    # and the response path after the app; both find the single worker asleep.
    assert woken["requests"] == base["requests"] > 300
    assert woken["wakeups"] == 2 * woken["requests"]
    extra_s = woken["cpu_s_total"] - base["cpu_s_total"]
    assert extra_s == pytest.approx(woken["wakeups"] * w_us * 1e-6, rel=1e-9)


@pytest.mark.long
def test_a_saturated_worker_rides_one_wakeup_and_keeps_its_throughput(tmp_path: Path) -> None:
    w_us = 40.0
    base = run(model_with(tmp_path), SATURATING)
    woken = run(model_with(tmp_path, wakeup_cpu_us=w_us), SATURATING)
    s = sidecars(woken)
    # The worker always has the next burst queued: almost no request pays a wake-up ...
    assert s["wakeups"] / s["requests"] < 0.01
    # ... so the saturation throughput is the one without wake-ups (it would fall by
    # 2 x 40 us over ~0.22 ms per request, about a quarter, if every burst paid).
    rps = woken["workloads"]["load"]["rps"]
    assert rps == pytest.approx(base["workloads"]["load"]["rps"], rel=0.01)


@pytest.mark.long
def test_cpu_per_request_falls_with_load_as_an_event_loop_batches(tmp_path: Path) -> None:
    model = model_with(tmp_path, wakeup_cpu_us=40.0)
    per_request = []
    for rate in (200.0, 2000.0, 3500.0):
        s = sidecars(run(model, {"arrival": "poisson", "rate_rps": rate}))
        per_request.append((s["wakeups"] / s["requests"], s["cpu_s_total"] / s["requests"]))
    wakeups = [w for w, _ in per_request]
    cpu = [c for _, c in per_request]
    assert wakeups[0] > wakeups[1] > wakeups[2]
    assert cpu[0] > cpu[1] > cpu[2]


def test_keep_alive_off_pays_every_tcp_connection_end(tmp_path: Path) -> None:
    t_us = 50.0
    for keep_alive in (False, True):
        base = sidecars(
            run(model_with(tmp_path), SPARSE, keep_alive=keep_alive, meshed_clients=True)
        )
        paid = sidecars(
            run(
                model_with(tmp_path, tcp_connection_cpu_us=t_us),
                SPARSE,
                keep_alive=keep_alive,
                meshed_clients=True,
            )
        )
        ends = (paid["cpu_s_total"] - base["cpu_s_total"]) / (t_us * 1e-6)
        # requests counts each request once per sidecar it passed (client and server)
        requests = paid["requests"] / 2
        if keep_alive:
            # client sidecar: accepts the app's connection, connects upstream; server
            # sidecar: accepts it (and keeps its pool to the app): once for the whole run
            assert ends == pytest.approx(3.0, abs=1e-6)
        else:
            # per request: the app's connection accepted and one opened upstream by the
            # client sidecar; accepted, and one opened to the app, by the server sidecar
            assert ends == pytest.approx(4.0 * requests, abs=1e-6)


@pytest.mark.long
def test_keep_alive_off_saturates_earlier_by_the_connection_cost(tmp_path: Path) -> None:
    base = run(model_with(tmp_path), SATURATING, keep_alive=False)
    paid = run(model_with(tmp_path, tcp_connection_cpu_us=50.0), SATURATING, keep_alive=False)
    per_req = {k: 1.0 / r["workloads"]["load"]["rps"] for k, r in (("base", base), ("paid", paid))}
    # One core serves everything; a request from outside costs the server sidecar two
    # connection ends (accept from the client, connect to the app) = 100 us more.
    assert per_req["paid"] - per_req["base"] == pytest.approx(100e-6, rel=0.03)


def test_tls_request_cost_is_per_leg_and_split_over_both_paths(tmp_path: Path) -> None:
    plain = load_model(Path(model_with(tmp_path)))
    tls = load_model(Path(model_with(tmp_path, tls_request_cpu_us=30.0)))
    legs = tls.value("tls_legs")
    a = plain.request_cpu_us(KIB, KIB, mtls=True)
    b = tls.request_cpu_us(KIB, KIB, mtls=True)
    assert b[0] - a[0] == pytest.approx(legs * 15.0)
    assert b[1] - a[1] == pytest.approx(legs * 15.0)
    assert b[2] == a[2]
    # plaintext requests do not pay it
    assert tls.request_cpu_us(KIB, KIB, mtls=False) == plain.request_cpu_us(KIB, KIB, mtls=False)
