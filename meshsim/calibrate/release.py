"""The lab's load generator releases requests in clumps: its effective timer tick.

The load generator (:mod:`meshsim.proxy.loadgen`) sleeps until a request is due, but its
event loop's timer counts whole milliseconds, and once awake it sends everything due within
half a tick. Poisson arrivals released that way come in clumps of ``x / (1 - exp(-x))``
requests, ``x`` the arrivals per tick (one release per tick that has an arrival). The lab
counts the clumps (``requests_per_release``), and without proxies they are larger than a
1 ms tick gives: libuv rounds each timer to its loop's cached millisecond clock, and the
kernel's timer slack and the loop's own work come on top, so the releases are further apart
than the nominal tick. The effective tick is the one that reproduces the measured clumps,
solved at each baseline load (points without proxies) and taken as their median; the
simulated load generator releases on it (``release_tick_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy.optimize import brentq


def per_release(x: float) -> float:
    """Mean requests per release when ``x`` requests arrive per tick (Poisson)."""
    return x / -math.expm1(-x) if x > 0 else 1.0


def arrivals_per_tick(clump: float) -> float:
    """The ``x`` whose :func:`per_release` is ``clump`` (clumps of at least 1)."""
    if clump <= 1.0:
        return 0.0
    return float(brentq(lambda x: per_release(x) - clump, 1e-9, clump + 10.0))


def effective_tick(baselines: Sequence[dict[str, Any]], nominal_ms: float) -> dict[str, Any]:
    """The tick (ms) that reproduces the baselines' clumps, with each load's solution.

    ``baselines`` are fit-record baseline rows (``rps``, ``requests_per_release``); rows
    without a clump count (older records, closed loops) are skipped, and with none left the
    nominal tick stands.
    """
    points = [
        {
            "rps": float(b["rps"]),
            "requests_per_release": float(b["requests_per_release"]),
            "tick_ms": round(
                1000.0 * arrivals_per_tick(float(b["requests_per_release"])) / float(b["rps"]), 4
            ),
        }
        for b in baselines
        if b.get("requests_per_release") and float(b["rps"]) > 0
    ]
    ticks = sorted(p["tick_ms"] for p in points)
    value = (
        nominal_ms if not ticks else (ticks[len(ticks) // 2] + ticks[(len(ticks) - 1) // 2]) / 2.0
    )
    return {
        "value": round(value, 4),
        "nominal_ms": nominal_ms,
        "method": "the tick whose Poisson clumps, x / (1 - exp(-x)) requests per release with "
        "x = rate x tick, equal the clumps the load generator released at each load without "
        "proxies; the median over those loads (meshsim/calibrate/release.py)",
        "points": points,
    }
