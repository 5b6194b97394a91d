"""Rich tables of a run's summary, side by side per mesh."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from meshsim.results.bands import drawn_levels
from meshsim.results.summary import limit_can_bind, shares_text, uneven_pods


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return "100%" if value >= 1.0 else f"{value:.2%}" if value < 0.9999 else f"{value:.3%}"


def _table(title: str, columns: list[str], left: int = 2) -> Table:
    # SIMPLE_HEAD keeps the tables readable in an 80-column terminal.
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True,
    )  # fmt: skip
    for i, col in enumerate(columns):
        text = i < left
        table.add_column(
            col, justify="left" if text else "right", no_wrap=not text,
            overflow="fold" if text else "ellipsis", min_width=len(col),
        )  # fmt: skip
    return table


def workloads_table(summary: Mapping[str, Any]) -> Table:
    table = _table(
        "Workloads, measured at the client (ms)",
        ["mesh", "workload", "rps", "success", "p50", "p90", "p99", "p99.9", "mean"],
    )
    for mesh, run in summary["runs"].items():
        for name, sig in run["workloads"].items():
            lat = sig["latency_ms"]
            table.add_row(
                mesh, name, f"{sig['achieved_rps']:.1f}", _rate(sig["success_rate"]),
                _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["p999"]),
                _ms(lat["mean"]),
            )  # fmt: skip
    return table


def added_table(summary: Mapping[str, Any]) -> Table:
    """Each mesh's added latency, with the half-width of its 95 % CI (paired batch means
    against the `none` run; the model band is in :func:`bands_table`)."""
    table = _table(
        "Latency added over the `none` baseline (ms, ± the 95 % CI of the simulation's noise)",
        ["mesh", "workload", "p50", "p90", "p99"],
    )
    for mesh, per_workload in summary.get("added_latency_ms", {}).items():
        workloads = summary.get("runs", {}).get(mesh, {}).get("workloads", {})
        for name, added in per_workload.items():
            ci = workloads.get(name, {}).get("added_latency_ci95_ms") or {}
            table.add_row(mesh, name, *(_with_ci(added.get(p), ci.get(p))
                                        for p in ("p50", "p90", "p99")))  # fmt: skip
    return table


def _with_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None or ci is None:
        return _signed(value)
    return f"{_signed(value)} ±{(ci[1] - ci[0]) / 2:.3f}"


def services_table(summary: Mapping[str, Any]) -> Table:
    table = _table(
        "Services, measured at the server (ms)",
        ["mesh", "service", "attempts", "rps", "success", "p50", "p99", "app vCPU"],
    )
    for mesh, run in summary["runs"].items():
        for name, sig in run["services"].items():
            lat = sig["latency_ms"]
            table.add_row(
                mesh, name, str(sig["requests"]), f"{sig['rps']:.1f}",
                _rate(sig["success_rate"]), _ms(lat["p50"]), _ms(lat["p99"]),
                f"{run['app_cpu_vcpu'].get(name, 0.0):.3f}",
            )  # fmt: skip
    return table


def uneven_pods_table(summary: Mapping[str, Any]) -> Table | None:
    """:func:`uneven_pods` of each mesh; None when every version's pods shared evenly."""
    table = _table(
        "Uneven pods: each pod's share of its version's requests (%)",
        ["mesh", "version", "pods"],
    )
    for mesh, run in summary["runs"].items():
        for key, shares in uneven_pods(run.get("pods", {})):
            table.add_row(mesh, key, shares_text(shares))
    return table if table.row_count else None


def resources_table(summary: Mapping[str, Any]) -> Table:
    table = _table(
        "Mesh resources (/krps: vCPU per 1000 rps; node: busiest node's utilisation)",
        ["mesh", "proxies", "vCPU", "/krps", "MB/proxy", "MB", "TLS hs", "node"],
        left=1,
    )
    for mesh, run in summary["runs"].items():
        p = run["proxies"]
        util = max((n["utilisation"] for n in run["nodes"].values()), default=0.0)
        table.add_row(
            mesh, str(p.get("count", 0)), f"{p.get('cpu_vcpu_total', 0.0):.3f}",
            f"{p.get('cpu_vcpu_per_1000rps', 0.0):.3f}", f"{p.get('memory_mb_per_proxy', 0.0):.1f}",
            f"{p.get('memory_mb_total', 0.0):.0f}", str(p.get("handshakes", 0)), f"{util:.0%}",
        )  # fmt: skip
    return table


def _band(band: Any, less: float = 0.0, digits: int = 2) -> str:
    if not isinstance(band, list) or len(band) != 2 or None in band:
        return "-"
    return f"{band[0] - less:.{digits}f}..{band[1] - less:.{digits}f}"


