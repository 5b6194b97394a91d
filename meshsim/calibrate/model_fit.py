"""Lab measurements -> a cost model: :func:`fit_model`, step by step.

The record of :func:`meshsim.calibrate.calibration.measure_lab` is sorted into the point
sets each estimate uses (:class:`LabRecord`); then, each a named step with its own result:
the per-request CPU and its split (:func:`fit_request_cpu`), the costs of the other lab
configurations against the base one (:func:`fit_config_costs`), the TLS handshake
(:func:`fit_handshake`), memory per connection (:func:`fit_memory`) and the latency not
explained by CPU (:func:`fit_hop_latency`). :mod:`meshsim.calibrate.model_document` turns
them into the model's parameters, each naming its source, and the fit record (machine,
software, distribution, every estimate with its bootstrap CI, residuals, every point with
its role). How each parameter is derived is summarised in ``reports/validation/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from meshsim.calibrate import cache_cooling, host_spells, wake_latency
from meshsim.calibrate.cpu_drift import fit_drift
from meshsim.calibrate.fit import (
    Estimate,
    LineFit,
    PlaneFit,
    ServiceTimeFit,
    block_bootstrap,
    bootstrap,
    fit_line,
    fit_plane,
    fit_service_time,
)
from meshsim.calibrate.model_document import fit_record, parameters
from meshsim.calibrate.points import LabConfig, Measured
from meshsim.calibrate.rows import (
    bare_cpu,
    kib,
    sidecar_cpu,
    sidecar_preemptions,
    sidecar_wakeups,
)
from meshsim.proxy.fastpath import WHOLE_BODY_BYTES


def _median(a: np.ndarray) -> float:
    return float(np.median(a))


@dataclass(frozen=True)
class LabRecord:
    """The lab record's points, sorted into the sets the estimates use."""

    data: dict[str, Any]
    points: list[Measured]
    fit: list[Measured]
    """Every point measured to fit (not held out)."""
    base: list[Measured]
    """Fit points of the base configuration (plain, keep-alive, no filters), proxied."""
    direct: list[Measured]
    """Fit points of the base configuration without proxies (load generator -> echo)."""
    main_payload: int
    """The smallest payload of the base points: where the service time is measured."""

    @classmethod
    def of(cls, data: dict[str, Any]) -> LabRecord:
        pts = [Measured.from_json(d) for d in data["points"]]
        base = LabConfig()
        fit_pts = [m for m in pts if m.point.role == "fit"]
        base_fit = [m for m in fit_pts if m.point.config == base and m.point.proxied]
        direct_fit = [m for m in fit_pts if m.point.config == base and not m.point.proxied]
        return cls(data, pts, fit_pts, base_fit, direct_fit, min(m.point.payload for m in base_fit))

    @property
    def telemetry_us(self) -> float:
        """Median CPU of the proxy's per-request accounting, timed in the lab process."""
        return float(np.median(self.data["telemetry_cpu_us"]))

    def paired_with_base(self, cfg: LabConfig) -> list[tuple[Measured, Measured]]:
        """(this config, base) pairs at the same payload and nominal load, the base point
        measured nearest in time (the grid measures one just before each configuration's
        point, so that the machine's drift over minutes does not enter the difference)."""
        order = {id(m): i for i, m in enumerate(self.points)}
        out = []
        for m in self.fit:
            if m.point.config != cfg:
                continue
            ref = [b for b in self.base if b.point.payload == m.point.payload]
            if ref:
                out.append(
                    (
                        m,
                        min(
                            ref,
                            key=lambda b: (
                                abs(b.point.rps - m.point.rps),
                                abs(order[id(b)] - order[id(m)]),
                            ),
                        ),
                    )
                )
        return out


