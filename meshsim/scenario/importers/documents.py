"""Reading Kubernetes manifests: files and directories of multi-document YAML and ``List``s.

Each document goes through the scenario loader's hardened YAML reader
(:func:`meshsim.scenario.yaml_input.parse_yaml`: size, depth, alias and number limits, strict
keys), so a manifest cannot do what a scenario file may not (a "billion laughs", a 50 MB file, a
duplicate key). Documents are split at their ``---`` / ``...`` markers, which YAML allows only at
the start of a line, and errors keep the line numbers of the whole file.

Every resource remembers its file and the line of each of its fields, so that the importer can
say where each value of the scenario came from.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshsim.errors import InputError, Problem, ScenarioError
from meshsim.scenario.loader import locate
from meshsim.scenario.yaml_input import MAX_FILE_BYTES, field_path, parse_yaml, read_text

MAX_TOTAL_BYTES = 64 * 1024 * 1024
"""Manifests read in one import, all files together: a cluster of a few thousand workloads
dumped with ``kubectl get -o yaml`` is a few tens of MB (each file is also held to the YAML
reader's own per-file limit)."""
MAX_FILES = 10_000
"""Files read from the directories given: a repository of manifests has hundreds."""
MANIFEST_SUFFIXES = (".yaml", ".yml")
STDIN = "-"
"""The path that means standard input."""

_MARKER = re.compile(r"^(---|\.\.\.)(?=\s|$)")


class ManifestError(InputError):
    """Problems in a manifest, trace or metrics file given to ``meshsim import``."""

    def __init__(self, problems: list[Problem], path: str | None = None) -> None:
        super().__init__(problems=problems, path=path, kind="input")


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object, with where it was written."""

    kind: str
    api_version: str
    name: str
    namespace: str | None
    body: dict[str, Any]
    file: str
    node: yaml.Node | None
    line_offset: int

    @property
    def group(self) -> str:
        """The API group: ``networking.istio.io`` for ``networking.istio.io/v1``, '' for core."""
        return self.api_version.rsplit("/", 1)[0] if "/" in self.api_version else ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def get(self, *path: str | int, default: Any = None) -> Any:
        """The value at ``path`` in the object, or ``default`` if any step is missing."""
        current: Any = self.body
        for part in path:
            if isinstance(current, list) and isinstance(part, int):
                found = 0 <= part < len(current)
            else:
                found = isinstance(current, dict) and isinstance(part, str) and part in current
            if found:
                current = current[part]
            else:
                return default
        return current

    def line(self, *path: str | int) -> int | None:
        """The 1-based line of the value at ``path`` (or of its nearest written parent)."""
        _, node = locate(tuple(path), self.body, self.node)
        parts = list(path)
        while node is None and parts:
            parts.pop()
            _, node = locate(tuple(parts), self.body, self.node)
        if node is None:
            return None
        return int(node.start_mark.line) + 1 + self.line_offset

    def origin(self, *path: str | int) -> str:
        """``file:line Kind/name field`` for a provenance comment."""
        line = self.line(*path)
        where = f"{self.file}:{line}" if line is not None else self.file
        field = field_path(list(path))
        return f"{where} {self.ref}" + (f" {field}" if field else "")


@dataclass
class Manifests:
    """The resources read, and what was skipped on the way."""

    resources: list[Resource]
    skipped: list[str]
    """``file:line Kind/name`` of every object whose kind the importer does not read."""

    _by_kind: dict[str, list[Resource]] | None = field(default=None, repr=False)
    hpas: dict[tuple[str, str, str], Resource] | None = field(default=None, repr=False)
    """HorizontalPodAutoscalers by (namespace, target kind, target name), built on first use."""

    def of(self, kind: str, group: str | None = None) -> list[Resource]:
        if self._by_kind is None:
            self._by_kind = {}
            for r in self.resources:
                self._by_kind.setdefault(r.kind, []).append(r)
        found = self._by_kind.get(kind, [])
        return found if group is None else [r for r in found if r.group == group]


def manifest_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path given, and every YAML file under each directory given."""
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        if str(given) == STDIN:
            out.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file()
            )
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ManifestError([Problem("", "no such file or directory")], str(path))
        if len(out) > MAX_FILES:
            raise ManifestError(
                [Problem("", f"more than {MAX_FILES:,} manifest files (the limit)")], str(given)
            )
    return out


def _stdin_text() -> str:
    """Standard input (``kubectl get ... -o yaml | meshsim import -``), read no further than the
    YAML reader's size limit."""
    raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ManifestError(
            [Problem("", f"larger than the limit of {MAX_FILE_BYTES:,} bytes")], "<stdin>"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem("", f"cannot be read: {exc}")], "<stdin>") from None


