"""The report's sections, each built by one function from a :class:`Comparison`.

:func:`build_sections` lists them in the order a reader needs them: the verdict and the
findings that matter first, then the evidence (latency, resources, handshakes, resilience,
control plane, cost) and the model files the numbers came from. :mod:`meshsim.report.render`
turns them into HTML and Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshsim.report import figures as fg
from meshsim.report.comparison import Comparison, event_windows
from meshsim.report.cost import HOURS_PER_MONTH, Prices, cost_frame
from meshsim.report.findings import findings, ranked
from meshsim.report.observability import COLUMNS, observability_rows
from meshsim.report.observability import INTRO as OBSERVABILITY_INTRO
from meshsim.report.topology import topology_section
from meshsim.report.verdict import verdict_note, verdict_tables
from meshsim.results.bands import drawn_levels
from meshsim.results.summary import limit_can_bind, shares_text, uneven_pods

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes


RESOURCE_COLUMNS = [
    "mesh", "proxies", "cpu_vcpu_total", "cpu_vcpu_per_1000rps", "memory_mb_per_proxy",
    "memory_mb_total", "app_vcpu",
]  # fmt: skip


@dataclass
class Figure:
    id: str
    title: str
    svg: str
    file: str = ""


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def _table(frame: pd.DataFrame, caption: str, formats: dict[str, str] | None = None) -> Table:
    formats = formats or {}
    rows = []
    for record in frame.to_dict("records"):
        row = []
        for col in frame.columns:
            v = record[col]
            fmt = formats.get(str(col))
            if fmt and isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
                row.append(format(v, fmt))
            else:
                row.append(_fmt(v))
        rows.append(row)
    return Table(caption, [str(c) for c in frame.columns], rows)


def _figure(fig_id: str, title: str, ax: Axes) -> Figure:
    return Figure(fig_id, title, fg.to_svg(ax, id_prefix=f"{fig_id}-"))


def build_sections(comp: Comparison, prices: Prices) -> list[Section]:
    """Every section of the report, in order, with figures drawn."""
    runs = comp.runs_summary()
    reps = comp.replications()
    res = comp.resources_frame()
    sections = [
        _verdict_section(runs, reps),
        _findings_section(runs, reps),
        _latency_section(comp),
        _added_latency_section(comp),
        _load_section(comp),
        _resources_section(res),
        _handshakes_section(res),
        _observability_section(runs),
        _cpu_limits_section(runs),
        _balance_section(runs),
        _resilience_section(comp),
        _control_plane_section(comp, res),
        _cost_section(res, prices),
        _cost_models_section(runs, _drawn_levels(comp)),
        topology_section(comp),
        _warnings_section(runs),
    ]
    return [s for s in sections if s is not None]


def _window(comp: Comparison) -> tuple[float, float]:
    """The scenario's warm-up and duration, in seconds."""
    scenario = comp.scenario
    return float(scenario.get("warmup_s", 0.0)), float(scenario.get("duration_s", 0.0))


def _latency_section(comp: Comparison) -> Section:
    warmup, _ = _window(comp)
    lat = comp.latency_frame()
    s = Section(
        "latency",
        "Latency per mesh and workload",
        "Measured at the client from the intended send time, after the warm-up "
        f"({warmup:g} s). Percentiles are within 1 % (log-bucketed histograms).",
    )
    s.figures.append(
        _figure("latency-percentiles", "Latency percentiles", fg.plot_latency_percentiles(lat))
    )
    wide = lat.pivot_table(
        index=["mesh", "workload"], columns="percentile", values="latency_ms", sort=False
    ).reset_index()
    s.tables.append(_table(wide, "Client latency (ms)"))
    return s


def _added_latency_section(comp: Comparison) -> Section:
    added = comp.added_latency_frame()
    s = Section("added-latency", "Added latency against the no-mesh baseline")
    if "none" not in comp.meshes:
        s.notes.append("No run of mesh 'none' is included, so there is no baseline.")
    elif added.empty:
        s.notes.append("Only the 'none' baseline ran: there is no mesh to compare with it.")
    else:
        s.intro = (
            "Latency of each mesh minus the latency of mesh 'none' at the same percentile. "
            "Black error bars: the 95 % simulation CI of the difference (paired batch means "
            "against the baseline, which shares its random numbers); wide "
            "translucent bars: the model band, where the runs drew model parameter sets."
        )
        s.figures.append(_figure("added-latency", "Added latency", fg.plot_added_latency(added)))
        wide = added.pivot_table(
            index=["mesh", "workload"], columns="percentile", values="added_ms", sort=False
        ).reset_index()
        s.tables.append(_table(wide, "Added latency (ms)"))
    return s


