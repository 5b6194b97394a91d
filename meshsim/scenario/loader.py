"""Loading scenario files, with errors that name the file, line, field and expectation.

PyYAML gives the document twice: as a node tree with line marks (``yaml.compose``)
and as plain data. pydantic validates the data; each of its errors carries a path
into the data, which :func:`_locate` follows through the node tree to a line.
"""

from __future__ import annotations

import hashlib
import itertools
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from meshsim.errors import Problem, ScenarioError
from meshsim.scenario.limits import cost_problems
from meshsim.scenario.model import Scenario
from meshsim.scenario.references import Loc, check_references, closest
from meshsim.scenario.runnable import build_problems
from meshsim.scenario.yaml_input import field_path, parse_yaml, read_text

__all__ = [
    "explain_error",
    "field_path",
    "find_key_node",
    "from_dict",
    "load_buildable_scenario",
    "load_scenario",
    "loads",
    "locate",
    "parse_yaml",
    "scenario_sha256",
]

MAX_PROBLEMS = 50
"""Problems reported at once: enough to fix a file in one pass; a file with 30,000 bad
references would otherwise spend minutes finding close names and print megabytes."""


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises :class:`ScenarioError` on any problem."""
    path = Path(path)
    return loads(read_text(path), str(path))


def load_buildable_scenario(path: str | Path) -> Scenario:
    """:func:`load_scenario`, then build every mesh of the scenario as a run would (running
    nothing), so that what ``meshsim run`` would refuse is refused here, at its line."""
    path = Path(path)
    data, node = parse_yaml(read_text(path), str(path))
    scenario = from_dict(data, path=str(path), node=node)
    problems = [_problem(loc, msg, data, node) for loc, msg in build_problems(scenario)]
    if problems:
        raise ScenarioError(problems, str(path))
    return scenario


def loads(text: str, path: str | None = None) -> Scenario:
    """Validate a scenario given as YAML text."""
    data, node = parse_yaml(text, path)
    return from_dict(data, path=path, node=node)


def from_dict(data: Any, *, path: str | None = None, node: yaml.Node | None = None) -> Scenario:
    """Validate a scenario given as plain data (as notebooks build it)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ScenarioError(
            [
                Problem(
                    "", f"expected a mapping of scenario keys (meshsim: 1, name, ...), got {got}"
                )
            ],
            path,
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        errors = _fitting_branch(exc.errors(), data)
        problems = [_problem_from_pydantic(err, data, node) for err in errors[:MAX_PROBLEMS]]
        raise ScenarioError(_unique(problems) + _more(len(errors)), path) from None
    found = list(itertools.islice(check_references(scenario), MAX_PROBLEMS + 1))
    problems = [_problem(loc, msg, data, node) for loc, msg in found[:MAX_PROBLEMS]]
    if problems:
        raise ScenarioError(problems + _more(len(found)), path)
    problems = [_problem(loc, msg, data, node) for loc, msg in cost_problems(scenario)]
    if problems:
        raise ScenarioError(problems, path)
    return scenario


_SHAPE_ERRORS = frozenset({"list_type", "dict_type", "model_type", "model_attributes_type"})


def _fitting_branch(errors: list[Any], data: Any) -> list[Any]:
    """Drop the union branches the input does not have the shape of.

    A key that takes one spec or a list of them (``cluster.host_speed``) gets an error from
    each branch: a mapping with a bad value is reported as that value's problem *and* as
    "expected a list". Where some error under a location is not about its shape, the shape
    errors of the other branches there are noise."""

    def prefix(err: Any) -> tuple[Any, ...]:
        return tuple(locate(tuple(err["loc"]), data, None)[0])

    real = {prefix(e) for e in errors if e["type"] not in _SHAPE_ERRORS}
    return [
        e
        for e in errors
        if e["type"] not in _SHAPE_ERRORS
        or not any(prefix(e)[: len(r)] == r or r[: len(prefix(e))] == prefix(e) for r in real)
    ]


def _more(count: int) -> list[Problem]:
    if count <= MAX_PROBLEMS:
        return []
    return [Problem("", f"... and more problems; only the first {MAX_PROBLEMS} are shown")]


def scenario_sha256(scenario: Scenario) -> str:
    """A hash of the validated scenario (not of its file's bytes or comments)."""
    canonical = yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- error locations


def _unique(problems: list[Problem]) -> list[Problem]:
    out = list(dict.fromkeys(problems))
    return sorted(out, key=lambda p: (p.line or 0, p.field))


def locate(loc: Loc, data: Any, node: yaml.Node | None) -> tuple[list[str | int], yaml.Node | None]:
    """Follow ``loc`` through the data; keep the elements that are real keys or indices.

    pydantic inserts names of union members into locations (``events.0.kill.count``);
    those match nothing in the document and are dropped.
    """
    kept: list[str | int] = []
    current: Any = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and part in current:
            current = current[part]
            node = _child(node, part)
            kept.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            node = node.value[part] if isinstance(node, yaml.SequenceNode) else None
            kept.append(part)
        elif last and isinstance(part, str) and isinstance(current, dict) and "[" not in part:
            # A missing key: point at its parent mapping. (A name with brackets is a union
            # member's, such as "function-after[_rising(), WakeupLatency]", not a key.)
            kept.append(part)
    return kept, node


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    # The last match: after a merge (`<<: *defaults`) the merged keys come first and the
    # keys written in the mapping itself, which win, after them.
    for key_node, value_node in reversed(node.value):
        if key_node.value == str(key) or _scalar(key_node) == key:
            found: yaml.Node = value_node
            return found
    return None


def find_key_node(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, _ in reversed(node.value):
        if key_node.value == str(key):
            found: yaml.Node = key_node
            return found
    return None


def _scalar(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        try:
            return yaml.safe_load(node.value) if node.tag != "tag:yaml.org,2002:str" else node.value
        except yaml.YAMLError:
            return node.value
    return None


def _problem(loc: Loc, message: str, data: Any, node: yaml.Node | None) -> Problem:
    parts, target = locate(loc, data, node)
    # A problem of the whole scenario has no line (the document's first line means nothing).
    line = target.start_mark.line + 1 if target is not None and loc else None
    return Problem(field_path(parts), message, line=line)


def _problem_from_pydantic(err: Any, data: Any, node: yaml.Node | None) -> Problem:
    loc: Loc = tuple(err["loc"])
    kind: str = err["type"]
    parts, target = locate(loc, data, node)
    field = field_path(parts)
    if kind in ("extra_forbidden", "missing"):
        # Point at the key (unknown) or at the mapping that lacks it (missing).
        _parent_parts, parent = locate(tuple(parts[:-1]), data, node)
        key = parts[-1] if parts else loc[-1]
        allowed = _allowed_keys(loc[:-1])
        if kind == "extra_forbidden":
            found_key = find_key_node(parent, key)
            line = found_key.start_mark.line + 1 if found_key is not None else None
            hint = closest(str(key), allowed)
            listed = f" (expected one of: {', '.join(allowed)})" if allowed and not hint else ""
            return Problem(field, f"unknown key '{key}'{hint}{listed}", line=line)
        line = parent.start_mark.line + 1 if parent is not None else None
        return Problem(field, f"required key '{key}' is missing", line=line)
    line = target.start_mark.line + 1 if target is not None else None
    return Problem(field, explain_error(err), line=line)


def explain_error(err: Any) -> str:
    kind: str = err["type"]
    msg: str = err["msg"]
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "assertion_error":
        return msg.removeprefix("Assertion failed, ")
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        return f"expected one of {expected} (got {shown}){closest(str(value), options)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tags = str(ctx.get("expected_tags", ""))
        tag = str(ctx.get("tag", ""))
        options = [o.strip().strip("'") for o in tags.split(",")]
        return f"expected {ctx.get('discriminator', 'a tag')} to be one of {tags} (got '{tag}')" + (
            closest(tag, options)
        )
    if kind == "union_tag_not_found":
        return f"needs {err.get('ctx', {}).get('discriminator', 'a tag')}"
    expectations = {
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
    }
    if kind in expectations:
        return f"expected {expectations[kind]}, got {shown} ({type(value).__name__})"
    return f"{msg[0].lower()}{msg[1:]} (got {shown})"


# --------------------------------------------------------------------------- allowed keys


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys that the model at ``loc`` accepts, for 'did you mean' hints."""
    current: Any = Scenario
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    model = _as_model(current)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _as_model(tp: Any) -> type[BaseModel] | None:
    for candidate in _members(tp):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _members(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_members(arg))
        return out
    return [tp]


def _step(tp: Any, part: str | int) -> Any:
    for member in _members(tp):
        origin = typing.get_origin(member)
        if isinstance(part, int) and origin is list:
            return typing.get_args(member)[0]
        if isinstance(part, str) and origin is dict:
            return typing.get_args(member)[1]
        if isinstance(part, str) and isinstance(member, type) and issubclass(member, BaseModel):
            for name, info in member.model_fields.items():
                if part in (name, info.alias):
                    return info.annotation
    # A union member named by its tag (events.0.kill...): pick the member with that tag.
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            action = member.model_fields.get("action")
            if action is not None and part in typing.get_args(action.annotation):
                return member
    return None
