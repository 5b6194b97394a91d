"""meshsim import --traces / --metrics: call graph, fan-out, service times, rates; bad input."""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshsim.cli.main import cli

from meshsim.scenario.importers import KINDS, ManifestError, import_cluster
from meshsim.scenario.importers.documents import Manifests, read_manifests
from meshsim.scenario.importers.draft import Draft
from meshsim.scenario.importers.kubernetes import import_kubernetes
from meshsim.scenario.importers.metrics import read_metrics
from meshsim.scenario.importers.observed import import_observed
from meshsim.scenario.importers.traces import MAX_TRACE_BYTES, Span, build_graph

# The known system: frontend calls cart (which calls db twice), then catalog and reviews in
# parallel; every other reviews request calls ratings. Self times in ms: (family, mean, cv).
SELF = {
    "frontend": ("lognormal", 2.0, 0.6),
    "cart": ("gamma", 1.2, 0.5),
    "db": ("lognormal", 0.4, 0.3),
    "catalog": ("gamma", 0.8, 1.0),
    "reviews": ("lognormal", 1.5, 0.8),
    "ratings": ("lognormal", 0.5, 0.5),
}
NET_US = 150.0
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import" / "bookinfo"
TRACES = 3000
SMALL_TRACES = 300
"""Enough for what a trace says of a service's protocol (not for its service times)."""


def manifests(tmp: Path) -> Path:
    docs = []
    for name in SELF:
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}\n---\n"
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n"
            f"spec: {{replicas: 2, template: {{metadata: {{labels: {{app: {name}}}}}}}}}\n"
        )
    path = tmp / "manifests.yaml"
    path.write_text("---\n".join(docs))
    return path


def draw(rng: np.random.Generator, service: str) -> float:
    family, mean, cv = SELF[service]
    if family == "gamma":
        shape = 1 / cv**2
        return float(rng.gamma(shape, mean / shape))
    sigma2 = np.log1p(cv**2)
    return float(rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2)))


class Builder:
    def __init__(self, seed: int = 5) -> None:
        self.rng = np.random.default_rng(seed)
        self.spans: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.ids = 0

    def new_id(self) -> str:
        self.ids += 1
        return f"{self.ids:016x}"

    def span(
        self, trace: str, service: str, parent: str | None, start: float, end: float, kind: str
    ) -> str:
        sid = self.new_id()
        self.by_id[sid] = {
            "trace": trace,
            "id": sid,
            "parent": parent,
            "service": service,
            "start": start,
            "end": end,
            "kind": kind,
        }
        self.spans.append(self.by_id[sid])
        return sid

    def serve(
        self, trace: str, service: str, parent: str | None, start: float, plan: list[list[str]]
    ) -> float:
        """Serve one request: half the self time, the call groups, the other half."""
        self_us = draw(self.rng, service) * 1e3
        sid = self.span(trace, service, parent, start, start, "server")
        t = start + self_us / 2
        for group in plan:
            ends = [self.call(trace, service, sid, t, callee) for callee in group]
            t = max(ends)
        end = t + self_us / 2
        self.by_id[sid]["end"] = end
        return end

    def call(self, trace: str, caller: str, parent: str, start: float, callee: str) -> float:
        cid = self.span(trace, caller, parent, start, start, "client")
        end = self.serve(trace, callee, cid, start + NET_US, PLANS[callee](self, trace)) + NET_US
        self.by_id[cid]["end"] = end
        return end


PLANS: dict[str, Any] = {
    "frontend": lambda b, t: [["cart"], ["catalog", "reviews"]],
    "cart": lambda b, t: [["db"], ["db"]],
    "db": lambda b, t: [],
    "catalog": lambda b, t: [],
    "reviews": lambda b, t: [["ratings"]] if int(t, 16) % 2 == 0 else [],
    "ratings": lambda b, t: [],
}


def build(n: int = TRACES) -> list[dict[str, Any]]:
    b = Builder()
    for i in range(n):
        trace = f"{i:032x}"
        b.serve(trace, "frontend", None, 1.7e15 + i * 10_000.0, PLANS["frontend"](b, trace))
    return b.spans


def otlp(spans: list[dict[str, Any]]) -> dict[str, Any]:
    by_service: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_service.setdefault(s["service"], []).append(
            {
                "traceId": s["trace"],
                "spanId": s["id"],
                "parentSpanId": s["parent"] or "",
                "name": "op",
                "kind": 2 if s["kind"] == "server" else 3,
                "startTimeUnixNano": str(int(s["start"] * 1000)),
                "endTimeUnixNano": str(int(s["end"] * 1000)),
                "attributes": [
                    {"key": k, "value": {"stringValue": v}} for k, v in s.get("tags", {}).items()
                ],
            }
        )
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": svc}}]
                },
                "scopeSpans": [{"spans": items}],
            }
            for svc, items in by_service.items()
        ]
    }


