"""Request rates per edge from Istio's or Linkerd's Prometheus metrics.

Read: the text exposition format (a scrape of the proxies, or several scrapes concatenated, with
or without timestamps) and the JSON of Prometheus' query API (``/api/v1/query`` vectors or
``/api/v1/query_range`` matrices). Series used:

- Istio ``istio_requests_total``: an edge ``source_workload -> destination_workload``; the
  ``reporter="destination"`` series are used when present (each request is reported once per
  side), else ``reporter="source"``.
- Linkerd ``request_total``: ``direction="outbound"`` series give ``deployment ->
  dst_deployment``; ``direction="inbound"`` series give what enters a deployment, so requests
  from outside the mesh are what inbound counts beyond the meshed callers' outbound.

A counter sampled more than once (timestamps, a range query of the raw counter) gives a rate,
with counter resets handled as Prometheus' ``rate`` does; a query result without ``__name__``
(the output of ``rate(...)``) already is a rate; a single sample of a counter gives only
proportions (call probabilities) and the rates are then assumed. The latency histograms
(``istio_request_duration_milliseconds_bucket``, ``response_latency_ms_bucket``) include the
callees' time and the proxies', so they are not service times: use traces for those.

Input is read line by line and only the series above are kept, so memory stays bounded by the
number of distinct series (:data:`MAX_SERIES`), not by the file's size. NaN and infinite
samples are dropped and counted in a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshsim.errors import Problem
from meshsim.scenario.importers.documents import ManifestError, read_json

MAX_SERIES = 200_000
"""Distinct series kept: a mesh of a few thousand workloads has tens of thousands of edges."""
MAX_JSON_BYTES = 16 * 1024 * 1024
"""A query API answer is parsed whole; a larger one should be a narrower query (sum by edge)."""
MAX_LINE_CHARS = 64 * 1024

ISTIO = "istio_requests_total"
BYTES = {
    "istio_request_bytes_sum": ("request", "sum"),
    "istio_request_bytes_count": ("request", "count"),
    "istio_response_bytes_sum": ("response", "sum"),
    "istio_response_bytes_count": ("response", "count"),
}
"""Istio's message-size histograms: their sums over counts are the mean sizes per edge."""
LINKERD = "request_total"
METRICS = (ISTIO, LINKERD, *BYTES)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass
class _Series:
    first: tuple[float | None, float]
    last: tuple[float | None, float]
    increase: float = 0.0
    samples: int = 1
    is_rate: bool = False
    rate_sum: float = 0.0


