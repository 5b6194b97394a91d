"""Control-plane scaling helpers for ``notebooks/control-plane-scaling.ipynb``.

Two sources, kept apart in every frame:

* **closed form** (:func:`istiod_curve`, :func:`anchor_table`): istiod's steady-state vCPU and
  memory from :func:`meshsim.sim.controlplane.istiod.steady_state`, the arithmetic the
  parameters of ``models/istiod.yaml`` were fitted with, next to the published anchors the
  model cites (:data:`ISTIOD_ANCHORS`);
* **simulation** (:func:`convergence_grid`): synthetic meshes built like
  ``scenarios/control-plane-scale.yaml`` (:func:`scale_scenario`, the same call graph as
  ``benchmarks/gen_control_plane_scale.py``) under pod churn, simulated for Istio (with and
  without Sidecar scoping) and Linkerd; one row per run from ``runs.<mesh>.control_plane``.

Frames in, Axes out: the plot functions are pure (``(frame, *, ax=None) -> Axes``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from meshsim.models import default_model
from meshsim.sim.controlplane.istiod import steady_state

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from meshsim.models import ProxyCostModel
    from meshsim.scenario.model import Scenario

GROUP = 20
"""Services call the next :data:`FANOUT` services of their group of ``GROUP`` (generator rule)."""
FANOUT = 3
MB_PER_GB = 1024.0


# --------------------------------------------------------------------------- synthetic meshes


def service_name(i: int) -> str:
    return f"svc-{i:04d}"


def call_graph(services: int, *, group: int = GROUP, fanout: int = FANOUT) -> list[list[int]]:
    """Callees of each service: the next ``fanout`` in its group of ``group`` (no cycles).

    The rule of ``scenarios/control-plane-scale.yaml``: short call chains, and a Sidecar
    resource can scope each proxy's view to the few services it calls.
    """
    return [
        [j for j in range(i + 1, i + 1 + fanout) if j < services and j // group == i // group]
        for i in range(services)
    ]


def scale_scenario(
    services: int,
    *,
    replicas: int = 5,
    pods_per_minute: float = 0.0,
    sidecar_scoping: bool = False,
    duration_s: float = 60.0,
    warmup_s: float = 5.0,
    seed: int = 11,
    rate_rps: float = 20.0,
    call_probability: float = 0.01,
    istiod_cores: int = 16,
    destination_cores: int = 2,
) -> Scenario:
    """A mesh like ``scenarios/control-plane-scale.yaml`` at any size and churn.

    ``services`` services of ``replicas`` pods (0.2 ms of app CPU), wired by
    :func:`call_graph` with calls taken with ``call_probability``; light traffic into
    ``svc-0000`` so that the control plane's work dominates; ``pods_per_minute`` pods replaced
    per minute across every service (abrupt kills), none when 0. One 16-core node per 100 pods.
    """
    from meshsim.scenario import from_dict

    if services < 1 or replicas < 1:
        raise ValueError("services and replicas must be at least 1")
    graph = call_graph(services)
    pods = services * replicas
    data: dict[str, Any] = {
        "meshsim": 1,
        "name": f"control-plane-{services}x{replicas}",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "meshes": ["istio", "linkerd"],
        "cluster": {"nodes": max(2, math.ceil(pods / 100)), "cores_per_node": 16},
        "mesh_options": {
            "istio": {"sidecar_scoping": sidecar_scoping, "istiod_cores": istiod_cores},
            "linkerd": {"destination_cores": destination_cores},
        },
        "workloads": [{"name": "users", "target": service_name(0), "rate_rps": rate_rps}],
        "services": [
            {
                "name": service_name(i),
                "replicas": replicas,
                "cpu_ms": 0.2,
                "calls": [
                    {"service": service_name(j), "probability": call_probability,
                     "required": False}
                    for j in callees
                ],
            }
            for i, callees in enumerate(graph)
        ],
    }  # fmt: skip
    if pods_per_minute > 0:
        data["events"] = [
            {"at_s": 0, "action": "churn", "target": "*", "pods_per_minute": pods_per_minute}
        ]
    return from_dict(data)


# --------------------------------------------------------------------------- closed form


def view(
    services: int, sidecars: int, *, scoped: bool, scope_services: int = 10
) -> tuple[int, int]:
    """(clusters, endpoints) one proxy holds: everything, or ``scope_services`` services'.

    Endpoints are spread evenly (``sidecars / services`` per service, one per pod), so a
    scoped proxy holds ``scope_services * sidecars / services`` endpoints.
    """
    if not scoped:
        return services, sidecars
    n = min(scope_services, services)
    return n, round(n * sidecars / services)


def istiod_curve(
    sidecars: Sequence[int],
    services: Sequence[int],
    *,
    scope_services: int = 10,
    model: ProxyCostModel | None = None,
) -> pd.DataFrame:
    """istiod vCPU and memory (closed form, steady state, no churn) per mesh size.

    One row per (services, scoping, sidecars); scoping rows only where it narrows the view
    (``services > scope_services``). Columns: series, services, scoped, sidecars,
    view_services, view_endpoints, cpu_vcpu, memory_gb.
    """
    m = model if model is not None else default_model("istiod")
    rows = []
    for n in services:
        for scoped in (False, True):
            if scoped and n <= scope_services:
                continue
            series = f"{n:,} service{'s' if n != 1 else ''}" + (
                f", Sidecar scope {scope_services}" if scoped else ", no scoping" if n > 1 else ""
            )
            for s in sidecars:
                vs, ve = view(n, s, scoped=scoped, scope_services=scope_services)
                got = steady_state(
                    m, services=n, proxies=s, endpoints=s, view_services=vs, view_endpoints=ve
                )
                rows.append({
                    "series": series, "services": n, "scoped": scoped, "sidecars": s,
                    "view_services": vs, "view_endpoints": ve, "cpu_vcpu": got["cpu_vcpu"],
                    "memory_gb": got["memory_mb"] / MB_PER_GB,
                })  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Anchor:
    """A published istiod figure and the mesh it was measured on (models/istiod.yaml)."""

    label: str
    source: str
    services: int
    sidecars: int
    view_services: int
    view_endpoints: int
    vcpu: float
    memory_gb: tuple[float, float]
    cpu_saturated: bool = False
    """The capacity run ramped sidecars up until istiod's node saturated: not a steady state."""
    load: dict[str, float] = field(default_factory=dict)
    """Churn terms for :func:`steady_state` (eds_pushes_per_s, eds_endpoints, ...)."""


