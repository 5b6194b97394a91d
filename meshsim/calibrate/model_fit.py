"""Lab measurements -> a cost model: :func:`fit_model`, step by step.

The record of :func:`meshsim.calibrate.calibration.measure_lab` is sorted into the point
sets each estimate uses (:class:`LabRecord`); then, each a named step with its own result:
the per-request CPU and its split (:func:`fit_request_cpu`), the costs of the other lab
configurations against the base one (:func:`fit_config_costs`), the TLS handshake
(:func:`fit_handshake`), memory per connection (:func:`fit_memory`) and the latency not
explained by CPU (:func:`fit_hop_latency`). :func:`parameters` turns them into the model's
parameters, each naming its source, and :func:`fit_record` into the fit record (machine,
software, distribution, every estimate with its bootstrap CI, residuals, every point with its
role). How each parameter is derived is summarised in ``reports/validation/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshsim.calibrate import host_phases, speed, wake_latency
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
from meshsim.calibrate.lab import LabConfig, Measured
from meshsim.calibrate.release import effective_tick

KIB = 1024.0


def _p(value: float, unit: str, source: str, note: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"value": round(float(value), 3), "unit": unit, "source": source}
    if note:
        d["note"] = note
    return d


def _est(e: Estimate) -> dict[str, Any]:
    return {"value": round(e.value, 3), "ci95": [round(e.lo, 3), round(e.hi, 3)]}


def _sidecar_cpu(m: Measured) -> float:
    """Mean process CPU per request of the two sidecars (one model serves both)."""
    c = m.process_cpu_us_per_request
    return (c["client_sidecar"] + c["server_sidecar"]) / 2.0


def _sidecar_wakeups(m: Measured) -> float | None:
    """Mean voluntary context switches per request of the two sidecars (None: not measured)."""
    w = m.wakeups_per_request
    if "client_sidecar" not in w or "server_sidecar" not in w:
        return None
    return (w["client_sidecar"] + w["server_sidecar"]) / 2.0


def _bare_cpu(m: Measured, side: str, wake_us: float) -> float:
    """A sidecar's CPU per request at a point, less its wake-ups' share."""
    return m.process_cpu_us_per_request[side] - wake_us * m.wakeups_per_request.get(side, 0.0)


def _kib(m: Measured) -> float:
    return 2.0 * m.point.payload / KIB  # the echo returns the body: request + response


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
    telemetry: float
    fixed_callbacks: float
    parse: float
    socket_io: float
    process_main: float
    """Mean process CPU per request at the smallest payload."""
    cv: Estimate
    """The coefficient of variation of the whole per-request CPU (a lower bound)."""

    def bare(self, m: Measured) -> float:
        """A point's sidecar CPU per request less its wake-ups' share."""
        return _sidecar_cpu(m) - self.wakeup_us * (_sidecar_wakeups(m) or 0.0)


def fit_request_cpu(rec: LabRecord, seed: int) -> RequestCpu:
    base_fit, main_pay = rec.base, rec.main_payload
    # Service time: the callbacks' CPU of both sidecars at the smallest payload.
    # The CI resamples whole points: samples of one point share its moment's machine state.
    by_point = [
        [*m.client_cpu_us, *m.server_cpu_us] for m in base_fit if m.point.payload == main_pay
    ]
    st = fit_service_time([s for g in by_point for s in g], seed=seed, groups=by_point)
    cb_line = fit_line(
        [_kib(m) for m in base_fit],
        [float(np.mean([*m.client_cpu_us, *m.server_cpu_us])) for m in base_fit],
        seed=seed,
    )
    # Process CPU per request (callbacks + event loop + kernel), against KiB moved.
    proc_line = fit_line(
        [_kib(m) for m in base_fit], [_sidecar_cpu(m) for m in base_fit], seed=seed + 1
    )
    proc_vs_load = fit_line(
        [m.achieved_rps for m in base_fit], [_sidecar_cpu(m) for m in base_fit], seed=seed + 2
    )
    # Wake-ups: an event loop that sleeps between requests pays a switch-in and cold caches
    # each time it is woken; under load one wake-up serves several requests, so the CPU per
    # request falls with load. Both are measured per point (voluntary context switches and
    # CPU per request), and fitted jointly with the payload: CPU = a + b KiB + w wake-ups.
    wake = _wakeup_plane(base_fit, seed + 8)
    if wake is not None:
        intercept, per_kib_est = wake.intercept.value, wake.slopes["kib"].value
        wake_us = max(wake.slopes["wakeups"].value, 0.0)
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
    proc_main = float(np.mean([_sidecar_cpu(m) for m in base_fit if m.point.payload == main_pay]))
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
            [_kib(m) for m, _ in tpairs],
            [cpu.bare(m) - cpu.bare(b) for m, b in tpairs],
            seed=seed + 4,
        )
        if len(tpairs) >= 2
        else None
    )
    tcp = _tcp_connection_cost(rec.paired_with_base(LabConfig(keep_alive=False)), cpu.wakeup_us)
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
    on_path = _sidecar_cpu(low) - telemetry_us
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
    params = parameters(data, cpu, costs, hs, mem, lat)
    machine = data["machine"]
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
        "fit": fit_record(rec, cpu, costs, hs, mem, lat, params),
    }


def parameters(
    data: dict[str, Any],
    cpu: RequestCpu,
    costs: ConfigCosts,
    hs: Handshake,
    mem: Memory,
    lat: HopLatency,
) -> dict[str, Any]:
    """The model's parameters, in the loader's order, each with its source and derivation."""
    m_src = (
        f"measurement: `meshsim calibrate{' --quick' if data['quick'] else ''}` "
        f"on {data['machine']['host']} ({data['machine']['cpu']})"
    )
    st, wake, tls, tcp = cpu.service_time, cpu.wakeups, costs.tls, costs.tcp
    socket_io, intercept, fixed_cb = cpu.socket_io, cpu.intercept, cpu.fixed_callbacks
    per_kib, parse, tele, cpu_cv = cpu.per_kib, cpu.parse, cpu.telemetry, cpu.cv
    proc_main, wake_us = cpu.process_main, cpu.wakeup_us
    hop, added, low, on_path = lat.hop_us, lat.added_us, lat.low, lat.on_path_us
    hs_est, mem_plain, mem_tls = hs.per_side, mem.plain, mem.tls
    tls_slope = max(tls.slope.value, 0.0) if tls else 0.0
    l7 = max(costs.filters.slope.value, 0.0) if costs.filters else 0.0
    params: dict[str, Any] = {
        "worker_threads": _p(
            1, "count", "architecture: the meshsim proxy is one asyncio event loop on one thread"
        ),
        "socket_io_us": _p(
            socket_io,
            "us",
            m_src,
            "process CPU per request (/proc) at 0 KiB "
            + ("and no wake-up " if wake is not None else "")
            + f"(intercept {intercept:.1f}) minus the callbacks' CPU "
            f"({fixed_cb:.1f}): event loop, epoll and kernel I/O",
        ),
        "payload_cpu_us_per_kib": _p(
            per_kib,
            "us/KiB",
            m_src,
            "slope of process CPU per request against KiB moved (request + echoed response)",
        ),
        "http_parse_request_us": _p(
            parse,
            "us",
            m_src,
            "half of the callbacks' fixed CPU less "
            "telemetry (the lab does not separate the two directions)",
        ),
        "http_parse_response_us": _p(parse, "us", m_src, "the other half, see request"),
        "routing_us": _p(0.0, "us", f"{m_src}: not separable from parsing (included there)"),
        "telemetry_us": _p(
            tele,
            "us",
            f"{m_src}: median of timed access-log line + the "
            "histogram updates (the proxy's per-request accounting)",
        ),
        "rbac_us": _p(
            5.0,
            "us",
            "not measured (the lab has no authorization policy); "
            "MODELLING ASSUMPTION copied from models/istio-sidecar.yaml",
        ),
        "l7_filter_us": _p(
            l7,
            "us",
            m_src,
            "per synthetic filter (meshsim/calibrate/node.py "
            "FilterChain: a regex match and eight header-rule lookups): slope of "
            "process CPU per request, 0 versus 4 filters",
        ),
        "wasm_filter_us": _p(
            46.433,
            "us",
            "not measured (the proxy runs no Wasm); "
            "MODELLING ASSUMPTION copied from models/istio-sidecar.yaml",
        ),
        "request_cpu_cv": _p(
            cpu_cv.value,
            "ratio",
            m_src,
            "standard deviation of the "
            f"sidecars' per-request callback CPU ({st.cv.value:.3f} x "
            f"{st.mean.value:.1f} us, access-log samples at the fit loads) "
            f"over their mean process CPU per request ({proc_main:.1f} us, "
            "/proc): the event-loop and kernel share, not measured per "
            "request, is taken as constant (a lower bound)",
        ),
        "hop_latency_us": _p(
            hop,
            "us",
            m_src,
            f"(added p50 {added:.1f} us at "
            f"{low.point.rps:g} rps - 2 x on-path CPU {on_path:.1f}) / 4 "
            "traversals"
            + (f" - the wake-up latency {lat.wake_us:.1f}" if lat.wake_us is not None else ""),
        ),
        "tls_legs": _p(1, "count", "architecture: one mTLS leg per sidecar"),
        "tls_record_cpu_us_per_kib": _p(
            tls_slope,
            "us/KiB",
            m_src,
            "slope of (mTLS - plain) process CPU per request (less wake-ups) against KiB moved",
        ),
        "tls_key_exchange_cpu_us": _p(
            0.0, "us", f"{m_src}: whole handshakes timed, counted in tls_handshake_overhead_cpu_us"
        ),
        "tls_sign_cpu_us": _p(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_cert_verify_cpu_us": _p(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_chain_verify_cpu_us": _p(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_chain_verifications": _p(
            1, "count", "architecture: meshsim's CA signs workload certificates directly"
        ),
        "tls_handshake_overhead_cpu_us": _p(
            hs_est.value,
            "us",
            m_src,
            "median CPU per side "
            "of a full mTLS 1.3 handshake with the proxy's own "
            "SSL contexts (in-memory BIO), both sides pooled",
        ),
        "tls_resumption_cpu_us": _p(
            hs_est.value,
            "us",
            "architecture: the proxy's upstream "
            "pool passes no TLS session, so it never resumes; a "
            "reconnect costs a full handshake",
        ),
        "base_memory_mb": _p(
            mem_plain.intercept.value / 1024.0,
            "MB",
            m_src,
            "RSS intercept of the plain sidecar against idle connections held",
        ),
        "connection_kb": _p(
            max(mem_plain.slope.value, 0.0),
            "KB",
            m_src,
            "slope of RSS against idle plain connections",
        ),
        "tls_connection_kb": _p(
            max(mem_tls.slope.value - mem_plain.slope.value, 0.0),
            "KB",
            m_src,
            "slope of RSS against idle mTLS connections, less the plain slope",
        ),
        "cluster_kb": _p(0.0, "KB", "not measured: the lab holds one cluster"),
        "endpoint_kb": _p(0.0, "KB", "not measured: the lab holds one endpoint"),
    }
    if wake is not None:
        ws = wake.x["wakeups"]
        params["wakeup_cpu_us"] = _p(
            wake_us,
            "us",
            m_src,
            "slope of the sidecars' process CPU per request against "
            "their voluntary context switches per request (/proc/PID/task/*/status), fitted "
            f"jointly with KiB over {len(ws)} points ({min(ws):.2f}..{max(ws):.2f} wake-ups "
            "per request)",
        )
    if tls is not None:
        params["tls_request_cpu_us"] = _p(
            max(tls.intercept.value, 0.0),
            "us",
            m_src,
            "intercept of (mTLS - plain) process "
            "CPU per request (less wake-ups) against KiB moved: the TLS calls' fixed cost",
        )
    if tcp is not None:
        params["tcp_connection_cpu_us"] = _p(
            tcp.value,
            "us",
            m_src,
            "(keep-alive off - on) process CPU per request, less "
            "wake-ups, over the two connection ends each sidecar opens per request (accepts "
            "one, connects one)",
        )
    if lat.wake is not None:
        w = lat.wake
        params["wakeup_latency_us"] = _p(
            w["charged_us"],
            "us",
            m_src,
            "mean latency of one-way loopback hops to a process sleeping on a lab core, sent "
            f"from the same core, over the fit points' floor (their 1st percentile, "
            f"{w['floor_us']:.1f} us), at {low.point.rps:g} rps, probed right before and after "
            f"the load (meshsim/calibrate/wake_latency.py): {w['excess_mean_us']:.1f} us"
            + (
                f", times {w['scale']:.3f} to fit in the latency the CPU leaves unexplained "
                "there per traversal"
                if w["scale"] < 1.0
                else ""
            ),
        )
    return params


def fit_record(
    rec: LabRecord,
    cpu: RequestCpu,
    costs: ConfigCosts,
    hs: Handshake,
    mem: Memory,
    lat: HopLatency,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The fit record: how every parameter was obtained, with CIs, residuals and points."""
    data, pts, fit_pts, main_pay = rec.data, rec.points, rec.fit, rec.main_payload
    st, wake, proc_main = cpu.service_time, cpu.wakeups, cpu.process_main
    cb_line, proc_line, proc_vs_load = cpu.callbacks, cpu.process, cpu.process_vs_load
    low, echo_cpu, net_us = lat.low, lat.echo_cpu_us, lat.network_one_way_us
    held = [m for m in pts if m.point.role == "held_out"]
    # The latency outside the proxies, per request: each point without proxies (load
    # generator -> echo) as its measured quantiles less the echo's CPU, which the simulated
    # lab charges itself. Predictions draw from the baseline at the held-out point's payload
    # and load (meshsim/calibrate/validate.py), so what is predicted is what the proxies add.
    groups: dict[tuple[int, float, bool], list[Measured]] = {}
    for m in pts:
        if not m.point.proxied and m.latency_quantiles_ms:
            key = (m.point.payload, m.point.rps, m.point.config.keep_alive)
            groups.setdefault(key, []).append(m)
    baselines = [_baseline_row(ms) for ms in groups.values()]
    tick = release_tick(data, baselines)
    return {
        "method": "meshsim calibrate (meshsim/calibrate): loopback lab, per-request CPU from "
        "the proxy's access log and /proc, latency from the load generator corrected "
        "for coordinated omission; bootstrap 95% CIs",
        "quick": data["quick"],
        "machine": data["machine"],
        "placement": data["placement"],
        "lab": {
            "connections": low.point.connections,
            "payload_bytes": main_pay,
            "echo_cpu_us": round(echo_cpu, 3),
            "network_one_way_us": round(net_us, 3),
            "capacity_estimate_rps": round(data["capacity_estimate_rps"], 1),
            # The load generator's effective timer tick (meshsim.calibrate.release): the
            # simulated one releases requests on it when the baselines are from each
            # request's send (lab_scenario.lab_scenario).
            "release_tick_ms": tick["value"] if tick else None,
            "load_generator_cpu_us": round(
                float(np.mean([m.process_cpu_us_per_request["load_generator"] for m in fit_pts])), 3
            ),
            "load_generator_cpu_source": "CPU of the load generator's process (all its "
            "threads; schedstat, else /proc/PID/stat) over a "
            "point, per completed request; here the mean over "
            "the fit points, and per baseline in "
            "client_delay.baselines",
        },
        "release_tick": tick,
        "client_delay": {
            "method": "per-request latency outside the proxies: the corrected latency of load "
            "generator -> echo without proxies (its quantiles (i + 0.5) / N), less "
            "the echo's and the load generator's CPU per request at that point "
            "(the simulated lab charges both on the request's path, on their "
            "cores); "
            "drawn as an empirical client_delay_ms for the held-out point's payload "
            "and load, with no network delay between the simulated pods (the "
            "loopback transit of the proxied hops is in hop_latency_us, which is "
            "fitted from the added latency over this baseline). Each baseline's "
            "load_generator_cpu_us (the load generator's CPU per request, at that "
            "payload, load and keep-alive) is charged as client_cpu_ms on the "
            "simulated client node, where the load generator shares core 0 with the "
            "client sidecar, and its echo_cpu_us is the simulated echo's CPU. The "
            "closed-loop baseline (rps 0) gives both for the saturation point",
            "baselines": baselines,
        }
        if baselines
        else None,
        "parameters_fitted": sorted(params),
        # The machine's speed the model's CPU costs were fitted at (validate.py scales them
        # to each held-out point's).
        "speed_reference": speed.reference(m.speed for m in fit_pts),
        # The wake-up latency charged per wake-up (meshsim.calibrate.wake_latency; None: the
        # fit points were not probed): the validation draws each point's the same way.
        "wake_latency": lat.wake,
        "service_time": st.to_json(),
        "estimates": {
            "callbacks_cpu_us": cb_line.to_json(),
            "process_cpu_us_vs_kib": proc_line.to_json(),
            "process_cpu_us_vs_rps": proc_vs_load.to_json(),
            "process_cpu_us_vs_kib_and_wakeups": wake.to_json() if wake else None,
            "tcp_connection_cpu_us": costs.tcp.to_json() if costs.tcp else None,
            "filter_cpu_us": costs.filters.to_json() if costs.filters else None,
            "tls_extra_cpu_us_vs_kib": costs.tls.to_json() if costs.tls else None,
            "request_cpu_cv": {
                **_est(cpu.cv),
                "callbacks_cv": round(st.cv.value, 3),
                "callbacks_mean_us": round(st.mean.value, 3),
                "process_cpu_us": round(proc_main, 3),
                "ci_note": "the callbacks' cv CI scaled; the process CPU's "
                "own uncertainty is not propagated",
            },
            "handshake_cpu_us_per_side": _est(hs.per_side),
            "handshake_cpu_us_by_side": {
                k: round(float(np.median(v)), 3) for k, v in hs.by_side.items()
            },
            "memory_kib_plain": mem.plain.to_json(),
            "memory_kib_tls": mem.tls.to_json(),
            "hop_latency_us": {
                "added_p50_us": round(lat.added_us, 3),
                "on_path_cpu_us": round(lat.on_path_us, 3),
            },
            "idle_cpu_ms_per_s": {
                k: round(float(v), 3) for k, v in data.get("idle_cpu_ms_per_s", {}).items()
            }
            or None,
        },
        "residuals": {
            "process_cpu_us_vs_kib": proc_line.residuals,
            "callbacks_cpu_us_vs_kib": cb_line.residuals,
            "process_cpu_us_vs_kib_and_wakeups": wake.residuals if wake else None,
        },
        "points": [_point_row(m) for m in pts],
        "held_out": [i for i, m in enumerate(pts) if m.point.role == "held_out"],
        "held_out_count": len(held),
    }


