"""A slow drift of a proxy's CPU cost (the cost model's ``cpu_drift_cv`` and ``cpu_drift_ms``).

A proxy's CPU per request is not one number from one 100 ms period to the next. In the
calibration lab the server sidecar's requests per period are Poisson, but its CPU per period
varies by more than their count explains, and the excess lasts for a few periods
(meshsim/calibrate/period_cpu.py measures it; reports/validation/cpu-limits.md). Averaged
over a period's hundreds of requests, per-request noise (``request_cpu_cv``) cannot make
that, and it is what decides how often a CPU limit near the average use is reached: at a
quota of 1.1 times the mean, 9-12 % of the lab's periods were throttled where the
simulator, without a drift, throttled 0-3 %.

So a proxy with a drift multiplies all its CPU (request, response, telemetry, wake-ups) by a
factor of mean 1: the exponential of an Ornstein-Uhlenbeck process, lognormal at any
instant with the model's cv, whose autocorrelation after ``t`` is close to
``exp(-t / cpu_drift_ms)`` (exactly so for the log). Each proxy has its own: the drift
measured is one process's, and the host's shared phases and slow spells are
``cluster.host_speed``'s (the calibration fits the drift from the periods out of the spells:
meshsim/calibrate/host_spells.py).

The factor is advanced lazily, when a burst asks for it and at least a tenth of the time
constant has passed since it last moved, by the process's exact transition over the time
between: no simulation events, one normal draw per step at most, and the same law as a
continuous path sampled at those moments.
"""

from __future__ import annotations

import math

import numpy as np

from meshsim.sim.sampling import Sampler

STEPS_PER_TIME_CONSTANT = 10
"""The factor holds for at least a tenth of the time constant: the drift measured lasts
about a hundred milliseconds, a burst a few hundred microseconds."""


class CpuDrift:
    """One proxy's drifting multiplier of its CPU cost."""

    __slots__ = ("_at", "_mu", "_normal", "_sd", "_step", "_tau", "_x", "factor")

    def __init__(
        self, cv: float, time_constant_s: float, normal: Sampler, now: float = 0.0
    ) -> None:
        sigma2 = math.log1p(cv * cv)
        self._mu = -sigma2 / 2.0  # a lognormal of mean 1
        self._sd = math.sqrt(sigma2)
        self._tau = time_constant_s
        self._step = time_constant_s / STEPS_PER_TIME_CONSTANT
        self._normal = normal
        # A proxy starts as it would be at a random moment: the stationary law. It is taken
        # as drawn at the last multiple of a step, not at ``now``: when a proxy is made
        # (with the run, or at its first request) then does not move its steps, so a traced
        # run (meshsim.calibrate.sim_trace makes the proxies first) is the same run.
        self._x = self._mu + self._sd * normal()
        self._at = now - math.fmod(now, self._step)
        self.factor = math.exp(self._x)
        """The current multiplier of the proxy's CPU cost."""

    def at(self, now: float) -> float:
        """The multiplier at ``now`` (moved on first if a step has passed)."""
        dt = now - self._at
        if dt < self._step:
            return self.factor
        keep = math.exp(-dt / self._tau)
        mu = self._mu
        self._x = (
            mu + (self._x - mu) * keep + self._sd * math.sqrt(1.0 - keep * keep) * (self._normal())
        )
        self._at = now
        self.factor = math.exp(self._x)
        return self.factor


def standard_normal(rng: np.random.Generator) -> Sampler:
    """Standard normal draws from ``rng``, batched (shared by the drifts of a data plane)."""
    return Sampler(rng.standard_normal, 0.0)


def period_mean_cv(cv: float, time_constant_s: float, period_s: float) -> float:
    """The coefficient of variation of the drift's mean over a period of ``period_s``, for
    a process of ``cv`` (taken as Gaussian for this): its variance falls by
    ``2 (a - 1 + e^-a) / a^2`` with ``a = period / time constant``, the integral of an
    exponential autocorrelation over the period."""
    a = period_s / time_constant_s
    return cv * math.sqrt(2.0 * (a - 1.0 + math.exp(-a)) / (a * a))


def period_lag1(time_constant_s: float, period_s: float) -> float:
    """The correlation between the drift's means over two consecutive periods:
    ``(1 - e^-a)^2 / (2 (a - 1 + e^-a))`` with ``a = period / time constant``."""
    a = period_s / time_constant_s
    return (1.0 - math.exp(-a)) ** 2 / (2.0 * (a - 1.0 + math.exp(-a)))


__all__ = ["CpuDrift", "period_lag1", "period_mean_cv", "standard_normal"]
