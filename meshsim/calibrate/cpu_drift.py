"""The drift of a sidecar's CPU cost between CFS periods: fitted in the lab, read in the simulator.

The lab records each sidecar's CPU per 100 ms period at every proxied point
(:mod:`meshsim.calibrate.period_cpu`). Its variance is the requests' (how many arrive in a
period), each request's own noise averaged over the period's requests, and a drift of the
CPU cost that lasts a few periods (reports/validation/cpu-limits.md). The model carries the
last as ``cpu_drift_cv`` and ``cpu_drift_ms`` (:mod:`meshsim.sim.cpu.drift`), and
:func:`fit_drift` takes them from the fit points:

- per sidecar and point, the excess variance of its CPU per period over what the requests
  explain, relative to the mean: the variance of the CPU's residual on its line on the
  requests per period, less the requests' own noise averaged over a period,
  ``residual_cv^2 - request_cpu_cv^2 / n`` (``n`` the mean requests per period, whose
  reciprocal is ``poisson_cv^2``), and the residual's lag-1 covariance,
  ``residual_lag1 x residual_cv^2``, which only the drift has (the requests are a Poisson
  stream, independent from one period to the next);
- the medians over the points with enough requests per period that their count does not
  hide the drift (:data:`MAX_POISSON_CV`), the excess negative samples included (clipping
  each at 0 would bias it up);
- the lag-1 correlation of the drift's period means is their ratio, which gives the time
  constant (:func:`meshsim.sim.cpu.drift.period_lag1`), and the process's cv is the period
  means' over the averaging factor (:func:`meshsim.sim.cpu.drift.period_mean_cv`);
- a paired bootstrap over the samples gives both their 95 % intervals (the model's ranges).

:class:`SimulatedPeriods` reads the same figures from a simulated run, so the validation
can set the simulated lab's CPU per period beside the measured one.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from scipy.optimize import brentq

from meshsim.calibrate.fit import Estimate, estimate, replicates
from meshsim.calibrate.period_cpu import PERIOD_S, figures
from meshsim.sim.cpu.drift import period_lag1, period_mean_cv

if TYPE_CHECKING:
    import simpy

    from meshsim.sim.dataplanes.proxy import Proxy
    from meshsim.sim.engine import Simulation

MAX_POISSON_CV: Final = 0.12
"""Points are used where a Poisson count's cv is at most this (about 70 requests or more per
period): below, the count's own variance (0.18 at 31 requests a period) is several times a
drift of 0.07 and its sampling noise hides it."""
MIN_PERIODS: Final = 20
"""A point's figures are used where they rest on this many periods or more (2 s of load): a
cv read from fewer varies by more than a sixth from one run to the next, and the excess is
the difference of two of them (the quick grid's 1 s points have about ten)."""
MIN_SAMPLES: Final = 3
LAG1_BOUNDS: Final = (0.02, 0.95)
"""The drift's period-to-period correlation is kept within these: a median ratio outside
them (one noisy sample) would put the time constant at 0 or at infinity."""


@dataclass(frozen=True)
class Drift:
    """The fitted drift: the process's cv and time constant (ms) with their 95 % intervals,
    and what they came from."""

    cv: Estimate
    time_constant_ms: Estimate
    period_cv: float
    """The drift's cv over one period (the excess of the CPU per period)."""
    period_lag1: float
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cv": self.cv.to_json(),
            "time_constant_ms": self.time_constant_ms.to_json(),
            "period_cv": round(self.period_cv, 4),
            "period_lag1": round(self.period_lag1, 4),
            "samples": self.samples,
        }


def excess(figures_: Mapping[str, float], request_cpu_cv: float) -> tuple[float, float]:
    """One sidecar's (excess variance, lag-1 covariance) at a point, both relative to its
    mean CPU per period squared (see the module's docstring).

    Where the figures have the CPU's residual on the requests per period
    (``residual_cv``, :func:`meshsim.calibrate.period_cpu.figures`), the count is taken out
    by that line: the sidecar's CPU is not proportional to its requests (part of it goes
    with its loop's sleeps), and taking the count's whole cv out of the CPU's took out
    more than the count put in, a drift's worth at the lab's low loads (run AB at 3347 rps:
    the CPU's cv 0.052-0.061 against the count's 0.057-0.061, a residual of 3-5 % of the
    mean). Figures without it (records before 2026-12-05 not refitted from their series)
    are read the old way."""
    noise = (request_cpu_cv * figures_["poisson_cv"]) ** 2
    if "residual_cv" in figures_:
        var = figures_["residual_cv"] ** 2
        return var - noise, figures_["residual_lag1"] * var
    var = figures_["cpu_cv"] ** 2
    return var - figures_["requests_cv"] ** 2 - noise, figures_["lag1"] * var


