"""``meshsim compare``: run a scenario for several meshes, then report on them."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from meshsim.api import events_cut_by, parse_meshes, run_and_save
from meshsim.report.cost import Prices
from meshsim.scenario import load_scenario
from meshsim.scenario.limits import cost_warnings, estimate_cost
from meshsim.scenario.overrides import apply_overrides

from .common import (
    OutputDir,
    err_console,
    make_executor,
    parallel_options,
    run_progress,
    scenario_argument,
    user_errors,
)
from .report import price_options, write_report


@click.command()
@scenario_argument
@click.option(
    "--meshes",
    "meshes",
    default=None,
    help="Comma-separated meshes (default: the scenario's), e.g. none,istio,linkerd.",
)
@click.option("--duration-s", type=float, default=None, help="Override the simulated duration.")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option(
    "--out",
    "out",
    type=OutputDir(),
    required=True,
    help="Directory for the run (DIR/run) and the report (DIR/report.html, DIR/report.md).",
)
@price_options[0]
@price_options[1]
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@parallel_options
@user_errors
def compare(
    scenario_path: str,
    meshes: str | None,
    duration_s: float | None,
    seed: int | None,
    out: Path,
    core_hour_usd: float | None,
    gb_hour_usd: float | None,
    quiet: bool,
    jobs: int | None,
    executor: str,
    scheduler: str | None,
    model_samples: int | None,
) -> None:
    """Simulate SCENARIO.yaml under each mesh and write a comparison report into --out."""
    prices = Prices(core_hour_usd, gb_hour_usd)  # checked before the (long) runs
    loaded = load_scenario(scenario_path)
    for cut in events_cut_by(loaded, duration_s):
        err_console().print(f"note: --duration-s {duration_s:g} ends the run before: {cut}")
    scenario = apply_overrides(
        loaded, duration_s=duration_s, seed=seed, model_samples=model_samples
    )
    runner = make_executor(jobs, executor, scheduler)
    chosen = parse_meshes((meshes,) if meshes else (), "--meshes") or list(scenario.meshes)
    for warning in cost_warnings(estimate_cost(scenario, chosen)):
        err_console().print(f"[bold yellow]warning[/]: {warning}", highlight=False)
    console = Console()
    run_dir = out / "run"
    with run_progress(scenario, chosen, console, quiet=quiet) as progress:
        run_and_save(
            scenario, run_dir, meshes=chosen, progress=progress, argv=sys.argv, jobs=jobs,
            executor=runner,
        )  # fmt: skip
    console.print(f"results saved in [bold]{run_dir}[/]", highlight=False)
    write_report([run_dir], out / "report.html", prices, console)
