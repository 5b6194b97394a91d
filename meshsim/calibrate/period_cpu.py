"""A sidecar's CPU per CFS period (100 ms) during a point's load, and what makes it vary.

How often a CPU limit near a sidecar's average use is reached depends on how much its CPU
varies from one period to the next, not on the average. On the lab's host the server
sidecar's requests per period are Poisson, but its CPU per request, averaged over each
period's hundreds of requests, drifts from period to period by far more than per-request
noise would leave (reports/validation/cpu-limits.md), and that drift decides the throttled
points. The lab records it at every proxied point: a thread reads the sidecars' CPU
(their CPU clocks: :class:`~meshsim.calibrate.procstat.CpuReader`) every 10 ms during the
load, the server sidecar's access
log gives the moment each request was answered (``ts``), and :func:`period_figures` splits
the CPU's variation per period between the number of requests and the CPU per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from meshsim.calibrate.procstat import CpuReader

PERIOD_S: Final = 0.1
"""cpu.max's default period, which Kubernetes' CPU limits use."""
EVERY_S: Final = 0.01
"""Sampling interval: ten samples a period."""
MIN_PERIODS: Final = 5


class PeriodSampler:
    """Samples the CPU seconds of some processes (by name: their pids) every
    :data:`EVERY_S` in a thread, with the wall clock (the access log's clock)."""

    def __init__(self, pids: Mapping[str, Sequence[int]]) -> None:
        self.pids = {k: list(v) for k, v in pids.items()}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="period-cpu", daemon=True)

    def __enter__(self) -> PeriodSampler:
        if self.pids:  # nothing to sample at a point without proxies
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # A sample costs about a microsecond, where reading the threads' files afresh held the
        # load generator's core and interpreter lock for 0.48 ms.
        readers = {k: CpuReader(p) for k, p in self.pids.items()}
        while not self._stop.is_set():
            now = time.time()
            self.samples.append((now, {k: r.cpu_s() for k, r in readers.items()}))
            self._stop.wait(EVERY_S)