def _load_section(comp: Comparison) -> Section:
    load = comp.load_frame()
    s = Section("latency-vs-load", "Latency versus load")
    levels = sorted({round(lv.offered_rps, 6) for lv in comp.levels})
    s.intro = (
        f"{len(levels)} load level{'s' if len(levels) != 1 else ''} from the runs given "
        f"({', '.join(f'{v:g}' for v in levels)} rps offered)"
        + (", plus one point per workload phase." if "mean (phase)" in set(load["metric"]) else ".")
    )
    if len(set(load["offered_rps"])) < 2:
        s.notes.append(
            "One load level only: give run directories of this scenario at several "
            "rates (a load series) or use workload phases to draw a curve."
        )
    s.figures.append(
        _figure("latency-vs-load", "Latency versus load", fg.plot_latency_vs_load(load))
    )
    return s


def _resources_section(res: pd.DataFrame) -> Section:
    s = Section(
        "resources",
        "Proxy CPU and memory",
        "All proxies of the mesh (sidecars, ztunnels, waypoints). CPU per 1000 rps is the "
        "total proxy CPU divided by the offered load in thousands of requests per second. "
        "Error bars: the model band, where the runs drew model parameter sets.",
    )
    for metric, fig_id, title in (
        ("cpu_vcpu_per_1000rps", "proxy-cpu-per-1000rps", "Proxy vCPU per 1000 rps"),
        ("cpu_vcpu_total", "proxy-cpu-total", "Proxy vCPU in total"),
        ("memory_mb_total", "proxy-memory-total", "Proxy memory in total"),
        ("memory_mb_per_proxy", "proxy-memory-per-proxy", "Memory per proxy"),
    ):
        s.figures.append(_figure(fig_id, title, fg.plot_proxy_resources(res, metric=metric)))
    s.tables.append(_table(res[RESOURCE_COLUMNS], "Mesh resources (vCPU, MB)"))
    if not res["proxies"].any():
        s.notes.append("No mesh in this report runs proxies (only the 'none' baseline).")
    return s


def _handshakes_section(res: pd.DataFrame) -> Section:
    s = Section(
        "handshakes",
        "mTLS handshakes",
        "TLS handshakes performed by the mesh's proxies in the measured window "
        "(connection churn and certificate rotation drive this).",
    )
    s.figures.append(
        _figure("handshakes", "Handshakes", fg.plot_proxy_resources(res, metric="handshakes"))
    )
    s.tables.append(_table(res[["mesh", "handshakes"]], "Handshakes"))
    return s


def _observability_section(runs: Mapping[str, Mapping[str, Any]]) -> Section | None:
    observed = observability_rows(runs)
    if not observed:
        return None
    s = Section("observability", "Observability and kernel costs", OBSERVABILITY_INTRO)
    s.tables.append(Table("Share of proxy CPU and memory per feature", COLUMNS, observed))
    return s


def _cpu_limits_section(runs: Mapping[str, Mapping[str, Any]]) -> Section | None:
    # A container OOM-killed without a CPU limit (ztunnel's chart sets none) is shown too:
    # its kills are the row's news. The limits that cannot bind are counted, not shown.
    limited: list[list[str]] = []
    idle = 0
    for mesh, run in runs.items():
        for name, c in run.get("cgroups", {}).items():
            if limit_can_bind(c) or c.get("oom_kills"):
                limited.append([
                    mesh, name, c.get("qos_class") or "-",
                    "-" if c.get("cpu_limit_m") is None else f"{c['cpu_limit_m']:.0f}m",
                    "-" if c.get("threads") is None else str(c["threads"]),
                    f"{c['cpu_vcpu']:.3f}", f"{c['nr_periods']:.0f}",
                    f"{c['nr_throttled']:.0f}", f"{c['throttled_share']:.1%}",
                    f"{c['throttled_s']:.2f}", f"{c.get('oom_kills', 0):.0f}",
                ])  # fmt: skip
            elif c.get("cpu_limit_m") is not None:
                idle += 1
    if limited:
        s = Section(
            "cpu-limits",
            "CPU limits",
            "Containers with a CPU limit that can bind (below the cores their threads can "
            "use), or that were OOM-killed: CFS bandwidth control, under either "
            "cluster.scheduler, gives each limit x cfs_period_ms of CPU per period; a "
            "container that spends it waits for the next period (throttled), which shows in "
            "p99 before it shows in mean CPU. A container past its memory limit is killed "
            "and restarted after CrashLoopBackOff's delay. Threads: how many cores it can "
            "use at once (a proxy's workers: an Istio sidecar's, waypoint's or gateway's are "
            "its CPU limit rounded up, as pilot-agent sets them; an app's concurrency). QoS: "
            "the pod's class, which places its cgroup in Kubernetes' tree under "
            "cluster.scheduler cfs (Guaranteed, Burstable, BestEffort; - without the tree).",
        )
        s.tables.append(Table(
            "CFS bandwidth control in the window",
            ["mesh", "container", "QoS", "limit", "threads", "vCPU", "periods", "throttled",
             "share", "throttled s", "OOM kills"],
            limited,
        ))  # fmt: skip
        if idle:
            s.notes.append(
                f"Not shown: {idle} container(s) whose CPU limit cannot bind, at or above the "
                "cores their threads can use (Istio's default 2000m on a two-worker sidecar)."
            )
        return s
    return None


