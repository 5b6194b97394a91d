"""YAML input files other than scenarios (sweeps, bench suites), with located errors.

The scenario loader's approach, reused: PyYAML gives the data and a node tree with
line marks; pydantic validates the data; each error's path is followed through the
node tree to a line, so a message names the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from meshsim.errors import InputError, Problem, ScenarioError
from meshsim.scenario.loader import explain_error, field_path, find_key_node, locate, parse_yaml
from meshsim.scenario.references import closest
from meshsim.scenario.yaml_input import read_text

M = TypeVar("M", bound=BaseModel)


class SweepError(InputError):
    """Problems in a sweep file (or in the scenarios that its points make)."""

    def __init__(self, problems: list[Problem], path: str | None = None) -> None:
        super().__init__(problems=problems, path=path, kind="sweep")


class SuiteError(InputError):
    """Problems in a bench suite file."""

    def __init__(self, problems: list[Problem], path: str | None = None) -> None:
        super().__init__(problems=problems, path=path, kind="bench suite")


def read_document(path: Path, error: type[InputError]) -> tuple[Any, yaml.Node | None]:
    """The file's data and node tree; problems are raised as ``error``."""
    try:
        # read_text stops at the size limit (a sweep file named /dev/zero never ended).
        return parse_yaml(read_text(path), str(path))
    except ScenarioError as exc:
        raise error(exc.problems, str(path)) from None


def validate(
    model: type[M],
    data: Any,
    node: yaml.Node | None,
    path: Path,
    error: type[InputError],
) -> M:
    """``data`` validated as ``model``, or ``error`` with one located problem per mistake."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise error([Problem("", f"expected a mapping, got {got}")], str(path))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(model, err, data, node) for err in exc.errors()]
        unique = sorted(set(problems), key=lambda p: (p.line or 0, p.field))
        raise error(unique, str(path)) from None


def line_of(data: Any, node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the value at ``loc``, when the node tree has it."""
    _, target = locate(loc, data, node)
    return target.start_mark.line + 1 if target is not None else None


def key_line(data: Any, node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the mapping key at ``loc`` (its last element)."""
    _, parent = locate(loc[:-1], data, node)
    key = find_key_node(parent, loc[-1])
    return key.start_mark.line + 1 if key is not None else None


def _problem(model: type[BaseModel], err: Any, data: Any, node: yaml.Node | None) -> Problem:
    loc = tuple(err["loc"])
    kind: str = err["type"]
    parts, target = locate(loc, data, node)
    field = field_path(parts)
    if kind == "extra_forbidden":
        key = parts[-1] if parts else loc[-1]
        line = key_line(data, node, tuple(parts)) if parts else None
        allowed = _allowed(model, loc[:-1])
        hint = closest(str(key), allowed)
        listed = f" (expected one of: {', '.join(allowed)})" if allowed and not hint else ""
        return Problem(field, f"unknown key '{key}'{hint}{listed}", line=line)
    if kind == "missing":
        _, parent = locate(tuple(parts[:-1]), data, node)
        line = parent.start_mark.line + 1 if parent is not None else None
        return Problem(field, f"required key '{loc[-1]}' is missing", line=line)
    line = target.start_mark.line + 1 if target is not None else None
    return Problem(field, explain_error(err), line=line)


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []
