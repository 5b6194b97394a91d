"""The lab host's fast and slow phases, measured on each lab core around every point.

The lab's cores are a shared virtual machine's, and their speed is not one number: timed in
chunks of about 0.1 ms, the same pure-Python loop ran at two levels, 1.7-2x apart, in phases
of tens of milliseconds (2026-12-02, 10 s per core with the lab idle: core 0 slow 9 % of the
time in phases of 37 ms on average, core 1 slow 66 % in phases of 95 ms). Those phases, not
anything per request, make most of the lab's tail: a slow phase cuts a core's capacity for
tens of milliseconds, a queue builds behind it, and the requests in it finish late together
(the sidecars' access logs show the tail's requests in such clumps, one request leaving the
server sidecar every 0.2 ms instead of every 0.06).

So the lab times :data:`CHUNK_ROUNDS` rounds of the speed probe's work
(:func:`meshsim.calibrate.speed.probe_work`) back to back for :data:`TRACE_S` on each core,
right before and right after each point's load (:func:`trace_cores`). It keeps a two-state
summary of every point (:func:`two_state`: the share of time slow, the slow level over the
fast one, the mean length of a slow phase) and, for the held-out points, the chunks' 1 ms
bins themselves (:func:`point_trace`), which the speed-adjusted validation replays as
``cluster.host_speed`` (:mod:`meshsim.sim.cpu.host_speed`) around a mean of 1
(:func:`replay_spec`); the traces' time-average is the point's level (:func:`level_us`).

Wall time, not the thread's CPU time: on this host the guest counts a slow phase as CPU
time too (the two agree within 0.3 % of chunks), and wall time also sees what takes the
core from the lab's processes. Single-millisecond spikes (an interrupt, a kernel thread) are
not phases: a three-bin median filter removes them before the bins are classified.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from meshsim.calibrate.speed import on_each_core, probe_work

TRACE_S: Final = 0.5
"""Seconds of chunks per core, before and after each point's load (2 s per point in all)."""
CHUNK_ROUNDS: Final = 50
"""Probe rounds per chunk: about 0.1 ms in the host's fast state."""
BIN_S: Final = 0.001
"""Chunks are averaged in bins of 1 ms, the time resolution of the phases."""
SLOW_ABOVE: Final = 1.3
"""A bin is slow when its mean chunk time is above this multiple of the fast level (the
10th percentile of the bins): the states measured are 1.7-2x apart, the fast state's own
bins vary by less than 10 %."""


def trace(seconds: float = TRACE_S) -> np.ndarray:
    """Chunks of probe work back to back on this thread for ``seconds``: an array of
    (start, wall seconds) rows, ``time.perf_counter`` clock."""
    rows: list[tuple[float, float]] = []
    clock = time.perf_counter
    end = clock() + seconds
    while True:
        t0 = clock()
        probe_work(CHUNK_ROUNDS)
        t1 = clock()
        rows.append((t0, t1 - t0))
        if t1 >= end:
            return np.asarray(rows)


def trace_cores(cores: Iterable[int], seconds: float = TRACE_S) -> dict[str, np.ndarray]:
    """:func:`trace` pinned on each of ``cores`` in turn (:func:`speed.on_each_core`)."""
    return on_each_core(cores, lambda: trace(seconds))


def _bins(chunks: np.ndarray) -> np.ndarray:
    """Mean chunk time per :data:`BIN_S` bin (empty bins take the previous one's)."""
    t = chunks[:, 0] - chunks[0, 0]
    idx = (t / BIN_S).astype(int)
    counts = np.bincount(idx)
    sums = np.bincount(idx, weights=chunks[:, 1])
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    for i in range(1, len(means)):
        if counts[i] == 0:
            means[i] = means[i - 1]
    if counts[0] == 0:  # pragma: no cover - bin 0 holds the first chunk
        means[0] = means[1]
    return means


def _median3(x: np.ndarray) -> np.ndarray:
    if len(x) < 3:
        return x
    padded = np.concatenate(([x[0]], x, [x[-1]]))
    out: np.ndarray = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return out


def two_state(segments: Sequence[np.ndarray]) -> dict[str, float] | None:
    """The two-state fit of one core's traces (each a :func:`trace` array, e.g. before and
    after a load): ``slow_share`` (of the bins), ``slow_factor`` (the slow bins' mean over
    the fast ones'), ``slow_dwell_ms`` (slow bins per slow run, runs cut at a segment's
    ends), ``mean_chunk_us`` and ``seconds`` traced. None without a full bin."""
    binned = [_median3(_bins(s)) for s in segments if len(s)]
    binned = [b for b in binned if len(b)]
    if not binned:
        return None
    every = np.concatenate(binned)
    fast_level = float(np.percentile(every, 10))
    slow_bins = runs = 0
    for b in binned:
        slow = b > SLOW_ABOVE * fast_level
        slow_bins += int(slow.sum())
        # A run starts at each slow bin whose predecessor (in this segment) is fast.
        runs += int(slow[0]) + int(np.count_nonzero(slow[1:] & ~slow[:-1]))
    is_slow = every > SLOW_ABOVE * fast_level
    fast_mean = float(every[~is_slow].mean()) if (~is_slow).any() else fast_level
    slow_mean = float(every[is_slow].mean()) if is_slow.any() else fast_mean
    return {
        "slow_share": round(slow_bins / len(every), 4),
        "slow_factor": round(slow_mean / fast_mean, 4),
        "slow_dwell_ms": round(slow_bins / runs * BIN_S * 1e3, 2) if runs else 0.0,
        "mean_chunk_us": round(float(every.mean()) * 1e6, 3),
        "seconds": round(sum(float(s[-1, 0] + s[-1, 1] - s[0, 0]) for s in segments), 3),
    }


def point_phases(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """A point's ``host_phases`` record: per core, :func:`two_state` of its traces right
    before and right after the load."""
    out: dict[str, dict[str, float]] = {}
    for core in sorted(set(before) | set(after)):
        fit = two_state([s for s in (before.get(core), after.get(core)) if s is not None])
        if fit is not None:
            out[core] = fit
    return out


def point_trace(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]
) -> dict[str, list[int]]:
    """A point's ``host_trace`` record: per core, the 1 ms bins of its traces before and
    after the load, one after the other, in percent of their mean (what the simulated lab
    replays: :func:`replay_spec`)."""
    out: dict[str, list[int]] = {}
    for core in sorted(set(before) | set(after)):
        bins = [_bins(s) for s in (before.get(core), after.get(core)) if s is not None and len(s)]
        if bins:
            every = np.concatenate(bins)
            out[core] = [int(v) for v in np.rint(every / every.mean() * 100.0)]
    return out


def merge_traces(records: Iterable[Mapping[str, Sequence[int]] | None]) -> dict[str, list[int]]:
    """Several passes' ``host_trace`` as one: per core, the passes' bins one after another."""
    out: dict[str, list[int]] = {}
    for rec in records:
        for core, bins in (rec or {}).items():
            out.setdefault(core, []).extend(bins)
    return out


MAX_REPLAY_FACTOR = 100.0
"""The largest multiple of its CPU cost a burst may take in ``cluster.host_speed``."""


def replay_spec(bins: Sequence[int]) -> dict[str, Any] | None:
    """The ``cluster.host_speed`` that replays a core's ``host_trace`` around a mean of 1
    (see :func:`host_speed_spec`); None for an empty trace."""
    if not bins:
        return None
    arr = np.maximum(np.asarray(bins, dtype=float), 1.0)  # a bin of 0 % is not a speed
    arr /= arr.mean()
    # A stall of over a hundred bins' time in one bin (seen once: 113x, while other work
    # shared the host) replays as the ceiling a scenario's host speed accepts.
    arr = np.minimum(arr, MAX_REPLAY_FACTOR)
    return {"trace": [round(float(v), 3) for v in arr], "trace_bin_ms": BIN_S * 1e3}


def level_us(records: Iterable[Mapping[str, Mapping[str, float]] | None]) -> dict[str, float]:
    """Per core, the median over ``records`` (points' or passes' ``host_phases``) of the
    chunks' mean time: the host's time-averaged speed there, slow phases included."""
    by_core: dict[str, list[float]] = {}
    for rec in records:
        for core, fit in (rec or {}).items():
            by_core.setdefault(core, []).append(float(fit["mean_chunk_us"]))
    return {core: statistics.median(v) for core, v in sorted(by_core.items())}


def fit_level_us(fit: Mapping[str, Any]) -> dict[str, float]:
    """:func:`level_us` over a fit record's fit points (empty: they were not traced), the
    reference a held-out point's level is divided by."""
    points = [p for p in fit.get("points") or () if p.get("role") == "fit"]
    if not points or not all(p.get("host_phases") for p in points):
        return {}
    return level_us(p["host_phases"] for p in points)


def merge(records: Iterable[Mapping[str, Mapping[str, float]] | None]) -> dict[str, Any]:
    """Several passes' ``host_phases`` as one: per core and figure, the median over the
    passes that were traced (empty: none was)."""
    by_core: dict[str, list[Mapping[str, float]]] = {}
    for rec in records:
        for core, fit in (rec or {}).items():
            by_core.setdefault(core, []).append(fit)
    return {
        core: {k: statistics.median(f[k] for f in fits) for k in fits[0]}
        for core, fits in sorted(by_core.items())
    }


def host_speed_spec(fit: Mapping[str, float]) -> dict[str, float] | None:
    """The ``cluster.host_speed`` of one core's fit, around a mean of 1: the model's CPU
    costs are averages over both states (measured so), and the point's mean speed is the
    speed adjustment's to set, so the phases only spread it. None when the core showed no
    slow phase."""
    share = float(fit["slow_share"])
    factor = float(fit["slow_factor"])
    if share <= 0.0 or factor <= 1.0 or fit["slow_dwell_ms"] <= 0.0:
        return None
    mean = (1.0 - share) + share * factor
    return {
        "slow_factor": round(factor / mean, 5),
        "fast_factor": round(1.0 / mean, 5),
        "slow_share": min(share, 0.99),
        "slow_dwell_ms": float(fit["slow_dwell_ms"]),
    }


__all__ = [
    "BIN_S",
    "CHUNK_ROUNDS",
    "SLOW_ABOVE",
    "TRACE_S",
    "fit_level_us",
    "host_speed_spec",
    "level_us",
    "merge",
    "merge_traces",
    "point_phases",
    "point_trace",
    "replay_spec",
    "trace",
    "trace_cores",
    "two_state",
]
