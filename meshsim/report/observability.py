"""The report's table of what observability costs and of the kernel's share (issue 16).

Rows come from ``runs.<mesh>.observability`` and ``runs.<mesh>.proxies.kernel_cpu_vcpu`` of
``summary.json``; a report of runs without either has no such table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = [
    "mesh", "series/proxy", "Prometheus MB", "spans/request", "collector load",
    "metrics CPU share", "tracing CPU share", "access-log CPU share", "Wasm CPU share",
    "metrics memory share", "kernel vCPU",
]  # fmt: skip

INTRO = (
    "What each observability feature costs, as a share of the mesh's proxy CPU (stats per "
    "request plus scraping, spans, access-log lines, Wasm filters) and memory (metric series), "
    "and Prometheus's and the trace collector's own load. Kernel vCPU is CPU the eBPF datapath "
    "and in-kernel encryption run on the nodes, which container metrics do not count and "
    "which is not in the proxies' vCPU above."
)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def observability_rows(runs: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """One row per mesh with an observability block or kernel CPU (none: no table)."""
    rows: list[list[str]] = []
    for mesh, run in runs.items():
        obs = run.get("observability")
        kernel = run.get("proxies", {}).get("kernel_cpu_vcpu")
        if obs is None and kernel is None:
            continue
        obs = obs or {}
        metrics = obs.get("metrics", {})
        tracing = obs.get("tracing", {})
        shares = obs.get("shares", {})
        cpu = shares.get("cpu", {})
        rows.append([
            mesh,
            f"{metrics['series_per_proxy_mean']:.0f}" if metrics else "-",
            f"{metrics['prometheus']['memory_mb']:.0f}" if metrics else "-",
            f"{tracing['spans_per_request']:.2f}" if tracing else "-",
            _pct(tracing["collector"]["utilisation"]) if tracing else "-",
            _pct(cpu.get("metrics")), _pct(cpu.get("tracing")), _pct(cpu.get("access_logs")),
            _pct(cpu.get("wasm")), _pct(shares.get("memory", {}).get("metrics")),
            "-" if kernel is None else f"{kernel:.4f}",
        ])  # fmt: skip
    return rows
