"""``meshsim run``: simulate a scenario for each mesh, show and save the summary."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from meshsim.api import events_cut_by, run_scenario, with_overrides
from meshsim.errors import MeshsimError
from meshsim.results.slo import check_slos
from meshsim.results.store import save_run
from meshsim.results.summary import build_summary
from meshsim.scenario import load_scenario
from meshsim.scenario.model import MESH_NAMES, Scenario

from .common import EXIT_SLO_BREACH, err_console, scenario_argument, user_errors
from .render import summary_renderable


def _meshes(value: tuple[str, ...]) -> list[str] | None:
    if not value:
        return None
    meshes: list[str] = []
    for item in value:
        for name in item.split(","):
            name = name.strip()
            if name not in MESH_NAMES:
                raise MeshsimError(
                    f"--mesh: unknown mesh '{name}' (known: {', '.join(MESH_NAMES)})"
                )
            if name not in meshes:
                meshes.append(name)
    return meshes


def simulate_and_save(
    scenario: Scenario,
    meshes: list[str],
    out_dir: Path,
    *,
    console: Console,
    quiet: bool = False,
    records: bool = False,
) -> dict[str, Any]:
    """Run ``scenario`` for ``meshes`` with a progress bar, save the run directory
    and return its summary (shared by ``meshsim run`` and ``meshsim compare``)."""
    total = scenario.duration_s * scenario.replications * len(meshes)
    done: dict[tuple[str, int], float] = {}

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(), console=console, transient=True, disable=quiet,
    ) as bar:  # fmt: skip
        task = bar.add_task(scenario.name, total=total, state="")

        def progress(mesh_name: str, index: int, t: float) -> None:
            done[(mesh_name, index)] = t
            state = f"{mesh_name} rep {index + 1}/{scenario.replications}  t={t:.0f}s"
            bar.update(task, completed=sum(done.values()), state=state)

        result = run_scenario(scenario, meshes=meshes, progress=progress, keep_records=records)

    summary = build_summary(result)
    save_run(result, summary, scenario.to_dict(), out_dir, argv=sys.argv)
    return summary


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
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default: runs/<scenario>-<time>).",
)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to standard output.")
@click.option("--records", is_flag=True, help="Keep per-request records (records.parquet).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
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
) -> None:
    """Simulate SCENARIO.yaml for each mesh and print a summary.

    Exit status: 0 when done, 1 when an SLO of the scenario is breached, 2 for bad input.
    """
    loaded = load_scenario(scenario_path)
    for cut in events_cut_by(loaded, duration_s):
        err_console().print(f"note: --duration-s {duration_s:g} ends the run before: {cut}")
    scenario = with_overrides(loaded, duration_s=duration_s, seed=seed)
    meshes = _meshes(mesh) or list(scenario.meshes)
    console = err_console() if as_json else Console()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out if out is not None else Path("runs") / f"{scenario.name}-{stamp}"
    summary = simulate_and_save(
        scenario, meshes, out_dir, console=console, quiet=quiet, records=records
    )
    breaches = check_slos(scenario.slo, summary)
    summary_with_slo = {**summary, "slo_breaches": [str(b) for b in breaches]}
    if as_json:
        click.echo(json.dumps(summary_with_slo, indent=2, allow_nan=False))
    else:
        console.print(summary_renderable(summary))
    for b in breaches:
        console.print(f"[bold red]SLO breached[/] {b}", highlight=False)
    console.print(f"results saved in [bold]{out_dir}[/]", highlight=False)
    if breaches:
        sys.exit(EXIT_SLO_BREACH)