def _wakeup_plane(base_fit: list[Measured], seed: int) -> PlaneFit | None:
    """Sidecar CPU per request against KiB and wake-ups per request; None when the wake-ups
    were not measured or do not vary enough to separate them from the payload."""
    wakes = [_sidecar_wakeups(m) for m in base_fit]
    if any(w is None for w in wakes):
        return None
    try:
        return fit_plane(
            {"kib": [_kib(m) for m in base_fit], "wakeups": [float(w or 0.0) for w in wakes]},
            [_sidecar_cpu(m) for m in base_fit],
            seed=seed,
        )
    except ValueError:
        return None


def _tcp_connection_cost(pairs: list[tuple[Measured, Measured]], wake_us: float) -> Estimate | None:
    """CPU per TCP connection end: (keep-alive off - on) per sidecar, each less its own
    wake-ups, over the two ends a sidecar opens per request; the range is over the sidecars
    and points (too few for a bootstrap)."""
    per_end = []
    for noka, ka in pairs:
        for side in ("client_sidecar", "server_sidecar"):
            per_end.append((_bare_cpu(noka, side, wake_us) - _bare_cpu(ka, side, wake_us)) / 2.0)
    if not per_end:
        return None
    return Estimate(max(float(np.mean(per_end)), 0.0), min(per_end), max(per_end))


