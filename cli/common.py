"""What every command shares: error handling and consoles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from meshsim.errors import MeshsimError

if TYPE_CHECKING:
    from meshsim.api import Progress as RunProgress
    from meshsim.scenario.model import Scenario
    from meshsim.sweep.executors import Executor

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_SLO_BREACH = 1
EXIT_BAD_INPUT = 2


def user_errors(func: F) -> F:
    """Turn meshsim's user-facing errors into a clean message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeshsimError as exc:
            err_console().print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


def err_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def scenario_argument(func: F) -> F:
    """The SCENARIO.yaml argument, passed as ``scenario_path``."""
    decorated: F = click.argument(
        "scenario_path", metavar="SCENARIO.yaml", type=click.Path(dir_okay=False, path_type=str)
    )(func)
    return decorated


class OutputDir(click.Path):
    """A directory to write results into. An empty value is refused: it would mean the
    current directory, where results would mix with whatever else is there."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must name a directory (it is empty)", param, ctx)
        return super().convert(value, param, ctx)


@contextmanager
def run_progress(
    scenario: Scenario, meshes: list[str], console: Console, *, quiet: bool = False
) -> Iterator[RunProgress]:
    """A progress bar over every mesh and replication of ``scenario``; yields the callback
    for :func:`meshsim.api.run_and_save`."""
    runs = scenario.replications + scenario.model_samples
    total = scenario.duration_s * runs * len(meshes)
    done: dict[tuple[str, int], float] = {}
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(), console=console, transient=True, disable=quiet,
    ) as bar:  # fmt: skip
        task = bar.add_task(scenario.name, total=total, state="")

        def progress(mesh_name: str, index: int, t: float) -> None:
            done[(mesh_name, index)] = t
            if index < scenario.replications:
                which = f"rep {index + 1}/{scenario.replications}"
            else:
                which = f"model set {index - scenario.replications + 1}/{scenario.model_samples}"
            finished = sum(1 for v in done.values() if v >= scenario.duration_s)
            state = (
                f"{mesh_name} {which}  t={t:.0f}s  "
                f"({finished}/{runs * len(meshes)} simulations done)"
            )
            bar.update(task, completed=sum(done.values()), state=state)

        yield progress


def parallel_options(func: F) -> F:
    """``--jobs``, ``--executor``, ``--scheduler`` and ``--model-samples``, passed as
    ``jobs``, ``executor``, ``scheduler`` and ``model_samples``."""
    for option in reversed(
        [
            click.option(
                "--jobs",
                "-j",
                type=click.IntRange(min=1, max=1024),
                default=None,
                help="Simulations run at once in a local process pool (default: one per core). "
                "Results are bit-identical whatever the number.",
            ),
            click.option(
                "--executor",
                type=click.Choice(["local", "dask"]),
                default="local",
                show_default=True,
                help="Where the simulations run: this machine's process pool, or Dask.",
            ),
            click.option(
                "--scheduler",
                default=None,
                metavar="ADDRESS",
                help="Dask scheduler (tcp://host:8786); without it, a LocalCluster here.",
            ),
            click.option(
                "--model-samples",
                type=click.IntRange(min=0, max=64),
                default=None,
                help="Cost-model parameter sets drawn over the models' ranges, each rerunning "
                "every mesh once, so each number gets a model band (default: the scenario's "
                "model_samples, else 0).",
            ),
        ]
    ):
        func = option(func)
    return func


def make_executor(jobs: int | None, executor: str, scheduler: str | None) -> Executor | None:
    """The executor the options ask for; None means run_scenario's own pool of ``jobs``."""
    if scheduler is not None and executor != "dask":
        raise click.UsageError("--scheduler needs --executor dask")
    if executor == "dask":
        from meshsim.sweep.executors import DaskExecutor

        return DaskExecutor(scheduler=scheduler, workers=jobs)
    return None
