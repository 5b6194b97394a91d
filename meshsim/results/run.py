"""Run results: what one simulation measured, and all replications of all meshes.

``Replication`` is taken from a finished :class:`~meshsim.sim.engine.Simulation`
(plain data only, so it can cross process boundaries and be saved). ``RunResult``
holds a scenario's replications per mesh and builds the ``summary.json`` of the
results contract (docs/DESIGN.md, "Results contract, version 1").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshsim.results.histogram import GROWTH, LogHistogram
from meshsim.results.stats import t_interval

if TYPE_CHECKING:
    import pandas as pd

    from meshsim.sim.engine import Simulation
    from meshsim.sim.recorder import RequestRecord, Stats

SATURATION = 0.95
"""Utilisation at or above which a resource is flagged as saturated (DESIGN principle 3)."""
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
RESOLUTION = math.sqrt(GROWTH) - 1.0
"""Largest relative error of a reported quantile (just under 1 %)."""


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

    @classmethod
    def of(cls, stats: Stats) -> Subject:
        s = stats.series
        return cls(
            histogram=stats.histogram,
            requests=stats.requests,
            errors=stats.errors,
            statuses=dict(stats.statuses),
            series={
                "requests": [float(v) for v in s.requests],
                "errors": [float(v) for v in s.errors],
                "latency_sum_s": list(s.latency_sum_s),
                "latency_max_s": list(s.latency_max_s),
            },
            completed=stats.completed,
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

    @classmethod
    def of(cls, sim: Simulation, index: int) -> Replication:
        rec = sim.recorder
        window = sim.end_s - sim.warmup_s
        warm, end = sim.snapshots.get("warmup", {}), sim.snapshots.get("end", {})

        def delta(key: str) -> float:
            return end.get(key, 0.0) - warm.get(key, 0.0)

        cores = sim.scenario.cluster.cores_per_node
        node_util = {n.name: delta(f"node/{n.name}") / (cores * window) for n in sim.nodes}
        app_cpu: dict[str, float] = {}
        worker_util: dict[str, float] = {}
        for svc in sim.services.values():
            app_cpu[svc.name] = sum(delta(f"pod/{p.name}/cpu") for p in svc.pods) / window
            for pod in svc.pods:
                worker_util[pod.name] = delta(f"pod/{pod.name}/slots") / (
                    svc.spec.concurrency * window
                )
        # The data plane may add warnings while summarising, so summarise first.
        proxies = sim.data_plane.proxy_summary()
        proxies.update(_proxy_cpu(sim, delta, window))
        proxy_worker_util = {
            key: delta(f"worker/{key}") / (threads * window)
            for key, (_busy, threads) in sim.data_plane.worker_counters().items()
        }
        warnings = list(sim.data_plane.warnings)
        in_flight = sim.in_flight()
        if in_flight:
            warnings.append(
                f"{in_flight} requests were still in flight {sim.env.now - sim.end_s:.0f} s "
                "after the window ended; they are not in the latency statistics"
            )
        return cls(
            mesh=sim.mesh,
            index=index,
            window_s=window,
            workloads={k: Subject.of(v) for k, v in rec.workloads.items()},
            services={k: Subject.of(v) for k, v in rec.services.items()},
            edges={f"{a}->{b}": Subject.of(v) for (a, b), v in rec.edges.items()},
            requested_rps={w.spec.name: w.requested_rps() for w in sim.workloads},
            sent={w.spec.name: w.sent_in_window for w in sim.workloads},
            node_utilisation=node_util,
            app_cpu_vcpu=app_cpu,
            worker_utilisation=worker_util,
            proxy_worker_utilisation=proxy_worker_util,
            proxies=proxies,
            control_plane=_control_plane(sim),
            cost_models=_cost_models(sim),
            in_flight_at_end=in_flight,
            timeline=list(sim.timeline.log),
            warnings=warnings,
            records=rec.records,
            resilience=_resilience(sim),
        )


def _resilience(sim: Simulation) -> dict[str, dict[str, Any]]:
    chain = getattr(sim.data_plane, "resilience", None)
    return chain.summary() if chain is not None else {}


def _cost_models(sim: Simulation) -> list[dict[str, str]]:
    from meshsim.models import models_dir

    out: list[dict[str, str]] = []
    for model in [*sim.data_plane.cost_models(), *sim.control_plane.cost_models()]:
        file = model.path or ""
        if file:
            path = Path(file).resolve()
            shipped = models_dir().resolve()
            file = f"models/{path.relative_to(shipped)}" if path.is_relative_to(shipped) else file
        out.append({"kind": model.kind, "file": file, "describes": model.describes})
    return out


def _control_plane(sim: Simulation) -> dict[str, Any]:
    """The ``control_plane`` block: cpu_vcpu, memory_mb, convergence_s {p50, p90, p99}, and
    the requests stale endpoints, missing certificates and authorization cost."""
    block = sim.control_plane.summary(sim.warmup_s, sim.end_s)
    # Tries the resilience chain refused itself because the pod was gone (a stale view).
    chain = getattr(sim.data_plane, "resilience", None)
    if chain is not None:
        block["stale_endpoint_attempts"] += sum(
            int(c.get("connect_failures", 0)) for c in chain.summary().values()
        )
    return block


def _proxy_cpu(sim: Simulation, delta: Any, window: float) -> dict[str, float]:
    keys = [k for k in sim.snapshots.get("end", {}) if k.startswith("proxy/")]
    if not keys:
        return {}
    total = sum(delta(k) for k in keys) / window
    offered = sum(r for w in sim.workloads if (r := w.requested_rps()) is not None)
    if offered == 0:
        offered = sum(w.sent_in_window for w in sim.workloads) / window
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

    def signals(self, kind: str, name: str) -> dict[str, Any]:
        """Golden signals of one subject over replications (the contract's fields)."""
        reps = [r for r in self.replications if name in getattr(r, kind)]
        subjects: list[Subject] = [getattr(r, kind)[name] for r in reps]
        requests = sum(s.requests for s in subjects)
        errors = sum(s.errors for s in subjects)
        window = sum(r.window_s for r in reps)
        merged = self.merged(kind, name)
        latency = {"mean": _ms(merged.mean)}
        latency.update({k: _ms(merged.quantile(q)) for k, q in QUANTILES.items()})
        out: dict[str, Any] = {
            "requests": round(requests / len(reps)) if reps else 0,
            "rps": requests / window if window else 0.0,
            "success_rate": (requests - errors) / requests if requests else None,
            "errors": round(errors / len(reps)) if reps else 0,
            "latency_ms": latency,
            "latency_ci95_ms": None,
        }
        statuses: dict[str, int] = {}
        for s in subjects:
            for code, n in s.statuses.items():
                statuses[str(code)] = statuses.get(str(code), 0) + n
        # Per replication, like "requests".
        out["statuses"] = {k: round(n / len(reps)) for k, n in sorted(statuses.items())}
        if len(subjects) >= 2:
            ci: dict[str, list[float] | None] = {}
            for key, q in (("mean", None), *QUANTILES.items()):
                values = [
                    (s.histogram.mean if q is None else s.histogram.quantile(q)) * 1e3
                    for s in subjects
                    if s.requests
                ]
                interval = t_interval(values)
                if interval is not None and q is not None:
                    # Replications' quantiles are bucket midpoints: two that land in one
                    # bucket give a zero-width interval that claims more precision than the
                    # histogram has, so widen by its resolution.
                    interval = [interval[0] / (1 + RESOLUTION), interval[1] * (1 + RESOLUTION)]
                if interval is not None:
                    # A latency is never negative, whatever a two-replication t says.
                    interval = [max(0.0, interval[0]), interval[1]]
                ci[key] = interval
            out["latency_ci95_ms"] = ci
        return out


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else seconds * 1e3


@dataclass
class RunResult:
    """A scenario's results: one :class:`MeshResult` per mesh, in the scenario's order."""

    scenario_name: str
    scenario_sha256: str
    seed: int
    meshes: dict[str, MeshResult]
    meshsim_version: str

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
