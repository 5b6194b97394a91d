"""Cost-model parameter sets drawn over the models' ranges: the model band's inputs.

A simulation CI says how much the simulator's own randomness moves an answer; it says nothing
about how much the answer moves when a model parameter that the evidence gives only as a range
(``range: [low, high]`` in ``models/*.yaml``) takes another value in it. ``--model-samples N``
draws N parameter sets and reruns every mesh with each, so each metric gets a *model band*.

How the sets are drawn, and why:

* **Latin hypercube**: each parameter's range is cut into N equal-probability strata and every
  stratum is used exactly once, so that with N as small as 4 to 8 each parameter still spans
  its range (plain random draws leave gaps that look like certainty).
* **Log-uniform for wide ranges**: a positive range whose ends differ by a factor of 4 or more
  is an order-of-magnitude uncertainty, and a uniform draw would sit in its top half three
  times out of four; such ranges are drawn uniformly in log space.
* **Deterministic from the scenario's seed**, through a stream of its own, so the same scenario
  draws the same sets on any machine and adding sets never changes the simulation's streams.
* **Shared by name**: parameters are named ``<model>.<parameter>``; two meshes that use the same
  model file (Istio sidecars and waypoints share Envoy's file only if the scenario says so)
  see the same value in set k, so their difference in set k comes from their architectures,
  not from different draws. With common random numbers across meshes (replication seeds are
  shared), a difference between meshes in one set is a paired difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from meshsim.models.cost import ProxyCostModel
from meshsim.models.ranges import RangedParameter, model_label
from meshsim.rng import stream_key

LOG_UNIFORM_RATIO = 4.0
"""A positive range with high/low at or above this is drawn log-uniformly."""

MAX_MODEL_SAMPLES = 64
"""More sets than this multiply a run's cost without narrowing a min-max band much: with 64
Latin-hypercube sets a band already reaches within 1/64 of each end of every range."""


@dataclass(frozen=True)
class ParameterSet:
    """Set ``index`` (0-based): the value of every ranged parameter, by dotted name."""

    index: int
    values: dict[str, float]

    def for_model(self, label: str) -> dict[str, float]:
        """The values of one model's parameters, under their bare names."""
        prefix = f"{label}."
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}


def latin_hypercube(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points in the unit cube ``[0, 1)^dims``, one per stratum of every axis."""
    if n < 1:
        raise ValueError("a Latin hypercube needs at least one point")
    strata = np.argsort(rng.random((dims, n)), axis=1).T  # (n, dims): a permutation per axis
    return (strata + rng.random((n, dims))) / n


def _is_log(p: RangedParameter) -> bool:
    return p.low > 0 and p.high / p.low >= LOG_UNIFORM_RATIO


def _scale(p: RangedParameter, u: float) -> float:
    if _is_log(p):
        x = math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low)))
    else:
        x = p.low + u * (p.high - p.low)
    if p.integer:
        # Round within the range: a stratum of an integer parameter is its share of the
        # whole numbers in [low, high].
        x = float(min(max(round(x), math.ceil(p.low)), math.floor(p.high)))
    return min(max(x, p.low), p.high)


def unique_parameters(params: Iterable[RangedParameter]) -> list[RangedParameter]:
    """One entry per dotted name (models shared by meshes appear once), varying ones only."""
    seen: dict[str, RangedParameter] = {}
    for p in params:
        if p.varies and p.name not in seen:
            seen[p.name] = p
    return list(seen.values())


def draw_parameter_sets(params: Sequence[RangedParameter], n: int, seed: int) -> list[ParameterSet]:
    """``n`` Latin-hypercube parameter sets over ``params``' ranges, deterministic in ``seed``."""
    if not 1 <= n <= MAX_MODEL_SAMPLES:
        raise ValueError(f"model samples must be between 1 and {MAX_MODEL_SAMPLES}, not {n}")
    varying = unique_parameters(params)
    seq = np.random.SeedSequence(seed, spawn_key=(stream_key("model-samples"),))
    rng = np.random.Generator(np.random.PCG64(seq))
    # Columns follow the sorted names, so that the order in which meshes list their models
    # never changes which value a parameter gets.
    varying.sort(key=lambda p: p.name)
    unit = latin_hypercube(n, len(varying), rng) if varying else np.zeros((n, 0))
    return [
        ParameterSet(k, {p.name: _scale(p, float(unit[k, j])) for j, p in enumerate(varying)})
        for k in range(n)
    ]


def apply_values(model: ProxyCostModel, values: Mapping[str, float] | None) -> ProxyCostModel:
    """``model`` with the values of one parameter set that name it (all others ignored)."""
    if not values:
        return model
    prefix = f"{model_label(model)}."
    mine = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
    return model.with_values(mine) if mine else model
