"""Issue 16: what metrics, tracing, access logs and Wasm filters cost.

Series counts are exact (the product of the label values the scenario implies); tracing adds
exactly its model's per-request work; the collector saturates where its capacity says.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from meshsim.errors import ModelError
from meshsim.models import default_model, models_dir, parse_model
from meshsim.results.otlp import Row, otlp_json
from meshsim.scenario import from_dict
from meshsim.sim.engine import Simulation
from meshsim.sim.observability import (
    ENVOY_DEFAULT_BUCKETS,
    HEADER_BYTES,
    LINKERD_LATENCY_BUCKETS,
    series_of,
)

BASE: dict[str, Any] = {
    "meshsim": 1,
    "name": "obs",
    "seed": 3,
    "duration_s": 4,
    "warmup_s": 1,
    "meshes": ["istio"],
    "cluster": {"nodes": 2, "cores_per_node": 8},
    "services": [
        {"name": "front", "replicas": 2, "cpu_ms": {"dist": "constant", "mean": 0.2},
         "calls": [{"service": "back"}]},
        {"name": "back", "cpu_ms": {"dist": "constant", "mean": 0.1},
         "versions": [{"name": "v1", "replicas": 1}, {"name": "v2", "replicas": 2}]},
    ],
    "workloads": [{"name": "users", "target": "front", "arrival": "constant", "rate_rps": 200}],
    "mesh_options": {"observability": {}},
}  # fmt: skip

ISTIO_PER_COMBINATION = 1 + 3 * (len(ENVOY_DEFAULT_BUCKETS) + 3)
"""istio_requests_total + three histograms of Envoy's 19 buckets, +Inf, _sum and _count."""
LINKERD_PER_CODE = 1 + len(LINKERD_LATENCY_BUCKETS) + 3


def _scenario(mesh: str = "istio", **options: Any) -> Any:
    doc = copy.deepcopy(BASE)
    doc["meshes"] = [mesh]
    obs = doc["mesh_options"]["observability"]
    for key, value in options.items():
        if key in ("istio_disabled_metrics", "istio_removed_tags", "routes_per_service"):
            obs.setdefault("metrics", {})[key] = value
        elif key == "events":
            doc["events"] = value
        else:
            obs[key] = value
    return from_dict(doc)


def _run(scenario: Any, mesh: str, **kw: Any) -> Simulation:
    sim = Simulation(scenario, mesh, 1, **kw)
    sim.run()
    return sim


def _series(sim: Simulation) -> dict[str, int]:
    opts = sim.scenario.mesh_options.observability
    assert opts is not None
    return {p.name: series_of(sim, p, opts) for p in sim.data_plane.proxies}


# --------------------------------------------------------------------------- series


def test_istio_series_per_sidecar_is_the_product_of_label_values() -> None:
    sim = _run(_scenario(), "istio")
    series = _series(sim)
    assert ISTIO_PER_COMBINATION == 67
    # A front sidecar: reporter=source to back's 2 versions x 1 code, reporter=destination
    # from 1 source (users) x 1 code.
    for name in ("front-v1-0/sidecar", "front-v1-1/sidecar"):
        assert series[name] == (2 * 1 + 1 * 1) * 67
    # A back sidecar: reporter=destination from front's one version x 1 code.
    for name, n in series.items():
        if name.startswith("back"):
            assert n == 1 * 1 * 67
    block = sim.measure().observability
    assert block is not None
    assert block["metrics"]["series_total"] == 2 * 201 + 3 * 67
    m = default_model("observability").value
    assert block["metrics"]["prometheus"]["memory_mb"] == pytest.approx(
        m("prometheus_base_memory_mb") + 603 * m("prometheus_series_kb") / 1024
    )
    assert block["metrics"]["prometheus"]["samples_per_s"] == pytest.approx(603 / 15)


def test_status_codes_multiply_and_the_telemetry_api_knobs_reduce() -> None:
    errors = [{"at_s": 0, "action": "errors", "target": "back", "rate": 0.3, "duration_s": 10}]
    sim = _run(_scenario(events=errors), "istio")
    codes_back = sum(1 for n in sim.recorder.edges[("front", "back")].statuses.values() if n)
    codes_front = sum(1 for n in sim.recorder.edges[("users", "front")].statuses.values() if n)
    assert codes_back >= 2
    assert codes_front >= 2
    front = _series(sim)["front-v1-0/sidecar"]
    assert front == (2 * codes_back + 1 * codes_front) * 67
    # Telemetry API: response_code removed, two histograms disabled.
    trimmed = _run(
        _scenario(events=errors, istio_removed_tags=["response_code"],
                  istio_disabled_metrics=["REQUEST_SIZE", "RESPONSE_SIZE"]),
        "istio",
    )  # fmt: skip
    assert _series(trimmed)["front-v1-0/sidecar"] == (2 + 1) * (1 + 22)


