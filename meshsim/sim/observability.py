"""What observability costs: metrics, tracing, access logs and Wasm filters (issue 16).

Turned on by ``mesh_options.observability`` (absent: nothing here runs and results are as
before). Two parts:

- :func:`instrument` charges the per-request work in the simulation. Access logging and
  span export happen when a stream ends, after the response is written (Envoy logs and
  finishes its span in the stream's destructor), so both join the proxy model's work *after*
  the response (``telemetry_us``): they hold the worker and delay the next request, not this
  one. Tracing is charged as its mean per request (sampling x (span + export call / batch)),
  not one request in a hundred paying a hundred times: the mean is what CPU totals show and it
  keeps the run's random streams unchanged. Only L7 proxies (Envoy sidecars and waypoints,
  linkerd2-proxy, Cilium's node Envoy) trace and log; ztunnel and the eBPF datapath do not.
- :func:`observe` reports, after the run, what each feature costs: series per proxy and their
  scrape cost, Prometheus's CPU and memory, spans, the collector's load, and each feature's
  share of the proxies' CPU and memory. Scrape work is computed, not simulated: Envoy renders
  ``/stats/prometheus`` on its main thread and pilot-agent merges it, neither of which is a
  worker the simulator models.

Series counts are exact functions of the scenario: the label combinations a proxy reports are
the peers it talks to (workload versions or endpoints, per mesh) times the status codes seen on
that edge in the window, times the series each combination carries (one counter, and for each
histogram its buckets, ``+Inf``, ``_sum`` and ``_count``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from meshsim.models import ProxyCostModel, default_model
from meshsim.models.samples import apply_values

if TYPE_CHECKING:
    from meshsim.scenario.observability import ObservabilityOptions
    from meshsim.sim.app import Pod, ServiceRuntime
    from meshsim.sim.dataplanes.base import DataPlane
    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

# --------------------------------------------------------------------------- label models

ENVOY_DEFAULT_BUCKETS: Final = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
"""Envoy's default histogram buckets (HistogramOptionsImpl::defaultBuckets), which Istio's
standard histograms use: istio_request_duration_milliseconds, istio_request_bytes,
istio_response_bytes (istio.io, Istio Standard Metrics)."""

LINKERD_LATENCY_BUCKETS: Final = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
)  # fmt: skip
"""linkerd2-proxy's response_latency_ms buckets (linkerd.io, Proxy Metrics; the bucket list is
as the proxy exposes it, not verified against a 2.16 build)."""


def histogram_series(buckets: tuple[float, ...]) -> int:
    """Series of one Prometheus histogram per label combination: buckets, +Inf, _sum, _count."""
    return len(buckets) + 3


ISTIO_METRIC_SERIES: Final[Mapping[str, int]] = MappingProxyType({
    "REQUEST_COUNT": 1,  # istio_requests_total
    "REQUEST_DURATION": histogram_series(ENVOY_DEFAULT_BUCKETS),
    "REQUEST_SIZE": histogram_series(ENVOY_DEFAULT_BUCKETS),
    "RESPONSE_SIZE": histogram_series(ENVOY_DEFAULT_BUCKETS),
})  # fmt: skip
"""Series per label combination of each Istio HTTP metric (Telemetry API names)."""

ISTIO_TCP_METRICS: Final = 4
"""ztunnel's istio_tcp_sent_bytes_total, _received_bytes_total, _connections_opened_total and
_connections_closed_total: counters, one series each per (source, destination) workload pair."""

ISTIO_SOURCE_TAGS: Final = frozenset({
    "source_workload", "source_principal", "source_app", "source_version",
    "source_canonical_service", "source_canonical_revision",
})  # fmt: skip
"""The tags that tell source workloads apart; removing all of them merges the sources."""

ISTIO_DESTINATION_VERSION_TAGS: Final = frozenset({
    "destination_workload", "destination_version", "destination_canonical_revision",
})  # fmt: skip
"""The tags that tell a service's versions apart; removing all of them merges the versions."""

LINKERD_PER_CODE: Final = 1 + histogram_series(LINKERD_LATENCY_BUCKETS)
"""response_total and response_latency_ms per status code (status_code, classification)."""