def time_constant_s(lag1: float, period_s: float = PERIOD_S) -> float:
    """The time constant whose period means correlate by ``lag1`` from one to the next."""
    lo, hi = LAG1_BOUNDS
    target = min(max(lag1, lo), hi)
    # period_lag1 rises from 0 to 1 with the time constant: one root over a wide bracket.
    log_tau = brentq(
        lambda x: period_lag1(math.exp(x), period_s) - target,
        math.log(period_s * 1e-3),
        math.log(period_s * 1e3),
    )
    return math.exp(log_tau)


def _statistic(var: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    v = float(np.median(var))
    if v <= 0.0:
        return 0.0, float("nan")  # no drift beyond the requests': no time constant
    tau = time_constant_s(float(np.median(cov)) / v)
    period_cv = math.sqrt(v)
    return period_cv / period_mean_cv(1.0, tau, PERIOD_S), tau * 1e3


PeriodCpu = Mapping[str, Mapping[str, float]]
"""One point's ``period_cpu``: each sidecar's :func:`meshsim.calibrate.period_cpu.figures`."""


def samples(points: Sequence[PeriodCpu], request_cpu_cv: float) -> tuple[np.ndarray, np.ndarray]:
    """The (excess variance, lag-1 covariance) of every sidecar at every point (its
    ``period_cpu``) with enough requests per period (:data:`MAX_POISSON_CV`) and enough
    periods (:data:`MIN_PERIODS`)."""
    var: list[float] = []
    cov: list[float] = []
    for point in points:
        for f in point.values():
            if f and f["poisson_cv"] <= MAX_POISSON_CV and f["periods"] >= MIN_PERIODS:
                v, c = excess(f, request_cpu_cv)
                var.append(v)
                cov.append(c)
    return np.array(var), np.array(cov)


def fit_drift(points: Sequence[PeriodCpu], request_cpu_cv: float, *, seed: int = 0) -> Drift | None:
    """The drift of the sidecars' CPU cost at the fit points (their ``period_cpu``;
    ``request_cpu_cv`` the model's per-request noise), or None where fewer than
    :data:`MIN_SAMPLES` points say anything or the requests explain all the variance."""
    var, cov = samples(points, request_cpu_cv)
    if len(var) < MIN_SAMPLES:
        return None
    cv, tau_ms = _statistic(var, cov)
    if cv <= 0.0:
        return None
    reps = replicates([var, cov], _statistic, seed=seed)
    v = float(np.median(var))
    return Drift(
        estimate(reps[0], cv),
        estimate(reps[1], tau_ms),
        math.sqrt(v),
        min(max(float(np.median(cov)) / v, LAG1_BOUNDS[0]), LAG1_BOUNDS[1]),
        len(var),
    )


class SimulatedPeriods:
    """The simulated counterpart of the lab's period sampler: each named proxy's CPU
    seconds and request-path bursts (one per request it proxied) at every period's end over
    the measured window of a built :class:`~meshsim.sim.engine.Simulation`."""

    def __init__(
        self, sim: Simulation, proxies: Mapping[str, str], period_s: float = PERIOD_S
    ) -> None:
        by_name = {p.name: p for p in sim.data_plane.proxies}
        self.proxies: dict[str, Proxy] = {k: by_name[v] for k, v in proxies.items()}
        self.period_s = period_s
        self.rows: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self._window = (sim.warmup_s, sim.end_s)
        sim.env.process(self._sample(sim.env))

    def _sample(self, env: simpy.Environment) -> Generator[simpy.Event, Any, None]:
        start, end = self._window
        yield env.timeout(start)
        while env.now <= end + 1e-9:
            self.rows.append(
                (
                    env.now,
                    {
                        k: (p.cpu_s, sum(w.requests for w in p.workers))
                        for k, p in self.proxies.items()
                    },
                )
            )
            yield env.timeout(self.period_s)

    def figures(self) -> dict[str, dict[str, float]]:
        """:func:`meshsim.calibrate.period_cpu.figures` for each proxy (those with too few
        periods or no requests left out)."""
        out: dict[str, dict[str, float]] = {}
        if len(self.rows) < 3:
            return out
        for k in self.proxies:
            cpu = np.diff([r[1][k][0] for r in self.rows])
            n = np.diff([r[1][k][1] for r in self.rows]).astype(float)
            f = figures(cpu, n)
            if f is not None:
                out[k] = f
        return out


__all__ = ["Drift", "SimulatedPeriods", "excess", "fit_drift", "samples", "time_constant_s"]