ISTIOD_ANCHORS = [
    Anchor("1000 svc, 2000 sidecars, namespace isolation",
           "istio.io (docs/published-figures.md 7a)",
           1000, 2000, 10, 20, 1.0, (1.5, 1.5)),
    Anchor("25,000 sidecars, 1 svc, 0% churn", "AKS asm-1-19 (docs/published-figures.md 7b)",
           1, 25000, 1, 25000, 15.0, (32.1, 32.1), cpu_saturated=True),
    Anchor("15,000 sidecars, 1 svc, 31.2 pods/s churn",
           "AKS asm-1-19 (docs/published-figures.md 7b)",
           1, 15000, 1, 15000, 15.0, (22.2, 25.4),
           load={"eds_pushes_per_s": 0.1, "eds_endpoints": 15000, "new_proxies_per_s": 31.2}),
    Anchor("1000 svc, 20,000 sidecars, no scoping", "AKS asm-1-19 (docs/published-figures.md 7b)",
           1000, 20000, 1000, 20000, 15.0, (40.4, 40.4), cpu_saturated=True),
]  # fmt: skip
"""The figures ``models/istiod.yaml`` cites (its parameters' ``source`` lines)."""


def anchor_table(
    anchors: Sequence[Anchor] = tuple(ISTIOD_ANCHORS), *, model: ProxyCostModel | None = None
) -> pd.DataFrame:
    """Published figure next to the model's closed form at the same mesh, one row per anchor.

    ``memory_error_pct`` is against the nearest end of the published range (0 inside it).
    ``published_vcpu`` of a saturated capacity run is a ceiling reached while ramping up, not a
    steady-state figure (``cpu_saturated``).
    """
    m = model if model is not None else default_model("istiod")
    rows = []
    for i, a in enumerate(anchors):
        got = steady_state(
            m, services=a.services, proxies=a.sidecars, endpoints=a.sidecars,
            view_services=a.view_services, view_endpoints=a.view_endpoints,
            **a.load,  # type: ignore[arg-type]
        )  # fmt: skip
        mem = got["memory_mb"] / MB_PER_GB
        lo, hi = a.memory_gb
        ref = lo if mem < lo else hi if mem > hi else mem
        rows.append({
            "tag": f"A{i + 1}", "anchor": a.label, "source": a.source, "services": a.services,
            "sidecars": a.sidecars, "scoped": a.view_services < a.services,
            "published_vcpu": a.vcpu, "cpu_saturated": a.cpu_saturated,
            "model_vcpu": got["cpu_vcpu"], "published_memory_gb_low": lo,
            "published_memory_gb_high": hi, "model_memory_gb": mem,
            "memory_error_pct": 100.0 * (mem - ref) / ref,
        })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- simulation

