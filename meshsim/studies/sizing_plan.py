"""Planning at scale with the sizing closed forms: curves, replicas for an SLO, nodes and cost.

The capacity notebook's simulated grid stops at a few services and hundreds of rps because each
point is a simulation; :mod:`meshsim.studies.sizing` answers in milliseconds per point, so a plan
can cover tens to hundreds of services and thousands to 100k rps, with each mesh's saturation
marked and the model bands drawn. Every point is the closed form (or says it is saturated); use
``meshsim run`` on an imported scenario to check the points that matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from meshsim.studies.sizing import Group, MeshSizing, SizingInput, size

MAX_PODS_PER_SERVICE = 1000


def _row(m: MeshSizing, inputs: SizingInput, **extra: Any) -> dict[str, Any]:
    line = max(m.proxies, key=lambda p: p.utilisation.value)
    row: dict[str, Any] = {
        "mesh": m.mesh, **extra, "pods": inputs.pods, "services": inputs.services,
        "proxy_vcpu": m.cpu_total.value, "proxy_vcpu_low": m.cpu_total.low,
        "proxy_vcpu_high": m.cpu_total.high,
        "proxy_memory_gb": m.memory_total_mb.value / 1024,
        "proxy_memory_gb_low": m.memory_total_mb.low / 1024,
        "proxy_memory_gb_high": m.memory_total_mb.high / 1024,
        "control_plane_vcpu": m.control_plane["cpu_vcpu"].value,
        "control_plane_memory_mb": m.control_plane["memory_mb"].value,
        "utilisation": line.utilisation.value, "max_rps_per_proxy": line.max_rps.value,
        "rps_per_proxy": line.rps_per_proxy,
        "headroom": line.max_rps.value / line.rps_per_proxy if line.rps_per_proxy else math.inf,
        "saturated": line.saturated,
    }  # fmt: skip
    for q, band in (("p50", m.hop_p50_ms), ("p99", m.hop_p99_ms)):
        row[f"hop_{q}_ms"] = band.value if band else math.nan
        row[f"hop_{q}_ms_low"] = band.low if band else math.nan
        row[f"hop_{q}_ms_high"] = band.high if band else math.nan
    return row


def sizing_inputs(rps: float, services: int, replicas: int, calls_per_request: float,
                  meshes: Sequence[str], **options: Any) -> SizingInput:  # fmt: skip
    """``rps`` client requests spread over ``services`` of ``replicas`` pods each, every request
    causing ``calls_per_request`` calls between services (meshsim size --rps --pods)."""
    k = calls_per_request
    group = Group("all", rps * (1 + k), services * replicas, k / (1 + k))
    return SizingInput(groups=(group,), services=services, meshes=tuple(meshes),
                       simulate="never", **options)  # fmt: skip


def plan_grid(meshes: Sequence[str], rates_rps: Sequence[float], service_counts: Sequence[int],
              *, replicas: int = 3, calls_per_request: float = 2.0, samples: int = 16,
              **options: Any) -> pd.DataFrame:  # fmt: skip
    """One row per mesh, rate and service count: proxies, control plane, hop latency, bands."""
    rows = []
    for services in service_counts:
        for rps in rates_rps:
            inputs = sizing_inputs(rps, services, replicas, calls_per_request, meshes,
                                   samples=samples, **options)  # fmt: skip
            rows += [_row(m, inputs, rps=rps) for m in size(inputs)]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Slo:
    p99_ms_per_hop: float
    max_utilisation: float = 0.7


def replicas_for_slo(mesh: str, rps: float, services: int, slo: Slo, *,
                     calls_per_request: float = 2.0, **options: Any) -> dict[str, Any]:  # fmt: skip
    """The fewest replicas per service whose proxies stay under the utilisation mark and whose
    added hop p99 meets the objective (doubling, then bisecting: both fall with replicas)."""

    def ok(replicas: int) -> tuple[bool, dict[str, Any]]:
        inputs = sizing_inputs(rps, services, replicas, calls_per_request, [mesh],
                               samples=0, **options)  # fmt: skip
        (m,) = size(inputs)
        row = _row(m, inputs, rps=rps, replicas=replicas)
        good = (row["utilisation"] <= slo.max_utilisation
                and row["hop_p99_ms"] <= slo.p99_ms_per_hop)  # fmt: skip
        return good, row

    hi = 1
    good, row = ok(hi)
    while not good and hi < MAX_PODS_PER_SERVICE:
        hi *= 2
        good, row = ok(min(hi, MAX_PODS_PER_SERVICE))
    if not good:
        return {**row, "replicas": None, "met": False}
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        good_mid, row_mid = ok(mid)
        if good_mid:
            hi, row = mid, row_mid
        else:
            lo = mid
    return {**row, "replicas": hi, "met": True}


def nodes_and_cost(plan: pd.DataFrame, *, app_cpu_ms_per_request: float, cores_per_node: int,
                   max_node_utilisation: float, node_month_usd: float,
                   calls_per_request: float = 2.0) -> pd.DataFrame:  # fmt: skip
    """Nodes for the apps and the proxies (at the utilisation mark) and their monthly cost."""
    out = plan.copy()
    app = out["rps"] * (1 + calls_per_request) * app_cpu_ms_per_request / 1e3
    cores = app + out["proxy_vcpu"] + out["control_plane_vcpu"]
    out["app_vcpu"] = app
    out["nodes"] = (cores / (cores_per_node * max_node_utilisation)).apply(math.ceil)
    out["mesh_share_of_cores"] = (out["proxy_vcpu"] + out["control_plane_vcpu"]) / cores
    out["usd_per_month"] = out["nodes"] * node_month_usd
    return out


def plot_with_band(frame: pd.DataFrame, *, x: str, y: str, title: str,
                   ax: Axes | None = None) -> Figure:  # fmt: skip
    """``y`` against ``x`` per mesh with the model band shaded and saturated points marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for mesh, part in frame.groupby("mesh", sort=False):
        part = part.sort_values(x)
        (line,) = ax.plot(part[x], part[y], marker="o", label=str(mesh))
        if f"{y}_low" in part:
            ax.fill_between(part[x], part[f"{y}_low"], part[f"{y}_high"], alpha=0.2,
                            color=line.get_color())  # fmt: skip
        hot = part[part["saturated"]]
        if not hot.empty:
            ax.scatter(hot[x], hot[y].fillna(0), marker="x", s=120, color="red", zorder=5,
                       label=f"{mesh}: saturated")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend()
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    return fig
