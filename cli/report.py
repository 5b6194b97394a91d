"""``meshsim report``: turn run directories into an HTML report and its Markdown twin."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from meshsim.report.comparison import Comparison
from meshsim.report.cost import Prices
from meshsim.report.render import render_report
from meshsim.results.store import load_run

from .common import user_errors

out_option = click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="HTML report; the Markdown twin and its SVG figures go beside it (a .md path: "
    "the Markdown there, the HTML beside it).",
)
price_options = [
    click.option(
        "--core-hour-usd", type=float, default=None, help="Price of one vCPU for one hour (USD)."
    ),
    click.option(
        "--gb-hour-usd", type=float, default=None, help="Price of one GB of memory for one hour."
    ),
]


def write_report(
    run_dirs: list[Path], out: Path, prices: Prices, console: Console
) -> tuple[Path, Path]:
    """Load, check and render; shared by ``report`` and ``compare``."""
    comparison = Comparison.of([load_run(d) for d in run_dirs])
    if out.suffix.lower() == ".md":
        # Asked for the Markdown: the HTML is its twin beside it, not written over it.
        out = out.with_suffix(".html")
    html, md = render_report(comparison, out, prices=prices)
    console.print(f"report written to [bold]{html}[/] and [bold]{md}[/]", highlight=False)
    return html, md


@click.command()
@click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
    type=click.Path(file_okay=False, path_type=Path),
)  # fmt: skip
@out_option
@price_options[0]
@price_options[1]
@user_errors
def report(
    run_dirs: tuple[Path, ...], out: Path, core_hour_usd: float | None, gb_hour_usd: float | None
) -> None:
    """Compare the meshes of saved runs in one HTML report (plus report.md).

    Give run directories of one scenario (one per mesh, or one with all meshes), or a
    load series: runs of one scenario that differ only in the workloads' rates.
    """
    write_report(list(run_dirs), out, Prices(core_hour_usd, gb_hour_usd), Console())