CONVERGENCE_COLUMNS = [
    "mesh", "scoped", "label", "services", "pods", "pods_per_minute", "churn_pct_per_min",
    "conv_p50_s", "conv_p90_s", "conv_p99_s", "conv_max_s", "conv_count", "cpu_vcpu",
    "memory_mb", "stale_endpoint_attempts", "connected_proxies",
]  # fmt: skip


def run_label(mesh: str, scoped: bool) -> str:
    return f"{mesh} (Sidecar scoping)" if mesh == "istio" and scoped else mesh


def convergence_point(
    mesh: str, control_plane: Mapping[str, Any], scenario: dict[str, Any]
) -> dict[str, Any]:
    """One row of :data:`CONVERGENCE_COLUMNS` from ``runs.<mesh>.control_plane`` (plain data)."""
    services = scenario.get("services", [])
    pods = sum(int(s.get("replicas", 1)) for s in services)
    churn = sum(
        float(e.get("pods_per_minute", 0.0))
        for e in scenario.get("events", []) or []
        if e.get("action") == "churn"
    )
    istio = (scenario.get("mesh_options") or {}).get("istio") or {}
    scoped = mesh == "istio" and bool(istio.get("sidecar_scoping", False))
    conv = control_plane.get("convergence_s") or {}
    nan = math.nan
    return {
        "mesh": mesh, "scoped": scoped, "label": run_label(mesh, scoped),
        "services": len(services), "pods": pods, "pods_per_minute": churn,
        "churn_pct_per_min": 100.0 * churn / pods if pods else nan,
        "conv_p50_s": float(conv.get("p50", nan)), "conv_p90_s": float(conv.get("p90", nan)),
        "conv_p99_s": float(conv.get("p99", nan)), "conv_max_s": float(conv.get("max", nan)),
        "conv_count": int(conv.get("count", 0)),
        "cpu_vcpu": float(control_plane.get("cpu_vcpu", nan)),
        "memory_mb": float(control_plane.get("memory_mb", nan)),
        "stale_endpoint_attempts": int(control_plane.get("stale_endpoint_attempts", 0)),
        "connected_proxies": int(control_plane.get("connected_proxies", 0)),
    }  # fmt: skip


def convergence_grid(
    service_counts: Sequence[int],
    churn_pct_per_min: Sequence[float],
    *,
    meshes: Sequence[str] = ("istio", "linkerd"),
    istio_scoping: Sequence[bool] = (False, True),
    replicas: int = 5,
    **scenario_options: Any,
) -> pd.DataFrame:
    """Simulate every (services, churn, mesh[, scoping]); one row per run.

    Churn is a percentage of the pods replaced per minute (the benchmark uses 1 %).
    ``scenario_options`` go to :func:`scale_scenario` (duration_s, warmup_s, seed, ...).
    """
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary

    rows: list[dict[str, Any]] = []
    for n in service_counts:
        for pct in churn_pct_per_min:
            ppm = pct / 100.0 * n * replicas
            for scoped in istio_scoping if "istio" in meshes else (False,):
                chosen = [m for m in meshes if m == "istio" or not scoped]
                if not chosen:
                    continue
                sc = scale_scenario(
                    n,
                    replicas=replicas,
                    pods_per_minute=ppm,
                    sidecar_scoping=scoped,
                    **scenario_options,
                )
                runs = build_summary(run_scenario(sc, meshes=chosen))["runs"]
                data = sc.model_dump(mode="json", by_alias=True)
                rows.extend(
                    convergence_point(mesh, run.get("control_plane") or {}, data)
                    for mesh, run in runs.items()
                )
    return pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)


# --------------------------------------------------------------------------- plots

_SERIES_COLOURS = ["#466bb0", "#e08a2c", "#2bb3a0", "#9467bd", "#8c564b", "#e377c2"]
_LABEL_COLOURS = {"istio": "#466bb0", "istio (Sidecar scoping)": "#9ab3e0", "linkerd": "#2bb3a0"}


def _axes(ax: Axes | None) -> Axes:
    from meshsim.report.figures import new_axes

    return ax if ax is not None else new_axes(7.0, 4.0)


