"""Which shape of the wake-up's CPU the lab's records support: per sleep, or per wake-up.

The model charges a wake-up ``wakeup_cpu_us * (1 - exp(-sleep / decay))`` with ``decay`` the
cache-cooling probe's time constant (100 ms, its longest: so in effect CPU in proportion to
the sleep), fitted as ``CPU per request = a + b KiB + w x cold wake-ups`` on the fit loads
(0.1, 0.35, 0.6 of capacity and a closed loop). A shorter ``decay`` moves the cost toward a
constant per wake-up. For each record given, and each ``decay``, this fits that plane on the
fit points (plain, keep-alive, no filters, bodies held whole; each sidecar a row, its mean
sleep before a wake-up ``(1 - busy) / (rps x wake-ups per request)``), and prints:

- the leave-one-load-out error (fit on the other fit loads, predict the left-out one's
  median sidecar CPU per request; the rms over the loads): what the fit points alone say of
  the shape;
- the held-out loads' errors (median over their passes and sidecars) and their rms.

    python reports/validation/experiments/wakeup_form.py reports/validation/passes/*.model.tar.gz

Reads each archive's ``lab.fit.json`` (records before run S lack the wake-ups and are skipped).
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DECAYS_MS = (0.1, 0.3, 1.0, 2.0, 5.0, 100.0)
Row = tuple[str, float, float, float, float, float]
"""role, nominal rps, KiB moved, wake-ups per request, mean sleep (ms), CPU per request (us)."""


def rows(fit: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for p in fit["points"]:
        if p["mtls"] or not p["keep_alive"] or p["filters"] or not p["proxied"]:
            continue
        cpu, wakes = p["process_cpu_us_per_request"], p.get("wakeups_per_request") or {}
        if p["payload_bytes"] > 16384 or (p["rps"] <= 0 and p["role"] != "fit"):
            continue
        r, kib = float(p["achieved_rps"]), 2 * p["payload_bytes"] / 1024
        for side in ("client_sidecar", "server_sidecar"):
            if side not in cpu or not wakes.get(side):
                continue
            busy = cpu[side] * 1e-6 * r
            sleep_ms = (1.0 - busy) / (r * wakes[side]) * 1e3
            out.append((p["role"], float(p["rps"]), kib, wakes[side], sleep_ms, cpu[side]))
    return out


def _plane(decay: float) -> Callable[[Row], list[float]]:
    return lambda q: [1.0, q[2], q[3] * q[4] / (q[4] + decay)]


def _fit(sel: Sequence[Row], f: Callable[[Row], list[float]]) -> np.ndarray:
    a = np.array([f(q) for q in sel])
    y = np.array([q[5] for q in sel])
    return np.linalg.lstsq(a, y, rcond=None)[0]


def _err(sel: Sequence[Row], coef: np.ndarray, f: Callable[[Row], list[float]]) -> float:
    return 100.0 * float(np.median([np.dot(f(q), coef) / q[5] - 1.0 for q in sel]))


def main(argv: list[str]) -> None:
    lolo_all: dict[float, list[float]] = {d: [] for d in DECAYS_MS}
    held_all: dict[float, list[float]] = {d: [] for d in DECAYS_MS}
    for path in map(Path, argv):
        with tarfile.open(path) as tar:
            member = tar.extractfile("lab.fit.json")
            assert member is not None
            fit = json.load(member)
        data = rows(fit)
        fitted = [q for q in data if q[0] == "fit"]
        held = [q for q in data if q[0] in ("held_out", "throttled") and q[1] > 0]
        if not fitted or not held:
            print(f"{path.name}: no wake-ups recorded, skipped")
            continue
        loads = sorted({q[1] for q in fitted})
        print(f"{path.name} ({fit['machine'].get('cpu', '?')}): fit loads {loads}")
        for decay in DECAYS_MS:
            f = _plane(decay)
            lolo = [
                _err(
                    [q for q in fitted if q[1] == left],
                    _fit([q for q in fitted if q[1] != left], f),
                    f,
                )
                for left in loads
            ]
            coef = _fit(fitted, f)
            by_load = sorted({q[1] for q in held})
            errs = [_err([q for q in held if q[1] == x], coef, f) for x in by_load]
            lolo_rms = float(np.sqrt(np.mean(np.square(lolo))))
            held_rms = float(np.sqrt(np.mean(np.square(errs))))
            lolo_all[decay].append(lolo_rms)
            held_all[decay].append(held_rms)
            shown = " ".join(f"{x:.0f}:{e:+.1f}" for x, e in zip(by_load, errs, strict=True))
            print(
                f"  decay {decay:>5g} ms: w {coef[2]:9.1f}  leave-one-load-out rms "
                f"{lolo_rms:4.1f} %  held out {shown} % (rms {held_rms:.1f})"
            )
    print("mean over the records: leave-one-load-out rms / held-out rms (%)")
    for decay in DECAYS_MS:
        if lolo_all[decay]:
            print(
                f"  decay {decay:>5g} ms: {np.mean(lolo_all[decay]):.1f} / "
                f"{np.mean(held_all[decay]):.1f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
