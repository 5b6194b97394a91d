"""``meshsim validate``: the simulator's predictions against the held-out lab measurements."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import err_console, user_errors


@click.command("validate")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=Path("models/calibrated/lab.yaml"))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--max-p50-error", type=float, default=10.0, show_default=True, metavar="PCT")
@click.option("--max-p99-error", type=float, default=20.0, show_default=True, metavar="PCT")
@click.option("--max-throughput-error", type=float, default=10.0, show_default=True,
              metavar="PCT")
@click.option("--figures", "fig_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to write the figures (default: beside MODEL).")
@click.option("--duration-s", type=click.FloatRange(min=1.0), default=4.0, show_default=True,
              help="Simulated seconds per point.")
@user_errors
def validate(model: Path, as_json: bool, max_p50_error: float, max_p99_error: float,
             max_throughput_error: float, fig_dir: Path | None, duration_s: float) -> None:
    """Simulate the lab topology with MODEL at its held-out loads; exit 1 beyond thresholds."""
    from meshsim.calibrate.validate import failures, figures, table, validate_model

    rows = validate_model(model, duration_s=duration_s)
    bad = failures(rows, max_p50_error, max_p99_error, max_throughput_error)
    figs = figures(rows, fig_dir or model.parent / f"{model.stem}-figures") if rows else []
    if as_json:
        click.echo(json.dumps({"model": str(model), "rows": [r.to_json() for r in rows],
                               "failures": bad, "figures": [str(p) for p in figs]}, indent=1))
    else:
        click.echo(table(rows))
        for p in figs:
            click.echo(f"figure: {p}")
    if bad:
        console = err_console()
        for line in bad:
            console.print(f"[red]goal missed:[/] {line}", highlight=False)
        sys.exit(1)