@dataclass
class EdgeRates:
    """Requests per second (or relative counts) between workloads."""

    edges: dict[tuple[str, str], float] = field(default_factory=dict)
    """(source workload, destination workload) -> rate; source '' is outside the mesh."""
    absolute: bool = True
    """False when the inputs gave single counter samples: the numbers are proportions only."""
    warnings: list[str] = field(default_factory=list)
    request_bytes: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    """(source, destination workload) -> (mean request bytes, requests it is the mean of)."""
    response_bytes: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def _labels(text: str, path: str, line_no: int) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            if text[pos:].strip(" ,"):
                raise ManifestError(
                    [Problem("", f"cannot read the labels {{{text[:80]}}}", line=line_no)], path
                )
            break
        out[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\\\", "\\")
        pos = m.end()
    return out


def _text_samples(path: Path) -> Iterator[tuple[int, str, dict[str, str], float, float | None]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            if len(line) > MAX_LINE_CHARS:
                raise ManifestError(
                    [Problem("", f"a line of more than {MAX_LINE_CHARS:,} characters",
                             line=line_no)], str(path))  # fmt: skip
            if not line.strip() or line.startswith("#"):
                continue
            m = _SAMPLE.match(line.strip())
            if m is None:
                raise ManifestError(
                    [Problem("", "expected 'metric{labels} value [timestamp]' (Prometheus text "
                             "exposition format)", line=line_no)], str(path))  # fmt: skip
            name = m.group(1)
            if name not in METRICS:
                continue
            try:
                value = float(m.group(4))
            except ValueError:
                raise ManifestError(
                    [Problem(name, f"not a number: {m.group(4)[:40]!r}", line=line_no)],
                    str(path),
                ) from None
            ts = float(m.group(5)) / 1e3 if m.group(5) else None
            yield line_no, name, _labels(m.group(3) or "", str(path), line_no), value, ts


def _json_samples(
    path: Path,
) -> Iterator[tuple[int, str, dict[str, str], float, float | None, bool]]:
    doc = read_json(
        path,
        MAX_JSON_BYTES,
        "query the sum by edge (sum by (source_workload, destination_workload) (rate(...)))",
    )
    data = doc.get("data") if isinstance(doc, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise ManifestError(
            [Problem("data.result", "expected a Prometheus query API answer "
                     "({status, data: {resultType, result: [...]}})")], str(path))  # fmt: skip
    for i, item in enumerate(result):
        metric = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(metric, dict):
            continue
        labels = {str(k): str(v) for k, v in metric.items()}
        name = labels.get("__name__")
        is_rate = name is None
        if name is None:
            # the output of rate(...) drops __name__: tell the metric by its labels
            name = ISTIO if "destination_workload" in labels else LINKERD
        if name not in METRICS:
            continue
        points = item.get("values") if "values" in item else [item.get("value")]
        for point in points or []:
            if not isinstance(point, list) or len(point) != 2:
                continue
            try:
                ts, value = float(point[0]), float(point[1])
            except (TypeError, ValueError):
                continue
            yield i, name, labels, value, ts, is_rate


def _edge(name: str, labels: dict[str, str]) -> tuple[str, tuple[str, str]] | None:
    """(kind of series, edge) for a sample; kinds rank which series count."""
    if name == ISTIO or name in BYTES:
        dst = labels.get("destination_workload", "")
        src = labels.get("source_workload", "")
        if not dst or dst == "unknown":
            return None
        src = "" if src == "unknown" else src
        reporter = labels.get("reporter", "destination")
        if name in BYTES:
            which, part = BYTES[name]
            return f"bytes:{which}:{part}:{reporter}", (src, dst)
        return f"istio-{reporter}", (src, dst)
    direction = labels.get("direction")
    if direction == "outbound" and labels.get("dst_deployment"):
        return "linkerd-outbound", (labels.get("deployment", ""), labels["dst_deployment"])
    if direction == "inbound" and labels.get("deployment"):
        return "linkerd-inbound", ("", labels["deployment"])
    return None


SeriesKey = tuple[str, tuple[str, str], tuple[tuple[str, str], ...]]


def read_metrics(paths: Iterable[str | Path]) -> EdgeRates:
    """Rates per edge from every metrics file given."""
    series: dict[SeriesKey, _Series] = {}
    dropped = 0
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ManifestError([Problem("", "no such file")], str(path))
        with path.open("rb") as fh:
            head = fh.read(64).lstrip()
        samples: Iterable[tuple[Any, ...]]
        if head.startswith(b"{"):
            samples = _json_samples(path)
        else:
            samples = ((*s, False) for s in _text_samples(path))
        try:
            dropped += _collect(samples, series, path)
        except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise ManifestError(
                [Problem("", f"a sample has an unexpected type or value "
                         f"({type(exc).__name__}: {str(exc)[:120]})")],
                str(path),
            ) from None  # fmt: skip
    out = _rates(series)
    if dropped:
        out.warnings.append(f"{dropped} NaN, infinite or negative metric samples dropped")
    return out


def _collect(samples: Iterable[tuple[Any, ...]], series: dict[SeriesKey, _Series],
             path: Path) -> int:  # fmt: skip
    """Add one file's samples to ``series``; returns how many were NaN, infinite or negative."""
    dropped = 0
    for _line, name, labels, value, ts, is_rate in samples:
        if not math.isfinite(value) or value < 0:
            dropped += 1
            continue
        found = _edge(name, labels)
        if found is None:
            continue
        key = (found[0], found[1], tuple(sorted(labels.items())))
        s = series.get(key)
        if s is None:
            if len(series) >= MAX_SERIES:
                raise ManifestError(
                    [Problem("", f"more than {MAX_SERIES:,} request series; aggregate by "
                             "edge before exporting")], str(path))  # fmt: skip
            series[key] = _Series((ts, value), (ts, value), is_rate=is_rate, rate_sum=value)
            continue
        s.samples += 1
        s.rate_sum += value
        s.increase += value - s.last[1] if value >= s.last[1] else value  # a reset
        s.last = (ts, value)
    return dropped


def _rates(series: dict[SeriesKey, _Series]) -> EdgeRates:
    out = EdgeRates()
    kinds = {k for k, _, _ in series}
    # each request is reported by both sides in Istio: count one side only
    use = {"istio-destination"} if "istio-destination" in kinds else {"istio-source"}
    use |= {"linkerd-outbound", "linkerd-inbound"}
    absolute = True
    for (kind, edge, _), s in series.items():
        if kind not in use:
            continue
        if s.is_rate:
            rate = s.rate_sum / s.samples
        elif s.samples > 1 and s.first[0] is not None and s.last[0] is not None:
            span = s.last[0] - s.first[0]
            rate = s.increase / span if span > 0 else 0.0
        else:
            rate = s.first[1]
            absolute = False
        pair = (f"inbound:{edge[1]}", "") if kind == "linkerd-inbound" else edge
        out.edges[pair] = out.edges.get(pair, 0.0) + rate
    _linkerd_entries(out)
    out.absolute = absolute
    _sizes(series, out)
    return out


def _sizes(series: dict[SeriesKey, _Series], out: EdgeRates) -> None:
    """Mean message sizes per edge: the increase of the byte sum over that of the count (or the
    totals, from one sample), from the destination's reports when there are any."""
    kinds = {k for k, _, _ in series if k.startswith("bytes:")}
    for which, target in (("request", out.request_bytes), ("response", out.response_bytes)):
        reporter = "destination" if f"bytes:{which}:count:destination" in kinds else "source"
        totals: dict[tuple[str, str], list[float]] = {}
        for (kind, edge, _), s in series.items():
            if not kind.startswith(f"bytes:{which}:") or not kind.endswith(f":{reporter}"):
                continue
            part = 0 if ":sum:" in kind else 1
            grew = s.samples > 1 and s.first[0] is not None
            totals.setdefault(edge, [0.0, 0.0])[part] += s.increase if grew else s.first[1]
        for edge, (total, count) in totals.items():
            if count > 0 and math.isfinite(total / count):
                target[edge] = (total / count, count)


def _linkerd_entries(out: EdgeRates) -> None:
    """Turn Linkerd's inbound totals into edges from outside the mesh (inbound - meshed)."""
    inbound = {k[0].removeprefix("inbound:"): v for k, v in out.edges.items()
               if k[0].startswith("inbound:")}  # fmt: skip
    for k in [k for k in out.edges if k[0].startswith("inbound:")]:
        del out.edges[k]
    for dst, total in inbound.items():
        meshed = sum(v for (s, d), v in out.edges.items() if d == dst and s)
        outside = total - meshed
        if outside > 1e-9 * max(total, 1.0):
            out.edges[("", dst)] = out.edges.get(("", dst), 0.0) + outside