def _balance_section(runs: Mapping[str, Mapping[str, Any]]) -> Section | None:
    rows = [
        [mesh, key, shares_text(shares)]
        for mesh, run in runs.items()
        for key, shares in uneven_pods(run.get("pods") or {})
    ]
    if not rows:
        return None
    s = Section(
        "balance",
        "Uneven pods",
        "The versions whose pods took their requests unevenly (the busiest at least "
        "1.5 times the least busy), each pod's share in the order the pods were made; pods "
        "that joined or left during the window are left out, and a version's share of its "
        "service (a traffic split) is not at issue. Sidecars, waypoints and Cilium's Envoy "
        "(for a service with a CiliumEnvoyConfig) balance each request; kube-proxy (none), "
        "ztunnel alone and Cilium's socket-LB (also under an L7 network policy alone) "
        "balance connections, so a gRPC or HTTP/2 caller's one connection to a service "
        "sends all its calls to one pod. A slow pod that a balancer avoids shows here too.",
    )
    s.tables.append(Table("Each pod's share of its version's requests (%)",
                          ["mesh", "version", "pods"], rows))  # fmt: skip
    return s


def _resilience_section(comp: Comparison) -> Section:
    warmup, duration = _window(comp)
    timeline = comp.timeline_frame()
    events = comp.events()
    s = Section(
        "resilience",
        "Resilience timeline",
        "Per-second success rate and mean latency of all workloads, by send time, "
        "with the scenario's events marked (dashed lines); the grey band is the warm-up.",
    )
    s.figures.append(
        _figure(
            "timeline-success", "Success rate over time",
            fg.plot_timeline(timeline, column="success_rate", events=events, warmup_s=warmup),
        )
    )  # fmt: skip
    s.figures.append(
        _figure(
            "timeline-latency", "Mean latency over time",
            fg.plot_timeline(timeline, column="mean_latency_ms", events=events, warmup_s=warmup),
        )
    )  # fmt: skip
    windows = event_windows(timeline, events, warmup_s=warmup, end_s=duration)
    if not windows.empty:
        s.tables.append(
            _table(
                windows.rename(columns={"mean_latency_ms": "mean latency (ms)"}),
                "Around each event (window: from the event to the next one)",
                {"success_rate": ".3%"},
            )
        )
    if not events:
        s.notes.append("The scenario has no events: the timeline shows steady state only.")
    return s


def _control_plane_section(comp: Comparison, res: pd.DataFrame) -> Section:
    conv = comp.convergence_frame()
    cp_res = res[["mesh", "control_plane_vcpu", "control_plane_memory_mb"]]
    s = Section("control-plane", "Control-plane convergence")
    if conv.empty:
        s.notes.append(
            "No endpoint or configuration changed in these runs (or only the 'none' baseline "
            "ran), so there was nothing to converge: add kill, scale, rollout or config events "
            "to measure how fast each control plane reaches its proxies."
        )
    else:
        s.intro = "Time from a configuration change to the last proxy applying it."
        s.figures.append(_figure("convergence", "Convergence", fg.plot_convergence(conv)))
        s.tables.append(_table(conv, "Convergence (s)"))
    if cp_res[["control_plane_vcpu", "control_plane_memory_mb"]].to_numpy().any():
        s.tables.append(_table(cp_res, "Control-plane resources (vCPU, MB)"))
    return s


