"""The noise rule: when does a metric's change count?

A metric is measured over ``n >= 2`` replications, giving a mean and a 95 %
confidence interval (Student's t). A change from the baseline counts only when both

1. it is outside the noise: Welch's t-test on the two means
   (``scipy.stats.ttest_ind_from_stats(equal_var=False)``), with the standard errors
   recovered from the two intervals (``se = half_width / t95(n - 1)``), rejects "same mean"
   at the 5 % level. The verdict compares ``t`` with the critical value at the
   Welch-Satterthwaite degrees of freedom rounded down, which is conservative (the
   reported p-value is scipy's, at the unrounded degrees of freedom); and
2. it is beyond the tolerance: ``|current - baseline| / |baseline| > tolerance``.

Identical numbers are ``unchanged`` (the simulator is deterministic, so an unchanged
model reproduces its baseline bit for bit). A counted change in the bad direction is
a ``regressed``; in the good direction ``improved``; a significant change within the
tolerance is ``within-tolerance``; anything else is ``noise``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Any, Literal

from scipy import stats

from meshsim.results.stats import t95

Better = Literal["lower", "higher"]
Status = Literal[
    "unchanged", "noise", "within-tolerance", "improved", "regressed", "missing", "new"
]
FAILING: tuple[Status, ...] = ("regressed", "missing")


@dataclass(frozen=True)
class Sample:
    """A metric over replications: its mean, 95 % interval and count."""

    mean: float
    ci95: tuple[float, float] | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Sample:
        if not values:
            raise ValueError("a sample needs at least one value")
        mean = fmean(values)
        if len(values) < 2:
            return cls(mean, None, len(values))
        half = t95(len(values) - 1) * stdev(values) / math.sqrt(len(values))
        return cls(mean, (mean - half, mean + half), len(values))

    @property
    def standard_error(self) -> float:
        """The mean's standard error, recovered from the interval."""
        if self.ci95 is None or self.n < 2:
            return 0.0
        return (self.ci95[1] - self.ci95[0]) / 2 / t95(self.n - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": list(self.ci95) if self.ci95 else None, "n": self.n}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        ci = data.get("ci95")
        return cls(
            float(data["mean"]), (float(ci[0]), float(ci[1])) if ci else None, int(data["n"])
        )


@dataclass(frozen=True)
class Verdict:
    status: Status
    change_pct: float | None
    """Relative change of the mean, in percent (inf when the baseline is 0)."""
    t: float | None
    """Welch's t statistic (inf when neither side has any spread)."""
    critical_t: float | None
    p_value: float | None = None
    """Welch's two-sided p-value (None when the means are identical)."""


@dataclass(frozen=True)
class WelchTest:
    t: float
    """|difference of means| / its standard error (inf when neither side has any spread)."""
    dof: float
    """Welch-Satterthwaite degrees of freedom (inf when neither side has any spread)."""
    p_value: float
    """Two-sided, from scipy at the unrounded ``dof``."""
    critical_t: float
    """The 95 % critical value at ``dof`` rounded down: what the noise rule compares with."""


def welch_test(base: Sample, current: Sample) -> WelchTest:
    """Welch's t-test of "same mean" from the two samples' means and intervals."""
    diff = abs(current.mean - base.mean)
    se0, se1 = base.standard_error, current.standard_error
    se = math.hypot(se0, se1)
    if se == 0.0:  # no spread on either side (a deterministic metric): any change counts
        return WelchTest(math.inf if diff > 0 else 0.0, math.inf, 0.0 if diff > 0 else 1.0, 0.0)
    # A side without an interval (one replication) counts as exact: no spread, no dof.
    terms = [e**4 / (s.n - 1) for s, e in ((base, se0), (current, se1)) if s.n >= 2 and e]
    dof = se**4 / sum(terms)
    t = diff / se
    if base.n >= 2 and current.n >= 2:
        p = float(
            stats.ttest_ind_from_stats(
                current.mean,
                se1 * math.sqrt(current.n),
                current.n,
                base.mean,
                se0 * math.sqrt(base.n),
                base.n,
                equal_var=False,
            ).pvalue
        )
    else:  # scipy takes 1 dof for a one-replication side; here it is the other side's n - 1
        p = float(2.0 * stats.t.sf(t, dof))
    return WelchTest(t, dof, p, t95(max(1, math.floor(dof + 1e-9))))


def welch(base: Sample, current: Sample) -> tuple[float, float]:
    """Welch's t statistic for the difference of means and its critical value (95 %)."""
    w = welch_test(base, current)
    return w.t, w.critical_t


def compare(base: Sample, current: Sample, *, better: Better, tolerance_pct: float) -> Verdict:
    """Apply the noise rule (see the module's docstring)."""
    diff = current.mean - base.mean
    if diff == 0:
        return Verdict("unchanged", 0.0, 0.0, None)
    change = diff / abs(base.mean) * 100 if base.mean != 0 else math.copysign(math.inf, diff)
    w = welch_test(base, current)
    if not w.t > w.critical_t:
        return Verdict("noise", change, w.t, w.critical_t, w.p_value)
    if abs(change) <= tolerance_pct:
        return Verdict("within-tolerance", change, w.t, w.critical_t, w.p_value)
    worse = diff > 0 if better == "lower" else diff < 0
    return Verdict("regressed" if worse else "improved", change, w.t, w.critical_t, w.p_value)