W3C_HEADER_BYTES: Final = len("traceparent: ") + 55 + 2
"""W3C Trace Context: ``traceparent: 00-<32 hex>-<16 hex>-<2 hex>`` and CRLF."""
B3_HEADER_BYTES: Final = sum(
    len(name) + 2 + size + 2
    for name, size in (("x-b3-traceid", 32), ("x-b3-spanid", 16),
                       ("x-b3-parentspanid", 16), ("x-b3-sampled", 1))
)  # fmt: skip
"""B3 multi-header propagation (openzipkin/b3-propagation), Envoy's default for Zipkin."""
B3_SINGLE_HEADER_BYTES: Final = len("b3: ") + 32 + 1 + 16 + 1 + 1 + 1 + 16 + 2
"""B3 single header ``b3: {traceid}-{spanid}-{sampled}-{parentspanid}``."""
HEADER_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {"w3c": W3C_HEADER_BYTES, "b3": B3_HEADER_BYTES, "b3-single": B3_SINGLE_HEADER_BYTES}
)

L7_KINDS: Final = frozenset({"sidecar", "waypoint", "node-envoy"})
"""Proxy kinds (``Proxy.kind``) that parse HTTP, and so log and trace."""


# --------------------------------------------------------------------------- the model


def observability_model(values: Mapping[str, float] | None = None) -> ProxyCostModel:
    """models/observability.yaml with a drawn parameter set's values that name it applied."""
    return apply_values(default_model("observability"), values)


@dataclass
class Features:
    """What the scenario turns on, with the model's per-request costs in microseconds."""

    model: ProxyCostModel
    opts: ObservabilityOptions
    passes: dict[str, dict[str, int]] = field(default_factory=dict)
    """L7 proxy passes by proxy name, at the warm-up ("warmup") and at the end ("end")."""

    @property
    def sampling(self) -> float:
        t = self.opts.tracing
        return 0.0 if t is None else t.sampling_percent / 100.0

    @property
    def access_log_us(self) -> float:
        return self.model.value("access_log_us") if self.opts.access_logs else 0.0

    @property
    def span_us(self) -> float:
        """Mean tracing CPU per L7 proxy pass: sampled share x (span + its share of a batch)."""
        t = self.opts.tracing
        if t is None:
            return 0.0
        v = self.model.value
        return self.sampling * (v("span_cpu_us") + v("span_export_batch_cpu_us") / t.batch_spans)

    @property
    def scrape_interval_s(self) -> float:
        m = self.opts.metrics
        return m.scrape_interval_s or self.model.value("scrape_interval_s")


def with_after_work(
    model: ProxyCostModel, telemetry_us: float, routing_extra_us: float = 0.0
) -> ProxyCostModel:
    """``model`` whose after-response work is ``telemetry_us`` and whose request path carries
    ``routing_extra_us`` more (ranges dropped: the values are now the file's plus what
    observability adds, not the file's parameters; ``base`` keeps the model they were added
    to, over which parameter sets are drawn)."""
    params = dict(model.parameters)
    base = params["telemetry_us"]
    params["telemetry_us"] = base.model_copy(update={"value": telemetry_us, "range": None})
    if routing_extra_us:
        routing = params["routing_us"]
        params["routing_us"] = routing.model_copy(
            update={"value": routing.value + routing_extra_us, "range": None}
        )
    return replace(model, parameters=MappingProxyType(params), base=model.base or model)


def header_cpu_us(model: ProxyCostModel, propagation: str) -> float:
    """A proxy's CPU for the trace-context headers of one request: their bytes at the model's
    per-KiB body cost (every request carries them, sampled or not)."""
    return model.value("payload_cpu_us_per_kib") * HEADER_BYTES[propagation] / 1024.0


_L7_MODEL_ATTRIBUTES: Final = ("model", "wp_model", "envoy_model")
"""The data planes' attributes holding an L7 proxy model (sidecars, waypoints, node Envoys)."""


def instrument(dp: DataPlane, sim: Simulation) -> Features | None:
    """Charge access logs and tracing in ``dp``'s L7 proxies, before any proxy exists.

    A sidecar data plane with ``telemetry: false`` (Istio without its stats filter) keeps no
    stats work but still logs and traces.
    """
    opts = sim.scenario.mesh_options.observability
    if opts is None:
        return None
    features = Features(observability_model(sim.model_values), opts)
    sim.env.process(_count_passes(sim, features, "warmup", sim.warmup_s))
    sim.env.process(_count_passes(sim, features, "end", sim.end_s))
    extra = features.access_log_us + features.span_us
    if extra == 0.0 and opts.tracing is None:
        return features
    for attr in _L7_MODEL_ATTRIBUTES:
        model = getattr(dp, attr, None)
        if not isinstance(model, ProxyCostModel) or model.layer != "L7":
            continue
        stats = model.value("telemetry_us")
        if attr == "model" and not getattr(dp, "telemetry", True):
            stats = 0.0
            dp.telemetry = True  # type: ignore[attr-defined]
        headers = 0.0 if opts.tracing is None else header_cpu_us(model, opts.tracing.propagation)
        setattr(dp, attr, with_after_work(model, stats + extra, headers))
    return features


