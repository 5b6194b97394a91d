"""Locating, reading and checking model files (errors name file, line and field)."""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import yaml
from pydantic import ValidationError

from meshsim.errors import ModelError, Problem
from meshsim.models.cost import Anchor, Parameter, ParameterRange, ProxyCostModel
from meshsim.models.parameters import (
    DEFAULT_MODEL_NAMES,
    KINDS,
    PARAMETER_SPECS,
    Kind,
    ParameterSpec,
    optional_parameters,
    required_parameters,
)
from meshsim.resources import package_data_dir

TOP_LEVEL_KEYS: Final = ("kind", "describes", "measured_on", "anchor", "parameters")
REQUIRED_TOP_LEVEL_KEYS: Final = ("kind", "describes", "parameters")

# --------------------------------------------------------------------------- locating files


def models_dir() -> Path:
    """The shipped ``models/`` folder: ``$MESHSIM_MODELS_DIR`` or the package data.

    The repository's ``models/`` is installed as the package ``meshsim._models`` (see
    pyproject.toml), so an editable install and a wheel find the same files.
    """
    env = os.environ.get("MESHSIM_MODELS_DIR")
    if env:
        return Path(env)
    return package_data_dir("meshsim._models")


def model_names() -> list[str]:
    """Names accepted by :func:`load_model` (the ``models/*.yaml`` stems)."""
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    text = os.fspath(path_or_name)
    looks_like_path = (
        isinstance(path_or_name, Path)
        or os.sep in text
        or "/" in text
        or text.endswith((".yaml", ".yml"))
    )
    if looks_like_path:
        return Path(text)
    candidate = models_dir() / f"{text}.yaml"
    if not candidate.is_file():
        names = model_names()
        hint = _suggest(text, names)
        raise ModelError(
            [
                Problem(
                    field="",
                    message=f"no model named {text!r} in {models_dir()}; "
                    f"available: {', '.join(names) or 'none'}{hint}",
                )
            ],
            path=text,
        )
    return candidate


def load_model(path_or_name: str | os.PathLike[str]) -> ProxyCostModel:
    """Load and check a model: a bare name means ``models/<name>.yaml``, else a file path."""
    path = _resolve(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(
            [Problem(field="", message=f"cannot read model file: {exc}")], path=str(path)
        ) from None
    return parse_model(text, path=str(path))


@cache
def _cached(path: str, mtime_ns: int) -> ProxyCostModel:
    del mtime_ns  # part of the cache key only: an edited file is read again
    return load_model(Path(path))


def default_model(kind: Kind) -> ProxyCostModel:
    """The shipped model for a kind of proxy (see :data:`DEFAULT_MODEL_NAMES`)."""
    if kind not in DEFAULT_MODEL_NAMES:
        raise ValueError(f"unknown proxy kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = models_dir() / f"{DEFAULT_MODEL_NAMES[kind]}.yaml"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1
    model = _cached(str(path), mtime)
    if model.kind != kind:
        raise ModelError(
            [
                Problem(
                    field="kind",
                    message=f"expected {kind!r} for the default {kind} model, found {model.kind!r}",
                    line=None,
                )
            ],
            path=str(path),
        )
    return model


# --------------------------------------------------------------------------- parsing


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class _Lines:
    """1-based lines of keys and values, by path, from PyYAML's node marks."""

    key: dict[tuple[str, ...], int] = field(default_factory=dict)
    value: dict[tuple[str, ...], int] = field(default_factory=dict)

    def of(self, path: tuple[str, ...], *, value: bool = False) -> int | None:
        # Walk up to the nearest known ancestor so every problem gets some line.
        while path:
            table = self.value if value else self.key
            if path in table:
                return table[path]
            if path in self.key:
                return self.key[path]
            path = path[:-1]
        return self.value.get((), None)


def _index(
    node: yaml.Node,
    path: tuple[str, ...],
    lines: _Lines,
    problems: list[Problem],
    seen_nodes: set[int] | None = None,
) -> None:
    # An alias reuses its anchor's node, so a self-referencing alias would recurse forever:
    # index each node once (its first path is where it was written).
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    lines.value.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            name = str(k.value)
            child = (*path, name)
            if name in seen:
                problems.append(
                    Problem(
                        field=".".join(child),
                        line=k.start_mark.line + 1,
                        message="duplicate key; each key may appear once",
                    )
                )
            seen.add(name)
            lines.key.setdefault(child, k.start_mark.line + 1)
            _index(v, child, lines, problems, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, str(i)), lines, problems, seen_nodes)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def _type_name(x: object) -> str:
    if x is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(x), type(x).__name__)