def jaeger(spans: list[dict[str, Any]]) -> dict[str, Any]:
    procs = {svc: f"p{i}" for i, svc in enumerate(SELF)}
    traces: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        traces.setdefault(s["trace"], []).append(
            {
                "traceID": s["trace"],
                "spanID": s["id"],
                "operationName": "op",
                "references": (
                    [{"refType": "CHILD_OF", "traceID": s["trace"], "spanID": s["parent"]}]
                    if s["parent"]
                    else []
                ),
                "startTime": s["start"],
                "duration": s["end"] - s["start"],
                "processID": procs[s["service"]],
                "tags": [{"key": "span.kind", "type": "string", "value": s["kind"]}]
                + [{"key": k, "type": "string", "value": v} for k, v in s.get("tags", {}).items()],
            }
        )
    processes = {p: {"serviceName": svc, "tags": []} for svc, p in procs.items()}
    return {"data": [{"traceID": t, "spans": v, "processes": processes} for t, v in traces.items()]}


def zipkin(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "traceId": s["trace"],
            "id": s["id"],
            "parentId": s["parent"],
            "name": "op",
            "kind": s["kind"].upper(),
            "timestamp": s["start"],
            "duration": s["end"] - s["start"],
            "localEndpoint": {"serviceName": s["service"]},
            "tags": dict(s.get("tags", {})),
        }
        for s in spans
    ]


@pytest.fixture(scope="module")
def spans() -> list[dict[str, Any]]:
    return build()


def calls_of(sc: Any, name: str) -> list[tuple[str, float, bool]]:
    return [(c.service, c.probability, c.parallel) for c in sc.service(name).calls]


@pytest.mark.parametrize("fmt", [otlp, jaeger, zipkin])
def test_traces_recover_the_call_graph_and_service_time_means(
    tmp_path: Path, spans: list[dict[str, Any]], fmt: Any
) -> None:
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(fmt(spans)))
    sc = import_cluster([manifests(tmp_path)], traces=[path]).scenario
    assert calls_of(sc, "frontend") == [
        ("cart", 1.0, False),
        ("catalog", 1.0, True),
        ("reviews", 1.0, True),
    ]
    assert calls_of(sc, "cart") == [("db", 1.0, False), ("db", 1.0, False)]
    assert calls_of(sc, "reviews") == [("ratings", 0.5, False)]
    for leaf in ("db", "catalog", "ratings"):
        assert calls_of(sc, leaf) == []
    for name, (_, mean, _) in SELF.items():
        fitted = sc.service(name).cpu_ms
        assert fitted.dist in ("lognormal", "gamma")
        assert fitted.expected == pytest.approx(mean, rel=0.05), name
    # 3000 traces, 10 ms apart: the roots' rate is 100 per second
    (wl,) = sc.workloads
    assert wl.target == "frontend"
    assert wl.rate_rps == pytest.approx(1e6 / 10_000, rel=0.01)


