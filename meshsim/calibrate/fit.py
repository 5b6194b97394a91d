"""Fitting cost models: service-time distributions, linear costs, bootstrap CIs (scipy).

- :func:`fit_service_time` fits a lognormal and a gamma by maximum likelihood
  (``scipy.stats.lognorm.fit`` / ``gamma.fit`` with the location fixed at 0), scores both by
  log-likelihood and by the Kolmogorov-Smirnov statistic D (``scipy.stats.kstest``), and
  chooses the better likelihood, or ``empirical`` when even the better one is far from the data
  (``D > EMPIRICAL_D``: with thousands of samples every parametric form is rejected by the KS
  *test*, so a practical threshold on D decides, and it is stated in the output). Confidence
  intervals come from a seeded percentile bootstrap (``scipy.stats.bootstrap``), over single
  samples or over whole measurement points (:func:`block_bootstrap`).
- :func:`fit_line` fits ``y = a + b x`` by least squares with a pairs bootstrap, for per-KiB,
  per-filter and per-connection costs; :func:`fit_plane` two or more regressors jointly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

EMPIRICAL_D = 0.08
"""KS distance above which neither lognormal nor gamma is accepted and the empirical is used."""
BOOTSTRAP = 200
CI_LEVEL = 0.95

Array = NDArray[np.float64]
Statistic = Callable[..., Any]
"""A statistic of one or more paired arrays: a number or a 1-D array of numbers."""


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "ci95": [self.lo, self.hi]}  # type: ignore[dict-item]


def estimate(replicates: Array, point: float) -> Estimate:
    """The percentile interval of bootstrap ``replicates`` around ``point``, widened to hold
    the point (a skewed statistic's point can fall outside its percentile interval). NaN
    replicates (resamples where the statistic is undefined) are left out."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[~np.isnan(reps)]
    a = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return Estimate(float(point), float(min(lo, point)), float(max(hi, point)))


def replicates(
    data: Sequence[NDArray[Any]], statistic: Statistic, *, seed: int = 0, n: int = BOOTSTRAP
) -> Array:
    """The bootstrap distribution of ``statistic`` over ``n`` resamples of ``data``, one row
    per value the statistic returns.

    The arrays of ``data`` are resampled together (pairs: element ``i`` of each stays
    together). Resample ``j`` draws ``rng.integers(0, len, len)`` from
    ``numpy.random.default_rng(seed)``, so a seed gives the same resamples as before this
    module used scipy. A statistic may return NaN for a resample where it is undefined (a
    line through one distinct x): :func:`estimate` leaves those out, so scipy's own interval
    (NaN then, with a warning) is not used.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            tuple(np.asarray(d) for d in data),
            statistic,
            n_resamples=n,
            paired=True,
            vectorized=False,
            method="percentile",
            confidence_level=CI_LEVEL,
            rng=np.random.default_rng(seed),
        )
    return np.atleast_2d(np.asarray(res.bootstrap_distribution, dtype=float))


def bootstrap(
    data: Array, stat: Callable[[Array], float], *, seed: int = 0, n: int = BOOTSTRAP
) -> Estimate:
    """A statistic of independent samples and its percentile-bootstrap 95 % CI."""
    data = np.asarray(data, dtype=float)
    return estimate(replicates([data], stat, seed=seed, n=n)[0], stat(data))


def block_bootstrap(
    blocks: Sequence[Array], stat: Callable[[Array], float], *, seed: int = 0, n: int = BOOTSTRAP
) -> Estimate:
    """A statistic of the pooled ``blocks`` with a CI from resampling whole blocks.

    Samples taken at one measurement point (or in one block of handshakes) share that
    moment's machine state (caches, frequency, other tenants), so they are not independent:
    resampling them one by one gives CIs that count only the noise within a block and miss
    the drift between blocks, which two calibrations minutes apart do see.
    ``scipy.stats.bootstrap`` resamples elements, so it resamples the blocks' indices here.
    """
    parts = [np.asarray(b, dtype=float) for b in blocks]
    reps = replicates([np.arange(len(parts))], _pooled(parts, stat), seed=seed, n=n)[0]
    return estimate(reps, stat(np.concatenate(parts)))


def _pooled(parts: Sequence[Array], stat: Statistic) -> Statistic:
    """``stat`` of the blocks whose indices it is given, pooled."""

    def of_blocks(idx: NDArray[np.int64]) -> Any:
        return stat(np.concatenate([parts[j] for j in idx]))

    return of_blocks


# --------------------------------------------------------------------------- distributions


def lognormal_mle(x: Array) -> tuple[float, float]:
    """``mu`` and ``sigma`` of the log (maximum likelihood, location 0)."""
    sigma, _, scale = stats.lognorm.fit(x, floc=0)
    return float(np.log(scale)), float(sigma)


def lognormal_loglik(x: Array, mu: float, sigma: float) -> float:
    return float(np.sum(stats.lognorm.logpdf(x, sigma, scale=np.exp(mu))))


def lognormal_cdf(x: Array, mu: float, sigma: float) -> Array:
    return np.asarray(stats.lognorm.cdf(x, sigma, scale=np.exp(mu)), dtype=float)


def gamma_mle(x: Array) -> tuple[float, float]:
    """Shape ``k`` and scale ``theta`` (maximum likelihood, location 0)."""
    k, _, theta = stats.gamma.fit(x, floc=0)
    return float(k), float(theta)


def gamma_loglik(x: Array, k: float, theta: float) -> float:
    return float(np.sum(stats.gamma.logpdf(x, k, scale=theta)))


def gamma_cdf(x: Array, k: float, theta: float) -> Array:
    return np.asarray(stats.gamma.cdf(x, k, scale=theta), dtype=float)


def ks_distance(x: Array, cdf: Callable[[Array], Array]) -> float:
    """The Kolmogorov-Smirnov D = sup |F_n - F| of ``x`` against a model CDF."""
    return float(stats.kstest(x, cdf).statistic)


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
            "dist": self.dist,
            "unit": "us",
            "samples": self.n,
            "mean": self.mean.to_json(),
            "cv": self.cv.to_json(),
            "p50": self.p50.to_json(),
            "p99": self.p99.to_json(),
            "params": {k: v.to_json() for k, v in self.params.items()},
            "goodness_of_fit": self.scores,
            "selection": f"higher log-likelihood of lognormal and gamma; empirical when its KS D "
            f"> {EMPIRICAL_D}",
            **({"quantiles_us": self.quantiles} if self.quantiles else {}),
        }


def _scores(x: Array) -> dict[str, dict[str, float]]:
    mu, sigma = lognormal_mle(x)
    k, theta = gamma_mle(x)
    return {
        "lognormal": {
            "loglik": lognormal_loglik(x, mu, sigma),
            "ks_d": ks_distance(x, lambda v: lognormal_cdf(v, mu, sigma)),
        },
        "gamma": {
            "loglik": gamma_loglik(x, k, theta),
            "ks_d": ks_distance(x, lambda v: gamma_cdf(v, k, theta)),
        },
    }


def choose(scores: dict[str, dict[str, float]]) -> str:
    best = max(("lognormal", "gamma"), key=lambda d: scores[d]["loglik"])
    return "empirical" if scores[best]["ks_d"] > EMPIRICAL_D else best


PARAMS = {"lognormal": ("mu", "sigma"), "gamma": ("shape", "scale"), "empirical": ()}
"""The parameters each distribution's fit reports, in the order its MLE returns them."""


def _service_time_statistic(dist: str) -> Callable[[Array], Array]:
    """Mean, cv, p50, p99 and the chosen distribution's parameters of a sample."""
    mle = {"lognormal": lognormal_mle, "gamma": gamma_mle}.get(dist)

    def of(b: Array) -> Array:
        mean = float(b.mean())
        summary = [
            mean,
            float(b.std()) / mean,
            float(np.quantile(b, 0.5)),
            float(np.quantile(b, 0.99)),
        ]
        return np.array(summary + (list(mle(b)) if mle else []))

    return of


def fit_service_time(
    samples: Sequence[float], *, seed: int = 0, groups: Sequence[Sequence[float]] | None = None
) -> ServiceTimeFit:
    """Fit per-request service times (microseconds, > 0) and bootstrap their CIs.

    With ``groups`` (the samples by measurement point, two or more), the bootstrap resamples
    whole points (as :func:`block_bootstrap`) and ``samples`` is ignored.
    """
    parts = [np.asarray([s for s in g if s > 0], dtype=float) for g in groups or ()]
    parts = [g for g in parts if len(g)]
    clustered = len(parts) >= 2
    x = (
        np.concatenate(parts)
        if clustered
        else np.asarray([s for s in samples if s > 0], dtype=float)
    )
    if len(x) < 20:
        raise ValueError(f"need at least 20 positive samples to fit, got {len(x)}")
    scores = _scores(x)
    dist = choose(scores)
    stat = _service_time_statistic(dist)
    if clustered:
        reps = replicates([np.arange(len(parts))], _pooled(parts, stat), seed=seed)
    else:
        reps = replicates([x], stat, seed=seed)
    mean, cv, p50, p99, *params = (estimate(r, p) for r, p in zip(reps, stat(x), strict=True))
    quantiles = (
        [float(q) for q in np.quantile(x, np.linspace(0, 1, 101))] if dist == "empirical" else []
    )
    return ServiceTimeFit(
        dist=dist,
        n=len(x),
        mean=mean,
        cv=cv,
        p50=p50,
        p99=p99,
        params=dict(zip(PARAMS[dist], params, strict=True)),
        scores=scores,
        quantiles=quantiles,
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
        return {
            "intercept": self.intercept.to_json(),
            "slope": self.slope.to_json(),
            "points": [
                {"x": a, "y": b, "residual": r}
                for a, b, r in zip(self.x, self.y, self.residuals, strict=True)
            ],
        }


def _lstsq(design: Array, y: Array) -> Array:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.asarray(coef, dtype=float)


def _ols(x: Array, y: Array) -> Array:
    """Intercept and slope; a flat line through the mean when ``x`` does not vary (a
    resample that drew one distinct x)."""
    if np.ptp(x) == 0:
        return np.array([float(y.mean()), 0.0])
    return _lstsq(np.column_stack([np.ones(len(x)), x]), y)


def fit_line(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> LineFit:
    """``y = a + b x`` with a pairs-bootstrap CI for both coefficients."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if len(xa) < 2:
        raise ValueError("need at least two points for a line")
    a, b = _ols(xa, ya)
    reps = replicates([xa, ya], _ols, seed=seed)
    res = ya - (a + b * xa)
    return LineFit(
        estimate(reps[0], a),
        estimate(reps[1], b),
        [float(r) for r in res],
        [float(v) for v in xa],
        [float(v) for v in ya],
    )


@dataclass
class PlaneFit:
    """``y = a + b1 x1 + b2 x2 + ...``: regressors fitted jointly (e.g. KiB and wake-ups)."""

    intercept: Estimate
    slopes: dict[str, Estimate]
    residuals: list[float]
    x: dict[str, list[float]]
    y: list[float]

    def to_json(self) -> dict[str, Any]:
        names = list(self.slopes)
        return {
            "intercept": self.intercept.to_json(),
            "slopes": {k: e.to_json() for k, e in self.slopes.items()},
            "points": [
                {**{k: self.x[k][i] for k in names}, "y": self.y[i], "residual": self.residuals[i]}
                for i in range(len(self.y))
            ],
        }


def fit_plane(x: Mapping[str, Sequence[float]], y: Sequence[float], *, seed: int = 0) -> PlaneFit:
    """Least squares on two or more named regressors with a pairs-bootstrap CI for every
    coefficient.

    Resamples whose regressors are collinear (a bootstrap draw of too few distinct points) are
    dropped rather than given arbitrary coefficients.
    """
    names = list(x)
    if len(names) < 2:
        raise ValueError("fit_plane takes two or more regressors")
    ya = np.asarray(y, dtype=float)
    design = np.column_stack([np.ones(len(ya))] + [np.asarray(x[k], dtype=float) for k in names])
    k = design.shape[1]
    if len(ya) < k + 1 or np.linalg.matrix_rank(design) < k:
        raise ValueError(f"need at least {k + 1} points that vary in every regressor")
    coef = _lstsq(design, ya)
    reps = replicates([*(design[:, j] for j in range(1, k)), ya], _plane_coefficients, seed=seed)
    res = ya - design @ coef
    return PlaneFit(
        intercept=estimate(reps[0], float(coef[0])),
        slopes={name: estimate(reps[j + 1], float(coef[j + 1])) for j, name in enumerate(names)},
        residuals=[float(r) for r in res],
        x={name: [float(v) for v in x[name]] for name in names},
        y=[float(v) for v in ya],
    )


def _plane_coefficients(*columns: Array) -> Array:
    """Least-squares coefficients (the regressors, then y), NaN when the resampled regressors
    are collinear."""
    y = columns[-1]
    design = np.column_stack([np.ones(len(y)), *columns[:-1]])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return np.full(design.shape[1], np.nan)
    return _lstsq(design, y)