def test_linkerd_series_count_endpoints_and_cannot_be_trimmed() -> None:
    sim = _run(_scenario("linkerd", istio_removed_tags=["response_code"]), "linkerd")
    series = _series(sim)
    # Outbound per endpoint (target_addr): back has 3 pods; inbound per calling identity.
    assert series["front-v1-0/sidecar"] == 3 * (1 + LINKERD_PER_CODE) + (1 + LINKERD_PER_CODE)
    assert series["back-v2-1/sidecar"] == 1 + LINKERD_PER_CODE
    routed = _run(_scenario("linkerd", routes_per_service=2), "linkerd")
    assert _series(routed)["front-v1-0/sidecar"] == (3 + 2 + 1) * (1 + LINKERD_PER_CODE)


def test_metrics_off_and_no_block_without_the_option() -> None:
    off = _run(_scenario(metrics={"enabled": False}), "istio")
    assert set(_series(off).values()) == {0}
    doc = copy.deepcopy(BASE)
    del doc["mesh_options"]
    plain = _run(from_dict(doc), "istio")
    assert plain.measure().observability is None
    assert _run(_scenario("none"), "none").measure().observability is None


# --------------------------------------------------------------------------- per-request work


def _after_us(sim: Simulation) -> float:
    proxy = sim.data_plane.proxies[0]
    return proxy.costs(512, 1024, True)[2] * 1e6


def _request_us(sim: Simulation) -> float:
    return sim.data_plane.proxies[0].costs(512, 1024, True)[0] * 1e6


def test_tracing_at_one_percent_adds_what_its_model_says_per_request() -> None:
    m = default_model("observability").value
    plain = Simulation(_scenario(), "istio", 1)
    base = _after_us(plain)
    sim = Simulation(_scenario(tracing={"sampling_percent": 1, "batch_spans": 5}), "istio", 1)
    expected = 0.01 * (m("span_cpu_us") + m("span_export_batch_cpu_us") / 5)
    assert _after_us(sim) - base == pytest.approx(expected, abs=1e-9)
    # Every request carries the W3C header (70 bytes), sampled or not, parsed on its path.
    per_kib = default_model("envoy-sidecar").value("payload_cpu_us_per_kib")
    assert _request_us(sim) - _request_us(plain) == pytest.approx(per_kib * 70 / 1024, abs=1e-9)
    b3 = Simulation(_scenario(tracing={"sampling_percent": 1, "propagation": "b3"}), "istio", 1)
    assert _request_us(b3) - _request_us(plain) == pytest.approx(per_kib * 133 / 1024, abs=1e-9)
    logs = Simulation(_scenario(access_logs=True), "istio", 1)
    assert _after_us(logs) - base == pytest.approx(m("access_log_us"), abs=1e-9)


def test_tracing_cpu_in_the_run_matches_the_model() -> None:
    """At 100 % the span work (25 us per L7 pass) shows in the simulated proxy CPU: the
    difference per pass is within 10 % of the model (wake-ups shift a little with load)."""
    off = _run(_scenario(), "istio")
    on = _run(_scenario(tracing={"sampling_percent": 100}), "istio")
    passes = sum(w.requests for p in on.data_plane.proxies for w in p.workers)
    assert passes == sum(w.requests for p in off.data_plane.proxies for w in p.workers)
    delta_us = (sum(p.cpu_s for p in on.data_plane.proxies)
                - sum(p.cpu_s for p in off.data_plane.proxies)) / passes * 1e6  # fmt: skip
    headers_us = default_model("envoy-sidecar").value("payload_cpu_us_per_kib") * 70 / 1024
    assert delta_us == pytest.approx(25.0 + headers_us, rel=0.10)
    block = on.measure().observability
    assert block is not None
    # Three L7 passes per request: front's inbound, front's outbound, back's inbound.
    assert block["tracing"]["spans_per_request"] == pytest.approx(3.0, rel=0.01)
    assert block["shares"]["cpu"]["tracing"] > 0.0
    assert block["tracing"]["header_bytes_per_request"] == HEADER_BYTES["w3c"] == 70


CHAIN: dict[str, Any] = {
    "meshsim": 1, "name": "chain", "seed": 1, "duration_s": 3, "warmup_s": 1,
    "meshes": ["istio"], "cluster": {"nodes": 4, "cores_per_node": 16},
    "services": [
        {"name": f"s{i}", "replicas": 2, "cpu_ms": {"dist": "constant", "mean": 0.05},
         **({"calls": [{"service": f"s{i + 1}"}]} if i < 4 else {})}
        for i in range(5)
    ],
    "workloads": [{"name": "w", "target": "s0", "arrival": "constant", "rate_rps": 1000}],
    "mesh_options": {"observability": {"tracing": {"sampling_percent": 100}}},
}  # fmt: skip
"""Five services in a chain: 1 + 2 x 4 = 9 spans per request."""


