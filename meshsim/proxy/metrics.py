"""Prometheus metrics of one proxy (its own registry, so that tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

# Latency buckets from 100 us to 10 s: loopback hops are sub-millisecond.
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
_CPU_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        ProcessCollector(registry=reg)  # process CPU and memory, for calibration
        self.requests = Counter(
            "meshsim_proxy_requests",
            "Requests answered, by listener and status.",
            ["listener", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "meshsim_proxy_request_duration_seconds",
            "Time from request head received to response complete.",
            ["listener"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.cpu = Histogram(
            "meshsim_proxy_request_cpu_seconds",
            "Proxy thread CPU time spent on each request (time.thread_time deltas in the "
            "request's callbacks; event-loop overhead is in process_cpu_seconds_total).",
            ["listener"],
            buckets=_CPU_BUCKETS,
            registry=reg,
        )
        self.retries = Counter(
            "meshsim_proxy_upstream_retries", "Retries made.", ["listener"], registry=reg
        )
        self.overflows = Counter(
            "meshsim_proxy_breaker_overflows",
            "Requests refused by a circuit breaker.",
            ["listener"],
            registry=reg,
        )
        self.ejections = Counter(
            "meshsim_proxy_ejections",
            "Hosts ejected by outlier detection or failure accrual.",
            ["listener"],
            registry=reg,
        )
        self.connections = Counter(
            "meshsim_proxy_connections", "Connections opened.", ["listener", "side"], registry=reg
        )
        self.active = Gauge(
            "meshsim_proxy_connections_active",
            "Connections open now.",
            ["listener", "side"],
            registry=reg,
        )
        self.handshakes = Counter(
            "meshsim_proxy_tls_handshakes",
            "TLS handshakes, by side and result.",
            ["listener", "side", "result"],
            registry=reg,
        )
        self.refused = Counter(
            "meshsim_proxy_refused",
            "Requests or connections refused, by reason.",
            ["listener", "reason"],
            registry=reg,
        )
