"""The lab's points: the grid of configurations, payloads and loads it measures, and the
record of what it measured at each (:class:`Measured`, saved in ``lab.json`` and the
calibration's measurements).

The loads are fractions of a capacity the lab estimates first (:func:`estimate_capacity`),
turned into rates by :func:`scale`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshsim.calibrate.lab import Lab

REPEATS = 3
"""Passes over the held-out points in the full grid."""


OPEN_LOOP_CONNECTIONS = 32
"""The load generator's connections at every open-loop point (baselines too). Enough that it
never queues for one: the lab's clumps (meshsim.calibrate.release) send ten requests at once
at the highest held-out load, and with 8 connections, as many as the capacity probe's closed
loop, the load generator's own pool was ~80-90 % busy at the top two loads, which dominated
their latency (p50 1.6 to 8.3 ms over three passes at 80 % of capacity)."""


@dataclass(frozen=True)
class LabConfig:
    """A proxy configuration of the grid."""

    mtls: bool = False
    keep_alive: bool = True
    filters: int = 0

    @property
    def name(self) -> str:
        return (
            f"{'mtls' if self.mtls else 'plain'}-{'ka' if self.keep_alive else 'noka'}"
            f"-f{self.filters}"
        )


@dataclass(frozen=True)
class Point:
    """One measurement: a configuration, a payload, a load (rps 0 = closed loop, saturation)."""

    config: LabConfig
    payload: int
    rps: float
    connections: int
    proxied: bool = True
    duration_s: float = 3.0
    role: str = "fit"
    """``fit`` (used by the fit), ``held_out`` (used only to validate predictions),
    ``throttled`` (held out too, with the server sidecar under a CPU limit: see
    ``cpu_limit``) or ``baseline`` (load generator -> echo at a held-out load: the latency
    outside the proxies that the prediction adds to the simulated proxy path; never compared
    with a prediction)."""
    repeat: int = 0
    """Which pass over the held-out loads: they are measured in several passes, minutes apart,
    so that the lab's run-to-run spread is measured with them."""
    cpu_limit: float | None = None
    """``throttled`` points: the server sidecar's CPU limit as a multiple of the CPU it used
    at the same load without one, in the same pass (the lab turns it into millicores there:
    :func:`meshsim.calibrate.throttle.limit_m`)."""