def parse_model(text: str, *, path: str | None = None) -> ProxyCostModel:
    """Check the text of a model file and return the model, or raise :class:`ModelError`.

    Every problem found is reported at once, each with its line and dotted field path.
    """
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ModelError(
            [Problem(field="", message=f"not valid YAML: {reason}", line=line)], path=path
        ) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors can raise plain Python errors on odd scalars (e.g. huge ints).
        raise ModelError([Problem(field="", message=f"not valid YAML: {exc}")], path=path) from None

    lines = _Lines()
    if root is not None:
        _index(root, (), lines, problems)
    if not isinstance(data, dict):
        raise ModelError(
            [
                Problem(
                    field="",
                    line=lines.of((), value=True),
                    message=f"expected a mapping with keys {', '.join(REQUIRED_TOP_LEVEL_KEYS)}, "
                    f"found {_type_name(data)}",
                )
            ],
            path=path,
        )

    def add(fpath: tuple[str, ...], message: str, *, value: bool = False) -> None:
        problems.append(
            Problem(field=_dotted(fpath), message=message, line=lines.of(fpath, value=value))
        )

    for key in data:
        if str(key) not in TOP_LEVEL_KEYS:
            add(
                (str(key),),
                f"unknown key; expected one of {', '.join(TOP_LEVEL_KEYS)}"
                f"{_suggest(str(key), TOP_LEVEL_KEYS)}",
            )
    problems.extend(
        Problem(
            field=key,
            line=1,
            message=f"missing; every model file needs {', '.join(REQUIRED_TOP_LEVEL_KEYS)}",
        )
        for key in REQUIRED_TOP_LEVEL_KEYS
        if key not in data
    )

    kind = data.get("kind")
    if "kind" in data and kind not in KINDS:
        add(
            ("kind",),
            f"expected one of {', '.join(KINDS)}, found {kind!r}{_suggest(str(kind), KINDS)}",
            value=True,
        )
    for key in ("describes", "measured_on"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            add(
                (key,),
                f"expected a non-empty string (product, version and setup), found "
                f"{_type_name(data[key])}",
                value=True,
            )

    anchor = _check_anchor(data["anchor"], add) if "anchor" in data else None
    params = _check_parameters(data, kind, add)

    if problems:
        problems.sort(key=lambda p: (p.line if p.line is not None else 0, p.field))
        raise ModelError(problems, path=path)
    assert kind in KINDS  # narrowed by the checks above
    return ProxyCostModel(
        kind=kind,
        describes=data["describes"],
        measured_on=data.get("measured_on"),
        path=path,
        parameters=MappingProxyType(params),
        anchor=anchor,
    )


def _check_anchor(raw: Any, add: Any) -> Anchor | None:
    """The file's ``anchor``, None when it is malformed (each problem reported)."""
    if not isinstance(raw, dict):
        add(("anchor",), f"expected a mapping, found {_type_name(raw)}", value=True)
        return None
    anchor: Anchor | None = _validate(Anchor, raw, ("anchor",), add)
    if anchor is not None and anchor.tls_connections > anchor.connections:
        add(("anchor", "tls_connections"), "cannot exceed anchor.connections", value=True)
        return None
    if anchor is not None and not _anchor_range_ok(anchor, add):
        return None
    return anchor


def _check_parameters(data: dict[Any, Any], kind: Any, add: Any) -> dict[str, Parameter]:
    """The file's well-formed parameters; every unknown, malformed or missing one reported."""
    params: dict[str, Parameter] = {}
    raw_params = data.get("parameters")
    if "parameters" in data and not isinstance(raw_params, dict):
        add(
            ("parameters",),
            f"expected a mapping of parameter names to "
            f"{{value, unit, source}}, found {_type_name(raw_params)}",
            value=True,
        )
        return params
    if not isinstance(raw_params, dict):
        return params
    required = required_parameters(kind) if kind in KINDS else tuple(PARAMETER_SPECS)
    expected = (*required, *optional_parameters(kind)) if kind in KINDS else required
    for name, entry in raw_params.items():
        ppath = ("parameters", str(name))
        if str(name) not in expected:
            where = f"for kind {kind!r}" if kind in KINDS else "at all"
            known = str(name) in PARAMETER_SPECS
            msg = (
                f"not a parameter of a {kind} model"
                if known and kind in KINDS
                else f"unknown parameter {where}"
            )
            add(ppath, msg + _suggest(str(name), expected))
            continue
        param = _check_parameter(PARAMETER_SPECS[str(name)], entry, ppath, add)
        if param is not None:
            params[str(name)] = param
    if kind in KINDS:
        for name in required:
            if name not in raw_params:
                spec = PARAMETER_SPECS[name]
                add(
                    ("parameters", name),
                    f"missing; a {kind} model needs {name} ({spec.meaning}, in {spec.unit})",
                )
    return params


def _validate(
    model: type[Any],
    raw: dict[Any, Any],
    base: tuple[str, ...],
    add: Any,
    skip: frozenset[str] = frozenset(),
) -> Any:
    """Validate with pydantic, turning each error into a Problem at the right line.

    ``skip`` names fields already reported by a clearer custom check.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            if loc and loc[0] in skip:
                continue
            fpath = (*base, *loc)
            if err["type"] == "missing":
                add(fpath, "missing")
            elif err["type"] == "extra_forbidden":
                fields = list(model.model_fields)
                add(
                    fpath,
                    f"unknown key; expected one of {', '.join(fields)}"
                    f"{_suggest(loc[-1] if loc else '', fields)}",
                )
            else:
                got = err.get("input")
                add(fpath, f"{err['msg']}, found {_type_name(got)} {got!r}"[:300], value=True)
        return None


_RANGE_KEYS: Final = ("range", "range_source")


def _anchor_range_ok(anchor: Anchor, add: Any) -> bool:
    """Check the anchor's ``vcpu_range`` as a parameter's range is checked; report, False if bad."""
    r = anchor.vcpu_range
    if r is None:
        if anchor.vcpu_range_source is not None:
            add(("anchor", "vcpu_range_source"), "given without a vcpu_range: [low, high]")
            return False
        return True
    path = ("anchor", "vcpu_range")
    if len(r) != 2 or not all(math.isfinite(b) and b > 0 for b in r):
        add(
            path,
            f"expected [low, high], two positive numbers (vCPU per 1000 rps), found {r}",
            value=True,
        )
        return False
    ok = True
    if not r[0] <= anchor.vcpu_per_1000rps <= r[1]:
        add(
            path,
            f"[{r[0]:g}, {r[1]:g}] does not contain vcpu_per_1000rps {anchor.vcpu_per_1000rps:g}",
            value=True,
        )
        ok = False
    if not (anchor.vcpu_range_source or "").strip():
        # As a parameter's range needs a source, so does the total's (principle 2).
        add(
            ("anchor", "vcpu_range_source"),
            "a vcpu_range needs a non-empty vcpu_range_source: a citation for each bound, or "
            "'derived bracket' and the derivation",
        )
        ok = False
    return ok


def _check_range(
    spec: ParameterSpec, entry: dict[Any, Any], value: float, ppath: tuple[str, ...], add: Any
) -> ParameterRange | Literal[False] | None:
    """The parameter's range, None when it has none, False when it is malformed (reported)."""
    if "range" not in entry:
        if "range_source" in entry:
            add((*ppath, "range_source"), "range_source given without a range: [low, high]")
            return False
        return None
    raw, src = entry["range"], entry.get("range_source")
    rpath = (*ppath, "range")
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in raw)
    ):
        add(
            rpath,
            f"expected [low, high] (two numbers, {spec.unit}), found {raw!r}"[:300],
            value=True,
        )
        return False
    ok = True
    if not isinstance(src, str) or not src.strip():
        # As a value needs a source, so does a range (principle 2).
        add(
            (*ppath, "range_source"),
            "a range needs a non-empty range_source: a citation for each bound, or "
            "'derived bracket' and the derivation",
            value="range_source" in entry,
        )
        ok = False
    try:
        low, high = float(raw[0]), float(raw[1])
    except OverflowError:  # an integer too large for a float
        low = high = math.inf
    if not (math.isfinite(low) and math.isfinite(high)):
        add(rpath, f"expected finite bounds, found {raw!r}", value=True)
        return False
    if low > high:
        add(rpath, f"low bound {low:g} exceeds high bound {high:g}", value=True)
        ok = False
    elif not low <= value <= high:
        add(rpath, f"range [{low:g}, {high:g}] does not contain the value {value:g}", value=True)
        ok = False
    if low < spec.minimum:
        add(
            rpath,
            f"low bound {low:g} is below the least allowed {spec.minimum:g} ({spec.unit})",
            value=True,
        )
        ok = False
    if high > spec.maximum:
        add(
            rpath,
            f"high bound {high:g} is above the most allowed {spec.maximum:g} ({spec.unit})",
            value=True,
        )
        ok = False
    if spec.integer and (low != int(low) or high != int(high)):
        add(rpath, f"expected whole numbers of {spec.unit}, found {raw!r}", value=True)
        ok = False
    if not ok:
        return False
    assert isinstance(src, str)
    return ParameterRange(low=low, high=high, source=src)