def bands_table(summary: Mapping[str, Any]) -> Table | None:
    """Each mesh's numbers over the drawn cost-model parameter sets (low..high)."""
    block = summary.get("model_samples")
    if not block:
        return None
    table = _table(
        f"Model bands over {block['n']} cost-model parameter sets (low..high)",
        ["mesh", "workload", "added p50 ms", "added p99 ms", "/krps", "MB/proxy"],
    )
    base = summary["runs"].get("none")
    for mesh, run in summary["runs"].items():
        if mesh == "none":
            continue
        proxies = run["proxies"].get("band") or {}
        for name, sig in run["workloads"].items():
            bands = sig.get("latency_band_ms") or {}
            base_lat = ((base or {}).get("workloads", {}).get(name) or {}).get("latency_ms", {})
            added = [
                _band(bands.get(p), base_lat[p]) if base_lat.get(p) is not None else "-"
                for p in ("p50", "p99")
            ]
            table.add_row(
                mesh, name, *added, _band(proxies.get("cpu_vcpu_per_1000rps"), digits=3),
                _band(proxies.get("memory_mb_per_proxy"), digits=1),
            )  # fmt: skip
    levels = drawn_levels(block)
    if levels:
        # Why one mesh's band is wider than another's: the evidence for each proxy's total.
        table.caption = (
            "each proxy's CPU at its anchor, drawn over (vCPU per 1000 rps; the report's "
            "Cost models say why): "
            + ", ".join(f"{model} {p['range'][0]:.3g}..{p['range'][1]:.3g}" for model, p in levels)
        )
        table.caption_justify = "left"
    return table


RESILIENCE_COLUMNS = {
    "retries": "retries", "timeouts": "timeouts", "per_try_timeouts": "try t/o",
    "overflows": "overflows", "ejections": "ejected", "failfasts": "failfasts",
    "load_shed": "shed", "budget_exhausted": "no budget", "fault_aborts": "aborts",
    "fault_delays": "delays", "mirrored": "mirrored",
}  # fmt: skip