def plot_istiod(
    curve: pd.DataFrame,
    *,
    y: str = "memory_gb",
    anchors: pd.DataFrame | None = None,
    ax: Axes | None = None,
) -> Axes:
    """istiod ``y`` (memory_gb or cpu_vcpu) against sidecars, one line per series, log-log.

    ``anchors`` (:func:`anchor_table`): published figures as stars, the model at the same
    mesh as crosses, joined by a dotted line, tagged A1, A2, ... as in the table; a saturated
    CPU figure is drawn hollow.
    """
    ax = _axes(ax)
    for i, (series, g) in enumerate(curve.groupby("series", sort=False)):
        g = g.sort_values("sidecars")
        ax.plot(
            g["sidecars"], g[y], label=str(series), color=_SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        )
    if anchors is not None and not anchors.empty:
        for _, a in anchors.iterrows():
            if y == "memory_gb":
                pub = (a["published_memory_gb_low"] + a["published_memory_gb_high"]) / 2
                model, hollow = a["model_memory_gb"], False
            else:
                pub, model, hollow = a["published_vcpu"], a["model_vcpu"], a["cpu_saturated"]
            x = a["sidecars"]
            ax.plot([x, x], [pub, model], ":", color="black", linewidth=0.8)
            ax.plot(
                x,
                pub,
                "*",
                markersize=11,
                color="black",
                markerfacecolor="none" if hollow else "black",
            )
            ax.plot(x, model, "x", markersize=8, color="black")
            ax.annotate(
                str(a["tag"]), (x, pub), fontsize=8, xytext=(4, 4), textcoords="offset points"
            )
        ax.plot([], [], "*", color="black", label="published (hollow: saturated ramp-up)")
        ax.plot([], [], "x", color="black", label="model at the anchor's mesh")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("connected sidecars")
    ax.set_ylabel({"memory_gb": "istiod memory (GB)", "cpu_vcpu": "istiod vCPU"}.get(y, y))
    what = "memory" if y == "memory_gb" else "CPU (no churn: upkeep per proxy, series coincide)"
    ax.set_title(f"istiod {what}: model and published anchors", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    return ax


def plot_convergence(
    frame: pd.DataFrame,
    *,
    x: str = "pods",
    q: str = "p99",
    ax: Axes | None = None,
) -> Axes:
    """Convergence ``q`` (p50/p90/p99/max, seconds) against ``x`` per mesh, one line per churn
    (``x='pods'``) or per mesh size (``x='churn_pct_per_min'``)."""
    ax = _axes(ax)
    other = "churn_pct_per_min" if x == "pods" else "pods"
    styles = ["-", "--", ":", "-."]
    col = f"conv_{q}_s"
    for i, (level, g1) in enumerate(frame.groupby(other, sort=True)):
        for label, g in g1.groupby("label", sort=False):
            g = g.sort_values(x)
            unit = "% pods/min" if other == "churn_pct_per_min" else " pods"
            ax.plot(
                g[x],
                g[col],
                marker="o",
                linestyle=styles[i % len(styles)],
                color=_LABEL_COLOURS.get(str(label), "#7f7f7f"),
                label=f"{label}, {level:g}{unit}",
            )
    ax.set_xlabel(
        {"pods": "pods (sidecars)", "churn_pct_per_min": "churn (% of pods / min)"}.get(x, x)
    )
    ax.set_ylabel(f"convergence {q} (s)")
    ax.set_yscale("log")
    ax.set_title(f"Endpoint convergence {q}: change in Kubernetes to every proxy updated")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    return ax


def plot_control_plane_resources(
    frame: pd.DataFrame, *, y: str = "memory_mb", ax: Axes | None = None
) -> Axes:
    """Simulated control-plane ``y`` (memory_mb or cpu_vcpu) against pods, per mesh and churn."""
    ax = _axes(ax)
    styles = ["-", "--", ":", "-."]
    for i, (level, g1) in enumerate(frame.groupby("churn_pct_per_min", sort=True)):
        for label, g in g1.groupby("label", sort=False):
            g = g.sort_values("pods")
            ax.plot(
                g["pods"],
                g[y],
                marker="o",
                linestyle=styles[i % len(styles)],
                color=_LABEL_COLOURS.get(str(label), "#7f7f7f"),
                label=f"{label}, {level:g}% pods/min",
            )
    ax.set_xlabel("pods (sidecars)")
    ax.set_ylabel(
        {"memory_mb": "control-plane memory (MB)", "cpu_vcpu": "control-plane vCPU"}.get(y, y)
    )
    ax.set_title("Control plane in the simulation (istiod / Linkerd destination + identity)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    return ax


__all__ = [
    "CONVERGENCE_COLUMNS", "ISTIOD_ANCHORS", "Anchor", "anchor_table", "call_graph",
    "convergence_grid", "convergence_point", "istiod_curve", "plot_control_plane_resources",
    "plot_convergence", "plot_istiod", "run_label", "scale_scenario", "service_name", "view",
]  # fmt: skip