@pytest.mark.slow
@pytest.mark.parametrize("load", [0.8, 1.2])
def test_collector_saturates_where_its_capacity_says(load: float) -> None:
    capacity = 1e6 / default_model("observability").value("collector_span_cpu_us")
    doc = copy.deepcopy(CHAIN)
    doc["workloads"][0]["rate_rps"] = load * capacity / 9
    block = _run(from_dict(doc), "istio").measure().observability
    assert block is not None
    collector = block["tracing"]["collector"]
    assert block["tracing"]["spans_per_request"] == pytest.approx(9.0, rel=0.01)
    assert collector["capacity_spans_per_s"] == pytest.approx(capacity)
    assert collector["utilisation"] == pytest.approx(load, rel=0.03)
    assert collector["saturated"] is (load > 1)
    assert collector["dropped_spans_per_s"] == pytest.approx(
        max(0.0, load - 1) * capacity, abs=0.03 * capacity
    )


# --------------------------------------------------------------------------- model file


def test_every_observability_parameter_needs_a_source_and_a_range_source() -> None:
    text = (models_dir() / "observability.yaml").read_text(encoding="utf-8")
    parse_model(text)
    start = text.index("  prometheus_series_kb:")
    src = text.index("    source:", start)
    no_source = text[:src] + text[text.index("  prometheus_sample_cpu_us:", start) :]
    with pytest.raises(ModelError, match=r"prometheus_series_kb\.source"):
        parse_model(no_source)
    start = text.index("  access_log_us:")
    cut = text.index("    range_source:", start)
    end = text.index("    source:", start)
    with pytest.raises(ModelError, match=r"access_log_us\.range_source"):
        parse_model(text[:cut] + text[end:])


# --------------------------------------------------------------------------- OTLP


def test_otlp_export_builds_one_trace_per_request_with_parents() -> None:
    rows = [
        Row("istio", 0, 7, "users", "workload", "users", 0.0, 0.010, 200),
        Row("istio", 0, 7, "users", "edge", "users->front", 0.0, 0.010, 200),
        Row("istio", 0, 7, "users", "service", "front", 0.001, 0.009, 200),
        Row("istio", 0, 7, "users", "edge", "front->back", 0.002, 0.008, 503),
        Row("istio", 0, 7, "users", "service", "back", 0.003, 0.004, 503),
        Row("istio", 0, 7, "users", "service", "back", 0.005, 0.007, 503),
    ]
    doc = otlp_json(rows)
    spans = {
        (
            r["resource"]["attributes"][0]["value"]["stringValue"],
            s["name"],
            s["startTimeUnixNano"],
        ): s
        for r in doc["resourceSpans"]
        for s in r["scopeSpans"][0]["spans"]
    }
    assert len(spans) == 6
    assert len({s["traceId"] for s in spans.values()}) == 1
    root = spans[("users", "users", "0")]
    call = spans[("users", "call front", "0")]
    served = spans[("front", "serve front", "1000000")]
    inner = spans[("front", "call back", "2000000")]
    tries = [spans[("back", "serve back", "3000000")], spans[("back", "serve back", "5000000")]]
    assert "parentSpanId" not in root
    assert call["parentSpanId"] == root["spanId"]
    assert served["parentSpanId"] == call["spanId"]
    assert inner["parentSpanId"] == served["spanId"]
    assert [t["parentSpanId"] for t in tries] == [inner["spanId"]] * 2
    assert inner["status"]["code"] == 2
    assert root["status"]["code"] == 1
    assert served["endTimeUnixNano"] == "9000000"


def test_export_spans_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from meshsim.cli.main import cli

    runner = CliRunner()
    missing = runner.invoke(cli, ["export-spans", str(tmp_path), "--out", str(tmp_path / "s.json")])
    assert missing.exit_code == 2
    assert "--records" in missing.output


def test_report_table_has_a_row_per_mesh_with_costs() -> None:
    from meshsim.api import run_scenario
    from meshsim.report.observability import COLUMNS, observability_rows
    from meshsim.results.summary import build_summary

    doc = copy.deepcopy(BASE)
    doc["meshes"] = ["none", "istio", "cilium"]
    doc["mesh_options"]["observability"] = {"tracing": {"sampling_percent": 10}}
    runs = build_summary(run_scenario(from_dict(doc)))["runs"]
    assert "observability" not in runs["none"]
    rows = {row[0]: row for row in observability_rows(runs)}
    assert set(rows) == {"istio", "cilium"}
    assert all(len(row) == len(COLUMNS) for row in rows.values())
    istio = runs["istio"]["observability"]
    assert rows["istio"][3] == f"{istio['tracing']['spans_per_request']:.2f}"
    assert rows["istio"][-1] == "-"  # Envoy sidecars run no kernel datapath of their own
    assert rows["cilium"][-1] == f"{runs['cilium']['proxies']['kernel_cpu_vcpu']:.4f}"
    doc["meshes"] = ["istio"]
    del doc["mesh_options"]
    assert observability_rows(build_summary(run_scenario(from_dict(doc)))["runs"]) == []
