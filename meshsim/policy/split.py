"""Routing: weighted traffic split, header/path matching and request mirroring (§7.3, §7.4).

Percentages follow Envoy: Istio turns a percentage ``p`` into a ``FractionalPercent`` of
``uint32(p·10000)`` per million, and Envoy samples ``random % 1_000_000 < numerator``
(:func:`fractional_percent`, :func:`sample_per_million`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "HTTPMatch",
    "MirrorPolicy",
    "StringMatch",
    "WeightedSplit",
    "first_match",
    "fractional_percent",
    "sample_per_million",
]


T = TypeVar("T")


def fractional_percent(percent: float) -> int:
    """Istio's ``translatePercentToFractionalPercent``: parts per million, truncated."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percentage must be in [0, 100] (not {percent})")
    return int(percent * 10_000)


def sample_per_million(numerator: int, rng: np.random.Generator) -> bool:
    """Envoy's runtime ``featureEnabled`` draw: True with probability numerator / 10^6."""
    return int(rng.integers(1_000_000)) < numerator


@dataclass(frozen=True, slots=True)
class WeightedSplit:
    """Weighted choice among backends (Istio ``route[].weight``; Linkerd ``backendRefs``).

    Each backend gets ``weight / sum(weights)`` of requests, chosen at random per request
    (Envoy ``weighted_clusters``: ``random % total`` walked over the cumulative weights).
    A single backend gets 100 % whatever its weight; weight-0 backends are never chosen
    while another has weight. Linkerd gives a backend whose balancer is not ready (e.g. in
    fail-fast) weight 0 for that pick: pass ``available``.
    """

    weights: Mapping[Any, int]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("a traffic split needs at least one backend")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("split weights must be >= 0")
        if len(self.weights) > 1 and sum(self.weights.values()) == 0:
            raise ValueError("split weights must not all be 0")

    def share(self, backend: Hashable) -> float:
        """The long-run fraction of requests ``backend`` receives."""
        if len(self.weights) == 1:
            return 1.0 if backend in self.weights else 0.0
        return self.weights.get(backend, 0) / sum(self.weights.values())

    def choose(
        self, rng: np.random.Generator, available: Sequence[Hashable] | None = None
    ) -> Hashable | None:
        """Pick a backend; ``None`` if no available backend has weight."""
        items: list[tuple[Hashable, int]] = list(self.weights.items())
        if available is not None:
            allowed = set(available)
            items = [(b, w) for b, w in items if b in allowed]
        if len(self.weights) == 1 and items:
            return items[0][0]
        total = sum(w for _, w in items)
        if total <= 0:
            return None
        draw = int(rng.integers(total))
        for backend, weight in items:
            if draw < weight:
                return backend
            draw -= weight
        raise AssertionError("unreachable: draw < total")


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio ``StringMatch``: exactly one of ``exact``, ``prefix``, ``regex`` (RE2-like, full
    match)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) != 1:
            raise ValueError("StringMatch: set exactly one of exact, prefix, regex")
        if self.regex is not None:
            re.compile(self.regex)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        assert self.regex is not None
        return re.fullmatch(self.regex, value) is not None


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    """A small Istio ``HTTPMatchRequest``: path, method and headers, all ANDed.

    Header names are case-insensitive; an empty match matches every request.
    """

    path: StringMatch | None = None
    method: str | None = None
    headers: Mapping[str, StringMatch] = field(default_factory=dict)

    def matches(self, path: str, headers: Mapping[str, str], method: str = "GET") -> bool:
        if self.path is not None and not self.path.matches(path):
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        lowered = {k.lower(): v for k, v in headers.items()}
        return all(m.matches(lowered.get(name.lower())) for name, m in self.headers.items())


def first_match(
    routes: Sequence[tuple[Sequence[HTTPMatch], T]],
    path: str,
    headers: Mapping[str, str],
    method: str = "GET",
) -> T | None:
    """The target of the first route any of whose matches accepts the request.

    A route with no matches accepts everything (Istio's catch-all route).
    """
    for matches, target in routes:
        if not matches or any(m.matches(path, headers, method) for m in matches):
            return target
    return None


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """Istio ``mirror`` with ``mirrorPercentage`` (§7.4): default 100 % when a mirror is set.

    Fire-and-forget: the caller sends a shadow copy and never waits for its response.
    Linkerd does not support mirroring (its controller rejects ``RequestMirror``).
    """

    target: Hashable
    percent: float = 100.0

    @property
    def per_million(self) -> int:
        return fractional_percent(self.percent)

    def should_mirror(self, rng: np.random.Generator) -> bool:
        """Sample whether this request is shadowed to :attr:`target`."""
        return sample_per_million(self.per_million, rng)
