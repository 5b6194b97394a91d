"""Traces and metrics -> the draft's calls, service times and workloads.

Traces say most (:mod:`.traces`): who calls whom, how often, in what order and whether in
parallel, each service's self time, and which services serve gRPC. Metrics (:mod:`.metrics`) say
the rates, which sampled traces do not. When both are given, the call graph comes from the
traces and the rates from the metrics; a (service, version) the traces do not cover takes its
calls from the metrics (in no known order: sequential is assumed and said).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshsim.scenario.importers.assemble import ASSUMED_RATE_RPS
from meshsim.scenario.importers.draft import Draft, scenario_name
from meshsim.scenario.importers.metrics import EdgeRates, read_metrics
from meshsim.scenario.importers.traces import (
    Calls,
    TraceGraph,
    break_cycles,
    build_graph,
    fit_service_time,
    read_spans,
)
from meshsim.scenario.importers.writer import Noted

MAX_REPEATED_CALLS = 10
CLIENT = "client:"


def _calls_from_trace(rec: Calls, where: str, dropped: set[str]) -> list[Any]:
    names = [c for c in rec.counts if c not in dropped]
    # callees started together (a parallel fan-out) tie: their order is then by name
    names.sort(key=lambda c: (round(sum(rec.offsets[c]) / len(rec.offsets[c]), 3), c))
    parallel: set[str] = set()
    for a, b in itertools.pairwise(names):
        seen = rec.overlaps.get((a, b) if a < b else (b, a), [])
        if seen and sum(seen) * 2 > len(seen):
            parallel |= {a, b}
    out: list[Any] = []
    for callee in names:
        counts = rec.counts[callee]
        for k in range(1, min(max(counts), MAX_REPEATED_CALLS) + 1):
            made = sum(1 for n in counts if n >= k)
            p = round(made / rec.requests, 4)
            call: dict[str, Any] = {"service": callee}
            if p < 1:
                call["probability"] = p
            if callee in parallel:
                call["parallel"] = True
            how = f"{made} of {rec.requests} requests"
            if callee in parallel:
                how += ", overlapping in time with its neighbour"
            out.append(Noted(call, f"{where}: call {k} to {callee} in {how}"))
    return out


def _key(draft: Draft, service: str, version: str | None) -> tuple[str, str | None]:
    svc = draft.services[service]
    if svc.versioned and version is not None and any(v.name == version for v in svc.versions):
        return service, version
    return service, None


def _apply_traces(draft: Draft, graph: TraceGraph, where: str) -> set[tuple[str, str | None]]:
    edges: dict[str, set[str]] = {}
    for (svc, _), rec in graph.calls.items():
        edges.setdefault(svc, set()).update(rec.counts)
    back = break_cycles(edges, sorted(graph.roots, key=lambda r: -graph.roots[r]))
    for a, b in back:
        draft.warn(f"{where}: {a} and {b} call each other in a cycle, which a scenario cannot "
                   f"hold; the calls {a} -> {b} are dropped")  # fmt: skip
    done: set[tuple[str, str | None]] = set()
    for (svc, version), rec in graph.calls.items():
        if svc.startswith(CLIENT) or svc not in draft.services:
            continue
        key = _key(draft, svc, version)
        dropped = {b for a, b in back if a == svc} | {
            c for c in rec.counts if c not in draft.services
        }
        draft.calls[key] = _calls_from_trace(rec, where, dropped)
        dist, how = fit_service_time(rec.self_ms)
        draft.cpu_ms[key] = Noted(dist, f"{where}: {how} (self time taken as app CPU; it also "
                                  "holds any wait inside the app)")  # fmt: skip
        done.add(key)
    _grpc_from_traces(draft, graph, where)
    return done


def _grpc_from_traces(draft: Draft, graph: TraceGraph, where: str) -> None:
    """A service most of whose traced requests were gRPC calls is ``protocol: grpc``, unless
    its manifests name another protocol (then a warning: under an L4 balancer a gRPC
    caller's one connection goes to one pod, which only ``grpc`` models)."""
    for name, svc in draft.services.items():
        requests = sum(r.requests for (s, _), r in graph.calls.items() if s == name)
        grpc = graph.grpc.get(name, 0)
        if not requests or 2 * grpc < requests:
            continue
        seen = f"{where}: {grpc} of its {requests} traced requests were gRPC calls"
        if svc.protocol is None:
            svc.protocol = Noted("grpc", f"{seen} (rpc.system or grpc.status_code)")
        elif svc.protocol.value == "http1":  # http2 multiplexes as gRPC does
            draft.warn(
                f"{seen}, but its Service port says {svc.protocol.value} "
                f"({svc.protocol.note}); kept as the manifests say: name the port grpc "
                "(or set appProtocol) if the mesh should treat it as gRPC"
            )


def _apply_metrics(
    draft: Draft, rates: EdgeRates, where: str, covered: set[tuple[str, str | None]]
) -> None:
    owner: dict[str, tuple[str, str]] = {}
    for draft_svc in draft.services.values():
        for v in draft_svc.versions:
            owner[v.workload.name] = (draft_svc.name, v.name)
    inbound: dict[str, float] = {}
    for (_, dst), r in rates.edges.items():
        inbound[dst] = inbound.get(dst, 0.0) + r
    for workload, (svc, version) in owner.items():
        key = _key(draft, svc, version)
        if key in covered or inbound.get(workload, 0.0) <= 0:
            continue
        per_callee: dict[str, float] = {}
        for (src, dst), r in rates.edges.items():
            if src == workload and dst in owner:
                callee = owner[dst][0]
                per_callee[callee] = per_callee.get(callee, 0.0) + r
        calls: list[Any] = []
        for callee, r in per_callee.items():
            ratio = r / inbound[workload]
            whole, frac = int(ratio), ratio - int(ratio)
            probs = [1.0] * min(whole, MAX_REPEATED_CALLS) + ([round(frac, 4)] if frac > 1e-4
                                                              else [])  # fmt: skip
            for p in probs:
                call: dict[str, Any] = {"service": callee}
                if p < 1:
                    call["probability"] = p
                note = (
                    f"{where}: {workload} -> {callee} at {r:.6g} of "
                    f"{inbound[workload]:.6g} requests in (order assumed)"
                )
                calls.append(Noted(call, note))
        draft.calls[key] = calls
    _metric_workloads(draft, rates, owner, where)
    _message_sizes(draft, rates, owner, where)


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(n for _, n in pairs)
    return sum(mean * n for mean, n in pairs) / total if total > 0 else None


def _message_sizes(
    draft: Draft, rates: EdgeRates, owner: dict[str, tuple[str, str]], where: str
) -> None:
    """Mean request and response sizes (Istio's byte histograms) onto calls, services and
    workloads: what the proxies' per-KiB costs are charged on."""
    responses: dict[tuple[str, str | None], list[tuple[float, float]]] = {}
    for (_, dst), measured in rates.response_bytes.items():
        if dst in owner:
            responses.setdefault(_key(draft, *owner[dst]), []).append(measured)
    for key, pairs in responses.items():
        mean = _weighted(pairs)
        if mean is not None:
            draft.response_bytes[key] = Noted(
                round(mean), f"{where}: istio_response_bytes sum / count into {key[0]}"
            )
    for key, calls in draft.calls.items():
        sources = {w for w, (svc, version) in owner.items()
                   if svc == key[0] and (key[1] is None or version == key[1])}  # fmt: skip
        for i, call in enumerate(calls):
            body = call.value if isinstance(call, Noted) else call
            callee = body["service"]
            pairs = [m for (src, dst), m in rates.request_bytes.items()
                     if src in sources and owner.get(dst, ("", ""))[0] == callee]  # fmt: skip
            mean = _weighted(pairs)
            if mean is not None:
                note = call.note if isinstance(call, Noted) else ""
                calls[i] = Noted(
                    {**body, "request_bytes": round(mean)},
                    f"{note}; request bytes: istio_request_bytes sum / count",
                )
    for wl in draft.workloads:
        target = wl["target"]
        pairs = [m for (src, dst), m in rates.request_bytes.items()
                 if src not in owner and owner.get(dst, ("", ""))[0] == target]  # fmt: skip
        mean = _weighted(pairs)
        if mean is not None:
            wl["request_bytes"] = Noted(round(mean), f"{where}: istio_request_bytes sum / count "
                                        f"from outside into {target}")  # fmt: skip


def _metric_workloads(
    draft: Draft, rates: EdgeRates, owner: dict[str, tuple[str, str]], where: str
) -> None:
    entering: dict[tuple[str, str], float] = {}
    for (src, dst), r in rates.edges.items():
        if src not in owner and dst in owner and r > 0:
            key = (src, owner[dst][0])
            entering[key] = entering.get(key, 0.0) + r
    if not entering:
        return
    total = sum(entering.values())
    names: set[str] = set()
    for (src, target), r in sorted(entering.items()):
        name = scenario_name(src) if src else f"{target}-clients"
        if name in names or name in draft.services:
            name = scenario_name(f"{name}-{target}")
        names.add(name)
        if rates.absolute:
            rate = Noted(round(r, 6), f"{where}: requests from {src or 'outside the mesh'} "
                         f"to {target}")  # fmt: skip
        else:
            rate = Noted(round(ASSUMED_RATE_RPS * r / total, 6),
                         f"assumed total {ASSUMED_RATE_RPS:g} rps, shared by {where}'s counts "
                         "(single samples give proportions, not rates)")  # fmt: skip
        draft.workloads.append({"name": Noted(name, f"{where}: source {src or '(unknown)'}"),
                                "target": target, "rate_rps": rate})  # fmt: skip


def _trace_workloads(draft: Draft, graph: TraceGraph, where: str) -> None:
    for service, roots in sorted(graph.roots.items()):
        targets: list[tuple[str, float]] = []
        if service.startswith(CLIENT):
            rec_all = [r for (s, _), r in graph.calls.items() if s == service]
            for rec in rec_all:
                for callee, counts in rec.counts.items():
                    if callee in draft.services:
                        targets.append((callee, float(sum(counts))))
            name = service.removeprefix(CLIENT)
        elif service in draft.services:
            targets.append((service, float(roots)))
            name = f"{service}-clients"
        else:
            continue
        for target, count in targets:
            if graph.span_s > 0:
                rate = Noted(round(count / graph.span_s, 6), f"{where}: {count:g} requests over "
                             f"{graph.span_s:.3g} s of traces (a sampled rate: give --metrics "
                             "for the real one)")  # fmt: skip
            else:
                rate = Noted(ASSUMED_RATE_RPS, "assumed: the traces span no time")
            draft.workloads.append({"name": scenario_name(name if len(targets) == 1
                                                          else f"{name}-{target}"),
                                    "target": target, "rate_rps": rate})  # fmt: skip


def import_observed(
    draft: Draft, *, traces: Sequence[str | Path] = (), metrics: Sequence[str | Path] = ()
) -> None:
    """Add calls, service times and workloads from ``traces`` and ``metrics`` to ``draft``."""
    clients = dict(draft.clients)

    def resolve(name: str) -> str | None:
        found = draft.resolve_host(name, None)
        if found is not None:
            return found
        first = scenario_name(name.split(".")[0])
        return CLIENT + first if first in clients else None

    covered: set[tuple[str, str | None]] = set()
    graph = None
    if traces:
        spans = [s for p in traces for s in read_spans(Path(p))]
        graph = build_graph(spans, resolve)
        for w in graph.warnings:
            draft.warn(w)
        where = ", ".join(str(p) for p in traces)
        unknown = {s.service for s in spans if resolve(s.service) is None}
        if unknown:
            draft.warn(f"{where}: spans of services not in the manifests ignored: "
                       + ", ".join(sorted(unknown)[:20]))  # fmt: skip
        covered = _apply_traces(draft, graph, where)
    if metrics:
        rates = read_metrics(metrics)
        where = ", ".join(str(p) for p in metrics)
        for w in rates.warnings:
            draft.warn(f"{where}: {w}")
        if not rates.absolute:
            draft.warn(
                f"{where}: single counter samples give proportions, not rates; scrape twice "
                "(with timestamps) or export a range query for rates"
            )
        _apply_metrics(draft, rates, where, covered)
    if graph is not None and not draft.workloads:
        _trace_workloads(draft, graph, ", ".join(str(p) for p in traces))