def per_period(
    samples: Sequence[tuple[float, Mapping[str, float]]],
    name: str,
    answered: Sequence[float],
    start: float,
    end: float,
    period_s: float = PERIOD_S,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``name``'s CPU seconds and the requests answered in each whole period (counted from
    ``start``, the load's, wall clock) between the first and the last request of the load
    answered (the connections' set-up and the drain left out); None with fewer than
    :data:`MIN_PERIODS` or samples that do not cover them.

    Only answers between ``start`` and ``end`` are the load's: the access log also holds the
    warm-up's, just before. Counting from ``start`` itself when one of those came first put
    the load's first period, short by its connections' set-up (about 20 ms of 100 at 5300
    rps), among the whole ones: its one low count doubled the requests' cv at some points
    (0.084-0.096 against a Poisson stream's 0.044 in run V; 0.043 at the load generator)."""
    t = np.array([s[0] for s in samples], dtype=float)
    if len(t) < 2:
        return None
    cpu = np.array([s[1][name] for s in samples], dtype=float)
    times = np.asarray(answered, dtype=float)
    times = times[(times >= start) & (times <= end)]
    lo, hi = start, end
    if len(times):
        lo, hi = float(times.min()), float(times.max())
    first = math.ceil((lo - start) / period_s - 1e-9)
    last = math.floor((hi - start) / period_s + 1e-9)
    edges = start + period_s * np.arange(first, last + 1)
    if len(edges) < MIN_PERIODS + 1 or edges[0] < t[0] or edges[-1] > t[-1]:
        return None
    per = np.diff(np.interp(edges, t, cpu))
    n = np.histogram(times, bins=edges)[0].astype(float)
    return per, n


def period_figures(
    samples: Sequence[tuple[float, Mapping[str, float]]],
    name: str,
    answered: Sequence[float],
    start: float,
    end: float,
    period_s: float = PERIOD_S,
) -> dict[str, float] | None:
    """Over :func:`per_period`'s periods: the coefficient of variation of ``name``'s CPU per
    period (``cpu_cv``), of the requests answered per period (``requests_cv``; a Poisson
    stream's is ``poisson_cv``), of the CPU per request averaged over each period
    (``cpu_per_request_cv``), and the lag-1 autocorrelation of the CPU per period (``lag1``:
    how long a drift lasts). None where there are no such periods."""
    periods = per_period(samples, name, answered, start, end, period_s)
    return None if periods is None else figures(*periods)


def figures(per: np.ndarray, n: np.ndarray) -> dict[str, float] | None:
    """:func:`period_figures` of the CPU seconds ``per`` and the requests ``n`` of each
    period, measured or simulated (None where there is neither CPU nor a request).

    Beside them, what the requests' count does not explain: the CPU per period less its
    least-squares line on the requests per period, that residual's sd over the mean CPU
    (``residual_cv``) and its lag-1 autocorrelation (``residual_lag1``). A sidecar's CPU per
    period is not proportional to its requests: part of it goes with the time its loop
    sleeps, which more requests shorten (the lab's server sidecar at 3347 rps in run AB: the
    line's slope times the mean requests is 0.5-0.8 of the mean CPU), so taking the count's
    whole cv out of the CPU's, as if it were, takes out more than the count put in."""
    if per.mean() <= 0.0 or n.mean() <= 0.0:
        return None
    # A period without an answer (a stall) has CPU but no CPU per request.
    per_request = per[n > 0] / n[n > 0]
    return {
        "periods": len(per),
        "cpu_ms_mean": round(float(per.mean()) * 1e3, 3),
        "cpu_cv": round(float(per.std() / per.mean()), 4),
        "requests_cv": round(float(n.std() / n.mean()), 4),
        "poisson_cv": round(float(1.0 / np.sqrt(n.mean())), 4),
        "cpu_per_request_cv": round(float(per_request.std() / per_request.mean()), 4),
        "lag1": _lag1(per, float(per.mean())),
        **_residual(per, n),
    }


def _lag1(x: np.ndarray, scale: float) -> float:
    # A series that never varies (by a billionth of ``scale``, the mean CPU) has no
    # correlation to speak of (not NaN, nor that of the float noise of an exact line).
    if len(x) <= 2 or x.std() <= 1e-9 * scale:
        return 0.0
    return round(float(np.corrcoef(x[:-1], x[1:])[0, 1]), 4)


def _residual(per: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """``residual_cv`` and ``residual_lag1`` (see :func:`figures`); none with fewer than four
    periods or a count that never varies (no line to fit)."""
    if len(per) < 4 or n.std() <= 0.0:
        return {}
    slope, intercept = np.polyfit(n, per, 1)
    residual = per - (intercept + slope * n)
    # Two parameters fitted: the residuals' variance over len - 2 is the unbiased one.
    var = float(residual @ residual) / (len(per) - 2)
    return {
        "residual_cv": round(float(np.sqrt(var)) / float(per.mean()), 4),
        "residual_lag1": _lag1(residual, float(per.mean())),
    }


def measure(
    samples: Sequence[tuple[float, Mapping[str, float]]],
    answered: Mapping[str, Sequence[float]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """:func:`period_figures` for each sidecar whose answered requests' times (from its
    access log) are in ``answered`` (those that give too few periods are left out), with
    the periods themselves (``cpu_ms_series``, ``requests_series``): the figures say how
    much the CPU varies, the series how (a host's slow spells of a few hundred ms show in
    them as runs of periods whose CPU per request is 1.4-1.6 times the rest)."""
    out: dict[str, Any] = {}
    for name, times in answered.items():
        periods = per_period(samples, name, times, start, end)
        f = None if periods is None else figures(*periods)
        if periods is not None and f is not None:
            out[name] = {
                **f,
                "cpu_ms_series": [round(float(x) * 1e3, 3) for x in periods[0]],
                "requests_series": [int(n) for n in periods[1]],
            }
    return out


def period_table(
    points: Sequence[Mapping[str, Any]],
    simulated: Mapping[tuple[float, float], tuple[float, float, float]] | None = None,
) -> str:
    """The server sidecar's CPU per period at the plain held-out and CPU-limited points of a
    fit record, the median of each figure over the passes ("" without such records); with
    ``simulated`` ((load, limit multiple) -> the simulated lab's CPU cv, lag-1 and residual
    cv), those beside the lab's."""
    groups: dict[tuple[float, float], list[Mapping[str, float]]] = {}
    for p in points:
        figures_ = (p.get("period_cpu") or {}).get("server_sidecar")
        if figures_ and p["role"] in ("held_out", "throttled") and p["config"] == "plain-ka-f0":
            key = (float(p["rps"]), float(p.get("cpu_limit") or 0.0))
            groups.setdefault(key, []).append(current_figures(figures_))
    if not groups:
        return ""
    sim = simulated or {}
    keys = ("cpu_cv", "requests_cv", "poisson_cv", "cpu_per_request_cv", "lag1", "residual_cv")
    lines = [
        f"{'load':>8} {'limit':>6} {'passes':>6}  {'CPU cv':>7} {'requests cv':>11} "
        f"{'Poisson':>7} {'CPU/request cv':>14} {'lag-1':>6} {'residual cv':>11}"
        + (f"  {'sim CPU cv':>10} {'sim lag-1':>9} {'sim residual':>12}" if sim else "")
    ]
    nan = float("nan")
    for (rps, limit), rows in sorted(groups.items()):
        med = {k: float(np.median([r.get(k, nan) for r in rows])) for k in keys}
        load = f"{rps:.1f}" if rps else "sat"
        line = (
            f"{load:>8} {f'{limit:g}x' if limit else '-':>6} {len(rows):>6}  "
            f"{med['cpu_cv']:>7.3f} {med['requests_cv']:>11.3f} {med['poisson_cv']:>7.3f} "
            f"{med['cpu_per_request_cv']:>14.3f} {med['lag1']:>6.2f} {med['residual_cv']:>11.3f}"
        )
        if sim:
            cv, lag1, residual = sim.get((rps, limit), (nan, nan, nan))
            line += f"  {cv:>10.3f} {lag1:>9.2f} {residual:>12.3f}"
        lines.append(line)
    lines.append(
        "per 100 ms period of the load: the coefficient of variation of the server sidecar's "
        "CPU, of the requests it answered (a Poisson stream's beside it) and of its CPU per "
        "request averaged over the period; lag-1 = the CPU's autocorrelation from one period "
        "to the next; residual = the sd of the CPU less its line on the requests per period, "
        "over the mean CPU (what the count does not explain: the drift is fitted from it at "
        "the fit points); medians over the passes (limit: the throttled points' multiple)"
        + ("; sim: the same figures of the simulated lab's server sidecar" if sim else "")
    )
    return "\n".join(lines)


def current_figures(recorded: Mapping[str, Any]) -> Mapping[str, Any]:
    """A sidecar's figures at a point as :func:`figures` computes them now, from its series
    where the record has them (records before 2026-12-05 have no residual); as recorded
    where it has none."""
    cpu, n = recorded.get("cpu_ms_series"), recorded.get("requests_series")
    if not cpu or not n or len(cpu) != len(n):
        return recorded
    again = figures(np.asarray(cpu, dtype=float) * 1e-3, np.asarray(n, dtype=float))
    return recorded if again is None else again
