"""Capacity planning helpers for the notebooks: measure, tabulate, size, price.

The notebooks hold no model logic; they call these functions. Everything here is
plain data in, DataFrame out, so each piece is tested on its own.

Sizing rule (:func:`nodes_for_slo`): CPU is assumed to grow linearly with load, so
cores per request/s measured at the highest load that still met the latency SLO
(unsaturated) are scaled to the target load, and nodes are added until no node is
busier than ``max_utilisation``. Keeping utilisation at or below the measured
cluster's keeps queueing, and so the tail, comparable; the measured p99 is a check,
not a promise at other scales.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from meshsim.api import run_scenario
from meshsim.report.comparison import offered_rps
from meshsim.report.cost import Prices, monthly_cost
from meshsim.results.store import load_run
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.model import Scenario

if TYPE_CHECKING:
    from matplotlib.axes import Axes

POINT_COLUMNS = [
    "mesh", "services", "replicas", "pods", "rate_rps", "proxies", "proxy_vcpu",
    "proxy_vcpu_per_1000rps", "proxy_memory_mb", "app_vcpu", "cluster_cores", "p99_ms",
    "success_rate", "saturated",
]  # fmt: skip


def fanout_scenario(
    services: int,
    rate_rps: float,
    *,
    replicas: int = 1,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    seed: int = 1,
    nodes: int = 3,
    cores_per_node: int = 4,
    cpu_ms: float = 1.0,
    run_queues: str = "node",
) -> Scenario:
    """A synthetic mesh: a ``frontend`` calling ``services - 1`` leaf services in turn.

    Every service has ``replicas`` pods and lognormal app CPU of mean ``cpu_ms``.
    ``run_queues``: ``cluster.run_queues``; ``per_cpu`` gives the kernel's waits for a core
    on nodes 30 % busy or more, where a capacity plan's tail is decided.
    """
    if services < 1:
        raise ValueError("services must be at least 1")
    leaves = [f"svc-{i}" for i in range(1, services)]
    cpu = {"dist": "lognormal", "mean": cpu_ms, "cv": 0.5}
    data: dict[str, Any] = {
        "meshsim": 1,
        "name": f"fanout-{services}",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "replications": 1,
        "cluster": {"nodes": nodes, "cores_per_node": cores_per_node, "run_queues": run_queues},
        "services": [
            {
                "name": "frontend",
                "replicas": replicas,
                "cpu_ms": cpu,
                **({"calls": [{"service": s} for s in leaves]} if leaves else {}),
            },
            *({"name": s, "replicas": replicas, "cpu_ms": cpu} for s in leaves),
        ],
        "workloads": [
            {"name": "users", "target": "frontend", "arrival": "poisson", "rate_rps": rate_rps}
        ],
    }
    return from_dict(data)


def point(mesh: str, summary_run: Mapping[str, Any], scenario: dict[str, Any]) -> dict[str, Any]:
    """One row of :data:`POINT_COLUMNS` from a mesh's summary and its scenario (plain data)."""
    services = scenario.get("services", [])
    pods = sum(_pods(s) for s in services)
    replicas = max((_pods(s) for s in services), default=0)
    p = summary_run.get("proxies", {})
    workloads = summary_run.get("workloads", {})
    p99 = max(
        (w["latency_ms"]["p99"] for w in workloads.values() if w["latency_ms"]["p99"] is not None),
        default=math.nan,
    )
    rates = [w.get("success_rate") for w in workloads.values()]
    cluster = scenario.get("cluster", {})
    return {
        "mesh": mesh,
        "services": len(services),
        "replicas": replicas,
        "pods": pods,
        "rate_rps": offered_rps(summary_run),
        "proxies": int(p.get("count", 0)),
        "proxy_vcpu": float(p.get("cpu_vcpu_total", 0.0)),
        "proxy_vcpu_per_1000rps": float(p.get("cpu_vcpu_per_1000rps", 0.0)),
        "proxy_memory_mb": float(p.get("memory_mb_total", 0.0)),
        "app_vcpu": float(sum(summary_run.get("app_cpu_vcpu", {}).values())),
        "cluster_cores": int(cluster.get("nodes", 0)) * int(cluster.get("cores_per_node", 0)),
        "p99_ms": float(p99),
        "success_rate": min((r for r in rates if r is not None), default=math.nan),
        "saturated": bool(summary_run.get("saturated", False)),
    }


