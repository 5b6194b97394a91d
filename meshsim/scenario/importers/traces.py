"""The call graph and service times from traces: OTLP JSON, Jaeger JSON export, Zipkin v2 JSON.

Spans are read into one shape and grouped by trace. A service's *entry* is a span of that
service whose parent belongs to another service (or has none): one request served. The entries
of other services below it, before any other entry of its own, are its *calls*; a call's
interval is that of the caller's client span when there is one (it includes the network), else
the callee's entry. From that:

- edges and call probabilities: the share of a service's (or version's) requests that make a
  k-th call to each callee (k = 1, 2, ...), so repeated calls are kept;
- order and fan-out: callees ordered by their mean start; two consecutive callees are parallel
  when their calls overlap in time in most requests that make both;
- self time: an entry's duration less the union of its calls' intervals, fitted by maximum
  likelihood to a lognormal and a gamma (location 0, ``scipy.stats``), the better likelihood
  kept, written as its mean and coefficient of variation;
- entry points: trace roots, with their rate over the traces' time span (a sampled rate);
- gRPC: a service whose entries are gRPC calls (OpenTelemetry's ``rpc.system: grpc``, or
  the ``grpc.status_code`` tag Envoy and most gRPC tracers set), which matters under an L4
  balancer: its callers hold one connection to it each
  (:mod:`meshsim.sim.dataplanes.l4_balancing`).

Hostile input: a parent chain that loops, or a span whose parent is missing, is warned about
(the loop's spans are dropped; an orphan counts as a root); a call cycle between services,
which no scenario may hold, loses its closing edge with a warning. Files over
:data:`MAX_TRACE_BYTES` are refused, since a JSON document is parsed whole.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.errors import Problem
from meshsim.scenario.importers.documents import ManifestError, read_json

MAX_TRACE_BYTES = 16 * 1024 * 1024
"""A trace export is parsed whole; a few thousand traces (well under this) fit a service time."""
MAX_SPANS = 1_000_000
MAX_PAIRED_CALLEES = 64
"""Callees of one request compared pairwise for overlap (a fan-out wider than this is rare and
would cost its square)."""
MIN_FIT_SAMPLES = 10
"""Below this a service time is written as the sample mean (constant), not a fitted family."""


@dataclass(frozen=True)
class Span:
    trace: str
    span_id: str
    parent: str | None
    service: str
    version: str | None
    start_us: float
    end_us: float
    kind: str
    """'server', 'client' or '' (unknown)."""
    grpc: bool = False
    """A gRPC call, by its tags (:func:`_is_grpc`)."""


def _is_grpc(tags: dict[str, Any]) -> bool:
    return str(tags.get("rpc.system", "")).lower() == "grpc" or "grpc.status_code" in tags


@dataclass
class Calls:
    """What the requests of one (service, version) did."""

    requests: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)
    """callee -> how many calls each request made to it (one entry per request that made any)."""
    offsets: dict[str, list[float]] = field(default_factory=dict)
    overlaps: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    """(callee, callee) in name order -> whether their calls overlapped, per request."""
    self_ms: list[float] = field(default_factory=list)


@dataclass
class TraceGraph:
    calls: dict[tuple[str, str | None], Calls] = field(default_factory=dict)
    roots: dict[str, int] = field(default_factory=dict)
    grpc: dict[str, int] = field(default_factory=dict)
    """Per service, how many of its entries were gRPC calls (of ``calls``' requests)."""
    span_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _kind(value: Any) -> str:
    text = str(value).lower()
    if text in ("2", "server", "span_kind_server", "consumer", "5", "span_kind_consumer"):
        return "server"
    if text in ("3", "client", "span_kind_client", "producer", "4", "span_kind_producer"):
        return "client"
    return ""


def _otlp_value(v: Any) -> Any:
    if isinstance(v, dict):
        for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if key in v:
                return v[key]
    return None


def _attrs(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(a.get("key")): _otlp_value(a.get("value")) for a in items if isinstance(a, dict)}


def _otlp(doc: dict[str, Any]) -> Iterable[Span]:
    for rs in doc.get("resourceSpans", []) or []:
        if not isinstance(rs, dict):
            continue
        res = _attrs((rs.get("resource") or {}).get("attributes"))
        service = str(res.get("service.name", ""))
        version = res.get("service.version")
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for s in (scope.get("spans") or []) if isinstance(scope, dict) else []:
                if not isinstance(s, dict):
                    continue
                try:
                    start = int(s["startTimeUnixNano"]) / 1e3
                    end = int(s["endTimeUnixNano"]) / 1e3
                except (KeyError, TypeError, ValueError):
                    continue
                attrs = _attrs(s.get("attributes"))
                yield Span(
                    str(s.get("traceId", "")), str(s.get("spanId", "")),
                    str(s["parentSpanId"]) if s.get("parentSpanId") else None,
                    service,
                    str(version or attrs.get("service.version")
                        or attrs.get("istio.canonical_revision") or "") or None,
                    start, end, _kind(s.get("kind")), _is_grpc(attrs),
                )  # fmt: skip


def _jaeger(doc: dict[str, Any]) -> Iterable[Span]:
    for trace in doc.get("data", []) or []:
        if not isinstance(trace, dict):
            continue
        processes = trace.get("processes") or {}
        for s in trace.get("spans", []) or []:
            if not isinstance(s, dict):
                continue
            proc = processes.get(s.get("processID"), {}) if isinstance(processes, dict) else {}
            tags = {str(t.get("key")): t.get("value") for t in (s.get("tags") or [])
                    if isinstance(t, dict)}  # fmt: skip
            ptags = {str(t.get("key")): t.get("value") for t in (proc.get("tags") or [])
                     if isinstance(t, dict)}  # fmt: skip
            parent = None
            for ref in s.get("references") or []:
                if isinstance(ref, dict) and ref.get("refType", "CHILD_OF") == "CHILD_OF":
                    parent = str(ref.get("spanID"))
                    break
            try:
                start = float(s["startTime"])
                end = start + float(s["duration"])
            except (KeyError, TypeError, ValueError):
                continue
            version = (
                ptags.get("service.version")
                or tags.get("service.version")
                or tags.get("istio.canonical_revision")
            )
            yield Span(
                str(s.get("traceID", trace.get("traceID", ""))), str(s.get("spanID", "")), parent,
                str(proc.get("serviceName", "")), str(version) if version else None,
                start, end, _kind(tags.get("span.kind", "")), _is_grpc(tags),
            )  # fmt: skip


def _zipkin(doc: list[Any]) -> Iterable[Span]:
    seen: set[tuple[str, str]] = set()
    for s in doc:
        if not isinstance(s, dict):
            continue
        try:
            start = float(s["timestamp"])
            end = start + float(s.get("duration", 0))
        except (KeyError, TypeError, ValueError):
            continue
        trace, sid = str(s.get("traceId", "")), str(s.get("id", ""))
        parent = str(s["parentId"]) if s.get("parentId") else None
        kind = _kind(s.get("kind", ""))
        if kind == "server" and (s.get("shared") or (trace, sid) in seen):
            # B3 shared span: the server half hangs below the client half
            parent, sid = sid, sid + ":server"
        seen.add((trace, sid))
        tags = s.get("tags")
        tags = tags if isinstance(tags, dict) else {}
        version = (
            tags.get("service.version")
            or tags.get("istio.canonical_revision")
            or tags.get("version")
        )
        yield Span(
            trace, sid, parent, str((s.get("localEndpoint") or {}).get("serviceName", "")),
            str(version) if version else None, start, end, kind, _is_grpc(tags),
        )  # fmt: skip


def read_spans(path: Path) -> list[Span]:
    """The spans of one file, whichever of the three formats it is."""
    if not path.is_file():
        raise ManifestError([Problem("", "no such file")], str(path))
    doc = read_json(
        path,
        MAX_TRACE_BYTES,
        "export fewer traces: a few thousand give the call graph and service times",
    )
    parse: Callable[[Any], Iterable[Span]]
    if isinstance(doc, dict) and "resourceSpans" in doc:
        fmt, parse = "OTLP", _otlp
    elif isinstance(doc, dict) and "data" in doc:
        fmt, parse = "Jaeger", _jaeger
    elif isinstance(doc, list):
        fmt, parse = "Zipkin v2", _zipkin
    else:
        raise ManifestError(
            [Problem("", "expected OTLP JSON (resourceSpans), a Jaeger export (data) or Zipkin "
                     "v2 JSON (a list of spans)")], str(path))  # fmt: skip
    try:
        spans = list(parse(doc))
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise ManifestError(
            [Problem("", f"read as {fmt} JSON, but a field has an unexpected type or value "
                     f"({type(exc).__name__}: {str(exc)[:120]})")],
            str(path),
        ) from None  # fmt: skip
    if len(spans) > MAX_SPANS:
        raise ManifestError([Problem("", f"more than {MAX_SPANS:,} spans")], str(path))
    return [s for s in spans if math.isfinite(s.start_us) and math.isfinite(s.end_us)]


def _union_ms(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total / 1e3


def build_graph(spans: list[Span], resolve: Any) -> TraceGraph:
    """The call statistics of ``spans``; ``resolve(service_name)`` maps a span's service to a
    scenario service (None: not imported, its spans are passed through)."""
    graph = TraceGraph()
    by_trace: dict[str, dict[str, Span]] = defaultdict(dict)
    for s in spans:
        by_trace[s.trace][s.span_id] = s
    looped = orphans = 0
    first, last = math.inf, -math.inf
    for spans_of in by_trace.values():
        children: dict[str, list[Span]] = defaultdict(list)
        roots: list[Span] = []
        for s in spans_of.values():
            if s.parent is None:
                roots.append(s)
            elif s.parent not in spans_of:
                orphans += 1
                roots.append(s)
            else:
                children[s.parent].append(s)
        reached: set[str] = set()
        for root in roots:
            first, last = min(first, root.start_us), max(last, root.end_us)
            _walk(root, None, children, resolve, graph, reached)
        looped += len(spans_of) - len(reached)
    if looped:
        graph.warnings.append(f"traces: {looped} spans in parent loops (or below one) dropped")
    if orphans:
        graph.warnings.append(f"traces: {orphans} spans whose parent is missing taken as roots")
    graph.span_s = (last - first) / 1e6 if last > first else 0.0
    return graph


def _walk(
    root: Span,
    caller: Any,
    children: dict[str, list[Span]],
    resolve: Any,
    graph: TraceGraph,
    reached: set[str],
) -> None:
    """Visit the tree below ``root`` without recursion, recording each entry's calls."""
    # Each stack item: (span, the entry it belongs to, that entry's record, the span below
    # which the call was made (a client span) or None)
    stack: list[tuple[Span, dict[str, Any] | None, Span | None]] = [(root, None, None)]
    entries: list[dict[str, Any]] = []
    while stack:
        span, entry, via = stack.pop()
        if span.span_id in reached:
            continue
        reached.add(span.span_id)
        service = resolve(span.service)
        if entry is None or (service is not None and service != entry["service"]):
            if service is None:
                for child in children.get(span.span_id, []):
                    stack.append((child, entry, via))
                continue
            # The entry is gRPC if any span of the service's own on the way in says so (a
            # sidecar's server span, the app's): the first span may be either.
            new = {"service": service, "version": span.version, "span": span, "calls": [],
                   "grpc": span.grpc}  # fmt: skip
            if entry is None:
                graph.roots[service] = graph.roots.get(service, 0) + 1
            else:
                outer = via if via is not None else span
                entry["calls"].append((service, outer.start_us, outer.end_us))
            entries.append(new)
            entry = new
            via = None
        elif span.grpc and via is None and span.kind != "client":
            entry["grpc"] = True
        for child in children.get(span.span_id, []):
            stack.append((child, entry, span if span.kind == "client" else via))
    for e in entries:
        _record(e, graph)


def _record(entry: dict[str, Any], graph: TraceGraph) -> None:
    span: Span = entry["span"]
    rec = graph.calls.setdefault((entry["service"], entry["version"]), Calls())
    rec.requests += 1
    if entry["grpc"]:
        graph.grpc[entry["service"]] = graph.grpc.get(entry["service"], 0) + 1
    calls = sorted(entry["calls"], key=lambda c: c[1])
    busy = _union_ms([(s, e) for _, s, e in calls], span.start_us, span.end_us)
    rec.self_ms.append(max(0.0, (span.end_us - span.start_us) / 1e3 - busy))
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for callee, s, e in calls:
        per[callee].append((s, e))
    for callee, ivs in per.items():
        rec.counts.setdefault(callee, []).append(len(ivs))
        rec.offsets.setdefault(callee, []).append((ivs[0][0] - span.start_us) / 1e3)
    # every pair, not only neighbours in start order: callees that start together tie, and
    # the order they are written in is decided later
    for a, b in itertools.combinations(sorted(per)[:MAX_PAIRED_CALLEES], 2):
        (a_start, a_end), (b_start, b_end) = per[a][0], per[b][0]
        rec.overlaps.setdefault((a, b), []).append(a_start < b_end and b_start < a_end)


def fit_service_time(samples_ms: list[float]) -> tuple[dict[str, Any], str]:
    """A distribution for the scenario (``{dist, mean, cv}``) and how it was chosen."""
    x = np.asarray([v for v in samples_ms if v > 0 and math.isfinite(v)], dtype=float)
    if len(x) < MIN_FIT_SAMPLES:
        mean = float(np.mean(x)) if len(x) else 1e-3
        return {"dist": "constant", "mean": round(mean, 6)}, f"sample mean of {len(x)} requests"
    if float(np.std(x)) <= 1e-9 * float(np.mean(x)):
        return {"dist": "constant", "mean": round(float(np.mean(x)), 6)}, (
            f"the same self time in all {len(x)} requests"
        )
    from scipy import stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # a fit's search may step through parameters that overflow; the optimum does not
        warnings.simplefilter("ignore", RuntimeWarning)
        s, _, scale = stats.lognorm.fit(x, floc=0)
        ll_log = float(np.sum(stats.lognorm.logpdf(x, s, 0, scale)))
        a, _, g_scale = stats.gamma.fit(x, floc=0)
        ll_gamma = float(np.sum(stats.gamma.logpdf(x, a, 0, g_scale)))
    if ll_log >= ll_gamma:
        mean = float(scale * math.exp(s * s / 2))
        cv = float(math.sqrt(math.expm1(s * s)))
        family, ll = "lognormal", ll_log
    else:
        mean, cv, family, ll = float(a * g_scale), float(1 / math.sqrt(a)), "gamma", ll_gamma
    other = ll_gamma if family == "lognormal" else ll_log
    return (
        {"dist": family, "mean": round(mean, 6), "cv": round(min(cv, 100.0), 4)},
        f"MLE over {len(x)} requests' self time (log-likelihood {ll:.1f} vs "
        f"{other:.1f} for the {'gamma' if family == 'lognormal' else 'lognormal'})",
    )


def break_cycles(edges: dict[str, set[str]], entries: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Edges that close a cycle (depth-first back edges), to be dropped.

    The search starts from ``entries`` (where requests enter), so the edge dropped is the one
    that leads back towards an entry, not one on the requests' way in.
    """
    state: dict[str, int] = {}
    back: list[tuple[str, str]] = []
    for root in [*entries, *sorted(edges)]:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(sorted(edges.get(root, ()))))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.append((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
    return back
