"""Scenarios back from their own traces: Online Boutique's and Bookinfo's manifests in the
upstream shape, plus traces generated from the hand-written scenarios, import to those
scenarios' topology and service times, and run to their outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshsim.api import run_and_summarise
from meshsim.scenario import from_dict, load_scenario
from meshsim.scenario.importers import import_cluster
from meshsim.scenario.model import Distribution, Scenario

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "import"
NET_US = 100.0


def draw(rng: np.random.Generator, d: Distribution) -> float:
    """One draw in ms, by the scenario's own definition of each family."""
    mean = d.expected
    if d.dist == "constant":
        return mean
    if d.dist == "exponential":
        return float(rng.exponential(mean))
    cv = d.cv or 0.0
    if d.dist == "gamma":
        return float(rng.gamma(1 / cv**2, mean * cv**2))
    sigma2 = math.log1p(cv**2)
    return float(rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2)))


class Tracer:
    """Zipkin v2 spans of requests served as the scenario says: each service's self time from
    its cpu_ms, its calls in order (consecutive parallel ones at once), each with its
    probability; a client span in the caller around each call."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.sc = scenario
        self.rng = np.random.default_rng(seed)
        self.spans: list[dict[str, Any]] = []
        self.next_id = 0

    def _span(self, trace: str, parent: str | None, service: str, kind: str, start: float,
              end: float) -> str:  # fmt: skip
        self.next_id += 1
        sid = f"{self.next_id:016x}"
        self.spans.append({"traceId": trace, "id": sid, "parentId": parent, "kind": kind,
                           "timestamp": start, "duration": end - start,
                           "localEndpoint": {"serviceName": service}})  # fmt: skip
        return sid

    def serve(self, trace: str, parent: str | None, name: str, start: float) -> float:
        svc = self.sc.service(name)
        subsets = svc.subsets()
        weights = np.array([v.replicas for v in subsets], dtype=float)
        version = subsets[int(self.rng.choice(len(subsets), p=weights / weights.sum()))]
        calls = version.calls if version.calls is not None else svc.calls
        self_us = draw(self.rng, version.cpu_ms or svc.cpu_ms) * 1e3
        record = len(self.spans)
        sid = self._span(trace, parent, name, "SERVER", start, start)
        t = start + self_us / 2
        i = 0
        while i < len(calls):
            group = [calls[i]]
            while calls[i].parallel and i + 1 < len(calls) and calls[i + 1].parallel:
                i += 1
                group.append(calls[i])
            i += 1
            ends = [self.call(trace, sid, name, c.service, t) for c in group
                    if self.rng.random() < c.probability]  # fmt: skip
            t = max(ends, default=t)
        end = t + self_us / 2
        self.spans[record]["duration"] = end - start
        return end

    def call(self, trace: str, parent: str, caller: str, callee: str, start: float) -> float:
        record = len(self.spans)
        cid = self._span(trace, parent, caller, "CLIENT", start, start)
        end = self.serve(trace, cid, callee, start + NET_US) + NET_US
        self.spans[record]["duration"] = end - start
        return end


@pytest.mark.slow
def test_online_boutique_from_manifests_and_generated_traces(tmp_path: Path) -> None:
    written = load_scenario(ROOT / "scenarios" / "online-boutique.yaml")
    tracer = Tracer(written, seed=11)
    traces = 5000
    for i in range(traces):
        tracer.serve(f"{i:032x}", None, "frontend", 1.7e15 + i * 5000.0)
    half = len(tracer.spans) // 2
    # a trace's spans are contiguous: cut between traces
    while tracer.spans[half]["traceId"] == tracer.spans[half - 1]["traceId"]:
        half += 1
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(tracer.spans[:half]))
    files[1].write_text(json.dumps(tracer.spans[half:]))

    result = import_cluster([FIXTURES / "online-boutique"], traces=files)
    imported = result.scenario
    assert [s.name for s in imported.services] == [
        "emailservice", "checkoutservice", "recommendationservice", "frontend", "paymentservice",
        "productcatalogservice", "cartservice", "currencyservice", "shippingservice",
        "redis-cart", "adservice",
    ]  # fmt: skip
    for svc in written.services:
        got = imported.service(svc.name)
        assert got.total_replicas == svc.total_replicas, svc.name
        assert got.protocol == svc.protocol, svc.name  # the ports' names: grpc, http
        # the call graph: the same callees, in the same order outside parallel groups, with
        # the same parallel groups; probabilities within 3 standard errors of a binomial
        groups_w = _groups(svc.calls)
        groups_i = _groups(got.calls)
        assert [sorted(g) for g in groups_i] == [sorted(g) for g in groups_w], svc.name
        requests = _requests(tracer, svc.name)
        expected = {c.service: c.probability for c in svc.calls}
        for call in got.calls:
            p = expected[call.service]
            se = math.sqrt(p * (1 - p) / requests)
            assert abs(call.probability - p) <= 3 * se + 1e-9, (svc.name, call.service)
        # service-time means: within 5 % with 1,000 requests or more, else within 3 standard
        # errors of a mean of that many draws (cv / sqrt(n)), the tolerance the sample allows
        mean, cv = svc.cpu_ms.expected, svc.cpu_ms.cv or 0.0
        tolerance = 0.05 if requests >= 1000 else max(0.05, 3 * cv / math.sqrt(requests))
        assert got.cpu_ms.expected == pytest.approx(mean, rel=tolerance), (svc.name, requests)
    (wl,) = imported.workloads
    assert wl.target == "frontend"
    assert wl.rate_rps == pytest.approx(1e6 / 5000, rel=0.01)  # one trace every 5 ms


def _groups(calls: list[Any]) -> list[list[str]]:
    out: list[list[str]] = []
    previous_parallel = False
    for c in calls:
        if c.parallel and previous_parallel:
            out[-1].append(c.service)
        else:
            out.append([c.service])
        previous_parallel = c.parallel
    return out


def _requests(tracer: Tracer, service: str) -> int:
    return sum(
        1 for s in tracer.spans
        if s["kind"] == "SERVER" and s["localEndpoint"]["serviceName"] == service
    )  # fmt: skip


def _prepared(sc: Scenario) -> Scenario:
    """One shape for both: no failure drill (no manifest holds one), the same length, meshes,
    replications and seed."""
    data = sc.to_dict()
    data.update(events=[], slo=[], replications=2, meshes=["none", "istio", "linkerd"],
                duration_s=20, warmup_s=4, seed=7)  # fmt: skip
    return from_dict(data)


@pytest.mark.slow
def test_imported_bookinfo_runs_like_the_hand_written_one(tmp_path: Path) -> None:
    """Bookinfo's manifests, Node objects, Istio metrics (rates, sizes) and 3,000 traces
    generated from scenarios/bookinfo.yaml: the imported scenario, run, gives the hand-written
    one's latencies and proxy CPU. The traces give the service times to within their sampling
    error (about 5 %: 3,000 requests at cv 0.5-0.8, fewer for each reviews version), so the
    outputs are compared at that tolerance: p50 within 5 %, p99 within 10 %, proxy CPU
    within 5 % (the replications' own 95 % intervals are 2-4 % wide)."""
    written = load_scenario(ROOT / "scenarios" / "bookinfo.yaml")
    tracer = Tracer(written, seed=5)
    for i in range(3000):
        tracer.serve(f"{i:032x}", None, "productpage", 1.7e15 + i * 5000.0)
    traces = tmp_path / "traces.json"
    traces.write_text(json.dumps(tracer.spans))
    imported = import_cluster(
        [FIXTURES / "bookinfo", FIXTURES / "bookinfo-nodes.yaml"],
        metrics=[FIXTURES / "bookinfo-metrics.prom"], traces=[traces],
    ).scenario  # fmt: skip
    assert (imported.cluster.nodes, imported.cluster.cores_per_node) == (3, 4)
    runs = [run_and_summarise(_prepared(sc)).summary["runs"] for sc in (written, imported)]
    for mesh in ("none", "istio", "linkerd"):
        hand, imp = (r[mesh] for r in runs)
        h, i = hand["workloads"]["users"], imp["workloads"]["istio-ingressgateway"]
        assert i["latency_ms"]["p50"] == pytest.approx(h["latency_ms"]["p50"], rel=0.05), mesh
        assert i["latency_ms"]["p99"] == pytest.approx(h["latency_ms"]["p99"], rel=0.10), mesh
        assert imp["proxies"]["cpu_vcpu_total"] == pytest.approx(
            hand["proxies"]["cpu_vcpu_total"], rel=0.05, abs=1e-9
        ), mesh
