"""Key paths into scenario data: ``workloads[0].rate_rps``, ``mesh_options.istio.workers``.

A path is dotted mapping keys and ``[i]`` list indices. Keys may hold '-' (the
``istio-ambient`` options). Setting a path creates missing mappings on the way, since
:meth:`Scenario.to_dict` leaves out keys that hold their defaults; list indices must
exist. Both the sweep (axes) and the bench suite (overrides) use these paths.
"""

from __future__ import annotations

import copy
import re
from typing import Any

Part = str | int

_TOKEN = re.compile(r"([A-Za-z_][-A-Za-z0-9_]*)|\[(\d+)\]|(\.)")


class KeyPathError(ValueError):
    """A path that is malformed or does not fit the data."""


def parse_path(path: str) -> tuple[Part, ...]:
    """``"workloads[0].rate_rps"`` -> ``("workloads", 0, "rate_rps")``."""
    parts: list[Part] = []
    pos = 0
    expect_key = True
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise KeyPathError(f"malformed key path {path!r} at character {pos + 1}")
        key, index, _dot = m.groups()
        if key is not None:
            if not expect_key:
                raise KeyPathError(f"malformed key path {path!r}: expected '.' before {key!r}")
            parts.append(key)
            expect_key = False
        elif index is not None:
            if expect_key:
                raise KeyPathError(f"malformed key path {path!r}: '[{index}]' needs a key before")
            parts.append(int(index))
        else:
            if expect_key:
                raise KeyPathError(f"malformed key path {path!r}: empty key")
            expect_key = True
        pos = m.end()
    if not parts or expect_key:
        raise KeyPathError(f"malformed key path {path!r}: it ends without a key")
    return tuple(parts)


def format_path(parts: tuple[Part, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def get_path(data: Any, parts: tuple[Part, ...]) -> Any:
    """The value at ``parts``; raises :class:`KeyPathError` when it is not there."""
    current = data
    for i, part in enumerate(parts):
        where = format_path(parts[: i + 1])
        if isinstance(part, int):
            if not isinstance(current, list) or part >= len(current):
                size = len(current) if isinstance(current, list) else 0
                raise KeyPathError(f"{where}: no such item (the list has {size})")
        elif not isinstance(current, dict) or part not in current:
            raise KeyPathError(f"{where}: no such key")
        current = current[part]
    return current


def set_path(data: dict[str, Any], parts: tuple[Part, ...], value: Any) -> None:
    """Set ``parts`` to a deep copy of ``value`` in place, creating missing mappings."""
    current: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = format_path(parts[: i + 1])
        if isinstance(part, int):
            if not isinstance(current, list):
                raise KeyPathError(f"{format_path(parts[:i])}: is not a list, cannot take [{part}]")
            if part >= len(current):
                raise KeyPathError(f"{where}: no such item (the list has {len(current)})")
            if last:
                current[part] = copy.deepcopy(value)
            else:
                current = current[part]
            continue
        if not isinstance(current, dict):
            parent = format_path(parts[:i]) or "the scenario"
            raise KeyPathError(f"{parent}: is not a mapping, cannot take key {part!r}")
        if last:
            current[part] = copy.deepcopy(value)
        else:
            nxt = current.get(part)
            if nxt is None:
                if isinstance(parts[i + 1], int):
                    raise KeyPathError(f"{where}: no such list")
                nxt = current[part] = {}
            current = nxt


def with_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with each path of ``values`` set, in the given order."""
    out = copy.deepcopy(data)
    for path, value in values.items():
        set_path(out, parse_path(path), value)
    return out


def editable(scenario: Any) -> dict[str, Any]:
    """A scenario as plain data with every key present (defaults included), so that a
    path such as ``services[0].cpu_ms.mean`` finds the key even when it holds its
    default (``Scenario.to_dict`` leaves those out)."""
    data: dict[str, Any] = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data