def test_loops_orphans_and_call_cycles_are_warned_not_fatal(tmp_path: Path) -> None:
    def s(sid: str, parent: str | None, service: str, start: float, end: float) -> Span:
        return Span("t", sid, parent, service, None, start, end, "server")

    spans = [
        s("a", None, "frontend", 0, 100),
        s("b", "a", "cart", 10, 50),
        s("c", "b", "frontend", 20, 30),  # cart calls frontend back: a call cycle
        s("x", "y", "db", 0, 5),
        s("y", "x", "db", 0, 5),  # a parent loop
        s("o", "gone", "catalog", 0, 5),  # a missing parent
    ]
    graph = build_graph(spans, lambda n: n)
    assert "2 spans in parent loops" in " ".join(graph.warnings)
    assert "1 spans whose parent is missing" in " ".join(graph.warnings)
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            zipkin(
                [
                    {
                        "trace": "t",
                        "id": x.span_id,
                        "parent": x.parent,
                        "service": x.service,
                        "start": x.start_us,
                        "end": x.end_us,
                        "kind": "server",
                    }
                    for x in spans
                ]
            )
        )
    )
    result = import_cluster([manifests(tmp_path)], traces=[path])
    text = " ".join(result.warnings)
    assert "call each other in a cycle" in text
    assert "parent loops" in text
    assert calls_of(result.scenario, "cart") == []  # the closing edge cart -> frontend dropped


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"something": 1}', "expected OTLP JSON"),
    ],
)
def test_bad_trace_files_are_refused_cleanly(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    res = run(
        "import", str(manifests(tmp_path)), "--traces", str(bad), "--out", str(tmp_path / "o.yaml")
    )
    assert res.exit_code == 2
    assert expected in res.output
    assert "Traceback" not in res.output


def test_a_50_mb_trace_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    assert big.stat().st_size > MAX_TRACE_BYTES
    with pytest.raises(ManifestError, match="larger than"):
        import_cluster([manifests(tmp_path)], traces=[big])


def test_prometheus_text_rates_resets_and_nan(tmp_path: Path) -> None:
    prom = tmp_path / "m.prom"
    ab = 'istio_requests_total{reporter="destination",source_workload="a",destination_workload="b"}'
    ac = 'istio_requests_total{reporter="destination",source_workload="a",destination_workload="c"}'
    lines = [
        "# TYPE istio_requests_total counter",
        f"{ab} 100 1000",
        f"{ab} 400 11000",
        f"{ab} 50 21000",  # a counter reset between the scrapes: 50 more after it
        f"{ac} NaN 1000",
        # the source side reports the same requests: not counted twice
        ab.replace("destination", "source", 1) + " 9e9 21000",
        'request_total{direction="outbound",deployment="b",dst_deployment="c"} 10 0',
        'request_total{direction="outbound",deployment="b",dst_deployment="c"} 70 30000',
    ]
    prom.write_text("\n".join(lines) + "\n")
    rates = read_metrics([prom])
    assert rates.edges[("a", "b")] == pytest.approx((300 + 50) / 20)
    assert rates.edges[("b", "c")] == pytest.approx(2.0)
    assert ("a", "c") not in rates.edges
    assert rates.absolute
    assert rates.warnings == ["1 NaN, infinite or negative metric samples dropped"]


def test_a_malformed_metrics_line_names_its_line(tmp_path: Path) -> None:
    prom = tmp_path / "m.prom"
    prom.write_text('# ok\nistio_requests_total{reporter="destination" 5\n')
    with pytest.raises(ManifestError, match=r"m.prom:2: expected 'metric\{labels\} value"):
        read_metrics([prom])


def test_a_large_metrics_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """60 MB of scrapes (other metrics mostly): read line by line, only the edges kept."""
    prom = tmp_path / "big.prom"
    filler = 'envoy_cluster_upstream_rq_total{cluster_name="outbound|80||x"} 12345\n' * 1000
    edge = (
        'istio_requests_total{reporter="destination",source_workload="a",destination_workload="b"}'
    )
    with prom.open("w") as fh:
        for k in range(900):
            fh.write(filler)
            fh.write(f"{edge} {k * 10} {k * 1000}\n")
    assert prom.stat().st_size > 50 * 1024 * 1024
    rates = read_metrics([prom])
    assert rates.edges == {("a", "b"): pytest.approx(10.0)}


def test_versions_in_traces_give_each_version_its_calls(tmp_path: Path) -> None:
    """Bookinfo's reviews v1 calls nothing, v2 and v3 call ratings: read per version from
    the spans' service.version, as OTLP resources (and Istio's canonical revision) carry it."""
    spans = []
    for i in range(300):
        version = ("v1", "v2", "v3")[i % 3]
        trace = f"{i:032x}"
        t = 1.7e15 + i * 1e4
        spans.append(("productpage", "v1", trace, "p", None, t, t + 5000))
        spans.append(("reviews", version, trace, "r", "p", t + 1000, t + 4000))
        if version != "v1":
            spans.append(("ratings", "v1", trace, "s", "r", t + 2000, t + 3000))
    doc: dict[str, Any] = {"resourceSpans": []}
    for svc, version, trace, sid, parent, start, end in spans:
        doc["resourceSpans"].append({
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": svc}},
                {"key": "service.version", "value": {"stringValue": version}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace, "spanId": trace[-8:] + sid, "kind": "SPAN_KIND_SERVER",
                "parentSpanId": trace[-8:] + parent if parent else "",
                "startTimeUnixNano": str(int(start * 1000)),
                "endTimeUnixNano": str(int(end * 1000))}]}],
        })  # fmt: skip
    path = tmp_path / "bookinfo-traces.json"
    path.write_text(json.dumps(doc))
    root = Path(__file__).resolve().parent / "fixtures" / "import" / "bookinfo"
    sc = import_cluster([root], traces=[path]).scenario
    reviews = sc.service("reviews")
    calls = {v.name: [c.service for c in v.calls or []] for v in reviews.versions or []}
    assert calls == {"v1": [], "v2": ["ratings"], "v3": ["ratings"]}
    assert calls_of(sc, "productpage") == [("reviews", 1.0, False)]
    # self time: 5 ms less the 3 ms call = 2 ms, for every request (a constant fits exactly)
    assert sc.service("productpage").cpu_ms.expected == pytest.approx(2.0, rel=1e-6)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from([
        "resourceSpans", "resource", "attributes", "key", "value", "stringValue", "scopeSpans",
        "spans", "traceId", "spanId", "parentSpanId", "startTimeUnixNano", "endTimeUnixNano",
        "kind", "data", "processes", "processID", "serviceName", "tags", "references",
        "spanID", "traceID", "startTime", "duration", "id", "parentId", "timestamp",
        "localEndpoint", "result", "metric", "values", "__name__", "destination_workload",
    ]), inner, max_size=4),
    max_leaves=25,
)  # fmt: skip