def resilience_table(summary: Mapping[str, Any]) -> Table | None:
    """Retries, timeouts, breaker overflows, ejections, ... per mesh and service; only the
    rows and columns with something to show."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for mesh, run in summary["runs"].items():
        for name, r in run.get("resilience", {}).items():
            if any(r.get(c) for c in RESILIENCE_COLUMNS):
                rows.append((mesh, name, r))
    if not rows:
        return None
    columns = [c for c in RESILIENCE_COLUMNS if any(r.get(c) for _, _, r in rows)]
    table = Table(title="Resilience, at the callers' proxies", title_justify="left")
    for col in ("mesh", "service", "requests", "attempts", "x"):
        table.add_column(col, justify="left" if col in ("mesh", "service") else "right")
    for col in columns:
        table.add_column(RESILIENCE_COLUMNS[col], justify="right")
    for mesh, name, r in rows:
        amp = r.get("amplification")
        table.add_row(mesh, name, str(r.get("requests", 0)), str(r.get("attempts", 0)),
                      "-" if amp is None else f"{amp:.2f}",
                      *(str(r.get(c, 0)) for c in columns))  # fmt: skip
    return table


def cgroups_table(summary: Mapping[str, Any]) -> Table | None:
    """CPU limits: the containers with a limit that can bind or an OOM kill, their QoS
    class, threads, CPU and CFS bandwidth counters (throttled: nr_throttled of
    nr_periods)."""
    rows = [
        (mesh, name, c)
        for mesh, run in summary["runs"].items()
        for name, c in run.get("cgroups", {}).items()
        if limit_can_bind(c) or c.get("oom_kills")
    ]
    if not rows:
        return None
    ooms = any(c.get("oom_kills") for _, _, c in rows)
    # One QoS class for every row goes in the title (none without Kubernetes' cgroup tree):
    # the column would push the table past an 80-column terminal.
    classes = {c.get("qos_class") for _, _, c in rows}
    (only,) = classes if len(classes) == 1 else ("",)
    table = _table(
        "CPU limits that can bind (CFS bandwidth control in the window; throttled: periods of"
        " all, their share, the time" + (f"; every pod {only})" if only else ")"),
        ["mesh", "container"] + (["QoS"] if only == "" else [])
        + ["limit", "threads", "vCPU", "throttled"]
        + (["OOM"] if ooms else []),
    )  # fmt: skip
    for mesh, name, c in rows:
        limit = c.get("cpu_limit_m")
        threads = c.get("threads")
        table.add_row(
            mesh, name, *([c.get("qos_class") or "-"] if only == "" else []),
            "-" if limit is None else f"{limit:.0f}m",
            "-" if threads is None else str(threads), f"{c['cpu_vcpu']:.3f}",
            f"{c['nr_throttled']:.0f}/{c['nr_periods']:.0f} {c['throttled_share']:6.1%}"
            f" {c['throttled_s']:6.2f}s",
            *([f"{c.get('oom_kills', 0):.0f}"] if ooms else []),
        )  # fmt: skip
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def zone_failures_table(summary: Mapping[str, Any]) -> Table | None:
    """Each zone failure: tries that met a failed pod, the failover, the callers' errors,
    and the recovery (``topology.zone_failures``, meshsim.sim.zone_failures)."""
    rows = [
        (mesh, f)
        for mesh, run in summary["runs"].items()
        for f in (run.get("topology") or {}).get("zone_failures") or []
    ]
    if not rows:
        return None
    table = _table(
        "Zone failures (s): down from-to, tries that met a failed pod, failover, the "
        "callers' errors, recovery, the callers' errors after it",
        ["mesh", "zone", "mode", "down", "tries", "failover", "errors", "recovery", "after"],
        left=3,
    )
    for mesh, f in rows:
        back = f.get("recovered_at_s")
        table.add_row(
            mesh, f["zone"], f.get("mode", "refuse"),
            f"{f['at_s']:g}-{'' if back is None else f'{back:g}'}", str(f["failed_tries"]),
            _seconds(f.get("failover_s")),
            str(f.get("caller_errors_failover", f.get("caller_errors", 0))),
            _seconds(f.get("recovery_s")), str(f.get("caller_errors_recovery", 0)),
        )  # fmt: skip
    return table


def gateways_table(summary: Mapping[str, Any]) -> Table | None:
    """Each mesh's ingress (``topology.gateways``): every container of its pods, and the
    mean time a request spends inside a gateway pod (meshsim.sim.gateways)."""
    rows = [
        (mesh, name, g)
        for mesh, run in summary["runs"].items()
        for name, g in ((run.get("topology") or {}).get("gateways") or {}).items()
    ]
    if not rows:
        return None
    table = _table(
        "Ingress gateways (pods x containers, their vCPU and MB; added: ms inside a pod)",
        ["mesh", "gateway", "pods", "rps", "vCPU", "/krps", "MB", "added", "TLS hs/s"],
        left=2,
    )
    for mesh, name, g in rows:
        containers = len(g.get("by_container") or {}) or 1
        table.add_row(
            mesh, name, f"{g['replicas']} x {containers}", f"{g['rps']:.1f}",
            f"{g.get('cpu_vcpu', 0.0):.3f}",
            f"{g.get('cpu_vcpu_per_1000rps', 0.0):.3f}", f"{g.get('memory_mb', 0.0):.0f}",
            f"{g.get('added_latency_ms', 0.0):.3f}", f"{g['handshakes_per_s']:.1f}",
        )  # fmt: skip
    return table


def models_text(summary: Mapping[str, Any]) -> RenderableType:
    """Which cost-model files the numbers above come from (every parameter cites a source)."""
    lines: list[Text] = []
    for mesh, run in summary["runs"].items():
        for model in run.get("cost_models", []):
            lines.append(
                Text.assemble(("model", "bold"), f" [{mesh}] {model['file']}: {model['describes']}")
            )
    return Group(*lines)


def warnings_text(summary: Mapping[str, Any]) -> RenderableType:
    lines: list[Text] = []
    for mesh, run in summary["runs"].items():
        for w in run["warnings"]:
            lines.append(Text.assemble(("warning", "bold yellow"), f" [{mesh}]: {w}"))
    return Group(*lines)


def control_plane_table(summary: Mapping[str, Any]) -> Table:
    table = _table(
        "Control plane (convergence: change to last proxy updated, s)",
        ["mesh", "vCPU", "MB", "conv p50", "conv p99", "changes", "stale tries"],
        left=1,
    )
    for mesh, run in summary["runs"].items():
        cp = run["control_plane"]
        conv = cp.get("convergence_s") or {}

        def seconds(key: str, conv: dict[str, Any] = conv) -> str:
            value = conv.get(key)
            return "-" if value is None else f"{value:.3f}"

        table.add_row(
            mesh, f"{cp.get('cpu_vcpu', 0.0):.3f}", f"{cp.get('memory_mb', 0.0):.0f}",
            seconds("p50"), seconds("p99"), str(conv.get("count", 0)),
            str(cp.get("stale_endpoint_attempts", 0)),
        )  # fmt: skip
    return table


def summary_renderable(summary: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [workloads_table(summary)]
    if summary.get("added_latency_ms"):
        parts.append(added_table(summary))
    parts.append(services_table(summary))
    uneven = uneven_pods_table(summary)
    if uneven is not None:
        parts.append(uneven)
    if any(run["proxies"].get("count") for run in summary["runs"].values()):
        parts.append(resources_table(summary))
    bands = bands_table(summary)
    if bands is not None:
        parts.append(bands)
    resilience = resilience_table(summary)
    if resilience is not None:
        parts.append(resilience)
    cgroups = cgroups_table(summary)
    if cgroups is not None:
        parts.append(cgroups)
    gateways = gateways_table(summary)
    if gateways is not None:
        parts.append(gateways)
    zones = zone_failures_table(summary)
    if zones is not None:
        parts.append(zones)
    if any(run["control_plane"].get("memory_mb") for run in summary["runs"].values()):
        parts.append(control_plane_table(summary))
    parts.append(models_text(summary))
    parts.append(warnings_text(summary))
    return Group(*parts)
