"""The lab host's slow spells: runs of 100 ms periods in which a core's work costs more.

The lab's cores belong to a shared virtual machine. Besides its phases of tens of
milliseconds (:mod:`meshsim.calibrate.host_phases`, timed around each load), a core now and
then runs everything on it 1.3-1.6 times slower for a few hundred milliseconds: in four
5 s loads at 5336 rps (2026-12-03), the server sidecar's CPU per 100 ms period rose from
27-29 ms to 35-46 ms for three or four periods in a row, once or twice a load, with the
same number of requests answered; the echo on the same core rose with it (11 to 15-17 ms),
the client sidecar on the other core did not, and ``/proc/stat`` counted no steal. The
probes around a load (1 s in all) rarely meet such a spell, and a lognormal drift of the
sidecar's own CPU (:mod:`meshsim.calibrate.cpu_drift`) spreads the same variance over every
period instead of concentrating it in a few: what decides how often a CPU limit at 1.1 times
the average use is reached (the lab counted 11-13 % of its periods throttled there, about
3.5 points of it its warm-up's, which it then counted too).

So :func:`fit_spells` reads the spells from each proxied fit point's periods (the sidecars'
``cpu_ms_series`` and ``requests_series``, :func:`meshsim.calibrate.period_cpu.measure`), the
sidecar on each lab core standing for the core: a period is in a spell when its CPU per
request is more than :data:`SLOW_ABOVE` times the point's median; the spells' factor is
their periods' mean CPU per request over the other periods', their share of time the share
of periods in them, and their mean length the mean run of consecutive spell periods. A
period only partly in a spell counts as in it when its mean passes the threshold, and a
spell's length is known to the period (100 ms): both are approximations, stated with the
figures. Spells come and go (run Y's fit points had them 2.5-3.6 % of the time, its
held-out passes minutes later almost never), so the fit points' spells are reported, and
each speed-adjusted prediction runs the spells of its own point's passes
(:func:`point_spells`) as a second two-state process on top of
each node's phases (``cluster.host_speed.spells``, :mod:`meshsim.sim.cpu.host_speed`).
:func:`without_spells` takes the spells' periods out of the periods the drift is fitted
from, so that the two do not count the same variance twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from meshsim.calibrate.fit import Estimate, estimate, replicates
from meshsim.calibrate.period_cpu import PERIOD_S, current_figures, figures

SLOW_ABOVE: Final = 1.2
"""A period is in a spell above this multiple of its point's median CPU per request. The
spells measured were 1.3-1.6 times the rest; a period's own noise (per-request noise over a
few hundred requests, and the drift) is a few per cent."""
MIN_REQUESTS: Final = 70
"""Periods of points with fewer requests than this on average are not read: a handful of
requests' noise passes the threshold by itself."""
SIDECARS: Final = ("client_sidecar", "server_sidecar")
"""The sidecar that stands for each lab core (the one the record's placement puts there)."""


@dataclass(frozen=True)
class Spells:
    """A lab core's slow spells, with 95 % intervals (bootstrap over the points)."""

    factor: Estimate
    """The spells' CPU per request over the rest's."""
    share: Estimate
    """The share of time in a spell."""
    dwell_ms: Estimate
    """A spell's mean length."""
    periods: int
    spells: int
    points: int

    def to_json(self) -> dict[str, Any]:
        return {
            "factor": self.factor.to_json(),
            "share": self.share.to_json(),
            "dwell_ms": self.dwell_ms.to_json(),
            "periods": self.periods,
            "spells": self.spells,
            "points": self.points,
        }


def spell_spec(record: Mapping[str, Any]) -> dict[str, float]:
    """``cluster.host_speed.spells`` for a core's fitted spells (:meth:`Spells.to_json`),
    around a mean of 1: the fit's CPU costs are averages over the spells too."""
    factor = float(record["factor"]["value"])
    share = float(record["share"]["value"])
    mean = 1.0 + share * (factor - 1.0)
    return {
        "slow_factor": factor / mean,
        "fast_factor": 1.0 / mean,
        "slow_share": share,
        "slow_dwell_ms": float(record["dwell_ms"]["value"]),
    }


