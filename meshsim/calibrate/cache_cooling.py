"""How fast a sleeping process's caches cool on the lab host: the time constant behind
``wakeup_cache_decay_ms``.

A sidecar woken from ``epoll_wait`` refills the caches that the host's other work evicted
while it slept. On a quiet host little is evicted in a millisecond; on a busy shared one a
great deal is, and the fitted ``wakeup_cpu_us`` came out ten times larger on such a host (347
to 381 us per voluntary switch against 37). If each wake-up costs the same, a fit that sees
the long sleeps of low loads overcharges the short sleeps of high ones.

So the lab measures the cooling (:func:`probe`): a child process pinned to a lab core holds
a working set (:data:`WORKING_SET_KIB`) and sleeps on a loopback socket; this process, on the
other lab core, wakes it after a gap drawn from :data:`GAPS_MS` (shuffled); the child times a
walk over its working set (one read per cache line) right away, *cold*, and again at once,
*warm*, and answers. The walk's cost against the gap (:func:`fit_decay`) is
``c0 + A (1 - exp(-gap / decay))``: ``decay`` is the host's cooling time constant, which the
fit of the sidecars' CPU then uses (:mod:`meshsim.calibrate.model_fit`), with the amplitude
fitted from the sidecars themselves (their working set is not the probe's).

On 2026-12-02 (a slow shared host), a 4 MiB walk cost 104 us with no gap, 222 after 1 ms, 403
after 3, 520 after 10 and 608 after 30; a 512 KiB walk 22, 37, 89, 140 and 153 us: both a
time constant of about 4 ms.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from meshsim.calibrate.pinned_child import pinned_child
from meshsim.calibrate.speed import on_core

GAPS_MS: Final = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0)
"""The sleeps before a walk (0: woken right after the last one's answer)."""
REPEATS: Final = 40
"""Walks per gap."""
WORKING_SET_KIB: Final = 1024
"""The child's working set: above a core's L2, within the host's L3."""
DECAYS_MS: Final = tuple(float(x) for x in np.geomspace(0.05, 100.0, 241))
"""The time constants :func:`fit_decay` tries."""

_CHILD = r"""
import os, socket, struct, sys, time
import numpy as np
os.sched_setaffinity(0, {int(sys.argv[1])})
buf = np.ones(int(sys.argv[3]) * 128, dtype=np.int64)
lines = buf[::8]  # one int64 per 64-byte cache line
lines.sum()
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
clock = time.thread_time_ns
while s.recv(1) == b"w":
    t0 = clock(); lines.sum(); t1 = clock(); lines.sum(); t2 = clock()
    s.sendall(struct.pack("<qq", t1 - t0, t2 - t1))
"""


def probe(
    core: int,
    waker: int,
    *,
    gaps_ms: Sequence[float] = GAPS_MS,
    repeats: int = REPEATS,
    working_set_kib: int = WORKING_SET_KIB,
    seed: int = 0,
) -> dict[str, Any]:
    """The walk's CPU (µs), cold and warm, after each gap: medians per gap, with the
    probe's settings. Raises OSError or SubprocessError when the child cannot run."""
    order = np.repeat(np.asarray(gaps_ms, dtype=float), repeats)
    np.random.default_rng(seed).shuffle(order)
    cold: dict[float, list[float]] = {g: [] for g in gaps_ms}
    warm: dict[float, list[float]] = {g: [] for g in gaps_ms}
    with pinned_child(_CHILD, core, str(working_set_kib)) as conn, on_core(waker):
        for gap in order:
            if gap > 0.0:
                time.sleep(gap / 1000.0)
            conn.sendall(b"w")
            data = b""
            while len(data) < 16:
                chunk = conn.recv(16 - len(data))
                if not chunk:
                    raise OSError("the cache-cooling probe's child closed early")
                data += chunk
            c, w = struct.unpack("<qq", data)
            cold[float(gap)].append(c / 1000.0)
            warm[float(gap)].append(w / 1000.0)
        conn.sendall(b"q")
    return {
        "core": core,
        "waker": waker,
        "working_set_kib": working_set_kib,
        "repeats": repeats,
        "gaps_ms": [float(g) for g in gaps_ms],
        "cold_us": [round(float(np.median(cold[float(g)])), 3) for g in gaps_ms],
        "warm_us": [round(float(np.median(warm[float(g)])), 3) for g in gaps_ms],
    }


def probe_lab(cores: Sequence[int]) -> dict[str, Any] | None:
    """:func:`probe` on the lab's server core, woken from the client core (the same core
    when there is one); None where this platform cannot pin a process or the probe fails."""
    if not cores or not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return None
    core, waker = cores[-1], cores[0]
    try:
        return probe(core, waker)
    except (OSError, subprocess.SubprocessError):
        return None


def merge(probes: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Several probes of one calibration (at the start, middle and end of its grid) as one
    curve: the median of their per-gap medians; a failed probe (None) is left out."""
    ok = [p for p in probes if p]
    if not ok:
        return None
    gaps = ok[0]["gaps_ms"]
    ok = [p for p in ok if p["gaps_ms"] == gaps]
    return {
        **{k: ok[0][k] for k in ("core", "waker", "working_set_kib", "repeats", "gaps_ms")},
        "probes": len(ok),
        "cold_us": np.median([p["cold_us"] for p in ok], axis=0).round(3).tolist(),
        "warm_us": np.median([p["warm_us"] for p in ok], axis=0).round(3).tolist(),
    }


def fit_decay(curve: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``cold = c0 + A (1 - exp(-gap / decay))`` fitted to a probe's curve by least squares
    (``c0`` and ``A`` linear for each ``decay`` of :data:`DECAYS_MS`); None without a curve,
    or when the cold walk does not grow with the gap (A at most 10 % of c0: caches that do
    not cool, and a time constant that means nothing)."""
    if not curve:
        return None
    gaps = np.asarray(curve["gaps_ms"], dtype=float)
    cold = np.asarray(curve["cold_us"], dtype=float)
    if len(gaps) < 3:
        return None
    best: tuple[float, float, float, float] | None = None
    for decay in DECAYS_MS:
        x = -np.expm1(-gaps / decay)
        design = np.column_stack([np.ones_like(x), x])
        (c0, amp), *_ = np.linalg.lstsq(design, cold, rcond=None)
        sse = float(np.sum((design @ np.array([c0, amp]) - cold) ** 2))
        if best is None or sse < best[0]:
            best = (sse, decay, float(c0), float(amp))
    assert best is not None
    sse, decay, c0, amp = best
    if c0 <= 0.0 or amp <= 0.1 * c0:
        return None
    return {
        "decay_ms": round(decay, 3),
        "cold_floor_us": round(c0, 3),
        "amplitude_us": round(amp, 3),
        "rms_us": round(float(np.sqrt(sse / len(gaps))), 3),
    }


def record(
    curve: Mapping[str, Any] | None, fit: Mapping[str, float] | None
) -> dict[str, Any] | None:
    """The fit record's ``cache_cooling``: the probe's curve and its fit (None: not probed,
    every wake-up costs the same)."""
    return {"curve": curve, "fit": fit} if curve else None


def cold_share(idle_ms: float, decay_ms: float) -> float:
    """The mean share of a fully cold wake-up's cost paid after idle periods exponentially
    distributed with mean ``idle_ms`` (an M/G/1 server's idle periods):
    E[1 - exp(-I / decay)] = idle / (idle + decay)."""
    return idle_ms / (idle_ms + decay_ms) if idle_ms > 0.0 else 0.0


def cold_wakeups(
    cpu_us: Mapping[str, float],
    wakeups: Mapping[str, float],
    rps: float,
    decay_ms: float | None,
    sides: Sequence[str] = ("client_sidecar", "server_sidecar"),
) -> float | None:
    """The sidecars' mean wake-ups per request at a lab point, each counted as the share of a
    fully cold one that its sleep cooled (:func:`cold_share`; all of one without
    ``decay_ms``). A sidecar's mean sleep before a wake-up is its idle time per request over
    its wake-ups per request, ``(1 - rps x CPU per request) / (rps x wake-ups per request)``.
    None when a sidecar's wake-ups were not measured."""
    if any(s not in wakeups for s in sides):
        return None
    out = []
    for s in sides:
        w = float(wakeups[s])
        if decay_ms is None:
            out.append(w)
            continue
        if w <= 0.0 or rps <= 0.0:
            out.append(0.0)
            continue
        busy = min(float(cpu_us[s]) * 1e-6 * rps, 1.0)
        idle_ms = (1.0 - busy) / (rps * w) * 1000.0
        out.append(w * cold_share(idle_ms, decay_ms))
    return float(np.mean(out))
