"""One self-contained HTML report (figures as inline SVG) and its Markdown twin.

Both come from the same context, built here, through the Jinja2 templates
``reports/templates/report.html.j2`` and ``report.md.j2``. The Markdown file links
its figures as SVG files written beside it (``<stem>-<figure>.svg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

from meshsim.errors import MeshsimError
from meshsim.files import write_atomic
from meshsim.report.comparison import Comparison
from meshsim.report.cost import Prices
from meshsim.report.sections import build_sections
from meshsim.resources import package_data_dir
from meshsim.results.store import LoadedRun
from meshsim.scenario.host import WakeupLatency


def provenance(comp: Comparison) -> list[dict[str, str]]:
    rows = []
    for level in comp.levels:
        for run in level.runs:
            rows.append(_run_row(run, level.offered_rps))
    return rows


def _run_row(run: LoadedRun, offered: float) -> dict[str, str]:
    env = run.meta.get("environment") or {}
    return {
        "path": str(run.path),
        "meshes": ", ".join(run.meshes),
        "offered_rps": f"{offered:g}",
        "scenario_sha256": run.scenario_sha256[:16],
        "seed": str(run.summary.get("seed")),
        "meshsim": str(run.summary.get("meshsim_version")),
        "created": str(run.meta.get("created_utc", "-")),
        "python": str(env.get("python", "-")),
    }


def hosts_line(scenario: dict[str, Any]) -> str:
    """What ``cluster.host_speed`` and ``cluster.wakeup_latency`` say of the nodes' hosts,
    for the report's header (empty when neither is set): a reader must know that the
    latencies include them."""
    cluster = scenario.get("cluster") or {}
    return " ".join(
        t
        for t in (_speed_text(cluster.get("host_speed")), _wake_text(cluster.get("wakeup_latency")))
        if t
    )


def _speed_text(host: Any) -> str:
    if not host:
        return ""
    tail = " (cluster.host_speed): the latency tails include their slow phases."
    if isinstance(host, list):
        return f"Hosts run at a varying speed, set node by node for {len(host)} nodes{tail}"
    if host.get("trace") is not None:
        return f"Hosts replay a measured speed trace of {len(host['trace'])} bins{tail}"
    slow = host["slow_factor"] / host.get("fast_factor", 1.0)
    return (
        f"Hosts are slow {host['slow_share']:.0%} of the time, {slow:.3g}x their fast speed, "
        f"in phases of {host['slow_dwell_ms']:g} ms on average{tail}"
    )


def _wake_text(wake: Any) -> str:
    if not wake:
        return ""
    tail = " (cluster.wakeup_latency): the latencies include it wherever a proxy was idle."
    if isinstance(wake, list):
        return (
            f"A woken proxy thread waits for its host, set node by node for {len(wake)} nodes{tail}"
        )
    spec = WakeupLatency.model_validate(wake)

    def text(percent: float) -> str:
        us = spec.latency_us(percent)
        return f"{us / 1000.0:.3g} ms" if us >= 1000.0 else f"{us:.3g} µs"

    return (
        f"A proxy thread woken from idle waits for its host before it runs: "
        f"p50 {text(50)}, p99 {text(99)}{tail}"
    )


def render_report(
    comp: Comparison,
    out_html: Path,
    *,
    prices: Prices | None = None,
    template_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write ``out_html`` and its Markdown twin (same stem, ``.md``) with SVGs beside it."""
    import jinja2

    mpl.use("Agg")
    prices = prices or Prices()
    folder = template_dir or package_data_dir("meshsim._templates")
    if not (folder / "report.html.j2").is_file():
        raise MeshsimError(
            f"report templates not found in {folder} (expected report.html.j2 and report.md.j2)"
        )
    sections = build_sections(comp, prices)
    stem = out_html.stem
    md_path = out_html.with_suffix(".md")
    for section in sections:
        for fig in section.figures:
            fig.file = f"{stem}-{fig.id}.svg"
    scenario = comp.scenario
    context = {
        "title": f"meshsim report: {comp.scenario_name}",
        "scenario": comp.scenario_name,
        "description": scenario.get("description", ""),
        "hosts": hosts_line(scenario),
        "meshes": comp.meshes,
        "replications": comp.replications(),
        "duration_s": scenario.get("duration_s"),
        "warmup_s": scenario.get("warmup_s", 0),
        "sha256": comp.primary.sha256,
        "version": comp.primary.runs[0].summary.get("meshsim_version"),
        "sections": sections,
        "runs": provenance(comp),
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    html = env.get_template("report.html.j2").render(**context)
    markdown = env.get_template("report.md.j2").render(**context)
    write_atomic(out_html, html.encode("utf-8"))
    write_atomic(md_path, markdown.encode("utf-8"))
    for section in sections:
        for fig in section.figures:
            write_atomic(out_html.parent / fig.file, fig.svg.encode("utf-8"))
    return out_html, md_path
