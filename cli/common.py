"""What every command shares: error handling and consoles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from meshsim.errors import MeshsimError

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