def _count_passes(
    sim: Simulation, features: Features, name: str, at_s: float
) -> Generator[Any, Any, None]:
    yield sim.env.timeout(at_s)
    features.passes[name] = {
        p.name: _passes(p) for p in sim.data_plane.proxies if p.kind in L7_KINDS
    }


# --------------------------------------------------------------------------- series


def _codes(sim: Simulation, caller: str, callee: str) -> int:
    """Status codes seen on the edge ``caller -> callee`` in the window (0: no traffic)."""
    stats = sim.recorder.edges.get((caller, callee))
    if stats is None:
        return 0
    return sum(1 for n in stats.statuses.values() if n > 0)


def _versions_receiving(sim: Simulation, service: ServiceRuntime) -> int:
    """Versions of ``service`` that traffic reaches: those with replicas, and with a weight
    when a split names versions."""
    dp = sim.data_plane
    policies = getattr(getattr(dp, "resilience", None), "policies", None)
    live = [v for v in service.versions.values() if v.spec.replicas > 0]
    if policies is not None and policies.has_subsets(service.name):
        split = next((r.split for r in sim.scenario.traffic
                      if r.service == service.name and r.split), None)  # fmt: skip
        if split:
            live = [v for v in live if split.get(v.name, 0) > 0]
    return len(live)


def _callers(sim: Simulation, service: str) -> dict[str, int]:
    """Callers of ``service`` and how many source workloads each is: a service's versions that
    call it (each a Deployment), a workload's client (one)."""
    out: dict[str, int] = {}
    for caller, callee in sim.recorder.edges:
        if callee != service:
            continue
        runtime = sim.services.get(caller)
        if runtime is None:
            out[caller] = 1
            continue
        out[caller] = sum(
            1 for v in runtime.versions.values()
            if v.spec.replicas > 0 and any(c.service == service for g in v.call_plan for c in g)
        ) or 1  # fmt: skip
    return out


def istio_series_per_combination(opts: ObservabilityOptions) -> int:
    off = set(opts.metrics.istio_disabled_metrics)
    return sum(n for name, n in ISTIO_METRIC_SERIES.items() if name not in off)


def istio_combinations(sim: Simulation, pod: Pod, opts: ObservabilityOptions) -> int:
    """Label combinations of one Istio sidecar: reporter=source for each version it calls x
    codes, reporter=destination for each source workload calling it x codes."""
    removed = set(opts.metrics.istio_removed_tags)
    codes_merged = "response_code" in removed
    sources_merged = removed >= ISTIO_SOURCE_TAGS
    versions_merged = removed >= ISTIO_DESTINATION_VERSION_TAGS
    own = pod.service.name
    total = 0
    called = {c.service for group in pod.call_plan for c in group}
    for target in sorted(called):
        codes = _codes(sim, own, target)
        if codes == 0:
            continue
        versions = 1 if versions_merged else _versions_receiving(sim, sim.services[target])
        total += versions * (1 if codes_merged else codes)
    for caller, sources in _callers(sim, own).items():
        codes = _codes(sim, caller, own)
        if codes == 0:
            continue
        total += (1 if sources_merged else sources) * (1 if codes_merged else codes)
    return total


def linkerd_series(sim: Simulation, pod: Pod, opts: ObservabilityOptions) -> int:
    """Series of one linkerd2-proxy: inbound per calling identity (a ServiceAccount, one per
    service) and outbound per endpoint (``target_addr``), each 1 request_total plus, per status
    code, response_total and response_latency_ms; route_* per route when HTTPRoutes exist.
    Linkerd's proxy metrics have no knob to drop labels."""
    own = pod.service.name
    total = 0
    called = {c.service for group in pod.call_plan for c in group}
    for target in sorted(called):
        codes = _codes(sim, own, target)
        if codes == 0:
            continue
        endpoints = len(sim.services[target].pods)
        per_peer = 1 + codes * LINKERD_PER_CODE
        total += endpoints * per_peer + opts.metrics.routes_per_service * per_peer
    for caller in _callers(sim, own):
        codes = _codes(sim, caller, own)
        if codes:
            total += 1 + codes * LINKERD_PER_CODE
    return total


