"""Run results: what one simulation measured, and all replications of all meshes.

``Replication`` is taken from what a finished simulation measured
(:class:`~meshsim.sim.measure.Measurement`; plain data only, so it can cross process
boundaries and be saved): the proxies and control-plane blocks of the contract are
computed here, not in the simulator. ``RunResult``
holds a scenario's replications per mesh and builds the ``summary.json`` of the
results contract (docs/DESIGN.md, "Results contract, version 1").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import TYPE_CHECKING, Any, cast

from meshsim.results.histogram import GROWTH, LogHistogram
from meshsim.results.stats import t95, t_interval

if TYPE_CHECKING:
    import pandas as pd

    from meshsim.models.ranges import RangedParameter
    from meshsim.models.samples import ParameterSet
    from meshsim.results.schema import LatencyCi95Ms, LatencyMs, Signals
    from meshsim.sim.engine import Simulation
    from meshsim.sim.measure import Measurement, SubjectMeasure
    from meshsim.sim.recorder import RequestRecord

SATURATION = 0.95
"""Utilisation at or above which a resource is flagged as saturated (DESIGN principle 3)."""
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
RESOLUTION = math.sqrt(GROWTH) - 1.0
"""Half a histogram bucket's width (just under 1 %), by which intervals of quantiles are
widened: a quantile read at a bucket's midpoint was within it of every value in the bucket.
Read among the bucket's values (:mod:`meshsim.results.histogram`) a quantile is usually far
closer, and at worst within the bucket's own spread (under 2 %, where one value repeats at
one end of a bucket and a few others sit at its other)."""


@dataclass
class Subject:
    """Golden signals of one workload, service or edge in one replication."""

    histogram: LogHistogram
    requests: int
    errors: int
    statuses: dict[int, int]
    series: dict[str, list[float]]
    completed: int | None = None
    """Requests finished in the window (None in results stored before it was counted)."""
    batches: list[LogHistogram] = field(default_factory=list)
    """Latency per batch of the window (workloads; not saved with a run)."""

    @classmethod
    def of(cls, measured: SubjectMeasure) -> Subject:
        s = measured.series
        return cls(
            histogram=measured.histogram,
            requests=measured.requests,
            errors=measured.errors,
            statuses=dict(measured.statuses),
            series={
                "requests": [float(v) for v in s.requests],
                "errors": [float(v) for v in s.errors],
                "latency_sum_s": list(s.latency_sum_s),
                "latency_max_s": list(s.latency_max_s),
            },
            completed=measured.completed,
            batches=list(measured.batches),
        )


@dataclass
class Replication:
    """Everything one simulation measured (seconds, core-seconds, counts)."""

    mesh: str
    index: int
    window_s: float
    workloads: dict[str, Subject]
    services: dict[str, Subject]
    edges: dict[str, Subject]
    requested_rps: dict[str, float | None]
    sent: dict[str, int]
    node_utilisation: dict[str, float]
    app_cpu_vcpu: dict[str, float]
    worker_utilisation: dict[str, float]
    """App worker-slot utilisation per pod."""
    proxy_worker_utilisation: dict[str, float]
    """Utilisation per proxy worker thread (or work-stealing pool)."""
    proxies: dict[str, Any]
    control_plane: dict[str, Any]
    cost_models: list[dict[str, str]]
    """Which model file each proxy kind and control plane used, and what it describes."""
    in_flight_at_end: int
    timeline: list[tuple[float, str]]
    warnings: list[str]
    records: list[RequestRecord] | None = None
    resilience: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per destination service: retries, timeouts, overflows, ejections, fail-fasts, ...
    (:mod:`meshsim.sim.dataplanes.resilience`), counted inside the measurement window."""
    cgroups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per container cgroup under ``cluster.scheduler: cfs``: weight, limit, CPU and
    CFS bandwidth counters in the window (empty under FCFS)."""
    observability: dict[str, Any] | None = None
    """What metrics, tracing, access logs and Wasm cost (``mesh_options.observability``)."""
    topology: dict[str, Any] | None = None
    """Zones, cross-zone tries and zone failures (``cluster.zones``, meshsim.sim.zones)."""
    releases: dict[str, int] = field(default_factory=dict)
    """Per workload with ``release_tick_ms``: its load generator's releases in the window."""
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per app pod: its service and version, the requests that reached it and its app CPU in
    the window, and whether it served the whole window (``PodMeasure``)."""

    @classmethod
    def of(cls, measured: Measurement | Simulation, index: int) -> Replication:
        """Replication ``index`` from a finished simulation or what it measured."""
        from meshsim.sim.measure import Measurement

        m = measured if isinstance(measured, Measurement) else measured.measure()
        window = m.window_s
        node_util = {n.name: n.busy_s / (n.cores * window) for n in m.nodes}
        app_cpu: dict[str, float] = {}
        pods: dict[str, dict[str, Any]] = {}
        worker_util: dict[str, float] = {}
        for app in m.apps:
            app_cpu[app.service] = sum(p.cpu_s for p in app.pods) / window
            for pod in app.pods:
                pods[pod.name] = {
                    "service": app.service, "version": pod.version, "requests": pod.requests,
                    "app_cpu_vcpu": pod.cpu_s / window, "whole_window": pod.whole_window,
                }  # fmt: skip
                worker_util[pod.name] = pod.slot_busy_s / (pod.concurrency * window)
        proxy_worker_util = {
            w.name: w.busy_s / (w.threads * window) for p in m.proxies for w in p.workers
        }
        warnings = list(m.warnings)
        if m.in_flight:
            warnings.append(
                f"{m.in_flight} requests were still in flight {m.drained_s:.0f} s "
                "after the window ended; they are not in the latency statistics"
            )
        return cls(
            mesh=m.mesh,
            index=index,
            window_s=window,
            workloads={k: Subject.of(v) for k, v in m.workloads.items()},
            services={k: Subject.of(v) for k, v in m.services.items()},
            edges={f"{a}->{b}": Subject.of(v) for (a, b), v in m.edges.items()},
            requested_rps={c.name: c.requested_rps for c in m.clients},
            sent={c.name: c.sent_in_window for c in m.clients},
            releases={
                c.name: c.releases_in_window for c in m.clients if c.releases_in_window is not None
            },
            node_utilisation=node_util,
            app_cpu_vcpu=app_cpu,
            pods=pods,
            worker_utilisation=worker_util,
            proxy_worker_utilisation=proxy_worker_util,
            proxies=proxy_block(m),
            control_plane=control_plane_block(m),
            cost_models=_cost_models(m),
            in_flight_at_end=m.in_flight,
            timeline=list(m.timeline),
            warnings=warnings,
            records=None if m.records is None else list(m.records),
            observability=None if m.observability is None else dict(m.observability),
            topology=None if m.topology is None else dict(m.topology),
            resilience={
                name: {**r.counts, "by_endpoint": dict(r.by_endpoint)}
                for name, r in m.resilience.items()
            },
            cgroups={
                g.name: {
                    "node": g.node,
                    "cpu_weight": g.cpu_weight,
                    "cpu_limit_m": g.cpu_limit_m,
                    "threads": g.threads,
                    "pod": g.pod,
                    "qos_class": g.qos_class,
                    "cpu_vcpu": g.cpu_s / window,
                    "nr_periods": g.nr_periods,
                    "nr_throttled": g.nr_throttled,
                    "throttled_s": g.throttled_s,
                    "oom_kills": g.oom_kills,
                }
                for g in m.cgroups
            },
        )


def _cost_models(m: Measurement) -> list[dict[str, str]]:
    from meshsim.models import models_dir

    out: list[dict[str, str]] = []
    for model in m.cost_models:
        file = model.path or ""
        if file:
            path = Path(file).resolve()
            shipped = models_dir().resolve()
            file = f"models/{path.relative_to(shipped)}" if path.is_relative_to(shipped) else file
        out.append({"kind": model.kind, "file": file, "describes": model.describes})
    return out


def control_plane_block(m: Measurement) -> dict[str, Any]:
    """The ``control_plane`` block: cpu_vcpu, memory_mb, convergence_s {p50, p90, p99}, and
    the requests stale endpoints, missing certificates and authorization cost."""
    cp = m.control_plane
    # Tries the resilience chain refused itself because the pod was gone (a stale view)
    # count with those the control plane's gate refused.
    refused = sum(r.counts.get("connect_failures", 0) for r in m.resilience.values())
    return {
        "mesh_control_plane": cp.name,
        "cpu_vcpu": cp.cpu_vcpu,
        "memory_mb": cp.memory_mb,
        "convergence_s": None if cp.convergence_s is None else dict(cp.convergence_s),
        "stale_endpoint_attempts": cp.stale_endpoint_attempts + refused,
        "terminating_endpoint_attempts": cp.terminating_endpoint_attempts,
        "certificate_failures": cp.certificate_failures,
        "authz_denied": cp.authz_denied,
        "authz_checks": cp.authz_checks,
        **cp.details,
    }


def proxy_block(m: Measurement) -> dict[str, Any]:
    """The ``proxies`` block: count and memory of the proxies alive at the end, CPU in the
    window (total, and per 1000 rps of the workloads' offered rate), handshakes."""
    if m.handshakes is None:
        return {
            "count": 0,
            "cpu_vcpu_total": 0.0,
            "cpu_vcpu_per_1000rps": 0.0,
            "memory_mb_per_proxy": 0.0,
            "memory_mb_total": 0.0,
            "handshakes": 0,
        }
    live = [p for p in m.proxies if p.live]
    memory = [p.memory_mb or 0.0 for p in live]
    by_kind: dict[str, dict[str, Any]] = {}
    for p, mb in zip(live, memory, strict=True):
        entry = by_kind.setdefault(p.kind, {"count": 0, "memory_mb_total": 0.0,
                                            "cpu_s_total": 0.0, "requests": 0,
                                            "wakeups": 0, "wakeup_cpu_s": 0.0,
                                            "preemptions": 0,
                                            "preemption_cpu_s": 0.0})  # fmt: skip
        entry["count"] += 1
        entry["memory_mb_total"] += mb
        entry["cpu_s_total"] += p.cpu_s_run
        entry["requests"] += sum(w.requests for w in p.workers)
        entry["wakeups"] += sum(w.wakeups for w in p.workers)
        entry["wakeup_cpu_s"] += sum(w.wake_cpu_s for w in p.workers)
        entry["preemptions"] += sum(w.preemptions for w in p.workers)
        entry["preemption_cpu_s"] += sum(w.preempt_cpu_s for w in p.workers)
    for entry in by_kind.values():
        entry["memory_mb_per_proxy"] = entry["memory_mb_total"] / entry["count"]
    workers = [w for p in live for w in p.workers]
    h = m.handshakes
    block: dict[str, Any] = {
        "count": len(live),
        "memory_mb_per_proxy": fmean(memory) if memory else 0.0,
        "memory_mb_total": sum(memory),
        "handshakes": h.total,
        "handshakes_full": h.full,
        "handshakes_resumed": h.resumed,
        "connections_opened": h.connections_opened,
        "connections_open": sum(p.connections for p in live),
        "worker_requests_max_share": _max_share([w.requests for w in workers]),
        "by_kind": by_kind,
    }
    if m.proxies:
        block.update(_proxy_cpu(m))
    if m.kernel_cpu_s:
        # eBPF and in-kernel encryption: not in any container's CPU (models/cilium-agent.yaml).
        block["kernel_cpu_vcpu"] = m.kernel_cpu_s / m.window_s
    return block


def _max_share(requests: list[int]) -> float:
    """The busiest worker's share of its proxy's request bursts (1/n is even), overall."""
    total = sum(requests)
    return max(requests, default=0) / total if total else 0.0


def _proxy_cpu(m: Measurement) -> dict[str, float]:
    window = m.window_s
    total = sum(p.cpu_s for p in m.proxies) / window
    offered = sum(r for c in m.clients if (r := c.requested_rps) is not None)
    if offered == 0:
        offered = sum(c.sent_in_window for c in m.clients) / window
    return {
        "cpu_vcpu_total": total,
        "cpu_vcpu_per_1000rps": total / (offered / 1000.0) if offered else 0.0,
    }


@dataclass
class MeshResult:
    """All replications of one mesh."""

    mesh: str
    replications: list[Replication] = field(default_factory=list)

    def merged(self, kind: str, name: str) -> LogHistogram:
        h = LogHistogram()
        for rep in self.replications:
            subject = getattr(rep, kind).get(name)
            if subject is not None:
                h.merge(subject.histogram)
        return h

    def names(self, kind: str) -> list[str]:
        seen: list[str] = []
        for rep in self.replications:
            for name in getattr(rep, kind):
                if name not in seen:
                    seen.append(name)
        return seen

    def signals(self, kind: str, name: str) -> Signals:
        """Golden signals of one subject over replications (the contract's fields)."""
        reps = [r for r in self.replications if name in getattr(r, kind)]
        subjects: list[Subject] = [getattr(r, kind)[name] for r in reps]
        requests = sum(s.requests for s in subjects)
        errors = sum(s.errors for s in subjects)
        window = sum(r.window_s for r in reps)
        merged = self.merged(kind, name)
        latency = {"mean": _ms(merged.mean)}
        latency.update({k: _ms(merged.quantile(q)) for k, q in QUANTILES.items()})
        out: Signals = {
            "requests": round(requests / len(reps)) if reps else 0,
            "rps": requests / window if window else 0.0,
            "success_rate": (requests - errors) / requests if requests else None,
            "errors": round(errors / len(reps)) if reps else 0,
            "latency_ms": cast("LatencyMs", latency),
            "latency_ci95_ms": None,
            "statuses": {},
        }
        from meshsim.sim.app import status_key

        statuses: dict[str, int] = {}
        for s in subjects:
            for code, n in s.statuses.items():
                key = status_key(code)
                statuses[key] = statuses.get(key, 0) + n
        # Per replication, like "requests".
        out["statuses"] = {k: round(n / len(reps)) for k, n in sorted(statuses.items())}
        batches = [b for s in subjects for b in s.batches if b.count]
        if len(batches) >= MIN_BATCHES:
            out["latency_ci95_ms"] = _batch_means_ci(merged, batches)
            out["latency_ci_method"] = f"batch means ({len(batches)} batches)"
        elif len(subjects) >= 2:
            out["latency_ci_method"] = f"replications ({len(subjects)})"
            ci: dict[str, list[float] | None] = {}
            for key, q in (("mean", None), *QUANTILES.items()):
                values = [
                    (s.histogram.mean if q is None else s.histogram.quantile(q)) * 1e3
                    for s in subjects
                    if s.requests
                ]
                interval = t_interval(values)
                if interval is not None and q is not None:
                    # Replications' quantiles are read from 2 % buckets: two that land in
                    # one can give an interval narrower than the histogram tells apart, so
                    # widen by its resolution.
                    interval = [interval[0] / (1 + RESOLUTION), interval[1] * (1 + RESOLUTION)]
                if interval is not None:
                    # A latency is never negative, whatever a two-replication t says.
                    interval = [max(0.0, interval[0]), interval[1]]
                ci[key] = interval
            out["latency_ci95_ms"] = cast("LatencyCi95Ms", ci)
        return out


MIN_BATCHES = 4
"""Fewer batches than this give a t interval too wide to say anything (t at 2 dof is 4.3)."""


def _batch_means_ci(merged: LogHistogram, batches: list[LogHistogram]) -> LatencyCi95Ms:
    """95 % CIs of the window's mean and percentiles by sectioning: centred on the estimate
    from all the requests, with the half-width that the spread of the batches' estimates
    gives (Asmussen and Glynn, *Stochastic Simulation*, 2007, III.5a). Centring on the pooled
    estimate rather than on the batches' average keeps the small-batch bias of a tail
    percentile out of the interval's centre."""
    ci: dict[str, list[float] | None] = {}
    for key, q in (("mean", None), *QUANTILES.items()):
        centre = merged.mean if q is None else merged.quantile(q)
        values = [(b.mean if q is None else b.quantile(q)) for b in batches]
        clean = [v for v in values if not math.isnan(v)]
        if math.isnan(centre) or len(clean) < 2:
            ci[key] = None
            continue
        half = t95(len(clean) - 1) * stdev(clean) / math.sqrt(len(clean))
        low, high = (centre - half) * 1e3, (centre + half) * 1e3
        if q is not None:
            # The histogram's resolution bounds how precise a percentile can be.
            low, high = low / (1 + RESOLUTION), high * (1 + RESOLUTION)
        ci[key] = [max(0.0, low), high]
    return cast("LatencyCi95Ms", ci)


ADDED_QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
"""The percentiles whose added latency over the baseline a summary gives."""


def paired_difference_ci(
    mine: MeshResult, other: MeshResult, name: str
) -> dict[str, list[float] | None] | None:
    """95 % CIs (ms) of ``mine``'s latency minus ``other``'s for workload ``name`` at each of
    :data:`ADDED_QUANTILES` (the latency a mesh adds, when ``other`` is the `none` run), by
    paired batch means: replication ``i`` of every mesh runs on the same seed and cuts its
    window into the same batches by send time, so batch ``k`` of the two saw the same
    arrivals and service times (common random numbers), and the spread of the batches'
    differences, not of each run's own estimates, gives the half-width (sectioning, as
    :func:`_batch_means_ci`), centred on the difference of the pooled estimates. Widened by
    half a bucket of each of the two percentiles (:data:`RESOLUTION`). None with fewer than
    :data:`MIN_BATCHES` pairs."""
    pairs: list[tuple[LogHistogram, LogHistogram]] = []
    for rep_m, rep_b in zip(mine.replications, other.replications, strict=False):
        sm, sb = rep_m.workloads.get(name), rep_b.workloads.get(name)
        if sm is None or sb is None or len(sm.batches) != len(sb.batches):
            continue
        pairs.extend((a, b) for a, b in zip(sm.batches, sb.batches, strict=True)
                     if a.count and b.count)  # fmt: skip
    if len(pairs) < MIN_BATCHES:
        return None
    merged_m = mine.merged("workloads", name)
    merged_b = other.merged("workloads", name)
    out: dict[str, list[float] | None] = {}
    for key, q in ADDED_QUANTILES:
        a, b = merged_m.quantile(q), merged_b.quantile(q)
        diffs = [x.quantile(q) - y.quantile(q) for x, y in pairs]
        clean = [d for d in diffs if not math.isnan(d)]
        if math.isnan(a) or math.isnan(b) or len(clean) < 2:
            out[key] = None
            continue
        half = t95(len(clean) - 1) * stdev(clean) / math.sqrt(len(clean))
        half += RESOLUTION * (a + b)
        out[key] = [(a - b - half) * 1e3, (a - b + half) * 1e3]
    return out


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else seconds * 1e3


@dataclass
class ModelSampling:
    """Every mesh rerun under each drawn parameter set (one replication each, the first
    replication's seed, so a set's differences between meshes are paired)."""

    parameters: list[RangedParameter]
    sets: list[ParameterSet]
    runs: list[dict[str, MeshResult]]
    """``runs[k][mesh]``: ``mesh`` under ``sets[k]``."""


@dataclass
class RunResult:
    """A scenario's results: one :class:`MeshResult` per mesh, in the scenario's order."""

    scenario_name: str
    scenario_sha256: str
    seed: int
    meshes: dict[str, MeshResult]
    meshsim_version: str
    model_sampling: ModelSampling | None = None
    """The runs under drawn cost-model parameter sets, when ``--model-samples`` asked."""

    def to_dataframe(self) -> pd.DataFrame:
        """Golden signals as a tidy frame: one row per mesh, replication and subject."""
        from meshsim.results.frames import signals_frame

        return signals_frame(self)

    def timeseries(self) -> pd.DataFrame:
        """Per-second requests, errors and mean latency per mesh, replication and subject."""
        from meshsim.results.frames import series_frame

        return series_frame(self)

    def records(self) -> pd.DataFrame:
        """Per-request records (only when the run kept them)."""
        from meshsim.results.frames import records_frame

        return records_frame(self)