def _baseline_row(ms: list[Measured]) -> dict[str, Any]:
    """A load without proxies, over its passes: the latency outside the proxies (each pass's
    quantiles less the echo's and the load generator's own CPU in that pass, which the
    simulated lab charges on their cores, pooled) and those two CPUs per request (medians
    over the passes)."""
    m = ms[0]
    # From each request's actual send where the record has it: the simulated load generator
    # then waits for its release tick itself (lab_scenario.lab_scenario), so the corrected
    # latency would count that wait twice.
    from_send = all(r.send_latency_quantiles_ms for r in ms)
    delay: list[float] = []
    for r in ms:
        cpu_ms = (
            r.process_cpu_us_per_request["echo"] + r.process_cpu_us_per_request["load_generator"]
        ) / 1000.0
        qs = r.send_latency_quantiles_ms if from_send else r.latency_quantiles_ms
        delay += [max(q - cpu_ms, 0.0) for q in qs]
    per_release = [r.requests_per_release for r in ms if r.requests_per_release]

    def median(f: Callable[[Measured], float]) -> float:
        return float(np.median([f(r) for r in ms]))

    return {
        "payload_bytes": m.point.payload,
        "rps": m.point.rps,
        "keep_alive": m.point.config.keep_alive,
        "role": m.point.role,
        "passes": len(ms),
        "achieved_rps": round(median(lambda r: r.achieved_rps), 2),
        "latency_ms": {
            k: round(median(lambda r, k=k: r.latency_ms[k]), 4)  # type: ignore[misc]
            for k in m.latency_ms
        },
        "load_generator_cpu_us": round(
            median(lambda r: r.process_cpu_us_per_request["load_generator"]), 3
        ),
        "echo_cpu_us": round(median(lambda r: r.process_cpu_us_per_request["echo"]), 3),
        "delay_ms": [round(d, 4) for d in sorted(delay)],
        "delay_from": "send" if from_send else "intended",
        "requests_per_release": round(float(np.median(per_release)), 3) if per_release else None,
        # The host's time-averaged speed there (meshsim.calibrate.host_phases; None: not
        # traced), the reference for the echo's and the load generator's CPU above.
        "host_level_us": {
            core: round(us, 3)
            for core, us in host_phases.level_us(r.host_phases for r in ms).items()
        }
        or None,
        # The machine's speed while the two CPUs above were measured (median over passes).
        "speed_probe_s": {
            core: round(s, 7) for core, s in speed.median_probe_s(r.speed for r in ms).items()
        }
        or None,
    }


