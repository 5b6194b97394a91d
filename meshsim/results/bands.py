"""Model bands: each metric's range over the drawn cost-model parameter sets.

The central run (every parameter at its file's value) gives a metric's value and simulation CI;
the runs of the N drawn sets (:mod:`meshsim.models.samples`) give its band: the smallest
and largest value over the central run and the N sets. The per-set values are kept in the
summary too, because a comparison between two meshes needs their *paired* differences (set k
of both meshes used the same parameter values and the same random numbers), not two bands.

Summary keys added (results contract v1, extended):

* ``runs.<mesh>.workloads.<w>.latency_band_ms`` and ``services.<s>.latency_band_ms``:
  ``{percentile: [low, high]}``
* ``runs.<mesh>.proxies.band`` and ``runs.<mesh>.control_plane.band``: ``{metric: [low, high]}``
* ``runs.<mesh>.model_samples``: ``{"parameters": [dotted names], "sets": [[value per
  parameter] per set], "metrics": {dotted metric: [value per set]}}``, so that a reader of one
  mesh's block can pair its sets with another mesh's and rank the parameters
* ``model_samples`` at the top: ``{"n", "method", "parameters": [...], "sets": [[...]]}``;
  a model's CPU total at its anchor is a parameter of its own
  (``<model>.anchor_vcpu_per_1000rps``, drawn over the anchor's ``vcpu_range``), and each
  parameter it is made of names it under ``held_to``: that parameter's drawn position was
  moved, with the others', until the total was the drawn one (:mod:`meshsim.models.samples`)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from meshsim.models.ranges import LEVEL_PARAMETER, RangedParameter
from meshsim.models.samples import LOG_UNIFORM_RATIO, ParameterSet

BAND_PERCENTILES = ("mean", "p50", "p90", "p99", "p999")
PROXY_METRICS = ("cpu_vcpu_per_1000rps", "cpu_vcpu_total", "memory_mb_per_proxy", "memory_mb_total")
CONTROL_PLANE_METRICS = ("cpu_vcpu", "memory_mb")


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def banded_metrics(run: Mapping[str, Any]) -> dict[str, float | None]:
    """The metrics of one mesh's summary that carry a band, under dotted names."""
    out: dict[str, float | None] = {}
    for kind in ("workloads", "services"):
        for name, sig in (run.get(kind) or {}).items():
            latency = sig.get("latency_ms") or {}
            for p in BAND_PERCENTILES:
                out[f"{kind}.{name}.latency_ms.{p}"] = _number(latency.get(p))
    for block, keys in (("proxies", PROXY_METRICS), ("control_plane", CONTROL_PLANE_METRICS)):
        values = run.get(block) or {}
        for key in keys:
            out[f"{block}.{key}"] = _number(values.get(key))
    return out


def _band(values: Sequence[float | None]) -> list[float] | None:
    finite = [v for v in values if v is not None]
    return [min(finite), max(finite)] if finite else None


def attach_bands(
    runs: Mapping[str, Any],
    sets: Sequence[ParameterSet],
    per_set: Sequence[Mapping[str, Mapping[str, Any]]],
) -> None:
    """Add the band keys to ``runs`` (a summary's ``runs``) from the drawn sets' runs.

    ``per_set[k][mesh]`` is the summary of ``mesh`` under ``sets[k]``. A mesh whose models
    have no ranged parameter (``none``) still gets bands: they are its simulation's response
    to the other meshes' draws, which is none, so its bands are points.
    """
    if len(per_set) != len(sets):
        raise ValueError(f"{len(per_set)} runs for {len(sets)} parameter sets")
    names = sorted({name for s in sets for name in s.values})
    for mesh, run in runs.items():
        central = banded_metrics(run)
        measured = [banded_metrics(s[mesh]) for s in per_set]
        run["model_samples"] = {
            "parameters": names,
            "sets": [[s.values.get(name) for name in names] for s in sets],
            "metrics": {key: [m.get(key) for m in measured] for key in central},
        }
        band = {
            key: _band([value, *(m.get(key) for m in measured)]) for key, value in central.items()
        }
        for kind in ("workloads", "services"):
            for name, sig in (run.get(kind) or {}).items():
                sig["latency_band_ms"] = {
                    p: band.get(f"{kind}.{name}.latency_ms.{p}") for p in BAND_PERCENTILES
                }
        for block, keys in (("proxies", PROXY_METRICS), ("control_plane", CONTROL_PLANE_METRICS)):
            if isinstance(run.get(block), dict):
                run[block]["band"] = {key: band.get(f"{block}.{key}") for key in keys}


def drawn_levels(block: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The models' CPU totals at their anchors in a top-level ``model_samples`` block, each
    as (model, its entry: value, range, source), in the block's order."""
    if not isinstance(block, Mapping):
        return []
    suffix = f".{LEVEL_PARAMETER}"
    return [
        (str(p["name"]).removesuffix(suffix), p)
        for p in block.get("parameters") or []
        if isinstance(p, Mapping) and str(p.get("name", "")).endswith(suffix)
    ]


def samples_block(
    params: Sequence[RangedParameter], sets: Sequence[ParameterSet]
) -> dict[str, Any]:
    """The top-level ``model_samples`` block: what was drawn, over what, from which sources."""
    names = sorted({p.name for p in params if p.varies})
    by_name = {p.name: p for p in params}
    held_to = {part: p.name for p in params if p.level is not None for part, _ in p.level.parts}
    return {
        "n": len(sets),
        "method": "latin-hypercube",
        "parameters": [
            {
                "name": name,
                "value": by_name[name].value,
                "range": [by_name[name].low, by_name[name].high],
                "unit": by_name[name].unit,
                "scale": (
                    "log"
                    if by_name[name].low > 0
                    and by_name[name].high / by_name[name].low >= LOG_UNIFORM_RATIO
                    else "linear"
                ),
                "source": by_name[name].source,
                **({"held_to": held_to[name]} if name in held_to else {}),
            }
            for name in names
        ],
        "sets": [[s.values[name] for name in names] for s in sets],
    }
