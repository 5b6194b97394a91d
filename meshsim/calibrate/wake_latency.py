"""How long the lab host takes to run a sleeping process that a message woke, around every point.

A sidecar at low load sleeps in ``epoll_wait`` between requests; each message that wakes it
waits for the kernel to interrupt the core, the core to leave its idle state and the thread
to be switched in (on this VM, for the hypervisor to run the vCPU too). On a quiet host that
adds microseconds; on a busy shared one it does not: on 2026-12-02 the same one-way loopback
hop to a sleeping process had p50 33-36 us and p99 0.10-0.12 ms at 11:02 UTC, p50 56 us and
p99 1.8 ms at 12:00, and at 13:40 p50 85-113 us, p99 0.9-2.4 ms across cores. The lab's p50
moved about 2x between passes of one run while the CPU's speed stayed within 15 %: no
busy-loop probe (:mod:`meshsim.calibrate.speed`, :mod:`meshsim.calibrate.host_phases`) sees
this.

So the lab measures it right before and right after each point's load (:func:`probe_cores`):
for each lab core, a child process pinned there sleeps on a loopback TCP socket, and this
process sends it timestamps at random moments (:data:`RATE` a second, exponential gaps), for
:data:`PROBE_S` from the other lab core and as long from the same core. Each timestamp's
latency is from its send to the child's return from ``epoll_wait`` (one sent after that
return found the child awake and is not counted). The point keeps the percentiles
(:data:`PERCENTILES`) of each kind: ``wake_latency_us`` from the same core,
``wake_latency_cross_us`` from the other.

The simulator draws the same-core kind. The proxies add four wake-ups to a request, and in
the lab all four are of a process woken by one on its own core: the client sidecar by the
load generator and the load generator by it, the server sidecar by the echo and the echo by
it; the two cross-core wake-ups (client sidecar to server sidecar and back) replace the two
of the load generator and the echo without proxies, which the measured baseline already
holds. The simulated lab pays a wake-up on each of the sidecars' four bursts and draws the
baseline for the rest, so it has the lab's count of each kind.

The hop's quickest part is not the wake-up: the send, the loopback and the switch-in are
there on a quiet host too, and the calibrated model counts them already (in the sidecars'
CPU and in ``hop_latency_us``). What the simulator adds per wake-up is the excess over the
fit points' floor (their median 1st percentile, :func:`floor_us`): a constant at the fit's
mean excess in the model (``wakeup_latency_us``, :func:`excess_mean_us`) and, in the
speed-adjusted validation, each held-out point's own excess as ``cluster.wakeup_latency``
(:func:`wakeup_spec`), which is what moves with the host. The probe is not the lab's traffic:
where its excess at the lowest fit load is more than the latency the lab's CPU leaves
unexplained there (per traversal), only that share of it is charged, the same share at every
point (:func:`charged`).
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from meshsim.calibrate import host_phases
from meshsim.calibrate.pinned_child import pinned_child
from meshsim.calibrate.speed import on_core
from meshsim.scenario.host import WakeupLatency

PROBE_S: Final = 0.15
"""Seconds of timestamps per (sleeping core, sending core) pair, each time the lab probes."""
RATE: Final = 2000.0
"""Timestamps a second: gaps of 0.5 ms on average, five times a quiet host's p99 hop
(0.1 ms), so the child is asleep when most arrive (a noisy host's tail overlaps some)."""
PERCENTILES: Final = (0, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9, 100)
"""The percentiles a point keeps of its wake-up latencies (per lab core, in µs)."""

_CHILD = r"""
import os, selectors, socket, struct, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
clock, out, buf = time.monotonic_ns, [], b""
while True:
    sel.select()
    now = clock()
    data = s.recv(65536)
    if not data:
        break
    buf += data
    while len(buf) >= 8:
        (sent,) = struct.unpack("<q", buf[:8])
        buf = buf[8:]
        if sent < 0:
            s.sendall(struct.pack(f"<{len(out)}q", *out))
            sys.exit(0)
        if sent <= now:  # sent after the wake-up: it found the child awake
            out += (sent, now - sent)
"""


def _send(conn: socket.socket, seconds: float, rng: np.random.Generator) -> None:
    """Timestamps to ``conn`` at random moments for about ``seconds``."""
    gaps = rng.exponential(1.0 / RATE, max(int(seconds * RATE), 1))
    for gap in gaps:
        time.sleep(float(gap))
        conn.sendall(struct.pack("<q", time.monotonic_ns()))


def _receive(conn: socket.socket) -> np.ndarray:
    """The child's (sent at, latency) rows, in ns, once it has been told to stop."""
    conn.sendall(struct.pack("<q", -1))
    data = b""
    while chunk := conn.recv(1 << 20):  # the child closes the connection when done
        data += chunk
    return np.frombuffer(data[: len(data) - len(data) % 16], dtype="<i8").reshape(-1, 2)


def probe_core(
    core: int, senders: Sequence[int], seconds: float = PROBE_S, seed: int = 0
) -> list[np.ndarray]:
    """One-way latencies (µs) to a process sleeping on ``core``, sent from each of
    ``senders`` in turn for ``seconds`` each: one array per sender."""
    rng = np.random.default_rng(seed)
    with pinned_child(_CHILD, core) as conn:
        starts = []
        for sender in senders:
            with on_core(sender):
                starts.append(time.monotonic_ns())
                _send(conn, seconds, rng)
        rows = _receive(conn)
    which = np.searchsorted(np.asarray(starts), rows[:, 0], side="right") - 1
    return [rows[which == i, 1] / 1000.0 for i in range(len(senders))]


Probe = dict[str, dict[str, np.ndarray]]
"""Per lab core, the latencies sent from the same core (``same``) and from another
(``cross``)."""


def probe_cores(cores: Iterable[int], seconds: float = PROBE_S) -> Probe:
    """Per lab core (keyed as a string), :func:`probe_core` from the other lab core (if any)
    and from itself; empty where this platform cannot pin a process. A core whose probe
    fails (its child could not start or connect in time) is left out: the point is kept,
    without that core's figures, and a fit without them charges no wake-up latency."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return {}
    lab = sorted(set(cores))
    out: Probe = {}
    for c in lab:
        others = [o for o in lab if o != c][:1]
        try:
            *cross, same = probe_core(c, [*others, c], seconds, seed=c)
        except (OSError, subprocess.SubprocessError):  # socket.timeout is an OSError
            continue
        out[str(c)] = {"same": same, **({"cross": cross[0]} if cross else {})}
    return out


def percentiles(x: np.ndarray) -> dict[str, float]:
    """:data:`PERCENTILES` of ``x``, keyed ``p0`` .. ``p100``."""
    return {
        f"p{q:g}": round(float(v), 2)
        for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True)
    }


def point_wakeups(before: Probe, after: Probe, kind: str = "same") -> dict[str, dict[str, float]]:
    """A point's ``wake_latency_us`` record (``kind`` "same") or ``wake_latency_cross_us``
    ("cross"): per core, the percentiles of those latencies before and after the load
    together."""
    out: dict[str, dict[str, float]] = {}
    for core in sorted(set(before) & set(after)):
        parts = [p[core][kind] for p in (before, after) if kind in p[core]]
        x = np.concatenate(parts) if parts else np.empty(0)
        if len(x):
            out[core] = percentiles(x)
    return out


def merge(records: Iterable[Mapping[str, Mapping[str, float]] | None]) -> dict[str, Any]:
    """Several passes' ``wake_latency_us`` (or ``wake_latency_cross_us``) as one: per core
    and percentile, the median over the passes that probed (empty: none did), as the
    passes' host phases are merged (:func:`meshsim.calibrate.host_phases.merge`)."""
    return host_phases.merge(records)


def floor_us(records: Iterable[Mapping[str, Mapping[str, float]] | None]) -> float | None:
    """The fit points' floor: the median over ``records`` (their ``wake_latency_us``) and
    the lab cores of the 1st percentile (None: some point was not probed)."""
    recs = list(records)
    if not recs or not all(recs):
        return None
    return float(statistics.median(pct["p1"] for rec in recs if rec for pct in rec.values()))


def charged(
    fit_points: Sequence[Mapping[str, Mapping[str, float]] | None],
    low: Mapping[str, Mapping[str, float]] | None,
    unexplained_us: float,
) -> dict[str, float] | None:
    """The wake-up latency a calibrated model charges: the fit points' floor
    (:func:`floor_us`), the mean excess over it at the lowest fit load ``low`` (averaged over
    the lab cores), and the share of it charged: all of it, or as much as the latency the
    CPU leaves unexplained there per traversal (``unexplained_us``), when the probe's excess
    is more. None where the fit points were not probed."""
    floor = floor_us(fit_points)
    if floor is None or not low:
        return None
    mean = float(np.mean([excess_mean_us(pct, floor) for pct in low.values()]))
    share = min(1.0, unexplained_us / mean) if mean > 0.0 else 1.0
    return {
        "floor_us": round(floor, 3),
        "excess_mean_us": round(mean, 3),
        "scale": round(share, 5),
        "charged_us": round(mean * share, 3),
    }


def _percent(key: str) -> float:
    return float(key[1:])


def excess(pct: Mapping[str, float], floor: float) -> dict[float, float]:
    """One core's percentiles as latency over ``floor`` (0 where below it), keyed by percent."""
    return {_percent(k): round(max(float(v) - floor, 0.0), 2) for k, v in pct.items()}


def excess_mean_us(pct: Mapping[str, float], floor: float) -> float:
    """The mean of :func:`excess`'s distribution, read as ``cluster.wakeup_latency`` reads
    it (:meth:`meshsim.scenario.host.WakeupLatency.mean_us`)."""
    return WakeupLatency(percentiles_us=excess(pct, floor)).mean_us()


def wakeup_spec(pct: Mapping[str, float], wake: Mapping[str, float]) -> dict[str, Any]:
    """One core's ``cluster.wakeup_latency``: its :func:`excess` over the fit's floor, times
    the share the fit charges (``wake``: :func:`charged`'s record)."""
    share = float(wake["scale"])
    return {
        "percentiles_us": {
            q: round(v * share, 2) for q, v in excess(pct, float(wake["floor_us"])).items()
        }
    }
