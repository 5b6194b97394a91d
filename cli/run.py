"""``meshsim run``: simulate a scenario for each mesh, show and save the summary."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console

from meshsim.api import events_cut_by, parse_meshes, run_and_save
from meshsim.scenario import load_scenario
from meshsim.scenario.limits import cost_warnings, estimate_cost
from meshsim.scenario.overrides import apply_overrides

from .common import (
    EXIT_SLO_BREACH,
    OutputDir,
    err_console,
    make_executor,
    parallel_options,
    run_progress,
    scenario_argument,
    user_errors,
)
from .render import summary_renderable


@click.command()
@scenario_argument
@click.option(
    "--mesh",
    "mesh",
    multiple=True,
    help="Mesh(es) to run, overriding the scenario's 'meshes' (repeat or comma-separate).",
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--duration-s", type=float, default=None, help="Override the simulated duration.")
@click.option(
    "--out",
    "out",
    type=OutputDir(),
    default=None,
    help="Run directory (default: runs/<scenario>-<time>); checked writable before the run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to standard output.")
@click.option("--records", is_flag=True, help="Keep per-request records (records.parquet).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@parallel_options
@user_errors
def run(
    scenario_path: str,
    mesh: tuple[str, ...],
    seed: int | None,
    duration_s: float | None,
    out: Path | None,
    as_json: bool,
    records: bool,
    quiet: bool,
    jobs: int | None,
    executor: str,
    scheduler: str | None,
    model_samples: int | None,
) -> None:
    """Simulate SCENARIO.yaml for each mesh and print a summary.

    Exit status: 0 when done, 1 when an SLO of the scenario is breached, 2 for bad input.
    """
    loaded = load_scenario(scenario_path)
    for cut in events_cut_by(loaded, duration_s):
        err_console().print(f"note: --duration-s {duration_s:g} ends the run before: {cut}")
    scenario = apply_overrides(
        loaded, duration_s=duration_s, seed=seed, model_samples=model_samples
    )
    runner = make_executor(jobs, executor, scheduler)
    meshes = parse_meshes(mesh) or list(scenario.meshes)
    for warning in cost_warnings(estimate_cost(scenario, meshes)):
        err_console().print(f"[bold yellow]warning[/]: {warning}", highlight=False)
    console = err_console() if as_json else Console()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out if out is not None else Path("runs") / f"{scenario.name}-{stamp}"
    with run_progress(scenario, meshes, console, quiet=quiet) as progress:
        outcome = run_and_save(
            scenario, out_dir, meshes=meshes, progress=progress, keep_records=records,
            argv=sys.argv, jobs=jobs, executor=runner,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(outcome.summary, indent=2, allow_nan=False))
    else:
        console.print(summary_renderable(outcome.summary))
    for b in outcome.breaches:
        console.print(f"[bold red]SLO breached[/] {b}", highlight=False)
    console.print(f"results saved in [bold]{out_dir}[/]", highlight=False)
    if outcome.breaches:
        sys.exit(EXIT_SLO_BREACH)