def ztunnel_series(sim: Simulation, node_pods: list[Pod]) -> int:
    """ztunnel's TCP metrics: per (source, destination) workload pair of its node's pods."""
    pairs = 0
    for pod in node_pods:
        own = pod.service.name
        called = {c.service for group in pod.call_plan for c in group}
        pairs += sum(_versions_receiving(sim, sim.services[t]) for t in called
                     if _codes(sim, own, t))  # fmt: skip
        pairs += sum(n for caller, n in _callers(sim, own).items() if _codes(sim, caller, own))
    return pairs * ISTIO_TCP_METRICS


def waypoint_series(sim: Simulation, service: str, opts: ObservabilityOptions) -> int:
    """A waypoint reports Istio's HTTP metrics for its service: sources x versions x codes."""
    removed = set(opts.metrics.istio_removed_tags)
    versions = (1 if removed >= ISTIO_DESTINATION_VERSION_TAGS
                else _versions_receiving(sim, sim.services[service]))  # fmt: skip
    combos = 0
    for caller, sources in _callers(sim, service).items():
        codes = _codes(sim, caller, service)
        if codes:
            combos += ((1 if removed >= ISTIO_SOURCE_TAGS else sources) * versions
                       * (1 if "response_code" in removed else codes))  # fmt: skip
    return combos * istio_series_per_combination(opts)


def series_of(sim: Simulation, proxy: Proxy, opts: ObservabilityOptions) -> int:
    """Request-metric series ``proxy`` exposes at the end of the window (0 when metrics are
    off, and for proxies whose mesh exports none here: Cilium's node Envoy, whose Hubble
    metrics are opt-in, is not modelled)."""
    if not opts.metrics.enabled:
        return 0
    mesh = sim.mesh
    if proxy.kind == "sidecar" and proxy.pod is not None:
        if mesh == "istio":
            per = istio_series_per_combination(opts)
            return istio_combinations(sim, proxy.pod, opts) * per
        if mesh == "linkerd":
            return linkerd_series(sim, proxy.pod, opts)
    if proxy.kind == "ztunnel":
        return ztunnel_series(sim, [p for p in proxy.node.pods if p.alive])
    if proxy.kind == "waypoint":
        return waypoint_series(sim, proxy.name.removesuffix("/waypoint"), opts)
    return 0


# --------------------------------------------------------------------------- the report


def _passes(proxy: Proxy) -> int:
    return sum(w.requests for w in proxy.workers)


