"""Fitting cost models with numpy only: service-time distributions, linear costs, bootstrap CIs.

- :func:`fit_service_time` fits a lognormal and a gamma by maximum likelihood, scores both by
  log-likelihood and by the Kolmogorov-Smirnov statistic D, and chooses the better likelihood,
  or ``empirical`` when even the better one is far from the data (``D > EMPIRICAL_D``: with
  thousands of samples every parametric form is rejected by the KS *test*, so a practical
  threshold on D decides, and it is stated in the output). Confidence intervals come from a
  seeded nonparametric bootstrap.
- :func:`fit_line` fits ``y = a + b x`` by least squares with a pairs bootstrap, for per-KiB,
  per-filter and per-connection costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

EMPIRICAL_D = 0.08
"""KS distance above which neither lognormal nor gamma is accepted and the empirical is used."""
BOOTSTRAP = 200
CI_LEVEL = 0.95

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "ci95": [self.lo, self.hi]}  # type: ignore[dict-item]


def _ci(samples: Array, point: float) -> Estimate:
    a = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return Estimate(float(point), float(min(lo, point)), float(max(hi, point)))


def bootstrap(
    data: Array, stat: Callable[[Array], float], *, seed: int = 0, n: int = BOOTSTRAP
) -> Estimate:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(data), size=(n, len(data)))
    reps = np.array([stat(data[i]) for i in idx])
    return _ci(reps, stat(data))


# --------------------------------------------------------------------------- special functions


def digamma(x: Array | float) -> Array:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series."""
    x = np.asarray(x, dtype=float).copy()
    acc = np.zeros_like(x)
    while np.any(small := x < 6.0):
        acc -= np.where(small, 1.0 / x, 0.0)
        x = np.where(small, x + 1.0, x)
    inv2 = 1.0 / (x * x)
    series = np.log(x) - 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252)))
    return np.asarray(acc + series)


def trigamma(x: Array | float) -> Array:
    x = np.asarray(x, dtype=float).copy()
    acc = np.zeros_like(x)
    while np.any(small := x < 6.0):
        acc += np.where(small, 1.0 / (x * x), 0.0)
        x = np.where(small, x + 1.0, x)
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 / 42))
    return np.asarray(acc + series)