def _check_parameter(
    spec: ParameterSpec, entry: object, ppath: tuple[str, ...], add: Any
) -> Parameter | None:
    if not isinstance(entry, dict):
        add(
            ppath,
            f"expected a mapping {{value, unit, source, note?, range?, range_source?}}, "
            f"found {_type_name(entry)}",
            value=True,
        )
        return None
    ok = True
    # Source first: principle 2 is the reason these files exist.
    src = entry.get("source")
    if "source" not in entry or not isinstance(src, str) or not src.strip():
        add(
            (*ppath, "source"),
            "every parameter needs a non-empty source (a citation from "
            "docs/published-figures.md or a measurement)",
            value="source" in entry,
        )
        ok = False
    # The range is checked here rather than by pydantic, for messages in the file's own terms.
    plain = {k: v for k, v in entry.items() if k not in _RANGE_KEYS}
    param: Parameter | None = _validate(
        Parameter, plain, ppath, add, skip=frozenset() if ok else frozenset({"source"})
    )
    if param is None or not ok:
        return None
    if param.unit != spec.unit:
        add(
            (*ppath, "unit"),
            f"expected unit {spec.unit!r} for {spec.name}, found {param.unit!r}",
            value=True,
        )
        ok = False
    value = param.value
    if not math.isfinite(value) or not spec.minimum <= value <= spec.maximum:
        bound = (
            f">= {spec.minimum:g}"
            if spec.maximum == math.inf
            else f"from {spec.minimum:g} to {spec.maximum:g}"
        )
        add(
            (*ppath, "value"),
            f"expected a number {bound} ({spec.unit}), found {value!r}",
            value=True,
        )
        ok = False
    if spec.integer and value != int(value):
        add(
            (*ppath, "value"),
            f"expected a whole number of {spec.unit}, found {value!r}",
            value=True,
        )
        ok = False
    if not ok:
        return None
    span = _check_range(spec, entry, value, ppath, add)
    if span is False:
        return None
    return param if span is None else param.model_copy(update={"range": span})
