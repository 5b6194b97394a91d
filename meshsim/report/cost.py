"""What the mesh's own resources cost per month.

Only the mesh is priced: proxies (sidecars, ztunnels, waypoints) and, when
modelled, the control plane. The application's cores are the same under every mesh
and are left out. Prices are inputs (``--core-hour-usd``, ``--gb-hour-usd``), never
defaults: meshsim does not guess a cloud's price list. A month is 730 hours
(365 * 24 / 12), the convention of the cloud providers' calculators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

HOURS_PER_MONTH = 730.0
MB_PER_GB = 1024.0


@dataclass(frozen=True)
class Prices:
    core_hour_usd: float | None = None
    gb_hour_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("core_hour_usd", "gb_hour_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                from meshsim.errors import MeshsimError

                raise MeshsimError(f"--{name.replace('_', '-')} must be 0 or more (not {value})")

    @property
    def given(self) -> bool:
        return self.core_hour_usd is not None or self.gb_hour_usd is not None


def monthly_cost(
    cores: float, memory_mb: float, prices: Prices
) -> tuple[float, float, float | None]:
    """(core-hours, GB-hours, USD) per month for a steady ``cores`` and ``memory_mb``.

    USD is None when no price was given; a missing price counts as 0 when the other
    is given.
    """
    core_hours = cores * HOURS_PER_MONTH
    gb_hours = memory_mb / MB_PER_GB * HOURS_PER_MONTH
    if not prices.given:
        return core_hours, gb_hours, None
    usd = core_hours * (prices.core_hour_usd or 0.0) + gb_hours * (prices.gb_hour_usd or 0.0)
    return core_hours, gb_hours, usd


def cost_frame(resources: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """Per mesh: mesh cores and memory (proxies + control plane) and their monthly cost.

    ``resources`` is :meth:`Comparison.resources_frame`. ``usd_per_month_per_1000rps``
    scales the cost to 1000 rps of offered load (proxy CPU grows with load; memory
    mostly does not, so this is indicative only).
    """
    import pandas as pd

    rows = []
    for r in resources.to_dict("records"):
        cores = float(r["cpu_vcpu_total"]) + float(r["control_plane_vcpu"])
        memory = float(r["memory_mb_total"]) + float(r["control_plane_memory_mb"])
        core_hours, gb_hours, usd = monthly_cost(cores, memory, prices)
        offered = float(r["offered_rps"])
        per_k = usd / (offered / 1000.0) if usd is not None and offered else None
        rows.append(
            {
                "mesh": r["mesh"],
                "cores": cores,
                "memory_gb": memory / MB_PER_GB,
                "core_hours_per_month": core_hours,
                "gb_hours_per_month": gb_hours,
                "usd_per_month": usd,
                "usd_per_month_per_1000rps": per_k,
            }
        )
    return pd.DataFrame(rows)