def release_tick(data: dict[str, Any], baselines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The effective release tick from the baselines' clumps (:func:`effective_tick`'s
    record), or None for records measured without it."""
    nominal = data.get("release_tick_ms")
    if nominal is None:
        return None
    return effective_tick(baselines, float(nominal))


def _point_row(m: Measured) -> dict[str, Any]:
    p = m.point
    return {
        "config": p.config.name,
        "mtls": p.config.mtls,
        "keep_alive": p.config.keep_alive,
        "filters": p.config.filters,
        "payload_bytes": p.payload,
        "rps": p.rps,
        "connections": p.connections,
        "proxied": p.proxied,
        "duration_s": p.duration_s,
        "role": p.role,
        "repeat": p.repeat,
        "achieved_rps": round(m.achieved_rps, 2),
        "latency_ms": {k: round(v, 4) for k, v in m.latency_ms.items()},
        "errors": m.errors,
        "process_cpu_us_per_request": {
            k: round(v, 2) for k, v in m.process_cpu_us_per_request.items()
        },
        "callbacks_cpu_us_mean": round(float(np.mean([*m.client_cpu_us, *m.server_cpu_us])), 2)
        if m.client_cpu_us or m.server_cpu_us
        else None,
        "wakeups_per_request": {k: round(v, 4) for k, v in m.wakeups_per_request.items()},
        "requests_per_release": m.requests_per_release,
        "run_delay_us_per_request": {k: round(v, 2) for k, v in m.run_delay_us_per_request.items()},
        # The access-log decomposition (meshsim.calibrate.decomposition); empty in records
        # measured before it.
        "sidecar_duration_ms": m.sidecar_duration_ms,
        "latency_parts_ms": {
            k: {s: round(v, 4) for s, v in stats.items()} for k, stats in m.latency_parts_ms.items()
        },
        "speed": m.speed or None,
        "host_phases": m.host_phases or None,
        "host_trace": m.host_trace or None,
        "wake_latency_us": m.wake_latency_us or None,
        "wake_latency_cross_us": m.wake_latency_cross_us or None,
    }