@functools.cache
def _bookinfo() -> Manifests:
    return read_manifests([FIXTURES], KINDS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["resourceSpans", "data", None]), _json)
def test_any_json_as_traces_or_metrics_is_read_or_refused_cleanly(
    top: str | None, body: Any
) -> None:
    doc = {top: body} if top else body
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_text(json.dumps(doc))
        for option in ("traces", "metrics"):
            draft = Draft()
            import_kubernetes(_bookinfo(), draft)
            with contextlib.suppress(ManifestError):
                import_observed(draft, **{option: [path]})


def test_a_meshed_client_without_a_service_becomes_the_workload(tmp_path: Path) -> None:
    """Emojivoto's vote-bot is a Deployment no Service selects: its root spans are the
    workload (target and rate), not a service."""
    spans = []
    for i in range(200):
        trace, t = f"{i:032x}", i * 20_000.0
        spans += [
            {"trace": trace, "id": f"{i}a", "parent": None, "service": "vote-bot",
             "start": t, "end": t + 3000, "kind": "client"},
            {"trace": trace, "id": f"{i}b", "parent": f"{i}a", "service": "web-svc",
             "start": t + 100, "end": t + 2900, "kind": "server"},
            {"trace": trace, "id": f"{i}c", "parent": f"{i}b", "service": "emoji-svc",
             "start": t + 500, "end": t + 1500, "kind": "server"},
        ]  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(zipkin(spans)))
    sc = import_cluster([FIXTURES.parent / "emojivoto"], traces=[path]).scenario
    assert [(w.name, w.target) for w in sc.workloads] == [("vote-bot", "web-svc")]
    # 200 requests over the traces' 3.983 s
    assert sc.workloads[0].rate_rps == pytest.approx(200 / ((199 * 20_000 + 3000) / 1e6))
    assert calls_of(sc, "web-svc") == [("emoji-svc", 1.0, False)]
    assert [s.name for s in sc.services] == ["emoji-svc", "voting-svc", "web-svc"]


@pytest.mark.parametrize(
    ("fmt", "tag"),
    [
        (otlp, ("rpc.system", "grpc")),
        (jaeger, ("rpc.system", "grpc")),
        (zipkin, ("grpc.status_code", "0")),
    ],
    ids=["otlp", "jaeger", "zipkin"],
)
def test_services_whose_traced_requests_are_grpc_calls_import_as_grpc(
    tmp_path: Path, fmt: Any, tag: tuple[str, str]
) -> None:
    """catalog's server spans carry gRPC's tag (OpenTelemetry's rpc.system, or the
    grpc.status_code Envoy and gRPC tracers set), and frontend's client spans to it too:
    catalog alone becomes protocol grpc, with the note that says why; where its Service port
    is named http, the manifests win and a warning says what the traces saw."""
    spans = build(SMALL_TRACES)
    to_catalog = {sp["parent"] for sp in spans if sp["service"] == "catalog"}
    tagged = [
        {**sp, "tags": dict([tag])} if sp["service"] == "catalog" or sp["id"] in to_catalog
        else sp
        for sp in spans
    ]  # fmt: skip
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text(manifests(tmp_path).read_text().replace("name: http, ", ""))
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(fmt(tagged)))
    result = import_cluster([unnamed], traces=[path])
    protocols = {svc.name: svc.protocol for svc in result.scenario.services}
    assert protocols == {name: "grpc" if name == "catalog" else "http1" for name in SELF}
    assert "protocol: grpc  # " in result.text
    assert f"{SMALL_TRACES} of its {SMALL_TRACES} traced requests were gRPC calls" in result.text
    named = import_cluster([manifests(tmp_path)], traces=[path])
    assert {svc.name: svc.protocol for svc in named.scenario.services}["catalog"] == "http1"
    assert any("traced requests were gRPC calls, but its Service port says http1" in w
               for w in named.warnings)  # fmt: skip
