"""Errors that meshsim reports to a person, never as a traceback.

Every error a user can cause (a bad scenario, a bad model file, a bad sweep) is a
:class:`MeshsimError`. The CLI prints its message and exits with status 2.
"""

from __future__ import annotations

from dataclasses import dataclass


class MeshsimError(Exception):
    """A user-facing error: the message says what was wrong and what was expected."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file."""

    field: str
    """Dotted path of the offending key, e.g. ``services[2].cpu_ms.mean``."""
    message: str
    """What was wrong and what was expected."""
    line: int | None = None
    """1-based line in the file, when known."""
    column: int | None = None

    def render(self, path: str | None) -> str:
        where = path or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass
class InputError(MeshsimError):
    """One or more problems found in an input file (scenario, model, sweep)."""

    problems: list[Problem]
    path: str | None = None
    kind: str = "input"

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"invalid {self.kind}" + (f" {self.path}" if self.path else "")
        lines = [p.render(self.path) for p in self.problems]
        return (
            head
            + f" ({len(lines)} problem{'s' if len(lines) != 1 else ''}):\n  "
            + "\n  ".join(lines)
        )


class ScenarioError(InputError):
    """Problems in a scenario file."""

    def __init__(self, problems: list[Problem], path: str | None = None) -> None:
        super().__init__(problems=problems, path=path, kind="scenario")


class ModelError(InputError):
    """Problems in a cost-model file."""

    def __init__(self, problems: list[Problem], path: str | None = None) -> None:
        super().__init__(problems=problems, path=path, kind="model")
