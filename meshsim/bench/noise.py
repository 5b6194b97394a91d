"""The noise rule: when does a metric's change count?

A metric is measured over ``n >= 2`` replications, giving a mean and a 95 %
confidence interval (Student's t). A change from the baseline counts only when both

1. it is outside the noise: Welch's t-test on the two means, with the standard
   errors recovered from the two intervals (``se = half_width / t95(n - 1)``) and the
   Welch-Satterthwaite degrees of freedom (rounded down, which is conservative),
   rejects "same mean" at the 5 % level; and
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


def welch(base: Sample, current: Sample) -> tuple[float, float]:
    """Welch's t statistic for the difference of means and its critical value (95 %)."""
    diff = abs(current.mean - base.mean)
    se0, se1 = base.standard_error, current.standard_error
    se = math.hypot(se0, se1)
    if se == 0.0:
        return (math.inf if diff > 0 else 0.0), 0.0
    terms = [e**4 / (s.n - 1) for s, e in ((base, se0), (current, se1)) if s.n >= 2 and e]
    dof = se**4 / sum(terms) if terms else 1.0
    return diff / se, t95(max(1, math.floor(dof + 1e-9)))


def compare(base: Sample, current: Sample, *, better: Better, tolerance_pct: float) -> Verdict:
    """Apply the noise rule (see the module's docstring)."""
    diff = current.mean - base.mean
    if diff == 0:
        return Verdict("unchanged", 0.0, 0.0, None)
    change = diff / abs(base.mean) * 100 if base.mean != 0 else math.copysign(math.inf, diff)
    t, critical = welch(base, current)
    if not t > critical:
        return Verdict("noise", change, t, critical)
    if abs(change) <= tolerance_pct:
        return Verdict("within-tolerance", change, t, critical)
    worse = diff > 0 if better == "lower" else diff < 0
    return Verdict("regressed" if worse else "improved", change, t, critical)
