"""The Recorder: streams every completed request into histograms and counters.

Statistics count requests *sent* in the measurement window [warm-up, end); the run
drains after ``end`` so that slow requests sent late still count (dropping them
would bias the tail low). ``completed`` counts those that *finished* in the window,
the achieved rate a load generator reports. Per-second series cover the whole run, warm-up included,
for timelines around events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshsim.results.histogram import LogHistogram


@dataclass(slots=True)
class Series:
    """Per-second counts over the whole run (index = second of the send time)."""

    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    latency_sum_s: list[float] = field(default_factory=list)
    latency_max_s: list[float] = field(default_factory=list)

    def add(self, second: int, latency_s: float, ok: bool) -> None:
        if second >= len(self.requests):
            grow = second + 1 - len(self.requests)
            self.requests.extend([0] * grow)
            self.errors.extend([0] * grow)
            self.latency_sum_s.extend([0.0] * grow)
            self.latency_max_s.extend([0.0] * grow)
        self.requests[second] += 1
        if not ok:
            self.errors[second] += 1
        self.latency_sum_s[second] += latency_s
        if latency_s > self.latency_max_s[second]:
            self.latency_max_s[second] = latency_s


@dataclass(slots=True)
class Stats:
    """Golden signals of one subject (a workload, a service or an edge)."""

    histogram: LogHistogram = field(default_factory=LogHistogram)
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    series: Series = field(default_factory=Series)
    completed: int = 0
    """Requests that *finished* in the window, whenever sent: what a load generator counts
    as its achieved rate (below ``requests`` when the system cannot keep up)."""
    batches: list[LogHistogram] | None = None
    """The window cut into equal batches by send time (workloads only): batch means give
    a confidence interval from one replication (see ``BATCHES``)."""


@dataclass(frozen=True)
class RequestRecord:
    """One attempt at one hop, kept only when per-request records are asked for."""

    request_id: int
    workload: str
    kind: str
    """'workload' (client view), 'service' (server view) or 'edge' (caller view)."""
    subject: str
    started_at: float
    finished_at: float
    status: int


BATCHES = 10
"""Batches per replication for the client-side latency CIs. Ten to thirty batches is the usual
advice for the method of batch means (Schmeiser 1982, "Batch size effects in the analysis of
simulation output"): enough degrees of freedom for a t interval, batches long enough (here a
tenth of the window, seconds of traffic) for their statistics to be nearly independent."""


class Recorder:
    """Receives completed requests from the data planes and the application model."""

    def __init__(self, warmup_s: float, end_s: float, keep_records: bool = False) -> None:
        self.warmup_s = warmup_s
        self.end_s = end_s
        self._batch_per_s = BATCHES / (end_s - warmup_s) if end_s > warmup_s else 0.0
        self.workloads: dict[str, Stats] = {}
        self.services: dict[str, Stats] = {}
        self.edges: dict[tuple[str, str], Stats] = {}
        self.records: list[RequestRecord] | None = [] if keep_records else None

    def _add(self, stats: Stats, started_at: float, finished_at: float, status: int) -> None:
        # Three calls per hop: Series.add and is_success are inlined (same arithmetic, in
        # the same order, so the same sums).
        latency = finished_at - started_at
        ok = 100 <= status < 500  # is_success
        series = stats.series
        second = int(started_at)
        requests = series.requests
        if second >= len(requests):
            series.add(second, latency, ok)
        else:
            requests[second] += 1
            if not ok:
                series.errors[second] += 1
            series.latency_sum_s[second] += latency
            peaks = series.latency_max_s
            if latency > peaks[second]:
                peaks[second] = latency
        warmup_s = self.warmup_s
        end_s = self.end_s
        if warmup_s <= finished_at < end_s:
            stats.completed += 1
        if warmup_s <= started_at < end_s:
            stats.histogram.record(latency)
            stats.requests += 1
            if not ok:
                stats.errors += 1
            statuses = stats.statuses
            statuses[status] = statuses.get(status, 0) + 1

    def workload(
        self, name: str, rid: int, started_at: float, finished_at: float, status: int
    ) -> None:
        stats = self.workloads.get(name)
        if stats is None:
            stats = self.workloads[name] = Stats(batches=[LogHistogram() for _ in range(BATCHES)])
        self._add(stats, started_at, finished_at, status)
        if stats.batches is not None and self.warmup_s <= started_at < self.end_s:
            batch = min(int((started_at - self.warmup_s) * self._batch_per_s), BATCHES - 1)
            stats.batches[batch].record(finished_at - started_at)
        if self.records is not None:
            self.records.append(
                RequestRecord(rid, name, "workload", name, started_at, finished_at, status)
            )

    def service(
        self, name: str, rid: int, workload: str, started_at: float, finished_at: float, status: int
    ) -> None:
        stats = self.services.get(name)
        if stats is None:
            stats = self.services[name] = Stats()
        self._add(stats, started_at, finished_at, status)
        if self.records is not None:
            self.records.append(
                RequestRecord(rid, workload, "service", name, started_at, finished_at, status)
            )

    def edge(
        self,
        caller: str,
        callee: str,
        rid: int,
        workload: str,
        started_at: float,
        finished_at: float,
        status: int,
    ) -> None:
        key = (caller, callee)
        stats = self.edges.get(key)
        if stats is None:
            stats = self.edges[key] = Stats()
        self._add(stats, started_at, finished_at, status)
        if self.records is not None:
            self.records.append(
                RequestRecord(
                    rid, workload, "edge", f"{caller}->{callee}", started_at, finished_at, status
                )
            )


__all__ = ["Recorder", "RequestRecord", "Series", "Stats"]
