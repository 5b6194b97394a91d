"""Small statistics helpers: Student-t confidence intervals over replications."""

from __future__ import annotations

import math
from statistics import fmean, stdev

# Two-sided 95 % critical values of Student's t by degrees of freedom (1..30);
# beyond 30 the normal value is within 2 % of t. Tabulated to avoid pulling in scipy
# for thirty numbers.
_T95 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]  # fmt: skip


def t95(dof: int) -> float:
    """The two-sided 95 % critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("a t interval needs at least two observations")
    return _T95[dof - 1] if dof <= len(_T95) else 1.960


def t_interval(values: list[float]) -> list[float] | None:
    """The 95 % confidence interval of the mean of ``values``, or None for fewer than 2."""
    clean = [v for v in values if not math.isnan(v)]
    if len(clean) < 2:
        return None
    mean = fmean(clean)
    half = t95(len(clean) - 1) * stdev(clean) / math.sqrt(len(clean))
    return [mean - half, mean + half]
