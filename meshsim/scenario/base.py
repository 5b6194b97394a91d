"""Conventions shared by every scenario block: strict models, names and bounded numbers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="A Kubernetes-style name (RFC 1123 label): lower case, digits and '-'.",
    ),
]
ServiceSelection = list[Name] | Literal["all", "none"]
"""Services a mesh option applies to: named, or all, or none (waypoints, Cilium's L7 ones)."""


def selected_services(selection: ServiceSelection, services: Iterable[str]) -> set[str]:
    """The services ``selection`` names among ``services`` (every one for ``all``)."""
    if selection == "all":
        return set(services)
    if selection == "none":
        return set()
    return set(selection)


MAX_QUANTITY = 1e9
"""Upper bound of every number of the format unless its key says less: a billion of any of
its units (ms, s, µs, rps, GB, weights, factors) is beyond anything a cluster does, and the
bound keeps every product the engine forms (rate x duration, mean x slow factor, bytes x 8 /
bandwidth) finite, far from float overflow (1.8e308), where inf and NaN would enter the
simulation loop."""
MAX_COUNT = 2**31 - 1
"""Upper bound of every whole number of the format unless its key says less (counts, bytes,
limits): a signed 32-bit integer, what Kubernetes and Envoy use for most such fields; far
larger counts would overflow numpy's and Parquet's integer columns or never finish."""

MIN_QUANTITY = 1e-9
"""The smallest non-zero number of the format (a nanosecond in s, a picosecond in ms): the
engine squares, scales and inverts numbers, and below this they underflow (1 / 5e-324
overflows, (1e-200)^2 is 0), which crashed runs with a division by zero."""


def _not_tiny(value: float) -> float:
    if 0 < abs(value) < MIN_QUANTITY:
        raise ValueError(
            f"{value!r} is too small: the smallest number above 0 taken is {MIN_QUANTITY:g}"
        )
    return value


NotTiny = AfterValidator(_not_tiny)
"""Refuses numbers between 0 and :data:`MIN_QUANTITY`."""

PositiveFloat = Annotated[float, Field(gt=0, le=MAX_QUANTITY), NotTiny]
# Not NotTiny: a time of 1e-45 s is harmless; the numbers that divide are positive ones.
NonNegativeFloat = Annotated[float, Field(ge=0, le=MAX_QUANTITY)]
Percent = Annotated[float, Field(ge=0, le=100)]
Probability = Annotated[float, Field(ge=0, le=1)]


class Spec(BaseModel):
    """Base of every scenario block: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