def gammainc(a: float, x: Array) -> Array:
    """Regularised lower incomplete gamma P(a, x), vectorised over x (series / continued
    fraction, Numerical Recipes 6.2)."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    lg = math.lgamma(a)
    for i, xi_ in enumerate(x.flat):
        xi = float(xi_)
        if xi <= 0:
            continue
        front = math.exp(-xi + a * math.log(xi) - lg)
        if xi < a + 1.0:
            term = total = 1.0 / a
            ap = a
            for _ in range(500):
                ap += 1.0
                term *= xi / ap
                total += term
                if abs(term) < abs(total) * 1e-12:
                    break
            out.flat[i] = front * total
        else:
            b = xi + 1.0 - a
            c = 1.0 / 1e-300
            d = 1.0 / b
            h = d
            for k in range(1, 500):
                an = -k * (k - a)
                b += 2.0
                d = an * d + b
                d = 1e-300 if abs(d) < 1e-300 else d
                c = b + an / c
                c = 1e-300 if abs(c) < 1e-300 else c
                d = 1.0 / d
                delta = d * c
                h *= delta
                if abs(delta - 1.0) < 1e-12:
                    break
            out.flat[i] = 1.0 - front * h
    return out


# --------------------------------------------------------------------------- distributions


def lognormal_mle(x: Array) -> tuple[float, float]:
    lx = np.log(x)
    return float(lx.mean()), float(lx.std())


def lognormal_loglik(x: Array, mu: float, sigma: float) -> float:
    lx = np.log(x)
    return float(np.sum(-lx - math.log(sigma * math.sqrt(2 * math.pi))
                        - (lx - mu) ** 2 / (2 * sigma * sigma)))


def lognormal_cdf(x: Array, mu: float, sigma: float) -> Array:
    z = (np.log(x) - mu) / (sigma * math.sqrt(2.0))
    erf = np.array([math.erf(v) for v in np.asarray(z, dtype=float).ravel()])
    return np.asarray(0.5 * (1.0 + erf.reshape(np.shape(z))))


def gamma_mle(x: Array) -> tuple[float, float]:
    """Shape k and scale theta by Newton's method on log k (Minka 2002's starting point)."""
    mean = float(x.mean())
    s = math.log(mean) - float(np.log(x).mean())
    k = (3.0 - s + math.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s) if s > 0 else 1e6
    for _ in range(50):
        f = math.log(k) - float(digamma(k)) - s
        fp = 1.0 / k - float(trigamma(k))
        step = f / fp
        k_new = k - step
        if k_new <= 0:
            k_new = k / 2.0
        if abs(k_new - k) < 1e-10 * k:
            k = k_new
            break
        k = k_new
    return k, mean / k


def gamma_loglik(x: Array, k: float, theta: float) -> float:
    return float(np.sum((k - 1) * np.log(x) - x / theta - k * math.log(theta) - math.lgamma(k)))


def ks_statistic(x: Array, cdf: Array) -> float:
    """D = sup |F_n - F| for sorted ``x`` and the model CDF at those points."""
    n = len(x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))


@dataclass
class ServiceTimeFit:
    dist: str
    n: int
    mean: Estimate
    cv: Estimate
    p50: Estimate
    p99: Estimate
    params: dict[str, Estimate]
    scores: dict[str, dict[str, float]]
    quantiles: list[float] = field(default_factory=list)
    """For ``empirical``: 101 quantiles (0, 1, ..., 100 %) of the samples."""

    def to_json(self) -> dict[str, Any]:
        return {
            "dist": self.dist, "unit": "us", "samples": self.n,
            "mean": self.mean.to_json(), "cv": self.cv.to_json(),
            "p50": self.p50.to_json(), "p99": self.p99.to_json(),
            "params": {k: v.to_json() for k, v in self.params.items()},
            "goodness_of_fit": self.scores,
            "selection": f"higher log-likelihood of lognormal and gamma; empirical when its KS D "
                         f"> {EMPIRICAL_D}",
            **({"quantiles_us": self.quantiles} if self.quantiles else {}),
        }


def _scores(x: Array) -> dict[str, dict[str, float]]:
    xs = np.sort(x)
    mu, sigma = lognormal_mle(xs)
    k, theta = gamma_mle(xs)
    return {
        "lognormal": {"loglik": lognormal_loglik(xs, mu, sigma),
                      "ks_d": ks_statistic(xs, lognormal_cdf(xs, mu, sigma))},
        "gamma": {"loglik": gamma_loglik(xs, k, theta),
                  "ks_d": ks_statistic(xs, gammainc(k, xs / theta))},
    }


def choose(scores: dict[str, dict[str, float]]) -> str:
    best = max(("lognormal", "gamma"), key=lambda d: scores[d]["loglik"])
    return "empirical" if scores[best]["ks_d"] > EMPIRICAL_D else best


def cluster_resamples(groups: Sequence[Array], *, seed: int = 0,
                      n: int = BOOTSTRAP) -> list[Array]:
    """Bootstrap resamples that draw whole groups (measurement points) with replacement.

    Samples taken at one point share that moment's machine state (caches, frequency, other
    tenants), so they are not independent: resampling them one by one gives CIs that count
    only the noise within a point and miss the drift between points, which two calibrations
    minutes apart do see.
    """
    rng = np.random.default_rng(seed)
    return [np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
            for _ in range(n)]


def fit_service_time(samples: Sequence[float], *, seed: int = 0,
                     groups: Sequence[Sequence[float]] | None = None) -> ServiceTimeFit:
    """Fit per-request service times (microseconds, > 0) and bootstrap their CIs.

    With ``groups`` (the samples by measurement point, two or more), the bootstrap resamples
    whole points (:func:`cluster_resamples`) and ``samples`` is ignored.
    """
    parts = [np.asarray([s for s in g if s > 0], dtype=float) for g in groups or ()]
    parts = [g for g in parts if len(g)]
    clustered = len(parts) >= 2
    x = np.concatenate(parts) if clustered else np.asarray([s for s in samples if s > 0],
                                                           dtype=float)
    if len(x) < 20:
        raise ValueError(f"need at least 20 positive samples to fit, got {len(x)}")
    scores = _scores(x)
    dist = choose(scores)
    if clustered:
        boots = cluster_resamples(parts, seed=seed)
    else:
        rng = np.random.default_rng(seed)
        boots = list(x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))])
    means = np.array([b.mean() for b in boots])
    cvs = np.array([b.std() for b in boots]) / means
    p50s = np.array([np.quantile(b, 0.5) for b in boots])
    p99s = np.array([np.quantile(b, 0.99) for b in boots])
    params: dict[str, Estimate] = {}
    if dist == "lognormal":
        lb = [np.log(b) for b in boots]
        mu, sigma = lognormal_mle(x)
        params = {"mu": _ci(np.array([b.mean() for b in lb]), mu),
                  "sigma": _ci(np.array([b.std() for b in lb]), sigma)}
    elif dist == "gamma":
        k, theta = gamma_mle(x)
        ks, ths = zip(*(gamma_mle(b) for b in boots), strict=True)
        params = {"shape": _ci(np.array(ks), k), "scale": _ci(np.array(ths), theta)}
    quantiles = [float(q) for q in np.quantile(x, np.linspace(0, 1, 101))] \
        if dist == "empirical" else []
    return ServiceTimeFit(
        dist=dist, n=len(x),
        mean=_ci(means, float(x.mean())), cv=_ci(cvs, float(x.std() / x.mean())),
        p50=_ci(p50s, float(np.quantile(x, 0.5))), p99=_ci(p99s, float(np.quantile(x, 0.99))),
        params=params, scores=scores, quantiles=quantiles,
    )


# --------------------------------------------------------------------------- linear costs


@dataclass
class LineFit:
    intercept: Estimate
    slope: Estimate
    residuals: list[float]
    x: list[float]
    y: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"intercept": self.intercept.to_json(), "slope": self.slope.to_json(),
                "points": [{"x": a, "y": b, "residual": r}
                           for a, b, r in zip(self.x, self.y, self.residuals, strict=True)]}


def _ols(x: Array, y: Array) -> tuple[float, float]:
    if np.ptp(x) == 0:
        return float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def fit_line(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> LineFit:
    """``y = a + b x`` with a pairs-bootstrap CI for both coefficients."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if len(xa) < 2:
        raise ValueError("need at least two points for a line")
    a, b = _ols(xa, ya)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(xa), len(xa))
        reps.append(_ols(xa[i], ya[i]))
    arr = np.array(reps)
    res = ya - (a + b * xa)
    return LineFit(_ci(arr[:, 0], a), _ci(arr[:, 1], b), [float(r) for r in res],
                   [float(v) for v in xa], [float(v) for v in ya])