def _pods(service: dict[str, Any]) -> int:
    versions = service.get("versions")
    if versions:
        return sum(int(v.get("replicas", 1)) for v in versions)
    return int(service.get("replicas", 1))


def measure(scenarios: Iterable[Scenario], meshes: Sequence[str]) -> pd.DataFrame:
    """Simulate each scenario for ``meshes``; one row per scenario and mesh."""
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        summary = build_summary(run_scenario(scenario, meshes=list(meshes)))
        data = scenario.model_dump(mode="json", by_alias=True)
        rows.extend(point(mesh, run, data) for mesh, run in summary["runs"].items())
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def capacity_grid(
    meshes: Sequence[str],
    rates_rps: Sequence[float],
    service_counts: Sequence[int],
    *,
    replicas: Sequence[int] = (1,),
    **scenario_options: Any,
) -> pd.DataFrame:
    """:func:`measure` over every (services, replicas, rate) of a fan-out scenario."""
    scenarios = (
        fanout_scenario(n, rate, replicas=r, **scenario_options)
        for n in service_counts
        for r in replicas
        for rate in rates_rps
    )
    return measure(scenarios, meshes)


def load_runs(directories: Iterable[str | Path]) -> pd.DataFrame:
    """The same rows as :func:`measure`, from saved run directories (e.g. a sweep's)."""
    rows: list[dict[str, Any]] = []
    for directory in directories:
        run = load_run(directory)
        scenario = from_dict(run.scenario).model_dump(mode="json", by_alias=True)
        rows.extend(point(mesh, r, scenario) for mesh, r in run.summary["runs"].items())
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def nodes_for_slo(
    points: pd.DataFrame,
    *,
    target_rps: float,
    p99_ms: float,
    cores_per_node: int,
    max_utilisation: float = 0.7,
) -> pd.DataFrame:
    """Nodes each mesh needs to serve ``target_rps`` within the p99 SLO (see module doc).

    ``points``: rows of :data:`POINT_COLUMNS`. Grouped by mesh and service count; a
    group whose every point misses the SLO (or saturated) gets ``nodes`` = NaN.
    """
    if not 0 < max_utilisation <= 1:
        raise ValueError("max_utilisation must be in (0, 1]")
    rows = []
    for (mesh, services), group in points.groupby(["mesh", "services"], sort=False):
        ok = group[(group["p99_ms"] <= p99_ms) & ~group["saturated"] & (group["rate_rps"] > 0)]
        if ok.empty:
            rows.append((mesh, services, math.nan, math.nan, math.nan, False, math.nan))
            continue
        best = ok.sort_values("rate_rps", kind="stable").iloc[-1]
        cores_per_krps = (best["app_vcpu"] + best["proxy_vcpu"]) / (best["rate_rps"] / 1000.0)
        proxy_per_krps = best["proxy_vcpu"] / (best["rate_rps"] / 1000.0)
        cores = cores_per_krps * target_rps / 1000.0
        nodes = max(1, math.ceil(cores / (cores_per_node * max_utilisation)))
        rows.append(
            (mesh, services, float(best["rate_rps"]), cores_per_krps, proxy_per_krps, True, nodes)
        )
    return pd.DataFrame(
        rows,
        columns=[
            "mesh", "services", "measured_rps", "cores_per_1000rps", "proxy_cores_per_1000rps",
            "slo_met", "nodes",
        ],
    )  # fmt: skip


