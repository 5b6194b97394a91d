"""The uncertain parameters of a model: what a parameter-set draw may vary, and over what.

Every parameter of a shipped model file carries ``range: [low, high]`` with the source of its
bounds (``tests/test_models.py`` enforces it; calibrated files may omit ranges). This module lists
them under dotted names (``<model>.<parameter>``, e.g. ``linkerd-proxy.wakeup_cpu_us``) so that
a sampler can draw values over the ranges, apply them with
:meth:`~meshsim.models.ProxyCostModel.with_values`, and a sensitivity ranking can name the
parameter that decides a finding in the file's own words.

A file whose anchor gives ``vcpu_range`` adds one more: its CPU total at the anchor
(``<model>.anchor_vcpu_per_1000rps``), an :class:`AnchorLevel` that names the parameters it is
made of. The evidence for a proxy's cost is mostly about that total (a benchmark's vCPU at 1000
rps), its parts are a modelling split; drawing the parts alone would leave the total wherever
the sum of its parts' independent draws happens to fall (:mod:`meshsim.models.samples`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from meshsim.models.cost import Anchor, ProxyCostModel
from meshsim.models.parameters import PARAMETER_SPECS

LEVEL_PARAMETER = "anchor_vcpu_per_1000rps"
"""The bare name of a model's CPU total at its anchor, when drawn as a parameter."""


@dataclass(frozen=True)
class AnchorLevel:
    """A model's CPU total at its anchor as a linear function of its varying parameters.

    ``total = fixed + sum(coefficient * value)`` over ``parts`` (dotted names), in vCPU per
    1000 rps; exact, since the anchor's total is linear in each CPU parameter (checked when it
    is built). ``reach`` is the total with every part at its low and at its high bound.
    """

    parts: tuple[tuple[str, float], ...]
    fixed: float
    reach: tuple[float, float]

    def total(self, values: dict[str, float]) -> float:
        return self.fixed + sum(c * values[name] for name, c in self.parts)


@dataclass(frozen=True)
class RangedParameter:
    """One parameter of one model with its value, its range and where the range comes from."""

    name: str
    """Dotted name: ``<model>.<parameter>``, the model being the file's stem (or its kind)."""
    model: str
    parameter: str
    unit: str
    value: float
    low: float
    high: float
    source: str
    """The range's source: a citation per bound, or "derived bracket" and its derivation."""
    integer: bool
    level: AnchorLevel | None = None
    """Set for a model's CPU total at its anchor: the parameters whose draws it holds to."""

    @property
    def varies(self) -> bool:
        """False for a fixed fact (an architecture count, a documented default): low == high."""
        return self.high > self.low


def model_label(model: ProxyCostModel) -> str:
    """The name a model goes by in dotted parameter names: its file's stem, else its kind."""
    return Path(model.path).stem if model.path else model.kind


def ranged_parameters(
    model: ProxyCostModel, *, label: str | None = None, varying_only: bool = False
) -> tuple[RangedParameter, ...]:
    """The model's parameters that have a range, in file order, under dotted names.

    ``label`` overrides the model part of the names (two meshes sharing one file share its
    names, so a draw gives them the same values). ``varying_only`` leaves out degenerate
    ranges (low == high), which a sampler has no reason to draw.
    """
    prefix = label if label is not None else model_label(model)
    out = []
    for pname, p in model.parameters.items():
        if p.range is None:
            continue
        item = RangedParameter(
            name=f"{prefix}.{pname}",
            model=prefix,
            parameter=pname,
            unit=p.unit,
            value=p.value,
            low=p.range.low,
            high=p.range.high,
            source=p.range.source,
            integer=PARAMETER_SPECS[pname].integer,
        )
        if item.varies or not varying_only:
            out.append(item)
    return tuple(out)


def drawn_parameters(
    model: ProxyCostModel, *, label: str | None = None
) -> tuple[RangedParameter, ...]:
    """What a parameter-set draw varies for ``model``: its ranged parameters, and its CPU
    total at the anchor when the anchor gives ``vcpu_range`` (:func:`anchor_level`). A model a
    run added work to (``model.base``) is drawn as the model it was made from: the anchor's
    range bounds the file's total, not the total with a run's tracing in it."""
    model = model.base or model
    params = ranged_parameters(model, label=label)
    prefix = label if label is not None else model_label(model)
    level = anchor_level(model, prefix, list(params))
    return params if level is None else (*params, level)


def anchor_total(model: ProxyCostModel, anchor: Anchor | None = None) -> float:
    """The model's CPU at ``anchor`` (its own by default), vCPU per 1000 rps: what the anchor's
    ``vcpu_per_1000rps`` states and what a drawn level holds."""
    a = anchor if anchor is not None else model.anchor
    if a is None:
        raise ValueError(f"{model_label(model)} has no anchor")
    return model.vcpu_per_1000rps(
        a.request_bytes, a.response_bytes, mtls=a.mtls, wakeups_per_request=a.wakeups_per_request
    )


def anchor_level(
    model: ProxyCostModel, prefix: str, params: list[RangedParameter]
) -> RangedParameter | None:
    """The model's CPU total at its anchor as a drawn parameter (None without ``vcpu_range``).

    Its range is the anchor's ``vcpu_range`` where the parts' ranges can reach it: a bound
    beyond what every part at its own bound gives is drawn at what they give, and the source
    says so. Where the parameters' total at the anchor is not the file's stated figure (a
    copy edited for a what-if), the range is scaled by their ratio.
    """
    anchor = model.anchor
    if anchor is None or anchor.vcpu_range is None:
        return None

    def total(m: ProxyCostModel) -> float:
        return anchor_total(m, anchor)

    central = total(model)
    parts: list[tuple[str, float]] = []
    for p in params:
        if not p.varies or p.integer:
            continue
        slope = (
            total(model.with_values({p.parameter: p.high}))
            - total(model.with_values({p.parameter: p.low}))
        ) / (p.high - p.low)
        if slope != 0.0:
            parts.append((p.name, slope))
    if not parts:
        return None
    by_name = {p.name: p for p in params}
    fixed = central - sum(c * by_name[n].value for n, c in parts)
    reach = (
        fixed + sum(c * by_name[n].low for n, c in parts),
        fixed + sum(c * by_name[n].high for n, c in parts),
    )
    # The level is only exact if the total is linear in its parts; a model whose anchor mixes
    # them (a product of two drawn parameters) cannot be held to a total this way.
    every_high = total(model.with_values({by_name[n].parameter: by_name[n].high for n, _ in parts}))
    if not math.isclose(every_high, reach[1], rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(
            f"{prefix}: the anchor's CPU total is not linear in its parameters "
            f"({every_high:g} with every one at its high bound, {reach[1]:g} by their slopes)"
        )
    low, high = anchor.vcpu_range
    source = anchor.vcpu_range_source or ""
    scale = central / anchor.vcpu_per_1000rps
    if abs(scale - 1.0) > 0.01:
        # A file edited for a what-if (its CPU costs doubled, say) keeps the anchor it was
        # copied with: the evidence's spread is carried to the total the file now gives.
        low, high = low * scale, high * scale
        source += (
            f" (x{scale:.3g}: the parameters give {central:.4g} at the anchor, the file "
            f"states {anchor.vcpu_per_1000rps:g})"
        )
    if low < reach[0] or high > reach[1]:
        low, high = max(low, reach[0]), min(high, reach[1])
        source += (
            f" (drawn over [{low:.4g}, {high:.4g}]: the parameters' own ranges reach "
            f"{reach[0]:.4g} to {reach[1]:.4g})"
        )
    return RangedParameter(
        name=f"{prefix}.{LEVEL_PARAMETER}",
        model=prefix,
        parameter=LEVEL_PARAMETER,
        unit="vCPU per 1000 rps",
        value=min(max(central, low), high),
        low=low,
        high=high,
        source=source,
        integer=False,
        level=AnchorLevel(tuple(parts), fixed, reach),
    )


def unranged_parameters(model: ProxyCostModel) -> tuple[str, ...]:
    """Parameters of the model that carry no range (none, for a shipped file)."""
    return tuple(name for name, p in model.parameters.items() if p.range is None)
