"""Small statistics helpers: Student-t confidence intervals over replications."""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import fmean, stdev


@lru_cache(maxsize=256)
def t95(dof: float) -> float:
    """The two-sided 95 % critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("a t interval needs at least two observations")
    # Imported here: meshsim.results is imported by the library's front door, which runs a
    # simulation without loading scipy (tests/test_light_core.py).
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def t_interval(values: list[float]) -> list[float] | None:
    """The 95 % confidence interval of the mean of ``values``, or None for fewer than 2."""
    clean = [v for v in values if not math.isnan(v)]
    if len(clean) < 2:
        return None
    mean = fmean(clean)
    half = t95(len(clean) - 1) * stdev(clean) / math.sqrt(len(clean))
    return [mean - half, mean + half]
