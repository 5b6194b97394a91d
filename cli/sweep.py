"""``meshsim sweep``: run a sweep file's points on a process pool or a Dask cluster."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meshsim.sweep import DaskExecutor, Executor, LocalExecutor, load_sweep, run_sweep

from .common import OutputDir, user_errors


@click.command()
@click.argument("sweep_path", metavar="SWEEP.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="local: a process pool on this machine; dask: a dask.distributed cluster.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Dask scheduler (tcp://host:8786); without it, a LocalCluster on this machine.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes (local) or LocalCluster workers (dask). Default: the CPU count.",
)
@click.option(
    "--out",
    type=OutputDir(),
    default=None,
    help="Output directory (default: runs/sweep-<name>); running again resumes.",
)
@click.option(
    "--model-samples",
    type=click.IntRange(min=0, max=64),
    default=None,
    help="Cost-model parameter sets per point (rows with model_set 0..N-1 beside the central "
    "run's), overriding the scenario's model_samples.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def sweep(
    sweep_path: Path,
    executor: str,
    scheduler: str | None,
    workers: int | None,
    out: Path | None,
    model_samples: int | None,
    quiet: bool,
) -> None:
    """Run every point of SWEEP.yaml and write one Parquet file per point.

    Points already in the output directory are skipped, so an interrupted sweep resumes
    where it stopped. Exit status: 0 when done, 2 for bad input or a failed point.
    """
    spec = load_sweep(sweep_path)
    if model_samples is not None:
        # Part of every point's scenario, so a different N is a different sweep (ids differ).
        spec = dataclasses.replace(spec, base={**spec.base, "model_samples": model_samples})
    if scheduler is not None and executor != "dask":
        raise click.UsageError("--scheduler needs --executor dask")
    runner: Executor = (
        DaskExecutor(scheduler=scheduler, workers=workers)
        if executor == "dask"
        else LocalExecutor(workers)
    )
    out_dir = out if out is not None else Path("runs") / f"sweep-{spec.spec.name}"
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("points"), TimeElapsedColumn(), console=console, disable=quiet,
    ) as bar:  # fmt: skip
        task = bar.add_task(spec.spec.name, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with _sigterm_interrupts():
            outcome = run_sweep(spec, out_dir, executor=runner, progress=progress)
    if outcome.set_aside:
        console.print(
            f"note: {len(outcome.set_aside)} incomplete point file(s) were set aside as "
            f".<point_id>.parquet.corrupt in {out_dir / 'points'} and their points run again",
            highlight=False,
        )
    console.print(
        f"{outcome.total} points: {len(outcome.ran)} run, {outcome.skipped} already done; "
        f"results in [bold]{out_dir / 'points'}[/] (pandas.read_parquet reads the folder)",
        highlight=False,
    )


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the sweep as Ctrl-C does: the points written so far stay, the pool's
    workers are stopped, and running the sweep again resumes."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a sweep run from a thread)
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
