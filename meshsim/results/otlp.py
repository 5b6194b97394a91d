"""Simulated requests as OpenTelemetry spans (OTLP JSON), from a run's per-request records.

``meshsim run --records`` keeps one record per request at the client (``workload``), per call
as its caller saw it (``edge``, ``caller->callee``) and per try at the server (``service``).
Each request becomes one trace:

- the client's record is the root span (kind CLIENT, ``service.name`` the workload);
- a call is a CLIENT span of its caller, child of the caller's SERVER span that encloses it
  (of the root for the workload's own call);
- a try at a service is a SERVER span, child of the call to that service that encloses it
  (retries give one SERVER span each under the same call).

Times are simulated seconds from the start of the run, written as nanoseconds since the Unix
epoch plus ``epoch_ns`` (default 0: 1970-01-01, which trace viewers accept; pass the time the
run stands for to line traces up with real ones). Identifiers are deterministic: the trace id
holds the mesh, replication and request id, so the same run exports the same file. The format
is OTLP/JSON's ``ExportTraceServiceRequest`` (opentelemetry-proto, trace/v1), as the
collector's ``otlpjsonfile`` receiver and Jaeger's and Tempo's importers read it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SPAN_KIND_SERVER: Final = 2
SPAN_KIND_CLIENT: Final = 3
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2


@dataclass(frozen=True)
class Row:
    """One record as ``records.parquet`` stores it."""

    mesh: str
    replication: int
    request_id: int
    workload: str
    kind: str
    subject: str
    started_at: float
    finished_at: float
    status: int


@dataclass
class _Span:
    row: Row
    span_id: str
    service: str
    name: str
    kind: int
    parent: str = ""


def _ns(seconds: float, epoch_ns: int) -> str:
    return str(epoch_ns + round(seconds * 1e9))


def _status(code: int) -> dict[str, Any]:
    # HTTP semantics: 5xx and transport failures (resets, connect failures: codes < 100) are
    # errors, and a gRPC status other than OK (codes from 1000) too; a CLIENT span's 4xx is
    # an error too, a SERVER span's is not (OTel HTTP semconv).
    if code >= 500 or code < 100:
        return {"code": STATUS_ERROR}
    return {"code": STATUS_OK}


def _status_attributes(code: int) -> list[dict[str, Any]]:
    """The response's HTTP status, and a gRPC status in it as OTel's RPC semconv writes it."""
    from meshsim.sim.app import GRPC_STATUS, OK

    if code < GRPC_STATUS:
        return [{"key": "http.response.status_code", "value": {"intValue": str(code)}}]
    return [
        {"key": "http.response.status_code", "value": {"intValue": str(OK)}},
        {"key": "rpc.grpc.status_code", "value": {"intValue": str(code - GRPC_STATUS)}},
    ]


def _enclosing(candidates: list[_Span], row: Row) -> _Span | None:
    """The latest-starting span that encloses ``row`` in time (a parent candidate)."""
    best: _Span | None = None
    for c in candidates:
        encloses = c.row.started_at <= row.started_at and c.row.finished_at >= row.finished_at
        if encloses and (best is None or c.row.started_at >= best.row.started_at):
            best = c
    return best


def trace_spans(rows: list[Row], mesh_index: int) -> list[_Span]:
    """The spans of one request's trace, parents set."""
    spans: list[_Span] = []
    for i, row in enumerate(sorted(rows, key=lambda r: (r.started_at, r.kind, r.subject))):
        span_id = f"{mesh_index:02x}{row.replication % 256:02x}{i + 1:012x}"
        if row.kind == "workload":
            spans.append(_Span(row, span_id, row.workload, row.subject, SPAN_KIND_CLIENT))
        elif row.kind == "edge":
            caller, _, callee = row.subject.partition("->")
            spans.append(_Span(row, span_id, caller, f"call {callee}", SPAN_KIND_CLIENT))
        else:
            spans.append(_Span(row, span_id, row.subject, f"serve {row.subject}", SPAN_KIND_SERVER))
    root = next((s for s in spans if s.row.kind == "workload"), None)
    servers: dict[str, list[_Span]] = defaultdict(list)
    calls: dict[str, list[_Span]] = defaultdict(list)
    for s in spans:
        if s.row.kind == "service":
            servers[s.service].append(s)
        elif s.row.kind == "edge":
            calls[s.row.subject.partition("->")[2]].append(s)
    for s in spans:
        parent: _Span | None = None
        if s.row.kind == "edge":
            caller = s.service
            parent = _enclosing(servers.get(caller, []), s.row)
            if parent is None and root is not None and caller == root.row.workload:
                parent = root
        elif s.row.kind == "service":
            parent = _enclosing(calls.get(s.service, []), s.row)
        s.parent = "" if parent is None else parent.span_id
    return spans


def otlp_json(
    rows: Iterable[Row], *, epoch_ns: int = 0, max_traces: int | None = None
) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` of every trace in ``rows``."""
    traces: dict[tuple[str, int, int], list[Row]] = defaultdict(list)
    for row in rows:
        traces[(row.mesh, row.replication, row.request_id)].append(row)
    meshes = sorted({key[0] for key in traces})
    by_resource: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for n, key in enumerate(sorted(traces)):
        if max_traces is not None and n >= max_traces:
            break
        mesh, replication, request_id = key
        mesh_index = meshes.index(mesh)
        trace_id = f"{mesh_index:04x}{replication:08x}{request_id:020x}"
        for s in trace_spans(traces[key], mesh_index):
            span: dict[str, Any] = {
                "traceId": trace_id,
                "spanId": s.span_id,
                "name": s.name,
                "kind": s.kind,
                "startTimeUnixNano": _ns(s.row.started_at, epoch_ns),
                "endTimeUnixNano": _ns(s.row.finished_at, epoch_ns),
                "attributes": [
                    *_status_attributes(s.row.status),
                    {"key": "meshsim.replication", "value": {"intValue": str(replication)}},
                    {"key": "meshsim.request_id", "value": {"intValue": str(request_id)}},
                ],
                "status": _status(s.row.status),
            }
            if s.parent:
                span["parentSpanId"] = s.parent
            by_resource[(mesh, s.service)].append(span)
    resource_spans = []
    for (mesh, service), spans in sorted(by_resource.items()):
        resource_spans.append({
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "meshsim.mesh", "value": {"stringValue": mesh}},
            ]},
            "scopeSpans": [{"scope": {"name": "meshsim"}, "spans": spans}],
        })  # fmt: skip
    return {"resourceSpans": resource_spans}


def rows_from_parquet(path: Path, mesh: str | None = None) -> Iterator[Row]:
    """The records of a run directory's ``records.parquet`` (optionally of one mesh)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    if mesh is not None:
        frame = frame[frame["mesh"] == mesh]
    for r in frame.itertuples(index=False):
        yield Row(str(r.mesh), int(r.replication), int(r.request_id), str(r.workload),
                  str(r.kind), str(r.subject), float(r.started_at), float(r.finished_at),
                  int(r.status))  # fmt: skip


def write_otlp(document: dict[str, Any], out: Path) -> None:
    """Write ``document`` to ``out`` (through a temporary file, so a failure leaves none)."""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")
    tmp.replace(out)
