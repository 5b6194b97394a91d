"""``mesh_options.observability``: metrics, tracing, access logs (issue 16).

Absent (the default), a run charges nothing beyond the proxy models' own per-request stats
(``telemetry_us``) and writes no ``observability`` block, so earlier results are unchanged.
Present, every mesh's run charges and reports what the block turns on
(:mod:`meshsim.sim.observability`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from meshsim.scenario.base import MAX_COUNT, Spec

IstioMetric = Literal["REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE"]
"""Istio Telemetry API metric names (Telemetry.metrics.overrides.match.metric)."""

IstioTag = Literal[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
]
"""The labels of Istio's standard metrics (istio.io, Istio Standard Metrics)."""


class MetricsOptions(Spec):
    enabled: bool = Field(True, description="Prometheus scrapes every proxy's metrics.")
    scrape_interval_s: Annotated[float, Field(ge=1, le=3600)] | None = Field(
        None, description="Scrape interval; default models/observability.yaml's (15 s)."
    )
    istio_disabled_metrics: list[IstioMetric] = Field(
        default_factory=list,
        description="Istio Telemetry API: metrics turned off (overrides with disabled: true).",
    )
    istio_removed_tags: list[IstioTag] = Field(
        default_factory=list,
        description="Istio Telemetry API: tags removed from every metric (tagOverrides "
        "operation: REMOVE), e.g. response_code or the source_* tags.",
    )
    routes_per_service: Annotated[int, Field(ge=0, le=MAX_COUNT)] = Field(
        0,
        description="Linkerd: HTTPRoutes per service, each adding route_* series "
        "(0: none, the default without HTTPRoute policies).",
    )


class TracingOptions(Spec):
    sampling_percent: Annotated[float, Field(ge=0, le=100)] = Field(
        1.0, description="Share of requests traced (Istio's default sampling is 1 %)."
    )
    propagation: Literal["w3c", "b3", "b3-single"] = Field(
        "w3c", description="Trace context headers the proxies add to every request."
    )
    batch_spans: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        5, description="Spans per export call (Envoy's min_flush_spans, default 5)."
    )
    collector_cores: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1, description="Cores of the OpenTelemetry collector that receives the spans."
    )


class ObservabilityOptions(Spec):
    metrics: MetricsOptions = Field(default_factory=MetricsOptions)
    tracing: TracingOptions | None = Field(None, description="Distributed tracing (off: null).")
    access_logs: bool = Field(False, description="Every L7 proxy writes an access-log line.")