@dataclass
class PlaneFit:
    """``y = a + b1 x1 + b2 x2``: two regressors fitted jointly (e.g. KiB and wake-ups)."""

    intercept: Estimate
    slopes: dict[str, Estimate]
    residuals: list[float]
    x: dict[str, list[float]]
    y: list[float]

    def to_json(self) -> dict[str, Any]:
        names = list(self.slopes)
        return {"intercept": self.intercept.to_json(),
                "slopes": {k: e.to_json() for k, e in self.slopes.items()},
                "points": [{**{k: self.x[k][i] for k in names}, "y": self.y[i],
                            "residual": self.residuals[i]} for i in range(len(self.y))]}


def _lstsq(design: Array, y: Array) -> Array:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.asarray(coef, dtype=float)


def fit_plane(x: dict[str, Sequence[float]], y: Sequence[float], *, seed: int = 0) -> PlaneFit:
    """Least squares on two named regressors with a pairs-bootstrap CI for every coefficient.

    Resamples whose regressors are collinear (a bootstrap draw of too few distinct points) are
    dropped rather than given arbitrary coefficients.
    """
    names = list(x)
    if len(names) != 2:
        raise ValueError("fit_plane takes exactly two regressors")
    ya = np.asarray(y, dtype=float)
    design = np.column_stack([np.ones(len(ya))] + [np.asarray(x[k], dtype=float) for k in names])
    if len(ya) < 4 or np.linalg.matrix_rank(design) < 3:
        raise ValueError("need at least four points that vary in both regressors")
    coef = _lstsq(design, ya)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(ya), len(ya))
        if np.linalg.matrix_rank(design[i]) == 3:
            reps.append(_lstsq(design[i], ya[i]))
    arr = np.array(reps)
    res = ya - design @ coef
    return PlaneFit(
        intercept=_ci(arr[:, 0], float(coef[0])),
        slopes={k: _ci(arr[:, j + 1], float(coef[j + 1])) for j, k in enumerate(names)},
        residuals=[float(r) for r in res],
        x={k: [float(v) for v in x[k]] for k in names},
        y=[float(v) for v in ya],
    )
