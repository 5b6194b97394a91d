"""Writing an imported scenario as YAML with a comment on every generated value.

The importer builds the scenario as plain data in which any value may be wrapped in
:class:`Noted` with where it came from (``file:line Kind/name field``, or "assumed: ..."); this
module writes block YAML with each note as a comment on the value's line (or on the line before
a mapping or list), and the importer's warnings as comments at the top. :func:`plain` strips the
notes for validation with the scenario loader.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

INDENT = 2


@dataclass(frozen=True)
class Noted:
    """A value of the scenario and the note that says where it came from."""

    value: Any
    note: str


def plain(tree: Any) -> Any:
    """The data without notes."""
    if isinstance(tree, Noted):
        return plain(tree.value)
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [plain(v) for v in tree]
    return tree


def _one_line(text: str) -> str:
    return " ".join(text.split())


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}
"""Words YAML 1.1 readers take for booleans or null: written quoted."""


def _scalar(value: Any) -> str:
    # the common cases directly: PyYAML's emitter costs ~0.2 ms a value (a 2,000-service
    # import writes 40,000 of them)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and "e" not in repr(value):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML quoted one
    text: str = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    text = text.strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list) and len(value) > 0


def _unwrap(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, Noted):
        inner, note = _unwrap(value.value)
        return inner, value.note if note is None else f"{value.note}; {note}"
    return value, None


def _comment(note: str | None) -> str:
    return f"  # {_one_line(note)}" if note else ""


def _emit_mapping(
    data: dict[str, Any], indent: int, out: list[str], first_prefix: str = ""
) -> None:
    pad = " " * indent
    for i, (key, raw) in enumerate(data.items()):
        value, note = _unwrap(raw)
        lead = first_prefix if i == 0 and first_prefix else pad
        k = _scalar(key)
        if _is_container(value):
            if note:
                if i == 0 and first_prefix:
                    # the "- " line is already open: put the note after the key
                    out.append(f"{lead}{k}:{_comment(note)}")
                else:
                    out.append(f"{pad}# {_one_line(note)}")
                    out.append(f"{lead}{k}:")
            else:
                out.append(f"{lead}{k}:")
            _emit(value, indent + INDENT, out)
        else:
            shown = "{}" if value == {} else "[]" if value == [] else _scalar(value)
            out.append(f"{lead}{k}: {shown}{_comment(note)}")


def _emit_sequence(data: list[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    for raw in data:
        value, note = _unwrap(raw)
        if isinstance(value, dict) and value:
            if note:
                out.append(f"{pad}# {_one_line(note)}")
            _emit_mapping(value, indent + INDENT, out, first_prefix=f"{pad}- ")
        elif isinstance(value, list) and value:
            if note:
                out.append(f"{pad}# {_one_line(note)}")
            out.append(f"{pad}-")
            _emit(value, indent + INDENT, out)
        else:
            out.append(f"{pad}- {_scalar(value)}{_comment(note)}")


def _emit(value: Any, indent: int, out: list[str]) -> None:
    if isinstance(value, dict):
        _emit_mapping(value, indent, out)
    else:
        _emit_sequence(value, indent, out)


def dump(tree: dict[str, Any], header: Sequence[str] = ()) -> str:
    """The scenario as YAML text: ``header`` lines as comments, then the annotated data."""
    out = [f"# {_one_line(line)}" if line.strip() else "#" for line in header]
    _emit_mapping(tree, 0, out)
    return "\n".join(out) + "\n"
