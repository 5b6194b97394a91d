"""The uncertain parameters of a model: what a parameter-set draw may vary, and over what.

Every parameter of a shipped model file carries ``range: [low, high]`` with the source of its
bounds (``tests/test_models.py`` enforces it; calibrated files may omit ranges). This module lists
them under dotted names (``<model>.<parameter>``, e.g. ``linkerd-proxy.wakeup_cpu_us``) so that
a sampler can draw values over the ranges, apply them with
:meth:`~meshsim.models.ProxyCostModel.with_values`, and a sensitivity ranking can name the
parameter that decides a finding in the file's own words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshsim.models.cost import ProxyCostModel
from meshsim.models.parameters import PARAMETER_SPECS


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


def unranged_parameters(model: ProxyCostModel) -> tuple[str, ...]:
    """Parameters of the model that carry no range (none, for a shipped file)."""
    return tuple(name for name, p in model.parameters.items() if p.range is None)
