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
* **The total held to its evidence**: a file whose anchor gives ``vcpu_range`` (the range the
  published or derived figures put its CPU total in, at the anchor's 1000 rps) has that total
  drawn as a parameter of its own, and each set's CPU parameters are moved together until the
  anchor's total is the drawn one (:func:`_held_to_level`). Without it the total is a sum of
  its parts' independent draws (eight in the Linkerd and Envoy files), which concentrates near
  the middle of their ranges whatever the evidence says, and leans wherever the file's values
  sit off their ranges' centres: the
  Linkerd file's parts, drawn alone, put its total at 0.05-0.14 vCPU against a bracket of
  0.06-0.20 and a value of 0.12; Envoy's at 0.14-0.34 against 0.18-0.26 (64 sets). Held to
  the level, every anchored model's band at its anchor is its bracket, so two meshes' bands
  differ by their evidence, not by how many parts their files split the cost into.
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
from meshsim.models.ranges import LEVEL_PARAMETER, RangedParameter, model_label
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
        return _own_values(self.values, label)


def _own_values(values: Mapping[str, float], label: str) -> dict[str, float]:
    """The values named ``<label>.<parameter>``, under bare names; a drawn level is not a
    parameter of the model (its parts carry it)."""
    prefix = f"{label}."
    return {
        k[len(prefix) :]: v
        for k, v in values.items()
        if k.startswith(prefix) and k[len(prefix) :] != LEVEL_PARAMETER
    }


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
    varying.sort(key=lambda p: p.name)
    # Each parameter's column of the hypercube comes from a stream of its own name, so that
    # neither the order in which meshes list their models nor a parameter added to (or
    # removed from) another model changes the values a parameter is drawn.
    unit = np.zeros((n, len(varying)))
    for j, p in enumerate(varying):
        seq = np.random.SeedSequence(
            seed, spawn_key=(stream_key("model-samples"), stream_key(p.name))
        )
        unit[:, j] = latin_hypercube(n, 1, np.random.Generator(np.random.PCG64(seq)))[:, 0]
    levels = [p for p in varying if p.level is not None]
    sets = []
    for k in range(n):
        at = {p.name: float(unit[k, j]) for j, p in enumerate(varying)}
        values = {p.name: _scale(p, at[p.name]) for p in varying}
        for level in levels:
            values.update(_held_to_level(level, values[level.name], at, varying))
        sets.append(ParameterSet(k, values))
    return sets


def _held_to_level(
    level: RangedParameter,
    target: float,
    at: Mapping[str, float],
    params: Sequence[RangedParameter],
) -> dict[str, float]:
    """The level's parts moved together until the model's CPU total at its anchor is ``target``.

    Each part keeps its place relative to the others: its position in its range, ``u``, is
    moved by one common shift ``d`` on the logit scale, ``sigmoid(logit(u) + d)``, found by
    bisection (the total rises with ``d``). So every part stays inside its own range, a part
    drawn high stays higher than one drawn low, and the total is the drawn level: the parts'
    draws decide how the total splits, the level's draw how large it is.
    """
    spec = level.level
    assert spec is not None
    by_name = {p.name: p for p in params}
    parts = [(by_name[name], c, _logit(at[name])) for name, c in spec.parts]

    def values_at(d: float) -> dict[str, float]:
        return {p.name: _scale(p, _sigmoid(x + d)) for p, _, x in parts}

    def total(d: float) -> float:
        return spec.fixed + sum(
            c * v for (_, c, _), v in zip(parts, values_at(d).values(), strict=True)
        )

    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if total(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return values_at((lo + hi) / 2.0)


def _logit(u: float) -> float:
    u = min(max(u, 1e-12), 1.0 - 1e-12)
    return math.log(u / (1.0 - u))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def apply_values(model: ProxyCostModel, values: Mapping[str, float] | None) -> ProxyCostModel:
    """``model`` with the values of one parameter set that name it (all others ignored)."""
    if not values:
        return model
    mine = _own_values(values, model_label(model))
    return model.with_values(mine) if mine else model