def observe(sim: Simulation, features: Features | None) -> dict[str, Any] | None:
    """The ``observability`` block of one run (None when the scenario has none)."""
    if features is None or sim.data_plane.name == "none":
        return None  # no mesh, no mesh telemetry
    opts = features.opts
    v = features.model.value
    dp = sim.data_plane
    run_s = max(sim.env.now, 1e-9)
    window_s = max(sim.end_s - sim.warmup_s, 1e-9)
    proxies = [p for p in dp.proxies if p.alive and (p.pod is None or p.pod.alive)]
    interval = features.scrape_interval_s

    series = {p.name: series_of(sim, p, opts) for p in proxies}
    total_series = sum(series.values())
    series_mb = total_series * v("proxy_series_kb") / 1024.0
    scrape_vcpu = total_series * v("proxy_scrape_cpu_us_per_series") * 1e-6 / interval
    samples_per_s = total_series / interval

    l7 = [p for p in dp.proxies if p.kind in L7_KINDS]
    l7_passes = sum(_passes(p) for p in l7)
    all_cpu_s = sum(p.cpu_s for p in dp.proxies)
    wasm = sum(_passes(p) * p.wasm_filters * p.model.value("wasm_filter_us") for p in l7) * 1e-6
    stats = sum(_passes(p) * p.model.value("telemetry_us") for p in l7) * 1e-6
    logs = l7_passes * features.access_log_us * 1e-6
    spans_cpu = l7_passes * features.span_us * 1e-6
    stats -= logs + spans_cpu  # the models' telemetry_us now holds them too
    if opts.tracing is not None:  # trace-context headers, on the request path of every pass
        propagation = opts.tracing.propagation
        spans_cpu += sum(_passes(p) * header_cpu_us(p.model, propagation) for p in l7) * 1e-6
    if not getattr(dp, "telemetry", True):
        stats = 0.0
    cpu_denominator = all_cpu_s + scrape_vcpu * run_s
    view = getattr(dp, "config_in_view", None)
    memory_total = sum(p.memory_mb(*view(p)) for p in proxies) if view is not None else 0.0

    def cpu_share(cpu_s: float) -> float:
        return cpu_s / cpu_denominator if cpu_denominator > 0 else 0.0

    block: dict[str, Any] = {
        "metrics": {
            "enabled": opts.metrics.enabled,
            "scrape_interval_s": interval,
            "series_total": total_series,
            "series_per_proxy_mean": total_series / len(proxies) if proxies else 0.0,
            "series_per_proxy_max": max(series.values(), default=0),
            "proxy_memory_mb": series_mb,
            "proxy_scrape_cpu_vcpu": scrape_vcpu,
            "stats_cpu_vcpu": stats / run_s,
            "prometheus": {
                "series": total_series,
                "samples_per_s": samples_per_s,
                "cpu_vcpu": samples_per_s * v("prometheus_sample_cpu_us") * 1e-6,
                "memory_mb": v("prometheus_base_memory_mb")
                + total_series * v("prometheus_series_kb") / 1024.0,
            },
        },
        "access_logs": {
            "enabled": opts.access_logs,
            "cpu_us_per_request": features.access_log_us,
            "proxy_cpu_vcpu": logs / run_s,
        },
        "wasm": {
            "filters_per_proxy": max((p.wasm_filters for p in l7), default=0),
            "proxy_cpu_vcpu": wasm / run_s,
        },
        "shares": {
            "cpu": {
                "metrics": cpu_share(stats + scrape_vcpu * run_s),
                "tracing": cpu_share(spans_cpu),
                "access_logs": cpu_share(logs),
                "wasm": cpu_share(wasm),
            },
            "memory": {
                "metrics": series_mb / (memory_total + series_mb)
                if memory_total + series_mb > 0
                else 0.0,
            },
        },
    }
    t = opts.tracing
    if t is not None:
        # Spans: every L7 proxy pass of a sampled request (window rate from its passes).
        window_passes = _window_passes(features, window_s)
        span_rate = window_passes * features.sampling
        capacity = t.collector_cores * 1e6 / v("collector_span_cpu_us")
        workload_rps = _workload_rps(sim, window_s)
        utilisation = span_rate / capacity
        block["tracing"] = {
            "sampling_percent": t.sampling_percent,
            "propagation": t.propagation,
            "header_bytes_per_request": HEADER_BYTES[t.propagation],
            "header_cpu_us_per_proxy_pass": (
                header_cpu_us(l7[0].model, t.propagation) if l7 else 0.0
            ),
            "spans_per_request": (window_passes / workload_rps) if workload_rps else 0.0,
            "span_rate_per_s": span_rate,
            "cpu_us_per_proxy_pass": features.span_us,
            "proxy_cpu_vcpu": spans_cpu / run_s,
            "export_kib_per_s": span_rate * v("span_export_kib"),
            "collector": {
                "cores": t.collector_cores,
                "capacity_spans_per_s": capacity,
                "utilisation": utilisation,
                "saturated": utilisation >= 0.95,
                "dropped_spans_per_s": max(0.0, span_rate - capacity),
                "cpu_vcpu": min(span_rate, capacity) * v("collector_span_cpu_us") * 1e-6,
                "memory_mb": v("collector_base_memory_mb"),
            },
        }
    return block


def _window_passes(features: Features, window_s: float) -> float:
    """L7 proxy passes per second in the window (0 when the run did not reach its end)."""
    warm = features.passes.get("warmup", {})
    end = features.passes.get("end")
    if end is None:
        return 0.0
    return sum(n - warm.get(name, 0) for name, n in end.items()) / window_s


def _workload_rps(sim: Simulation, window_s: float) -> float:
    return sum(w.sent_in_window for w in sim.workloads) / window_s


def header_bytes(propagation: str) -> int:
    """Trace-context bytes added to every request by ``propagation``."""
    return HEADER_BYTES[propagation]


__all__ = [
    "ENVOY_DEFAULT_BUCKETS",
    "HEADER_BYTES",
    "ISTIO_METRIC_SERIES",
    "LINKERD_LATENCY_BUCKETS",
    "Features",
    "header_bytes",
    "histogram_series",
    "instrument",
    "istio_combinations",
    "linkerd_series",
    "observe",
    "series_of",
]
