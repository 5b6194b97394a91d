"""Reading YAML that may be hostile or careless: limits, strict keys, and line marks.

The document is composed once into a node tree (which keeps every line), checked against
the limits below, and then constructed into plain data from that same tree. Every way a
document can fail (syntax, a duplicate key, a list used as a key, a number too long to
read, nesting or aliases beyond the limits) becomes a :class:`ScenarioError`-like error
that names the line, never a traceback or a run that does not end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from meshsim.errors import Problem, ScenarioError

# Limits. A real scenario is far below each of them: the largest shipped scenario
# (control-plane-scale.yaml, 2,000 services) is 0.3 MB, ~60,000 nodes, 5 levels deep, with
# no aliases. They exist so that no file of any shape can exhaust memory, the stack or time.

MAX_FILE_BYTES = 16 * 1024 * 1024
"""16 MiB: ten times a 32,767-service call tree written one service per line (2.4 MB)."""
MAX_DEPTH = 64
"""Nesting levels, counted through aliases. The format needs at most ~8 (services, a version,
its calls, a call's headers); beyond a few hundred, PyYAML and pydantic exhaust the stack."""
MAX_NODES = 2_000_000
"""Values in the document once every alias is expanded (each alias counts as a full copy of
what it names). A "billion laughs" document of a few hundred bytes expands to 10^9; every
consumer of the data (validation, error messages) walks the expanded tree. 2 million is
about three 32,767-service call trees."""
MAX_NUMBER_CHARS = 40
"""Characters of a number literal. The largest number any key accepts has 20 digits
(a seed, 2^63 - 1); Python refuses to read integers of more than 4,300 digits at all."""

MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

# YAML 1.1 reads `1:30` as the base-60 integer 90 and `1:30.5` as 90.5 (sexagesimal), which
# silently turns a typo or a time into a number; a number is written in base 10 here, with
# YAML 1.2's exponent form (`1e6`) accepted as a float as in every other YAML 1.2 reader.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


if yaml.__with_libyaml__:
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.cyaml import CParser  # type: ignore[attr-defined]
    from yaml.resolver import Resolver

    class _Loader(Composer, CParser, SafeConstructor, Resolver):
        """libyaml's parser (2 to 3 times faster on large files) under PyYAML's own
        composer, which the limits below need to count nodes as they are made."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader  # type: ignore[misc,assignment]


class StrictLoader(_Loader):
    """SafeLoader with the limits above, no base-60 numbers, and strict mapping keys:
    a duplicate key is an error (PyYAML would keep the last one silently) and a key must
    be a plain value (``? [a, b]`` would fail with a TypeError inside PyYAML)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self.aliases = False
        """Whether the document has an alias (without one, its tree is what was composed)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # Counting here stops a deep or huge document while it is read, before PyYAML's
        # recursive composer exhausts the stack or the node tree exhausts memory.
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep (the limit)",
                    self._mark(),
                )  # fmt: skip
            if self._nodes > MAX_NODES:
                raise ComposerError(
                    None, None, f"more than {MAX_NODES:,} values (the limit)",
                    self._mark(),
                )  # fmt: skip
            if self.check_event(yaml.AliasEvent):
                self.aliases = True
            node: yaml.Node = super().compose_node(parent, index)  # type: ignore[assignment]
            return node
        finally:
            self._depth -= 1

    def _mark(self) -> yaml.Mark:
        event: Any = self.peek_event()
        mark: yaml.Mark = event.start_mark
        return mark

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            # e.g. `!!timestamp 2024-13-45`: PyYAML lets Python's own error through.
            raise ConstructorError(
                None, None, f"cannot read {_shown(node)}: {exc}", node.start_mark
            ) from None


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        return repr(text if len(text) <= 40 else text[:37] + "...")
    return "this value"


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue  # `<<: *defaults` (YAML 1.1 merge): keys written here override it
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise ConstructorError(
                None, None, f"a key must be a plain value such as a name, not a {kind}",
                key_node.start_mark,
            )  # fmt: skip
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable scalar, e.g. `? !!set {}` made into a set
            raise ConstructorError(
                None, None, "a key must be a plain value such as a name", key_node.start_mark
            ) from None
        if first is not None:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first given on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    if len(text) > MAX_NUMBER_CHARS:
        raise ConstructorError(
            None, None,
            f"a number of {len(text):,} characters; no key takes more than {MAX_NUMBER_CHARS}",
            node.start_mark,
        )  # fmt: skip
    if ":" in text:  # an explicit `!!int 1:30`
        raise ConstructorError(
            None, None, f"{text!r} is not a base-10 number (base-60 is not read)", node.start_mark
        )
    value: int = yaml.SafeLoader.construct_yaml_int(loader, node)
    return value


def _construct_float(loader: StrictLoader, node: yaml.ScalarNode) -> float:
    text = str(node.value)
    if len(text) > MAX_NUMBER_CHARS or ":" in text:
        raise ConstructorError(
            None, None, f"{_shown(node)} is not a number of at most {MAX_NUMBER_CHARS} "
            "characters in base 10", node.start_mark,
        )  # fmt: skip
    value: float = yaml.SafeLoader.construct_yaml_float(loader, node)
    return value


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[type-var]
StrictLoader.add_constructor(_INT_TAG, _construct_int)  # type: ignore[type-var]
StrictLoader.add_constructor(_FLOAT_TAG, _construct_float)  # type: ignore[type-var]


class StrictDumper(yaml.SafeDumper):
    """Writes YAML that :class:`StrictLoader` reads back as it was: a string the loader would
    take for a number (``1e3``, ``0E0``: YAML 1.2 floats, which PyYAML's own 1.1 resolver
    writes bare) is quoted, as its implicit resolvers are the loader's."""


StrictDumper.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in StrictLoader.yaml_implicit_resolvers.items()
}


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` through :class:`StrictDumper`: text the scenario loader reads back
    to the same values (a run directory's ``scenario.yaml``)."""
    text: str = yaml.dump(data, Dumper=StrictDumper, **kwargs)
    return text


# --------------------------------------------------------------------------- parsing


def read_text(path: Path) -> str:
    """A file's text, read no further than the size limit (``/dev/zero`` never ends)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError([Problem("", "no such file")], str(path)) from None
    except OSError as exc:
        raise ScenarioError([Problem("", f"cannot be read: {exc}")], str(path)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(
            [Problem("", f"larger than the limit of {MAX_FILE_BYTES:,} bytes")], str(path)
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError([Problem("", f"cannot be read: {exc}")], str(path)) from None


def parse_yaml(text: str, path: str | None) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree, or a :class:`ScenarioError` with a line."""

    def fail(problem: Problem) -> ScenarioError:
        return ScenarioError([problem], path)

    if len(text) > MAX_FILE_BYTES:
        raise fail(Problem("", f"{len(text):,} characters; the limit is {MAX_FILE_BYTES:,}"))
    node: yaml.Node | None = None
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and loader.aliases:
            _check_expansion(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        # A duplicate key is found after composing: name its field path too.
        field = key_path_at(node, mark) if mark is not None else None
        raise fail(
            Problem(field or "", f"not valid YAML: {what}", line=line, column=column)
        ) from None
    except yaml.YAMLError as exc:
        raise fail(Problem("", f"not valid YAML: {exc}")) from None
    except RecursionError:  # a last resort: the limits above are meant to prevent it
        raise fail(Problem("", f"not valid YAML: nested too deep (limit {MAX_DEPTH})")) from None
    finally:
        loader.dispose()
    return data, node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose alias-expanded tree is too large, too deep or cyclic.

    Aliases make the node tree a graph: one pass over it, remembering each node's
    expanded size and depth, measures the tree every later step would walk.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise ComposerError(
                    None, None,
                    f"aliases expand this value to {size[key]:,} values or more; the limit "
                    f"is {MAX_NODES:,}", node.start_mark,
                )  # fmt: skip
            if depth[key] > MAX_DEPTH:
                raise ComposerError(
                    None, None,
                    f"aliases nest this value more than {MAX_DEPTH} levels deep (the limit)",
                    node.start_mark,
                )  # fmt: skip
            continue
        if key in size:
            continue
        if key in on_path:
            raise ComposerError(
                None, None, "an alias refers to a value that contains it (a recursive "
                "structure, which never ends)", node.start_mark,
            )  # fmt: skip
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in reversed(_children(node)) if id(k) not in size)


def key_path_at(node: yaml.Node | None, mark: Any) -> str | None:
    """The field path of the key or value that starts at ``mark`` in ``node``, if any.

    Depth-first in document order, visiting each node once: an aliased node is searched
    where it first appears (a "billion laughs" graph has few nodes but ~10^9 paths).
    """
    if node is None:
        return None
    at = (mark.line, mark.column)
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(node, ())]
    # A block mapping starts where its first key does: prefer the key, the deepest match.
    collection: str | None = None
    while stack:
        current, parts = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if (current.start_mark.line, current.start_mark.column) == at and parts:
            if isinstance(current, yaml.ScalarNode):
                return field_path(parts)
            collection = collection or field_path(parts)
        if isinstance(current, yaml.MappingNode):
            for key_node, _ in current.value:
                if (key_node.start_mark.line, key_node.start_mark.column) == at:
                    plain = isinstance(key_node, yaml.ScalarNode)
                    return field_path([*parts, str(key_node.value)] if plain else parts)
            stack.extend(
                (value_node, (*parts, str(key_node.value)))
                for key_node, value_node in reversed(current.value)
                if isinstance(key_node, yaml.ScalarNode)
            )
        elif isinstance(current, yaml.SequenceNode):
            items = list(enumerate(current.value))
            stack.extend((item, (*parts, i)) for i, item in reversed(items))
    return collection


def field_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``("services", 2, "cpu_ms")`` as ``services[2].cpu_ms``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
