"""fortio-style query knobs for the echo upstream: ``delay``, ``status``, ``size`` and
``grpc-status``.

``delay=10ms:50,100ms:5`` waits 10 ms for 50 % of requests, 100 ms for 5 % and not at all
for the rest; ``status=503:5`` answers 503 to 5 %; ``size=1024`` sends 1024 bytes. As in
fortio, an entry without ``:percent`` applies to every request, and the percentages of one
list add up to at most 100. meshsim adds exponential delays: ``delay=exp:10ms`` draws each
delay from an exponential distribution with a 10 ms mean (``exp:10ms:20`` for 20 %), and
gRPC statuses: ``grpc-status=14:10`` answers 10 % of the requests a 200 would answer as a
gRPC server's error does, with no message: a 200 whose head carries ``grpc-status: 14``
(the Trailers-Only form; HTTP/1.1 here, so without gRPC's framing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

import numpy as np

from meshsim.errors import MeshsimError
from meshsim.proxy.httpcore import parse_duration_s

T = TypeVar("T")

MAX_DELAY_S = 60.0
MAX_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Delay:
    seconds: float
    exponential: bool = False

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.seconds)) if self.exponential else self.seconds


@dataclass(frozen=True)
class Knobs:
    """What one request asked for, before the dice are thrown."""

    delays: tuple[tuple[Delay, float], ...] = ()
    """(delay, probability in [0, 1]) pairs; the remaining probability means no delay."""
    statuses: tuple[tuple[int, float], ...] = ()
    size: int | None = None
    """Response body size; ``None`` echoes the request body."""
    grpc_statuses: tuple[tuple[int, float], ...] = ()
    """gRPC statuses (0..16) answered in a 200 instead of its body."""

    def pick_delay_s(self, rng: np.random.Generator) -> float:
        choice = _pick(self.delays, rng)
        return 0.0 if choice is None else min(choice.draw(rng), MAX_DELAY_S)

    def pick_status(self, rng: np.random.Generator) -> int:
        choice = _pick(self.statuses, rng)
        return 200 if choice is None else choice

    def pick_grpc_status(self, rng: np.random.Generator) -> int | None:
        """The gRPC status to answer a 200 with, or None for the 200 itself."""
        return _pick(self.grpc_statuses, rng)


def _pick(options: tuple[tuple[T, float], ...], rng: np.random.Generator) -> T | None:
    if not options:
        return None
    if len(options) == 1 and options[0][1] >= 1.0:
        return options[0][0]  # the common case costs no random draw
    u = rng.random()
    acc = 0.0
    for value, p in options:
        acc += p
        if u < acc:
            return value
    return None


def _split_percent(entry: str, what: str) -> tuple[str, float]:
    value, sep, pct = entry.rpartition(":")
    if not sep or value.endswith("exp") or value == "":
        return entry, 1.0
    try:
        p = float(pct)
    except ValueError:
        raise MeshsimError(f"bad {what} entry {entry!r}: percent {pct!r} is not a number") from None
    if not 0.0 <= p <= 100.0:
        raise MeshsimError(f"bad {what} entry {entry!r}: percent must be within 0..100")
    return value, p / 100.0


def _check_total(options: list[tuple[object, float]], what: str, text: str) -> None:
    if sum(p for _, p in options) > 1.0 + 1e-9:
        raise MeshsimError(f"bad {what}={text!r}: percentages add up to more than 100")


def parse_delay(text: str) -> tuple[tuple[Delay, float], ...]:
    out: list[tuple[Delay, float]] = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        body, p = _split_percent(entry, "delay")
        exponential = body.startswith("exp:")
        seconds = parse_duration_s(body[4:] if exponential else body)
        if seconds > MAX_DELAY_S:
            raise MeshsimError(f"bad delay {entry!r}: at most {MAX_DELAY_S:g}s")
        out.append((Delay(seconds, exponential), p))
    _check_total(list(out), "delay", text)
    return tuple(out)


def parse_status(text: str) -> tuple[tuple[int, float], ...]:
    out: list[tuple[int, float]] = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        body, p = _split_percent(entry, "status")
        if not body.isdigit() or not 100 <= int(body) <= 599:
            raise MeshsimError(f"bad status {entry!r}: expected a code in 100..599")
        out.append((int(body), p))
    _check_total(list(out), "status", text)
    return tuple(out)


def parse_grpc_status(text: str) -> tuple[tuple[int, float], ...]:
    out: list[tuple[int, float]] = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        body, p = _split_percent(entry, "grpc-status")
        if not body.isdigit() or not 0 <= int(body) <= 16:
            raise MeshsimError(f"bad grpc-status {entry!r}: expected a gRPC code in 0..16")
        out.append((int(body), p))
    _check_total(list(out), "grpc-status", text)
    return tuple(out)


def parse_size(text: str) -> int:
    if not text.strip().isdigit() or int(text) > MAX_SIZE:
        raise MeshsimError(f"bad size {text!r}: expected bytes in 0..{MAX_SIZE}")
    return int(text)


_cache: dict[str, Knobs] = {}


def parse_query(query: str) -> Knobs:
    """Knobs from a URL query string (cached: load tests repeat the same query)."""
    cached = _cache.get(query)
    if cached is not None:
        return cached
    delays: tuple[tuple[Delay, float], ...] = ()
    statuses: tuple[tuple[int, float], ...] = ()
    size: int | None = None
    grpc_statuses: tuple[tuple[int, float], ...] = ()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "delay":
            delays = parse_delay(value)
        elif key == "status":
            statuses = parse_status(value)
        elif key == "size":
            size = parse_size(value)
        elif key == "grpc-status":
            grpc_statuses = parse_grpc_status(value)
    knobs = Knobs(delays, statuses, size, grpc_statuses)
    if len(_cache) < 1024:
        _cache[query] = knobs
    return knobs
