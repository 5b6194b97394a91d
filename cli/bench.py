"""``meshsim bench``: run a suite and gate on its baseline (exit 1 on a regression)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from meshsim.bench import Gate, gate, load_suite, measure_suite, read_baseline, write_baseline
from meshsim.bench.gate import Row
from meshsim.bench.noise import Status

from .common import EXIT_SLO_BREACH, user_errors

DEFAULT_SUITE = Path("benchmarks/suites/model-outputs.yaml")
_STYLE = {
    "regressed": "bold red", "missing": "bold red", "improved": "green",
    "within-tolerance": "yellow", "new": "cyan", "noise": "dim", "unchanged": "dim",
}  # fmt: skip
_ORDER: tuple[Status, ...] = (
    "regressed",
    "missing",
    "improved",
    "within-tolerance",
    "noise",
    "new",
    "unchanged",
)


@click.command()
@click.argument(
    "suite_path", metavar="[SUITE.yaml]", required=False,
    type=click.Path(dir_okay=False, path_type=Path),
)  # fmt: skip
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Baseline JSON (default: the suite's 'baseline:', else SUITE.baseline.json).",
)
@click.option("--update-baseline", is_flag=True, help="Write the measured numbers as baseline.")
@click.option(
    "--tolerance",
    "tolerance_pct",
    type=click.FloatRange(min=0),
    default=None,
    metavar="PCT",
    help="Percent change that counts (default: the suite's tolerance_pct).",
)
@click.option("--only", default=None, metavar="ID[,ID]", help="Run only these entries.")
@click.option("--all", "show_all", is_flag=True, help="List every metric, not only those moved.")
@user_errors
def bench(
    suite_path: Path | None,
    baseline_path: Path | None,
    update_baseline: bool,
    tolerance_pct: float | None,
    only: str | None,
    show_all: bool,
) -> None:
    """Run SUITE.yaml (default: benchmarks/suites/model-outputs.yaml) and compare each
    metric with the baseline, using the confidence intervals over replications.

    Exit status: 0 when nothing regressed (or the baseline was updated), 1 when a metric
    regressed beyond the tolerance or disappeared, 2 for bad input.
    """
    suite = load_suite(suite_path or DEFAULT_SUITE)
    chosen = None
    if only is not None:
        chosen = [x.strip() for x in only.split(",") if x.strip()]
        unknown = [x for x in chosen if x not in suite.ids()]
        if unknown:
            raise click.BadParameter(
                f"unknown id(s) {', '.join(unknown)} (suite has {', '.join(suite.ids())})",
                param_hint="--only",
            )
    path = baseline_path or suite.default_baseline
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # A CI log has no width: Rich's 80 columns would fold every metric's name.
        console = Console(width=140)
    baseline = None if update_baseline else read_baseline(path)
    with console.status("running") as status:
        measured = measure_suite(
            suite, only=chosen, progress=lambda i: status.update(f"running [bold]{i}[/]")
        )
    if update_baseline:
        keep = {}
        if chosen is not None and path.exists():
            old = read_baseline(path)["metrics"]
            keep = {k: v for k, v in old.items() if k.split("/", 1)[0] not in chosen}
        write_baseline(path, suite, measured, keep=keep)
        console.print(f"baseline written: [bold]{path}[/] ({len(measured)} metrics)")
        return
    assert baseline is not None
    result = gate(suite, baseline, measured, tolerance_pct=tolerance_pct, only=chosen)
    table = render(result, show_all=show_all)
    console.print(table if table.row_count else table.title)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if result.failed:
        console.print(
            f"[bold red]{len(result.failed)} regression(s)[/] beyond the tolerance", highlight=False
        )
        sys.exit(EXIT_SLO_BREACH)
    console.print("[green]no regressions[/]")


def render(result: Gate, *, show_all: bool = False) -> Table:
    """What moved (every metric with ``show_all``), with the counts per verdict."""
    counts = ", ".join(f"{result.count(s)} {s}" for s in _ORDER if result.count(s))
    table = Table(title=f"bench: {counts}", title_justify="left", box=box.SIMPLE_HEAD)
    # A metric's name folds rather than ending in an ellipsis: a CI log is 80 columns wide.
    table.add_column("metric", overflow="fold")
    for name in ("baseline", "now", "change", "tolerance"):
        table.add_column(name, justify="right")
    table.add_column("verdict", no_wrap=True)
    for row in result.rows:
        if show_all or row.status not in ("unchanged", "noise"):
            table.add_row(*_cells(row))
    return table


def _cells(row: Row) -> list[str]:
    def shown(s: object) -> str:
        from meshsim.bench.noise import Sample

        if not isinstance(s, Sample):
            return "-"
        if s.ci95 is None:
            return f"{s.mean:.4g}"
        return f"{s.mean:.4g} ±{(s.ci95[1] - s.ci95[0]) / 2:.2g}"

    change = "-"
    if row.change_pct is not None:
        change = "new from 0" if math.isinf(row.change_pct) else f"{row.change_pct:+.1f}%"
    style = _STYLE.get(row.status, "")
    return [row.key, shown(row.base), shown(row.current), change,
            f"{row.tolerance_pct:g}%", f"[{style}]{row.status}[/]"]  # fmt: skip
