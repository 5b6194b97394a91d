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

        yield progress
