"""Prometheus metrics of one proxy (its own registry, so that tests can run several).

The three per-request series (request totals by status, latency and CPU histograms) are
plain Python counters in :class:`RouteStats`, exported by a custom collector at scrape time:
prometheus-client's ``labels()``, ``inc()`` and ``observe()`` take a lock and cost 1-2 us
each, a tenth of what the proxy spends on a whole request. The rest are prometheus-client
metrics (they change per connection or per retry, not per request).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

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


_REQUESTS_HELP = "Requests answered, by listener and status."
_LATENCY_HELP = "Time from request head received to response complete."
_CPU_HELP = (
    "Proxy thread CPU time spent on each sampled request (time.thread_time deltas in the "
    "request's callbacks, one request in cpu_sample_every; event-loop overhead is in "
    "process_cpu_seconds_total)."
)


class FastHistogram:
    """Cumulative-bucket histogram without locks (the proxy is single-threaded)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bucket with le >= value
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
        return out


class RouteStats:
    """The per-request series of one listener."""

    __slots__ = ("cpu", "latency", "status")

    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.latency = FastHistogram(_LATENCY_BUCKETS)
        self.cpu = FastHistogram(_CPU_BUCKETS)


class _RouteCollector:
    def __init__(self, stats: dict[str, RouteStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "meshsim_proxy_requests", _REQUESTS_HELP, labels=["listener", "status"]
        )
        latency = HistogramMetricFamily(
            "meshsim_proxy_request_duration_seconds", _LATENCY_HELP, labels=["listener"]
        )
        cpu = HistogramMetricFamily(
            "meshsim_proxy_request_cpu_seconds", _CPU_HELP, labels=["listener"]
        )
        for name, st in sorted(self.stats.items()):
            for status, n in sorted(st.status.items()):
                requests.add_metric([name, str(status)], float(n))
            latency.add_metric([name], st.latency.buckets(), st.latency.sum)
            cpu.add_metric([name], st.cpu.buckets(), st.cpu.sum)
        yield requests
        yield latency
        yield cpu


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        ProcessCollector(registry=reg)  # process CPU and memory, for calibration
        self.routes: dict[str, RouteStats] = {}
        reg.register(_RouteCollector(self.routes))
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

    def route(self, listener: str) -> RouteStats:
        """The per-request series of ``listener`` (created on first use)."""
        stats = self.routes.get(listener)
        if stats is None:
            stats = self.routes[listener] = RouteStats()
        return stats
