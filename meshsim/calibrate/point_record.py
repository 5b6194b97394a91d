"""What one point's load in the calibration lab gave, as the calibration records it.

:class:`meshsim.calibrate.lab.Lab` runs a point's load with the host's probes around it and
hands over a :class:`PointRun`: the load generator's result, each process's scheduler
counters, each sidecar's access-log samples (:func:`access_log_samples`, read once per
point), its CPU per CFS period and the probes. :func:`measured` turns that into the
:class:`meshsim.calibrate.points.Measured` record that the fit and the validation read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from meshsim.calibrate import host_phases, wake_latency
from meshsim.calibrate.cgroup import CpuStat
from meshsim.calibrate.decomposition import duration_quantiles, lab_parts
from meshsim.calibrate.points import Measured, Point
from meshsim.calibrate.procstat import Sched
from meshsim.proxy.loadgen import LoadResult

MAX_SAMPLES = 4000  # per-request CPU samples kept per sidecar and point
BASELINE_QUANTILES = 1000
"""Latency quantiles kept for each point without proxies (the baseline's distribution)."""


def baseline_quantiles_ms(h: HdrHistogram) -> list[float]:
    """A latency histogram (us) at the quantiles (i + 0.5) / N, N = :data:`BASELINE_QUANTILES`,
    in ms: a baseline's empirical distribution."""
    return [
        h.get_value_at_percentile(100.0 * (i + 0.5) / BASELINE_QUANTILES) / 1000.0
        for i in range(BASELINE_QUANTILES)
    ]


LATENESS_QUANTILES = 100
"""Quantiles kept of the load generator's timer lateness at each open-loop point."""


def lateness_quantiles_ms(lateness_s: list[float]) -> list[float]:
    """Timer lateness samples (s) at the quantiles (i + 0.5) / N, N =
    :data:`LATENESS_QUANTILES`, in ms (empty without samples)."""
    if not lateness_s:
        return []
    qs = 100.0 * (np.arange(LATENESS_QUANTILES) + 0.5) / LATENESS_QUANTILES
    return [round(float(v) * 1e3, 4) for v in np.percentile(np.asarray(lateness_s), qs)]


@dataclass(frozen=True)
class LogSamples:
    """What a sidecar's access-log lines of one point say (:func:`access_log_samples`)."""

    cpu_us: list[float] = field(default_factory=list)
    """The thread CPU of the requests the proxy sampled (it logs null for the others)."""
    duration_ms: list[float] = field(default_factory=list)
    """Request parsed to response written, of every request."""
    answered_ts: list[float] = field(default_factory=list)
    """The wall clock (s) of each answered (status 200) request: what counts the requests
    of each CFS period (:func:`meshsim.calibrate.period_cpu.measure`)."""


def access_log_samples(data: bytes) -> LogSamples:
    """The samples of the access-log lines in ``data``, read in one pass."""
    out = LogSamples()
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        value = rec.get("cpu_us")
        if isinstance(value, int | float):
            out.cpu_us.append(float(value))
        value = rec.get("duration_ms")
        if isinstance(value, int | float):
            out.duration_ms.append(float(value))
        value = rec.get("ts")
        if rec.get("status") == 200 and isinstance(value, int | float):
            out.answered_ts.append(float(value))
    return out


@dataclass(frozen=True)
class PointRun:
    """One point's load as :meth:`meshsim.calibrate.lab.Lab.measure` ran it, and the host's
    probes around it."""

    result: LoadResult
    used: dict[str, Sched]
    """Each process's scheduler counters over the load (the sidecars only where proxied)."""
    logs: dict[str, LogSamples]
    by_period: dict[str, Any]
    speed: dict[str, Any]
    phases: tuple[dict[str, Any], dict[str, Any]]
    wakeups: tuple[wake_latency.Probe, wake_latency.Probe]
    cpu_stat: CpuStat | None = None
    """The CPU cgroup's counters over the load alone, where one was asked for
    (:meth:`meshsim.calibrate.lab.Lab.measure_counted`)."""


def measured(point: Point, run: PointRun, seed: int) -> Measured:
    """What a point's load gave, as the calibration records it."""
    result = run.result
    n = max(result.completed, 1)
    h = result.corrected
    lat = {f"p{q:g}": h.get_value_at_percentile(q) / 1000.0 for q in (50, 90, 99)}
    lat["mean"] = h.get_mean_value() / 1000.0
    sent = result.uncorrected
    # Less the wait for the load generator's timer: from each request's send to its answer.
    from_send = (
        {"p50": sent.get_value_at_percentile(50) / 1000.0, "mean": sent.get_mean_value() / 1000.0}
        if result.completed and point.rps > 0
        else {}
    )
    rng = np.random.default_rng(seed)

    def sample(xs: list[float]) -> list[float]:
        if len(xs) <= MAX_SAMPLES:
            return xs
        idx = rng.choice(len(xs), MAX_SAMPLES, replace=False)
        return [xs[i] for i in sorted(idx)]

    durations = {k: q for k, log in run.logs.items() if (q := duration_quantiles(log.duration_ms))}
    none = LogSamples()
    before, after = run.phases
    return Measured(
        point=point,
        achieved_rps=result.actual_rps,
        latency_ms=lat,
        requests=result.completed,
        errors=result.errors,
        warnings=list(result.warnings),
        client_cpu_us=sample(run.logs.get("client_sidecar", none).cpu_us),
        server_cpu_us=sample(run.logs.get("server_sidecar", none).cpu_us),
        process_cpu_us_per_request={k: d.cpu_s * 1e6 / n for k, d in run.used.items()},
        latency_quantiles_ms=[] if point.proxied else baseline_quantiles_ms(h),
        send_latency_quantiles_ms=[]
        if point.proxied
        else baseline_quantiles_ms(result.uncorrected),
        requests_per_release=(
            round(result.scheduled / result.releases, 4) if result.releases else None
        ),
        release_lateness_ms=lateness_quantiles_ms(result.release_lateness_s),
        wakeups_per_request={k: d.voluntary / n for k, d in run.used.items()},
        preemptions_per_request={k: d.involuntary / n for k, d in run.used.items()},
        run_delay_us_per_request={
            k: d.run_delay_s * 1e6 / n for k, d in run.used.items() if d.run_delay_s is not None
        },
        latency_from_send_ms=from_send,
        sidecar_duration_ms=durations,
        latency_parts_ms=lab_parts(lat, durations) or {},
        speed=run.speed,
        host_phases=host_phases.point_phases(before, after),
        host_trace=host_phases.point_trace(before, after)
        if point.role in ("held_out", "throttled")
        else {},
        wake_latency_us=wake_latency.point_wakeups(*run.wakeups),
        wake_latency_cross_us=wake_latency.point_wakeups(*run.wakeups, "cross"),
        period_cpu=run.by_period,
    )