def _series(sidecar: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A sidecar's CPU (ms) and requests per period at a point, or None where the record has
    no series or too few requests per period to tell a spell from noise."""
    cpu = sidecar.get("cpu_ms_series")
    n = sidecar.get("requests_series")
    if not cpu or not n or len(cpu) != len(n):
        return None
    n_a = np.asarray(n, dtype=float)
    if n_a.mean() < MIN_REQUESTS or (n_a <= 0).any():
        return None
    return np.asarray(cpu, dtype=float), n_a


def _slow(per_request: np.ndarray) -> np.ndarray:
    return np.asarray(per_request > SLOW_ABOVE * np.median(per_request))


def spell_periods(sidecar: Mapping[str, Any]) -> np.ndarray | None:
    """Which of a sidecar's periods at a point are in a spell (None: the record has no
    series, or too few requests per period to tell)."""
    series = _series(sidecar)
    return None if series is None else _slow(series[0] / series[1])


def _runs(slow: np.ndarray) -> int:
    """The number of runs of consecutive True values."""
    return int(np.sum(slow[1:] & ~slow[:-1]) + (1 if len(slow) and slow[0] else 0))


def _point(sidecar: Mapping[str, Any]) -> tuple[int, int, float, float, int] | None:
    """(periods, spell periods, their CPU per request summed relative to the point's fast
    mean, the same for the fast periods, spells) of one point, or None."""
    series = _series(sidecar)
    if series is None:
        return None
    per_request = series[0] / series[1]
    slow = _slow(per_request)
    rel = per_request / float(per_request[~slow].mean())
    return len(slow), int(slow.sum()), float(rel[slow].sum()), float(rel[~slow].sum()), _runs(slow)


def _statistic(
    periods: Any, slow: Any, slow_rel: Any, fast_rel: Any, runs: Any
) -> tuple[float, float, float]:
    n_slow = float(np.sum(slow))
    if n_slow == 0:
        return 1.0, 0.0, float("nan")
    fast = float(np.sum(periods)) - n_slow
    factor = (float(np.sum(slow_rel)) / n_slow) / (float(np.sum(fast_rel)) / fast)
    share = n_slow / float(np.sum(periods))
    dwell = n_slow / float(np.sum(runs)) * PERIOD_S * 1e3
    return factor, share, dwell


def fit_spells(
    points: Sequence[Mapping[str, Any]], sidecar: str, *, seed: int = 0
) -> Spells | None:
    """The spells of the core ``sidecar`` runs on, from the proxied fit points'
    ``period_cpu`` (None: no point has that sidecar's series with enough requests)."""
    rows = [r for p in points if (f := p.get(sidecar)) and (r := _point(f)) is not None]
    if not rows:
        return None
    data = [np.array(col, dtype=float) for col in zip(*rows, strict=True)]
    factor, share, dwell = _statistic(*data)
    spells = int(data[4].sum())
    if spells == 0:
        factor, share, dwell = 1.0, 0.0, 0.0
    values = (factor, share, dwell)
    if spells == 0 or len(rows) < 2:  # nothing to resample: the values, with no interval
        estimates = [Estimate(v, v, v) for v in values]
    else:
        reps = replicates(data, _statistic, seed=seed)
        estimates = [estimate(reps[i], v) for i, v in enumerate(values)]
    factor_e, share_e, dwell_e = estimates
    return Spells(factor_e, share_e, dwell_e, int(data[0].sum()), spells, len(rows))


def fit_cores(
    points: Sequence[Mapping[str, Any]], placement: Mapping[str, Any], *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each lab core's spells (:meth:`Spells.to_json`), keyed by the core as the record's
    placement names it, from the sidecar placed there (cores without a fit left out)."""
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(SIDECARS):
        core = placement.get(name)
        spells = fit_spells(points, name, seed=seed + i)
        if core is not None and spells is not None:
            out[str(core)] = spells.to_json()
    return out


def without_spells(point: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """A point's ``period_cpu`` with each sidecar's figures recomputed from its series over
    the periods out of spells (the lag-1 correlation runs across the gaps the spells leave,
    a few periods in fifty), over all of them where its periods are too few requests to
    tell a spell by: every point's figures are those of the current
    :func:`~meshsim.calibrate.period_cpu.figures` (as recorded only without a series)."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, f in point.items():
        series = _series(f)
        if series is None:  # too few requests a period to tell a spell: all periods
            out[name] = current_figures(f)
            continue
        slow = _slow(series[0] / series[1])
        keep = ~slow if slow.any() and not slow.all() else np.ones_like(slow)
        again = figures(series[0][keep] * 1e-3, series[1][keep])
        out[name] = f if again is None else again
    return out


def point_spells(
    placement: Mapping[str, Any],
    passes: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The spells on each lab core while a held-out point was measured (``passes``), from
    its passes' periods, which the speed-adjusted prediction runs as it runs the point's
    phases: the fit points' spells say how often the host had them then, not while this
    point ran (run Y's fit points had them 2.5-3.6 % of the time, its held-out passes almost
    never). A CPU-limited point's own passes too: a limit caps a period's CPU and the
    requests it answers together, so a spell still shows in the CPU per request (run AB at
    8368 rps under 376m: 1.97x in the period its load throttled, p99 41.6 ms), where its
    unlimited twin, measured a minute before, had none."""
    periods = [q["period_cpu"] for q in passes if q.get("period_cpu")]
    return fit_cores(periods, placement)


__all__ = [
    "SLOW_ABOVE", "Spells", "fit_cores", "fit_spells", "point_spells", "spell_periods",
    "spell_spec", "without_spells",
]  # fmt: skip