@dataclass(frozen=True)
class RequestCpu:
    """A sidecar's CPU per request, fitted and split into the model's components."""

    service_time: ServiceTimeFit
    """The callbacks' CPU per request at the smallest payload (access-log samples)."""
    callbacks: LineFit
    """The callbacks' mean CPU per request against KiB moved."""
    process: LineFit
    """Process CPU per request (callbacks + event loop + kernel) against KiB moved."""
    process_vs_load: LineFit
    wakeups: PlaneFit | None
    """Process CPU = a + b KiB + w wake-ups (None: wake-ups not measured or not separable)."""
    intercept: float
    """Process CPU per request at 0 KiB (and no wake-up, when those were fitted)."""
    per_kib: float
    wakeup_us: float
    """CPU per wake-up; with ``cache_decay``, per fully cold one."""
    telemetry: float
    fixed_callbacks: float
    parse: float
    socket_io: float
    process_main: float
    """Mean process CPU per request at the smallest payload."""
    cv: Estimate
    """The coefficient of variation of the whole per-request CPU (a lower bound)."""
    cache_decay: dict[str, float] | None = None
    """The host's cache-cooling fit (:func:`meshsim.calibrate.cache_cooling.fit_decay`);
    None: not probed, every wake-up costs ``wakeup_us``."""
    streamed: Estimate | None = None
    """What a request whose body is streamed rather than held whole costs beyond the plane
    (None: the fit points' payloads were all on one side of the limit)."""
    streamed_bodies: tuple[int, ...] = ()
    """The payloads (bytes) that step was measured at."""
    preemption: Estimate | None = None
    """CPU per preemption (involuntary context switch) of a sidecar (None: not counted, or
    not found to cost anything)."""
    preemption_tried: Estimate | None = None
    """The preemptions' slope as the three-regressor plane found it, kept or not (None: not
    counted at every fit point), so that a record shows what was left out and why."""

    @property
    def decay_ms(self) -> float | None:
        return self.cache_decay["decay_ms"] if self.cache_decay else None

    def bare(self, m: Measured) -> float:
        """A point's sidecar CPU per request less its wake-ups' share."""
        return sidecar_cpu(m) - self.wakeup_us * (sidecar_wakeups(m, self.decay_ms) or 0.0)