def monthly_costs(points: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """Per row: the mesh's proxy core-hours, GB-hours and USD per month."""
    out = points[["mesh", "services", "replicas", "rate_rps"]].copy()
    costs = [
        monthly_cost(float(c), float(m), prices)
        for c, m in zip(points["proxy_vcpu"], points["proxy_memory_mb"], strict=True)
    ]
    out["core_hours_per_month"] = [c[0] for c in costs]
    out["gb_hours_per_month"] = [c[1] for c in costs]
    out["usd_per_month"] = [c[2] for c in costs]
    return out


def plot_metric_vs(
    points: pd.DataFrame, *, x: str, y: str, ax: Axes | None = None, title: str = ""
) -> Axes:
    """Lines of ``y`` against ``x`` per mesh (pure, like :mod:`meshsim.report.figures`)."""
    from meshsim.report.figures import colour, new_axes

    ax = ax if ax is not None else new_axes()
    meshes = list(dict.fromkeys(points["mesh"]))
    for mesh, group in points.groupby("mesh", sort=False):
        g = group.groupby(x)[y].mean().sort_index()
        ax.plot(g.index, g.to_numpy(), marker="o", label=str(mesh), color=colour(str(mesh), meshes))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{y} against {x}")
    ax.legend(frameon=False)
    return ax


def available_meshes() -> list[str]:
    """Meshes that have a data-plane model in this build, in the contract's order."""
    from meshsim.scenario.model import MESH_NAMES
    from meshsim.sim.dataplanes import DATA_PLANES

    return [m for m in MESH_NAMES if m in DATA_PLANES]


# --------------------------------------------------------------------------- planning at scale
# The simulated grid above stops at a few services and hundreds of rps because every point is a
# simulation. A plan at tens to hundreds of services and 1k-100k rps takes the closed forms of
# meshsim.studies.sizing (milliseconds a point) and checks them against a simulation of the
# imported scenario (simulated_check).

PROXY_NAMES = {
    "istio": "Envoy (istio-proxy sidecar)",
    "linkerd": "linkerd2-proxy",
    "istio-ambient": "ztunnel",
}
"""What each mesh's data-plane proxy is called in its own documentation."""
PER = {"istio": "per pod", "linkerd": "per pod", "istio-ambient": "per node"}


def one_proxy_ceiling(mesh: str, *, samples: int = 16) -> dict[str, Any]:
    """Where one proxy of ``mesh`` saturates: its default workers and the rps it holds.

    The ceiling is ``workers / CPU per request`` without wake-ups: at the ceiling no worker ever
    sleeps, so none wakes (:class:`meshsim.studies.hop_latency.ProxyLoad`); below it wake-ups make
    a proxy busier than its load alone would. rps here are requests through the proxy, inbound
    and outbound both counted.
    """
    from meshsim.models import load_model
    from meshsim.studies.sizing import MODEL_NAMES, size
    from meshsim.studies.sizing_plan import sizing_inputs

    workers = load_model(MODEL_NAMES[mesh][0]).worker_threads
    (m,) = size(sizing_inputs(1000.0, 1, 1, 0.0, [mesh], samples=samples))
    band = m.proxies[0].max_rps
    name = PROXY_NAMES.get(mesh, mesh)
    plural = "worker" if workers == 1 else "workers"
    says = (
        f"{name} runs {workers} {plural} {PER.get(mesh, 'per proxy')} by default: one proxy "
        f"saturates at {band.value:,.0f} rps through it (model band {band.low:,.0f}-"
        f"{band.high:,.0f})"
    )
    return {
        "mesh": mesh, "proxy": name, "workers": workers, "max_rps_per_proxy": band.value,
        "max_rps_per_proxy_low": band.low, "max_rps_per_proxy_high": band.high, "says": says,
    }  # fmt: skip


def saturation_rps(plan: pd.DataFrame) -> pd.DataFrame:
    """Client rps at which each mesh's busiest proxy saturates, per service count, in numbers and
    in words.

    ``plan``: rows of :func:`meshsim.studies.sizing_plan.plan_grid`. The load through a proxy is
    proportional to the client rate, so the ceiling is ``rps x headroom`` of any row; the row
    nearest to it is used, as CPU per request drifts a little with load.
    """
    rows = []
    for (mesh, services), group in plan.groupby(["mesh", "services"], sort=False):
        gap = group["headroom"].apply(lambda h: abs(math.log(h)) if 0 < h < math.inf else math.inf)
        best = group.loc[gap.idxmin()]
        at = float(best["rps"] * best["headroom"])
        pods = int(best["pods"])
        says = (f"{mesh}, {services} services on {pods} pods: the busiest proxy saturates at "
                f"{at:,.0f} client rps (headroom {best['headroom']:.1f}x at "
                f"{best['rps']:,.0f} rps)")  # fmt: skip
        rows.append({"mesh": mesh, "services": services, "pods": pods,
                     "saturates_at_rps": at, "says": says})  # fmt: skip
    return pd.DataFrame(rows, columns=["mesh", "services", "pods", "saturates_at_rps", "says"])


def plot_plan(plan: pd.DataFrame, *, x: str, y: str, title: str, ax: Axes | None = None,
              mark_ceilings: bool = True) -> Axes:  # fmt: skip
    """``y`` against ``x`` per mesh with the model band shaded and saturated points marked with a
    red x (at the top edge where a saturated point has no value, as a latency has no steady
    state) and, against load at one service count, a dotted line at the client rate where each
    mesh's busiest proxy saturates (the axis widened to show ceilings up to 10x the top load)."""
    import matplotlib.pyplot as plt

    axes = ax if ax is not None else plt.subplots(figsize=(7, 4))[1]
    colours: dict[str, Any] = {}
    for mesh, part in plan.groupby("mesh", sort=False):
        part = part.sort_values(x)
        (line,) = axes.plot(part[x], part[y], marker="o", label=str(mesh))
        colours[str(mesh)] = line.get_color()
        if f"{y}_low" in part:
            axes.fill_between(part[x], part[f"{y}_low"], part[f"{y}_high"], alpha=0.2,
                              color=line.get_color())  # fmt: skip
        hot = part[part["saturated"]]
        known, unknown = hot[hot[y].notna()], hot[hot[y].isna()]
        if not known.empty:
            axes.scatter(known[x], known[y], marker="x", s=120, color="red", zorder=5,
                         label=f"{mesh}: saturated")  # fmt: skip
        if not unknown.empty:
            axes.scatter(unknown[x], [0.97] * len(unknown), marker="x", s=120, color="red",
                         zorder=5, transform=axes.get_xaxis_transform(), clip_on=False,
                         label=f"{mesh}: saturated, no steady state")  # fmt: skip
    axes.set_xscale("log")
    if mark_ceilings and x == "rps" and plan["services"].nunique() == 1:
        low, high = axes.get_xlim()
        shown = [r for _, r in saturation_rps(plan).iterrows()
                 if r["saturates_at_rps"] <= 10 * plan["rps"].max()]  # fmt: skip
        for row in shown:
            at = row["saturates_at_rps"]
            axes.axvline(at, linestyle=":", color=colours.get(row["mesh"], "grey"))
            axes.annotate(f"{row['mesh']} saturates: {at:,.0f} rps", (at, 0.9),
                          xycoords=("data", "axes fraction"), fontsize=7, va="top",
                          ha="right", rotation=90)  # fmt: skip
        if shown:
            axes.set_xlim(low, max(high, 1.2 * max(r["saturates_at_rps"] for r in shown)))
    axes.set_xlabel({"rps": "client requests per second"}.get(x, x))
    axes.set_ylabel(y)
    axes.set_title(title)
    axes.legend(fontsize=8)
    return axes


def simulated_check(scenario: Scenario, meshes: Sequence[str], *, duration_s: float | None = None,
                    warmup_s: float | None = None, samples: int = 16) -> pd.DataFrame:  # fmt: skip
    """The scenario simulated per mesh beside the closed-form sizing of the same scenario.

    Meshes the sizing has no closed form for (cilium) get the simulation only. ``in_band`` says
    whether the simulated proxy vCPU lies inside the sizing's model band.
    """
    from meshsim.studies.sizing import SIZING_MESHES, SizingInput, groups_from_scenario, size

    update = {k: v for k, v in (("duration_s", duration_s), ("warmup_s", warmup_s)) if v}
    simulated = measure([scenario.model_copy(update=update)], meshes)
    sized_meshes = tuple(m for m in meshes if m in SIZING_MESHES)
    inputs = SizingInput(groups=tuple(groups_from_scenario(scenario)),
                         services=len(scenario.services), meshes=sized_meshes, samples=samples,
                         simulate="never", nodes=scenario.cluster.nodes)  # fmt: skip
    sized = {m.mesh: m for m in size(inputs)} if sized_meshes else {}
    rows = []
    for _, sim in simulated.iterrows():
        m = sized.get(sim["mesh"])
        cpu = m.cpu_total if m else None
        rows.append({
            "mesh": sim["mesh"], "simulated_proxy_vcpu": sim["proxy_vcpu"],
            "sized_proxy_vcpu": cpu.value if cpu else math.nan,
            "sized_low": cpu.low if cpu else math.nan,
            "sized_high": cpu.high if cpu else math.nan,
            "in_band": bool(cpu and cpu.low <= sim["proxy_vcpu"] <= cpu.high),
            "simulated_proxy_memory_mb": sim["proxy_memory_mb"],
            "sized_proxy_memory_mb": m.memory_total_mb.value if m else math.nan,
            "simulated_p99_ms": sim["p99_ms"], "saturated": sim["saturated"],
        })  # fmt: skip
    return pd.DataFrame(rows)