def split_documents(text: str) -> Iterator[tuple[int, str]]:
    """``(first line index, text)`` of each document in a YAML stream.

    A document marker can only start a line (YAML 1.2, 9.1.2), so splitting by lines is exact;
    the marker itself is blanked, keeping every column where it was.
    """
    start = 0
    lines: list[str] = []
    for i, line in enumerate(text.splitlines(keepends=True)):
        m = _MARKER.match(line)
        if m is not None:
            if any(s.strip() and not s.lstrip().startswith("#") for s in lines):
                yield start, "".join(lines)
            start = i
            lines = [" " * len(m.group(1)) + line[len(m.group(1)) :]]
        else:
            lines.append(line)
    if any(s.strip() and not s.lstrip().startswith("#") for s in lines):
        yield start, "".join(lines)


def _shifted(err: ScenarioError, offset: int, path: str) -> ManifestError:
    problems = [
        Problem(p.field, p.message, None if p.line is None else p.line + offset, p.column)
        for p in err.problems
    ]
    return ManifestError(problems, path)


def read_manifests(paths: Sequence[str | Path], kinds: set[str]) -> Manifests:
    """Every object of the given ``kinds`` in ``paths``; the others are listed as skipped.

    Raises :class:`ManifestError` (file and line) for YAML that cannot be read or an object
    without ``kind``.
    """
    resources: list[Resource] = []
    skipped: list[str] = []
    total = 0
    for file in manifest_files(paths):
        name = "<stdin>" if str(file) == STDIN else str(file)
        try:
            text = _stdin_text() if str(file) == STDIN else read_text(file)
        except ScenarioError as exc:
            raise ManifestError(exc.problems, name) from None
        total += len(text)
        if total > MAX_TOTAL_BYTES:
            raise ManifestError(
                [Problem("", f"the manifests pass {MAX_TOTAL_BYTES:,} bytes in all (the limit)")],
                name,
            )
        for offset, doc in split_documents(text):
            try:
                data, node = parse_yaml(doc, name)
            except ScenarioError as exc:
                raise _shifted(exc, offset, name) from None
            for body, item_node in _objects(data, node, name, offset):
                kind = body.get("kind")
                meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
                obj_name = str(meta.get("name", "")) if meta else ""
                line = (item_node.start_mark.line + 1 + offset) if item_node else offset + 1
                if kind not in kinds:
                    skipped.append(f"{name}:{line} {kind}/{obj_name}")
                    continue
                if not obj_name:
                    raise ManifestError(
                        [Problem("metadata.name", f"a {kind} needs metadata.name", line=line)],
                        name,
                    )
                ns = meta.get("namespace") if meta else None
                resources.append(
                    Resource(
                        kind=str(kind),
                        api_version=str(body.get("apiVersion", "")),
                        name=obj_name,
                        namespace=str(ns) if ns is not None else None,
                        body=body,
                        file=name,
                        node=item_node,
                        line_offset=offset,
                    )
                )
    return Manifests(resources, skipped)


def _objects(
    data: Any, node: yaml.Node | None, path: str, offset: int
) -> Iterator[tuple[dict[str, Any], yaml.Node | None]]:
    """The objects of one document: itself, or the items of a ``List`` (``kubectl get``)."""
    if data is None:
        return
    line = (node.start_mark.line + 1 + offset) if node is not None else None
    if not isinstance(data, dict):
        raise ManifestError(
            [
                Problem(
                    "",
                    f"expected a Kubernetes object (a mapping), got a {type(data).__name__}",
                    line=line,
                )
            ],
            path,
        )
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ManifestError([Problem("kind", "a Kubernetes object needs 'kind'", line=line)], path)
    if kind == "List" or (kind.endswith("List") and isinstance(data.get("items"), list)):
        items = data.get("items") or []
        if not isinstance(items, list):
            raise ManifestError([Problem("items", "expected a list", line=line)], path)
        items_node = None
        if isinstance(node, yaml.MappingNode):
            items_node = next((v for k, v in node.value if k.value == "items"), None)
        for i, item in enumerate(items):
            item_node = items_node.value[i] if isinstance(items_node, yaml.SequenceNode) else None
            if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                if isinstance(item, dict) and kind != "List":
                    # `kubectl get deployments -o yaml` items carry their kind; a typed list
                    # (DeploymentList) may leave it out.
                    item = {**item, "kind": kind.removesuffix("List")}
                else:
                    item_line = (
                        item_node.start_mark.line + 1 + offset if item_node is not None else line
                    )
                    raise ManifestError(
                        [Problem(f"items[{i}]", "expected an object with 'kind'", line=item_line)],
                        path,
                    )
            yield item, item_node
        return
    yield data, node


def read_json(path: Path, max_bytes: int, too_big: str) -> Any:
    """A JSON file parsed whole, refused with ``too_big`` (what to do instead) above
    ``max_bytes`` before anything is read, and with its line when it is not JSON."""
    if path.stat().st_size > max_bytes:
        raise ManifestError([Problem("", f"larger than {max_bytes:,} bytes; {too_big}")], str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        raise ManifestError([Problem("", f"not valid JSON: {exc}", line=line)], str(path)) from None
