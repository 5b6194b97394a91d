"""Samplers for scenario distributions, drawn in batches from a named stream.

numpy draws one value in about a microsecond but a batch of thousands in about
the same time per hundred; samplers refill a buffer so that a draw costs a list pop.
The batch size is fixed, so the sequence of values depends only on the stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from meshsim.scenario.model import Distribution

_BATCH = 4096


class Sampler:
    """Draws values of one distribution, scaled to seconds (or any unit) by ``scale``."""

    __slots__ = ("_buffer", "_draw", "mean")

    def __init__(self, draw: Callable[[int], np.ndarray], mean: float) -> None:
        self._draw = draw
        self._buffer: list[float] = []
        self.mean = mean
        """The distribution's mean, in the sampler's unit."""

    def __call__(self) -> float:
        buf = self._buffer
        if not buf:
            # Reversed so that pop() yields the batch in the order it was drawn.
            buf.extend(self._draw(_BATCH)[::-1].tolist())
        return buf.pop()


def lognormal_params(mean: float, cv: float) -> tuple[float, float]:
    """The (mu, sigma) of a lognormal with the given mean and coefficient of variation."""
    sigma2 = math.log1p(cv * cv)
    return math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)


def make_sampler(dist: Distribution, rng: np.random.Generator, scale: float = 1.0) -> Sampler:
    """A sampler for ``dist`` whose values are multiplied by ``scale`` (e.g. 1e-3 for ms)."""
    if dist.dist == "constant":
        value = float(dist.expected) * scale
        return Sampler(lambda n: np.full(n, value), value)
    if dist.dist == "exponential":
        mean = float(dist.expected) * scale
        return Sampler(lambda n: rng.exponential(mean, n), mean)
    if dist.dist == "lognormal":
        assert dist.cv is not None
        mean = float(dist.expected) * scale
        if dist.cv == 0:
            return Sampler(lambda n: np.full(n, mean), mean)
        mu, sigma = lognormal_params(mean, dist.cv)
        return Sampler(lambda n: rng.lognormal(mu, sigma, n), mean)
    if dist.dist == "gamma":
        assert dist.cv is not None
        mean = float(dist.expected) * scale
        if dist.cv == 0:
            return Sampler(lambda n: np.full(n, mean), mean)
        shape = 1.0 / (dist.cv * dist.cv)
        return Sampler(lambda n: rng.gamma(shape, mean / shape, n), mean)
    assert dist.values is not None
    values = np.asarray(dist.values, dtype=np.float64) * scale
    return Sampler(lambda n: rng.choice(values, n), float(values.mean()))


def quantile_sampler(
    probabilities: np.ndarray, values: np.ndarray, rng: np.random.Generator, mean: float
) -> Sampler:
    """Draws from a distribution known by its quantiles: ``values`` at ``probabilities``
    (increasing), linear between them and flat beyond the first and the last; ``mean`` is
    the distribution's, in the values' unit."""
    return Sampler(lambda n: np.interp(rng.random(n), probabilities, values), mean)


def gamma_factor(cv: float, rng: np.random.Generator) -> Sampler | None:
    """Multipliers of mean 1 and coefficient of variation ``cv`` (gamma), or None for cv 0.

    Scaling a fixed cost by them keeps its mean (shape 1/cv^2, scale cv^2).
    """
    if cv <= 0.0:
        return None
    shape = 1.0 / (cv * cv)
    return Sampler(lambda n: rng.gamma(shape, 1.0 / shape, n), 1.0)


class Uniforms:
    """Batched uniform [0, 1) draws for coin flips (call probabilities, error rates)."""

    __slots__ = ("_buffer", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buffer: list[float] = []

    def __call__(self) -> float:
        buf = self._buffer
        if not buf:
            buf.extend(self._rng.random(_BATCH).tolist())
        return buf.pop()