def _cost_section(res: pd.DataFrame, prices: Prices) -> Section:
    costs = cost_frame(res, prices)
    s = Section(
        "cost",
        "Cost estimate",
        f"Monthly ({HOURS_PER_MONTH:g} h) cost of the mesh's own cores and memory (proxies "
        "and control plane) at the simulated load; the application's resources are the "
        "same under every mesh and are left out.",
    )
    if prices.given:
        s.notes.append(
            f"Prices given: {_price(prices.core_hour_usd)} per core-hour, "
            f"{_price(prices.gb_hour_usd)} per GB-hour."
        )
    else:
        s.notes.append(
            "No prices given: pass --core-hour-usd and --gb-hour-usd for a cost in USD; "
            "resource-hours are shown."
        )
        costs = costs.drop(columns=["usd_per_month", "usd_per_month_per_1000rps"])
    s.tables.append(
        _table(costs, "Mesh cost per month", {"usd_per_month": ",.2f",
                                              "usd_per_month_per_1000rps": ",.2f"})
    )  # fmt: skip
    return s


def _drawn_levels(comp: Comparison) -> list[tuple[str, Mapping[str, Any]]]:
    """The drawn CPU totals at the models' anchors, from the first run with model samples."""
    for run in comp.primary.runs:
        block = run.summary.get("model_samples")
        if isinstance(block, Mapping):
            return drawn_levels(block)
    return []


def _cost_models_section(
    runs: Mapping[str, Mapping[str, Any]], levels: list[tuple[str, Mapping[str, Any]]]
) -> Section:
    s = Section(
        "cost-models",
        "Cost models",
        intro="Every simulated cost comes from these files; each parameter in them cites its "
        "source (models/README.md). Compare meshes with care where the files describe "
        "different releases or hardware.",
    )
    rows = [
        [mesh, model["kind"], model["file"], model["describes"]]
        for mesh, run in runs.items()
        for model in run.get("cost_models", [])
    ]
    if rows:
        s.tables.append(Table("Model files per mesh", ["mesh", "kind", "file", "describes"], rows))
    else:
        s.items.append("No mesh in these runs uses a cost model (only the 'none' baseline ran).")
    if levels:
        # Why one mesh's band is wider than another's: what the evidence says of each total.
        s.tables.append(
            Table(
                "Each proxy's CPU total at its file's anchor (vCPU per 1000 rps; the shipped "
                "anchors: 1000 rps of 1 KiB each way, mTLS), as the model bands draw it: a "
                "wide range is a figure nobody has published for that proxy, which measuring "
                "it on your hardware settles (meshsim calibrate)",
                ["model", "value", "drawn over", "source"],
                [
                    [
                        model,
                        _fmt(p.get("value")),
                        f"{_fmt(p['range'][0])}..{_fmt(p['range'][1])}",
                        str(p.get("source", "")),
                    ]
                    for model, p in levels
                ],
            )
        )
    return s


def _warnings_section(runs: Mapping[str, Mapping[str, Any]]) -> Section:
    s = Section("warnings", "Warnings")
    for mesh, run in runs.items():
        s.items.extend(f"[{mesh}] {w}" for w in run.get("warnings", []))
    if not s.items:
        s.items.append("None.")
    return s


def _verdict_section(runs: Mapping[str, Mapping[str, Any]], reps: int) -> Section:
    """The first screen: per workload, what each mesh costs over running no mesh."""
    tables = verdict_tables(runs)
    s = Section("verdict", "Verdict", verdict_note(tables, reps))
    for t in tables:
        s.tables.append(
            Table(f"{t.workload}: each mesh over no mesh", list(t.columns), t.text_rows())
        )
    if not tables:
        s.notes.append("No mesh ran beside the baseline: there is nothing to compare.")
    elif "none" not in runs:
        s.notes.append("No run of mesh 'none' is included, so added latency is unknown.")
    return s


def _findings_section(runs: Mapping[str, Mapping[str, Any]], reps: int) -> Section:
    """The differences that hold, largest first; what is within the noise in one line."""
    top, more, noise = ranked(findings(runs))
    intro = (
        f"{reps} replication{'s' if reps != 1 else ''} per mesh. A latency difference is "
        "stated only when its 95 % confidence interval excludes zero (paired: the meshes run "
        "on the same random numbers), or, where the summary has no such interval, when the "
        "two runs' intervals do not overlap; largest first."
    )
    if reps < 2:
        intro += " With one replication there are no intervals: treat differences as tentative."
    items = [f.text for f in top]
    rest = []
    if more:
        rest.append(f"{len(more)} smaller difference{'s' if len(more) != 1 else ''}")
    if noise:
        rest.append(f"{noise} comparison{'s' if noise != 1 else ''} within the noise")
    if rest:
        items.append(f"Not listed: {' and '.join(rest)}; the tables below hold every number.")
    return Section("findings", "Findings", intro, items=items or ["No findings."])


def _price(value: float | None) -> str:
    return "not given (0)" if value is None else f"${value:g}"