def fit_request_cpu(rec: LabRecord, seed: int) -> RequestCpu:
    base_fit, main_pay = rec.base, rec.main_payload
    # Service time: the callbacks' CPU of both sidecars at the smallest payload.
    # The CI resamples whole points: samples of one point share its moment's machine state.
    by_point = [
        [*m.client_cpu_us, *m.server_cpu_us] for m in base_fit if m.point.payload == main_pay
    ]
    st = fit_service_time([s for g in by_point for s in g], seed=seed, groups=by_point)
    cb_line = fit_line(
        [kib(m) for m in base_fit],
        [float(np.mean([*m.client_cpu_us, *m.server_cpu_us])) for m in base_fit],
        seed=seed,
    )
    # Process CPU per request (callbacks + event loop + kernel), against KiB moved.
    proc_line = fit_line(
        [kib(m) for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 1
    )
    proc_vs_load = fit_line(
        [m.achieved_rps for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 2
    )
    # Wake-ups: an event loop that sleeps between requests pays a switch-in and cold caches
    # each time it is woken; under load one wake-up serves several requests, so the CPU per
    # request falls with load. Both are measured per point (voluntary context switches and
    # CPU per request), and fitted jointly with the payload: CPU = a + b KiB + w wake-ups.
    # Where the lab probed how fast the host cools a sleeping process's caches, a wake-up
    # counts as the share of a cold one that its sleep cooled, and w is a cold wake-up's CPU.
    cache_decay = cache_cooling.fit_decay(rec.data.get("cache_cooling"))
    decay_ms = cache_decay["decay_ms"] if cache_decay else None
    # meshsim's proxy holds a request body up to WHOLE_BODY_BYTES whole and streams a larger
    # one through a coroutine of its own, at a cost of its own (and a wake-up of its own: a
    # larger working set). In one plane, the lab's 32 KiB points tilted the KiB line (run AB:
    # intercept 31.9 us where the smaller bodies alone give 35.6) and left the main
    # payload's requests 3 us short at every held-out load. So the plane is fitted on the
    # bodies held whole, and the streamed ones give a step beyond it.
    whole = [m for m in base_fit if m.point.payload <= WHOLE_BODY_BYTES]
    beyond = [m for m in base_fit if m.point.payload > WHOLE_BODY_BYTES]
    split = bool(beyond) and len({m.point.payload for m in whole}) >= 2
    plane_points = whole if split else base_fit
    wake = wakeup_plane(plane_points, seed + 8, decay_ms)
    # Preemptions: a sidecar that wakes a process on its core (the echo, the load generator)
    # is preempted by it with its own work unfinished, and resumes with its caches cooled.
    # They rise towards saturation (run AD's sweep: 0.34 per request at 1685 rps, 0.89 at
    # saturation), where the CPU per request stops falling with the wake-ups. Where the lab
    # counted them they are a third regressor, kept only where the fit finds them to cost
    # something (the lower end of its CI above 0): over the open-loop fit loads alone they
    # hardly vary, and the saturation fit point is what separates them from the wake-ups.
    with_preemptions = wakeup_plane(plane_points, seed + 8, decay_ms, preemptions=True)
    if (
        with_preemptions is not None
        and "preemptions" in with_preemptions.slopes
        and with_preemptions.slopes["preemptions"].lo > 0.0
    ):
        wake = with_preemptions
    streamed: Estimate | None = None
    if wake is not None:
        intercept, per_kib_est = wake.intercept.value, wake.slopes["kib"].value
        wake_us = max(wake.slopes["wakeups"].value, 0.0)
        if split:
            streamed = streamed_step(wake, beyond, decay_ms, seed + 12)
    else:  # measurements without wake-up counts (older records): the plain line
        intercept, per_kib_est, wake_us = proc_line.intercept.value, proc_line.slope.value, 0.0
    tele = rec.telemetry_us
    fixed_cb = max(cb_line.intercept.value, tele)
    parse = (fixed_cb - tele) / 2.0
    socket_io = intercept - fixed_cb
    if socket_io < 0.0:
        # The callbacks' CPU, timed at the fit loads, carries part of the wake-ups' cold
        # caches; the intercept without wake-ups is all there is to split.
        parse = max((intercept - tele) / 2.0, 0.0)
        socket_io = 0.0
    # Variability of a request's CPU. Only the callbacks' CPU is measured per request; the
    # rest of the process CPU (event loop, epoll, kernel) only as a mean. The model's cv is
    # of the whole per-request CPU: the callbacks' standard deviation over the process CPU
    # per request at the same points, i.e. the event-loop and kernel share counted as
    # constant (a lower bound; scaling the whole cost by the callbacks' cv is the upper one).
    proc_main = float(np.mean([sidecar_cpu(m) for m in base_fit if m.point.payload == main_pay]))
    cv_scale = st.mean.value / proc_main if proc_main > 0 else 0.0
    cpu_cv = Estimate(st.cv.value * cv_scale, st.cv.lo * cv_scale, st.cv.hi * cv_scale)
    return RequestCpu(
        st,
        cb_line,
        proc_line,
        proc_vs_load,
        wake,
        intercept,
        max(per_kib_est, 0.0),
        wake_us,
        tele,
        fixed_cb,
        parse,
        socket_io,
        proc_main,
        cpu_cv,
        cache_decay,
        streamed,
        tuple(sorted({m.point.payload for m in beyond})) if streamed is not None else (),
        wake.slopes.get("preemptions") if wake is not None else None,
        with_preemptions.slopes.get("preemptions") if with_preemptions is not None else None,
    )


@dataclass(frozen=True)
class ConfigCosts:
    """What each other lab configuration adds to the base one (None: not measured)."""

    filters: LineFit | None
    """Sidecar CPU (less wake-ups) against synthetic filters, 0 versus 4."""
    tls: LineFit | None
    """(mTLS - plain) sidecar CPU (less wake-ups) against KiB moved."""
    tcp: Estimate | None
    """CPU per TCP connection end (keep-alive off - on)."""


def fit_config_costs(rec: LabRecord, cpu: RequestCpu, seed: int) -> ConfigCosts:
    fpairs = rec.paired_with_base(LabConfig(filters=4))
    filt = (
        fit_line(
            [0.0] * len(fpairs) + [4.0] * len(fpairs),
            [cpu.bare(b) for _, b in fpairs] + [cpu.bare(m) for m, _ in fpairs],
            seed=seed + 3,
        )
        if fpairs
        else None
    )
    tpairs = rec.paired_with_base(LabConfig(mtls=True))
    tls = (
        fit_line(
            [kib(m) for m, _ in tpairs],
            [cpu.bare(m) - cpu.bare(b) for m, b in tpairs],
            seed=seed + 4,
        )
        if len(tpairs) >= 2
        else None
    )
    tcp = _tcp_connection_cost(
        rec.paired_with_base(LabConfig(keep_alive=False)), cpu.wakeup_us, cpu.decay_ms
    )
    return ConfigCosts(filt, tls, tcp)


@dataclass(frozen=True)
class Handshake:
    by_side: dict[str, np.ndarray]
    per_side: Estimate
    """Median CPU per side of a full handshake, both sides pooled."""


def fit_handshake(data: dict[str, Any], seed: int) -> Handshake:
    hs = {k: np.asarray(v) for k, v in data["handshake_cpu_us"].items()}
    hs_blocks = [
        np.asarray([*b["client"], *b["server"]], dtype=float)
        for b in data.get("handshake_cpu_us_blocks") or ()
    ]
    if len(hs_blocks) >= 2:  # resample whole blocks: they were timed minutes apart
        return Handshake(hs, block_bootstrap(hs_blocks, _median, seed=seed))
    return Handshake(
        hs, bootstrap(np.concatenate([hs["client"], hs["server"]]), _median, seed=seed)
    )


@dataclass(frozen=True)
class Memory:
    plain: LineFit
    """RSS (KiB) of the plain sidecar against idle connections held."""
    tls: LineFit
    """The same with mTLS connections."""


def fit_memory(data: dict[str, Any], seed: int) -> Memory:
    mem = data["memory_kib"]
    return Memory(
        fit_line([r[0] for r in mem["plain"]], [r[1] for r in mem["plain"]], seed=seed + 6),
        fit_line([r[0] for r in mem["tls"]], [r[1] for r in mem["tls"]], seed=seed + 7),
    )


@dataclass(frozen=True)
class HopLatency:
    """Latency not explained by CPU: added p50 at the lowest fit load, less both sidecars'
    on-path CPU (everything but telemetry), over the four proxy traversals of a request."""

    low: Measured
    """The base point at the lowest fit load and the smallest payload."""
    ref: Measured
    """The point without proxies nearest to its load."""
    added_us: float
    on_path_us: float
    hop_us: float
    echo_cpu_us: float
    network_one_way_us: float
    wake: dict[str, float] | None = None
    """The wake-up latency charged (:func:`meshsim.calibrate.wake_latency.charged`), whose
    ``charged_us`` is taken out of ``hop_us``; None: not probed."""

    @property
    def wake_us(self) -> float | None:
        return self.wake["charged_us"] if self.wake is not None else None


def fit_hop_latency(rec: LabRecord, telemetry_us: float) -> HopLatency:
    main_pay = rec.main_payload
    low = min(
        (m for m in rec.base if m.point.payload == main_pay and m.point.rps > 0),
        key=lambda m: m.point.rps,
    )
    ref = min(
        (m for m in rec.direct if m.point.payload == main_pay),
        key=lambda m: abs(m.point.rps - low.point.rps),
    )
    added = (low.latency_ms["p50"] - ref.latency_ms["p50"]) * 1000.0
    on_path = sidecar_cpu(low) - telemetry_us
    echo_cpu = float(np.mean([m.process_cpu_us_per_request["echo"] for m in rec.direct]))
    residual = (added - 2.0 * on_path) / 4.0
    # At the lowest load every traversal wakes a sleeping sidecar, and the simulator pays
    # each such wake-up's latency (wakeup_latency_us) beside the hop's: it is taken out.
    wake = wake_latency.charged(
        [m.wake_latency_us for m in rec.fit], low.wake_latency_us, max(residual, 0.0)
    )
    return HopLatency(
        low,
        ref,
        added,
        on_path,
        max(residual - (wake["charged_us"] if wake else 0.0), 0.0),
        echo_cpu,
        max((ref.latency_ms["p50"] * 1000.0 - echo_cpu) / 2.0, 1.0),
        wake,
    )


def fit_model(data: dict[str, Any], *, name: str = "calibrated", seed: int = 0) -> dict[str, Any]:
    """The model document (a dict ready for YAML) fitted from ``measure_lab``'s record."""
    rec = LabRecord.of(data)
    cpu = fit_request_cpu(rec, seed)
    costs = fit_config_costs(rec, cpu, seed)
    hs = fit_handshake(data, seed + 5)
    mem = fit_memory(data, seed)
    lat = fit_hop_latency(rec, cpu.telemetry)
    periods = [m.period_cpu for m in rec.fit if m.point.proxied and m.period_cpu]
    # The host's slow spells are the cores' (cluster.host_speed.spells); the drift is what
    # varies beside them, fitted from the periods out of them.
    spells = host_spells.fit_cores(periods, data.get("placement") or {}, seed=seed + 11)
    drift = fit_drift([host_spells.without_spells(p) for p in periods], cpu.cv.value, seed=seed + 7)
    params = parameters(data, cpu, costs, hs, mem, lat, drift)
    machine = data["machine"]
    record = fit_record(rec, cpu, costs, hs, mem, lat, params)
    # Older records have no CPU per period: no drift, and None says it was not fitted.
    record["estimates"]["cpu_drift"] = drift.to_json() if drift is not None else None
    # The fit points' spells, reported (validation runs each point's own: validate.py);
    # records whose periods have no series have none.
    record["host_spells"] = spells
    return {
        "kind": "envoy-sidecar",
        "describes": f"meshsim's own asyncio sidecar proxy ({name}), one event loop, HTTP/1.1, "
        "access log and Prometheus metrics on, as measured in the calibration lab",
        "measured_on": f"{machine['host']}: {machine['cpu']}, {machine['cores']} cores, "
        f"kernel {machine['kernel']}, Python {machine['python']}, "
        f"{machine['openssl']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
        + f"; {machine['date']}",
        "parameters": params,
        "fit": record,
    }


def wakeup_plane(
    base_fit: list[Measured],
    seed: int,
    decay_ms: float | None = None,
    *,
    preemptions: bool = False,
) -> PlaneFit | None:
    """Sidecar CPU per request against KiB and wake-ups per request (with ``decay_ms``, each
    the share of a cold one its sleep cooled); None when the wake-ups were not measured or
    do not vary enough to separate them from the payload. With ``preemptions``, where every
    point counted them, against the sidecars' preemptions per request too."""
    wakes = [sidecar_wakeups(m, decay_ms) for m in base_fit]
    if any(w is None for w in wakes):
        return None
    x = {"kib": [kib(m) for m in base_fit], "wakeups": [float(w or 0.0) for w in wakes]}
    preempted = [sidecar_preemptions(m) for m in base_fit]
    if preemptions and all(n is not None for n in preempted):
        x["preemptions"] = [float(n or 0.0) for n in preempted]
    try:
        return fit_plane(x, [sidecar_cpu(m) for m in base_fit], seed=seed)
    except ValueError:
        return None


def streamed_step(
    plane: PlaneFit, points: list[Measured], decay_ms: float | None, seed: int
) -> Estimate | None:
    """What the points whose request body is streamed cost beyond the plane fitted on the
    bodies held whole: the mean of their residuals, with a bootstrap CI (None: no such
    points, or their wake-ups were not counted)."""
    wakes = [sidecar_wakeups(m, decay_ms) for m in points]
    if not points or any(w is None for w in wakes):
        return None
    res = np.array(
        [sidecar_cpu(m) - plane_cpu(plane, m, w) for m, w in zip(points, wakes, strict=True)]
    )
    return bootstrap(res, np.mean, seed=seed)


def plane_cpu(plane: PlaneFit, m: Measured, wakeups: float | None) -> float:
    """The plane's sidecar CPU per request at ``m``, with its (cold-equivalent) ``wakeups``."""
    cpu = plane.intercept.value + plane.slopes["kib"].value * kib(m)
    cpu += plane.slopes["wakeups"].value * (wakeups or 0.0)
    if "preemptions" in plane.slopes:
        cpu += plane.slopes["preemptions"].value * (sidecar_preemptions(m) or 0.0)
    return cpu


def _tcp_connection_cost(
    pairs: list[tuple[Measured, Measured]], wake_us: float, decay_ms: float | None = None
) -> Estimate | None:
    """CPU per TCP connection end: (keep-alive off - on) per sidecar, each less its own
    wake-ups, over the two ends a sidecar opens per request; the range is over the sidecars
    and points (too few for a bootstrap)."""
    per_end = []
    for noka, ka in pairs:
        for side in ("client_sidecar", "server_sidecar"):
            per_end.append(
                (bare_cpu(noka, side, wake_us, decay_ms) - bare_cpu(ka, side, wake_us, decay_ms))
                / 2.0
            )
    if not per_end:
        return None
    return Estimate(max(float(np.mean(per_end)), 0.0), min(per_end), max(per_end))