@dataclass
class Measured:
    point: Point
    achieved_rps: float
    latency_ms: dict[str, float]
    requests: int
    errors: int
    warnings: list[str]
    client_cpu_us: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)
    process_cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    latency_quantiles_ms: list[float] = field(default_factory=list)
    """Points without proxies: the corrected latency at the quantiles (i + 0.5) / N, N =
    :data:`BASELINE_QUANTILES` (an empirical distribution of the baseline)."""
    send_latency_quantiles_ms: list[float] = field(default_factory=list)
    """Points without proxies: the same quantiles of the latency from each request's actual
    send (the load generator's ``uncorrected`` histogram): without the wait for its release
    tick, which the simulated load generator makes itself (empty: older records)."""
    requests_per_release: float | None = None
    """Open loop: requests the load generator's scheduler released per wake-up of its timer
    (None: older records, closed loops)."""
    release_lateness_ms: list[float] = field(default_factory=list)
    """The load generator's timer: how late each wake-up that released requests ran after
    the intended time it slept for, in ms, at the quantiles (i + 0.5) / N
    (:data:`meshsim.calibrate.point_record.LATENESS_QUANTILES`; empty: older records, closed
    loops)."""
    latency_from_send_ms: dict[str, float] = field(default_factory=dict)
    """Open loop: p50 and mean of the latency from each request's send (the load
    generator's ``uncorrected`` histogram), without the wait for its timer to release it
    (empty: older records, closed loops)."""
    wakeups_per_request: dict[str, float] = field(default_factory=dict)
    """Voluntary context switches per completed request, per process (empty: not measured)."""
    preemptions_per_request: dict[str, float] = field(default_factory=dict)
    """Involuntary context switches per completed request, per process: the times it was
    preempted while running (empty: older records)."""
    run_delay_us_per_request: dict[str, float] = field(default_factory=dict)
    """Time runnable but not running, per completed request, per process (schedstat)."""
    sidecar_duration_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per sidecar, its access log's ``duration_ms`` (request parsed to response written)
    over the point: p50, p90, p99, mean and samples (empty: not measured)."""
    latency_parts_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """From those and the load generator's latency, p50 and mean of: the end-to-end
    latency, the part outside the client sidecar, its own share, the server side
    (:func:`meshsim.calibrate.decomposition.lab_parts`; empty: not measured)."""
    speed: dict[str, Any] = field(default_factory=dict)
    """The machine's speed around the point: per lab core, seconds of the fixed probe of
    :mod:`meshsim.calibrate.speed` right ``before`` and ``after`` the load (older records also
    hold the mean of a sampler's probes ``during`` it; empty: older still)."""
    host_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    """The host's fast and slow phases around the point: per lab core, the two-state fit of
    :mod:`meshsim.calibrate.host_phases` to chunks timed right before and after the load
    (empty: older records)."""
    host_trace: dict[str, list[int]] = field(default_factory=dict)
    """Held-out points: per lab core, those chunks' 1 ms bins in percent of their mean, the
    series the simulated lab replays (:func:`meshsim.calibrate.host_phases.point_trace`;
    empty for other points and older records)."""
    wake_latency_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """The host's latency to run a sleeping process a message woke, around the point: per
    lab core, percentiles (``p0`` .. ``p100``) of one-way loopback hops to a process
    sleeping there from one on the same core, right before and after the load
    (:mod:`meshsim.calibrate.wake_latency`; empty: older records)."""
    wake_latency_cross_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same, sent from the other lab core."""
    period_cpu: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Proxied points: each sidecar's CPU per 100 ms period over the load, and how much of
    its variation is the requests' and how much the CPU per request's
    (:func:`meshsim.calibrate.period_cpu.period_figures`)."""
    cgroup: dict[str, Any] = field(default_factory=dict)
    """``throttled`` points: the server sidecar's CPU cgroup over the load, as
    :func:`meshsim.calibrate.throttle.measure_point` records it: ``limit_m``, ``period_ms``,
    ``version`` and ``cpu.stat``'s ``nr_periods``, ``nr_throttled`` and ``throttled_s``
    (empty for other points)."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["point"]["config"]["name"] = self.point.config.name
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Measured:
        p = dict(d["point"])
        cfg = dict(p.pop("config"))
        cfg.pop("name", None)
        point = Point(config=LabConfig(**cfg), **p)
        rest = {k: v for k, v in d.items() if k != "point"}
        return Measured(point=point, **rest)


def point_line(i: int, total: int, p: Point, m: Measured) -> str:
    """The progress line of the ``i``-th (0-based) of ``total`` measured points."""
    limit = f" limit {m.cgroup['limit_m']:g}m" if m.cgroup else ""
    return (
        f"[{i + 1}/{total}] {p.config.name} {p.payload}B "
        f"{f'pass {p.repeat + 1} ' if p.role != 'fit' else ''}"
        f"{'sat' if p.rps == 0 else f'{p.rps:g}rps'} "
        f"{'proxied' if p.proxied else 'direct'} {p.role}{limit}: "
        f"{m.achieved_rps:.0f} rps, p50 {m.latency_ms['p50']:.3f} ms, "
        f"p99 {m.latency_ms['p99']:.3f} ms"
        + (
            f", throttled in {m.cgroup['nr_throttled']} of {m.cgroup['nr_periods']} periods"
            if m.cgroup
            else ""
        )
    )


THROTTLED_FRACTIONS = (0.2, 0.5)
"""The held-out loads (fractions of capacity) measured again under CPU limits."""
QUICK_THROTTLED_FRACTIONS = (0.2,)


def grid(
    quick: bool,
    *,
    mtls: bool = True,
    filters: bool = True,
    keep_alive_off: bool = True,
    cpu_limits: Sequence[float] = (),
) -> list[Point]:
    """The measurement grid. Loads are fractions of an estimated capacity, set by the caller.

    Returned with placeholder rates (fractions of capacity in ``rps``); see :func:`scale`.
    The fit points come first, then :data:`REPEATS` passes over the held-out points with
    their baselines (one pass with ``quick``): a held-out load is measured minutes apart,
    and the spread between its passes is the lab's own noise, against which a prediction's
    error is judged. ``mtls``, ``filters`` and ``keep_alive_off`` False leave out the
    configurations a proxy under test cannot be set to (:mod:`meshsim.calibrate.proxycmd`).
    Each of ``cpu_limits`` (multiples of the server sidecar's use) adds, in every pass, a
    ``throttled`` point right after the plain held-out point at each of
    :data:`THROTTLED_FRACTIONS`: the limit is set from the use measured just before it.
    """
    base = LabConfig()
    # Three fit loads and a closed loop, so that the wake-up fit spans from about one sleep
    # per request down to saturation's few.
    fracs_fit = (0.1, 0.35, 0.6)
    fracs_held = (0.2, 0.5, 0.7) if quick else (0.2, 0.5, 0.65, 0.8, 0.9)
    payloads = (256, 4096) if quick else (128, 1024, 8192, 32768)
    dur = 1.0 if quick else 5.0
    # The closed loop keeps 8 connections: its throughput is the capacity the loads are
    # fractions of.
    conns = OPEN_LOOP_CONNECTIONS
    closed = 8
    main_pay = payloads[0] if quick else 1024
    configs = [LabConfig(mtls=True), LabConfig(filters=4)]
    if not quick:
        configs.append(LabConfig(keep_alive=False))
        configs.append(LabConfig(mtls=True, keep_alive=False))
    configs = [
        c
        for c in configs
        if (mtls or not c.mtls) and (filters or not c.filters) and (keep_alive_off or c.keep_alive)
    ]
    pts: list[Point] = []
    for pay in payloads:
        for f in fracs_fit:
            pts.append(Point(base, pay, f, conns, True, dur, "fit"))
            pts.append(Point(base, pay, f, conns, False, dur, "fit"))
    # Saturation at the payloads other than the held-out one: the fit points where the event
    # loops hardly ever sleep, so the wake-up fit does not extrapolate to it, and where the
    # sidecars are preempted most (about 0.9 times a request, against 0.3-0.5 at the open
    # loads: with one such point, run AD's, the preemptions' cost was not separable).
    for pay in payloads:
        if pay != main_pay:
            pts.append(Point(base, pay, 0.0, closed, True, dur, "fit"))
    # Each configuration's point right after a base point of the same payload and load: the
    # configuration's cost is a difference, and the machine drifts over minutes (a per-filter
    # cost fitted from base points measured earlier came out 19.9 and 1.8 us in two runs).
    for cfg in configs:
        for pay in payloads if cfg.keep_alive else (main_pay,):
            pts.append(Point(base, pay, 0.1, conns, True, dur, "fit"))
            pts.append(Point(cfg, pay, 0.1, conns, True, dur, "fit"))
    held: list[Point] = []
    throttled_at = QUICK_THROTTLED_FRACTIONS if quick else THROTTLED_FRACTIONS
    for f in fracs_held:
        held.append(Point(base, main_pay, f, conns, True, dur, "held_out"))
        if f in throttled_at:
            held += [
                Point(base, main_pay, f, conns, True, dur, "throttled", cpu_limit=x)
                for x in cpu_limits
            ]
        held.append(Point(base, main_pay, f, conns, False, dur, "baseline"))
    held.append(Point(base, main_pay, 0.0, closed, True, dur, "held_out"))  # saturation
    if not quick:
        held += [Point(cfg, main_pay, 0.5, conns, True, dur, "held_out") for cfg in configs]
    if not quick and keep_alive_off:
        # Keep-alive off costs the load generator and the echo a connection per request too.
        held.append(
            Point(LabConfig(keep_alive=False), main_pay, 0.5, conns, False, dur, "baseline")
        )
    for r in range(1 if quick else REPEATS):
        pts += [replace(p, repeat=r) for p in held]
    return pts


CAPACITY_PROBES = 3
"""Closed-loop probes behind the capacity estimate; the grid's loads are fractions of it."""


def estimate_capacity(lab: Lab, quick: bool, log: Callable[[str], None]) -> float:
    """The proxied path's closed-loop throughput (8 connections, 256 B), conservatively.

    One probe is not enough on a shared virtual machine: the same CPU-bound loop took 71 to
    121 ms from one second to the next on the lab's host with nothing else running, and a
    single 3 s probe read 12361 rps in a run whose saturation points later read 7326-7820
    (every held-out load above half of it was then past saturation). The slowest of
    :data:`CAPACITY_PROBES` probes a second apart keeps the held-out fractions below the
    saturation that the machine's slower moments give.
    """
    probes: list[float] = []
    for i in range(CAPACITY_PROBES):
        if i:
            time.sleep(1.0)
        point = Point(LabConfig(), 256, 0.0, 8, True, 1.0 if quick else 2.0)
        probes.append(lab.measure(point, seed=i + 1).achieved_rps)
    cap = min(probes)
    shown = ", ".join(f"{r:.0f}" for r in probes)
    log(f"estimated capacity {cap:.0f} rps (slowest of closed-loop probes {shown}; 8 connections)")
    return cap


def scale(points: list[Point], capacity_rps: float) -> list[Point]:
    """Turn the grid's capacity fractions into rates (0 stays 0: closed loop)."""
    return [replace(p, rps=round(p.rps * capacity_rps, 1)) for p in points]
