"""A black box's lab record -> a cost model: :func:`fit_command_model`, step by step.

What a black box lets the lab see is in :mod:`meshsim.calibrate.blackbox`. The fit follows
the Python proxy's (:mod:`meshsim.calibrate.model_fit`), each a named step with its own
result: the sidecars' CPU per request against KiB and wake-ups (:func:`fit_request_cpu`),
the per-connection costs from the lab's connection blocks (:func:`connection_costs`), the
latency not explained by CPU (:func:`fit_hop_latency`); then the model's parameters, each
naming its source (:func:`parameters`), and the fit record (:func:`fit_record`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from meshsim.calibrate import cache_cooling, speed
from meshsim.calibrate.fit import Estimate, LineFit, PlaneFit, bootstrap, fit_line
from meshsim.calibrate.model_document import (
    param,
    tls_request_param,
    unmeasured_parameters,
    wakeup_parameters,
)
from meshsim.calibrate.model_fit import LabRecord, wakeup_plane
from meshsim.calibrate.points import LabConfig, Measured
from meshsim.calibrate.rows import (
    baseline_rows,
    kib,
    lab_block,
    point_row,
    release_tick,
    sidecar_cpu,
    sidecar_wakeups,
)


def connection_costs(
    blocks: list[dict[str, Any]], wake_us: float, decay_ms: float | None = None
) -> dict[str, Any]:
    """Per-connection costs from :func:`~meshsim.calibrate.lab_costs.connection_costs`
    blocks, each mode's CPU less its wake-ups' share (the simulator charges wake-ups on their
    own; with ``decay_ms`` each the share of a cold one its mean sleep cooled, the sleep from
    the mode's wall time); the range is over the blocks."""

    def bare(b: dict[str, Any], mode: str) -> float:
        r = b[mode]
        wakes = float(r["wakeups"])
        if decay_ms is not None and wakes > 0.0 and r.get("seconds"):
            idle_ms = max(r["seconds"] * 1e3 / b["requests"] - r["cpu_us"] * 1e-3, 0.0)
            wakes *= cache_cooling.cold_share(idle_ms / wakes, decay_ms)
        return float(r["cpu_us"] - wake_us * wakes)

    def est(values: list[float]) -> Estimate:
        v = float(np.median(values))
        return Estimate(max(v, 0.0), max(min(values), 0.0), max(max(values), v, 0.0))

    out: dict[str, Any] = {
        "tcp": est([bare(b, "plain_connection") - bare(b, "keepalive") for b in blocks])
    }
    if all("tls_full" in b for b in blocks):
        out["full"] = est([bare(b, "tls_full") - bare(b, "plain_connection") for b in blocks])
        out["resumed"] = est([bare(b, "tls_resumed") - bare(b, "plain_connection") for b in blocks])
        out["resumed_fraction"] = float(np.mean([b["resumed_fraction"] for b in blocks]))
    return out


@dataclass(frozen=True)
class BlackBoxCpu:
    """The sidecars' process-tree CPU per request, fitted against KiB moved and wake-ups."""

    line: LineFit
    """Against KiB alone (the fallback where wake-ups were not counted)."""
    vs_load: LineFit
    """Against the load (kept in the record: how the CPU falls as the loops batch)."""
    wake: PlaneFit | None
    """Against KiB and (cold-equivalent) wake-ups, where the lab counted them."""
    intercept: Estimate
    per_kib: Estimate
    wake_est: Estimate | None
    origin: str
    """Why the plane was refitted through the origin ("" where it was not)."""
    cache_decay: dict[str, Any] | None
    """The host's cache cooling (:func:`meshsim.calibrate.cache_cooling.fit_decay`)."""

    @property
    def decay_ms(self) -> float | None:
        return self.cache_decay["decay_ms"] if self.cache_decay else None

    @property
    def wake_us(self) -> float:
        """A cold wake-up's CPU (0 where the lab did not count wake-ups)."""
        return max(self.wake_est.value, 0.0) if self.wake_est is not None else 0.0

    def bare(self, m: Measured) -> float:
        """The sidecars' CPU per request at ``m``, less its wake-ups."""
        return sidecar_cpu(m) - self.wake_us * (sidecar_wakeups(m, self.decay_ms) or 0.0)


def fit_request_cpu(record: LabRecord, seed: int) -> BlackBoxCpu:
    base_fit = record.base
    line = fit_line([kib(m) for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 1)
    vs_load = fit_line(
        [m.achieved_rps for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 2
    )
    # The host's cache cooling, where the lab probed it: as in the Python proxy's fit.
    cache_decay = cache_cooling.fit_decay(record.data.get("cache_cooling"))
    wake = wakeup_plane(base_fit, seed + 8, cache_decay["decay_ms"] if cache_decay else None)
    if wake is None:
        return BlackBoxCpu(line, vs_load, None, line.intercept, line.slope, None, "", cache_decay)
    if wake.intercept.value >= 0.0:
        return BlackBoxCpu(
            line,
            vs_load,
            wake,
            wake.intercept,
            wake.slopes["kib"],
            wake.slopes["wakeups"],
            "",
            cache_decay,
        )
    # A cost per wake-up steeper than the fixed cost is large (an event loop that handles
    # more events per epoll_wait as load grows) tips the intercept below zero. A request
    # cannot cost less than nothing: the plane is refitted through the origin, each slope's
    # CI widened to hold its new value.
    design = np.column_stack([wake.x["kib"], wake.x["wakeups"]])
    coef = np.linalg.lstsq(design, np.asarray(wake.y), rcond=None)[0]
    origin = (
        f"; the free fit's intercept was {wake.intercept.value:.1f} us, so the plane "
        "was refitted through the origin"
    )
    per_kib, wake_est = (
        Estimate(float(c), min(e.lo, float(c)), max(e.hi, float(c)))
        for c, e in zip(coef, (wake.slopes["kib"], wake.slopes["wakeups"]), strict=True)
    )
    intercept = Estimate(0.0, 0.0, max(wake.intercept.hi, 0.0))
    return BlackBoxCpu(line, vs_load, wake, intercept, per_kib, wake_est, origin, cache_decay)


@dataclass(frozen=True)
class HopFigures:
    """The latency the proxies add beyond their CPU, at the lowest base load."""

    low: Measured
    """The lowest-load base point at the main payload."""
    added_us: float
    """Its p50 over the nearest point without proxies."""
    on_path_us: float
    """The sidecars' CPU per request there."""
    echo_cpu_us: float
    network_one_way_us: float

    @property
    def hop_us(self) -> float:
        """Per traversal: two sidecars' CPU out of the added latency, over four traversals."""
        return max((self.added_us - 2.0 * self.on_path_us) / 4.0, 0.0)


def fit_hop_latency(record: LabRecord) -> HopFigures:
    main_pay, base_fit, direct_fit = record.main_payload, record.base, record.direct
    low = min(
        (m for m in base_fit if m.point.payload == main_pay and m.point.rps > 0),
        key=lambda m: m.point.rps,
    )
    ref = min(
        (m for m in direct_fit if m.point.payload == main_pay),
        key=lambda m: abs(m.point.rps - low.point.rps),
    )
    echo_cpu = float(np.mean([m.process_cpu_us_per_request["echo"] for m in direct_fit]))
    return HopFigures(
        low,
        (low.latency_ms["p50"] - ref.latency_ms["p50"]) * 1000.0,
        sidecar_cpu(low),
        echo_cpu,
        max((ref.latency_ms["p50"] * 1000.0 - echo_cpu) / 2.0, 1.0),
    )


@dataclass(frozen=True)
class Provenance:
    """Where a black box's figures come from: the command's lab run."""

    source: str
    key_type: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> Provenance:
        # Records from before --key-type were all measured with ECDSA P-256 certificates.
        key_type = str(data.get("key_type", "ecdsa-p256"))
        source = (
            f"measurement: `meshsim calibrate{' --quick' if data['quick'] else ''} "
            f"--key-type {key_type} --proxy-cmd ...` on {data['machine']['host']} "
            f"({data['machine']['cpu']})"
        )
        return cls(source, key_type)


BLACK = "a black box: not separable from the fixed per-request CPU (in socket_io_us)"
NO_TLS = "not measured: the command template has no {mtls}"
CLIENT_TICKETS = (
    ". Charged where a client offers a ticket: whether this proxy's own client side keeps "
    "one is not measured (the lab offers sessions to its server side only); without "
    "tls_session_tickets, given from its configuration, the simulated proxy never resumes"
)


@dataclass(frozen=True)
class BlackBoxFit:
    """Every step's result, from which the parameters and the fit record are written."""

    record: LabRecord
    cpu: BlackBoxCpu
    service_time: Estimate
    """Mean CPU per request less wake-ups at the main payload's fit points."""
    service_samples: int
    tls: LineFit | None
    """(mTLS - plain) CPU per request, less wake-ups, against KiB (None: no {mtls})."""
    conn: dict[str, Any]
    memory_plain: LineFit
    memory_tls: LineFit | None
    hop: HopFigures

    @classmethod
    def of(cls, data: dict[str, Any], seed: int) -> BlackBoxFit:
        # The same sorting of points, and of configurations paired with their base, as
        # the Python proxy's fit.
        record = LabRecord.of(data)
        cpu = fit_request_cpu(record, seed)
        # What the simulator charges per request at the main payload, without wake-ups: the
        # closest a black box gets to a service time (its mean; the spread is not
        # observable).
        main = np.asarray(
            [cpu.bare(m) for m in record.base if m.point.payload == record.main_payload]
        )
        tpairs = record.paired_with_base(LabConfig(mtls=True))
        tls = (
            fit_line(
                [kib(m) for m, _ in tpairs],
                [cpu.bare(m) - cpu.bare(b) for m, b in tpairs],
                seed=seed + 4,
            )
            if len(tpairs) >= 2
            else None
        )
        mem = data["memory_kib"]
        return cls(
            record,
            cpu,
            bootstrap(main, lambda a: float(np.mean(a)), seed=seed),
            len(main),
            tls,
            connection_costs(data["connection_costs"], cpu.wake_us, cpu.decay_ms),
            fit_line([r[0] for r in mem["plain"]], [r[1] for r in mem["plain"]], seed=seed + 6),
            fit_line([r[0] for r in mem["tls"]], [r[1] for r in mem["tls"]], seed=seed + 7)
            if "tls" in mem
            else None,
            fit_hop_latency(record),
        )


def parameters(fit: BlackBoxFit, workers: int) -> dict[str, Any]:
    """The model's parameters, each naming the measurement it came from."""
    src = Provenance.of(fit.record.data)
    m_src, key_type = src.source, src.key_type
    cpu, tls, conn, hop = fit.cpu, fit.tls, fit.conn, fit.hop
    mem_plain, mem_tls = fit.memory_plain, fit.memory_tls
    full = conn.get("full")
    resumed = conn.get("resumed")
    resumes = conn.get("resumed_fraction", 0.0) >= 0.5
    params: dict[str, Any] = {
        "worker_threads": param(
            workers,
            "count",
            "given with --workers: the worker threads the command's proxy is configured with",
        ),
        "socket_io_us": param(
            max(cpu.intercept.value, 0.0),
            "us",
            m_src,
            "intercept of the sidecars' process-tree CPU per request (schedstat) "
            "at 0 KiB"
            + (" and no wake-up" if cpu.wake is not None else "")
            + ": all of a black box's fixed per-request cost (parsing, routing, "
            f"event loop, kernel I/O){cpu.origin}",
            cpu.intercept,
        ),
        "payload_cpu_us_per_kib": param(
            max(cpu.per_kib.value, 0.0),
            "us/KiB",
            m_src,
            "slope of process CPU per request against KiB moved (request + echoed response)",
            cpu.per_kib,
        ),
        "http_parse_request_us": param(0.0, "us", f"{m_src}: {BLACK}"),
        "http_parse_response_us": param(0.0, "us", f"{m_src}: {BLACK}"),
        "routing_us": param(0.0, "us", f"{m_src}: {BLACK}"),
        "telemetry_us": param(0.0, "us", f"{m_src}: {BLACK}"),
        "l7_filter_us": param(
            0.0, "us", "not measured: a proxy command has no synthetic-filter knob"
        ),
        "hop_latency_us": param(
            hop.hop_us,
            "us",
            m_src,
            f"(added p50 {hop.added_us:.1f} us at "
            f"{hop.low.point.rps:g} rps - 2 x process CPU {hop.on_path_us:.1f}) / 4 "
            "traversals",
        ),
        "tls_record_cpu_us_per_kib": param(
            max(tls.slope.value, 0.0) if tls else 0.0,
            "us/KiB",
            m_src if tls else NO_TLS,
            "slope of (mTLS - plain) process CPU per request (less wake-ups) against KiB moved"
            if tls
            else None,
            tls.slope if tls else None,
        ),
        "tls_key_exchange_cpu_us": param(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_handshake_overhead_cpu_us": param(
            full.value if full else 0.0,
            "us",
            m_src if full else NO_TLS,
            f"server side of a full mTLS handshake with {key_type} workload keys: the "
            "inbound sidecar's process CPU per "
            "request over a new mTLS connection each, less over a new plain connection each "
            "(both less wake-ups; median of the blocks); the client side is taken as equal"
            if full
            else None,
            full,
        ),
        "tls_resumption_cpu_us": param(
            (resumed.value if resumes else full.value) if (full and resumed) else 0.0,
            "us",
            m_src if full else NO_TLS,
            (
                f"as the full handshake, resuming the previous connection's session "
                f"({conn['resumed_fraction']:.0%} resumed)"
                if resumes
                else f"the proxy resumed {conn['resumed_fraction']:.0%} of the sessions offered: a "
                "reconnect costs a full handshake"
            )
            + CLIENT_TICKETS
            if full
            else None,
            (resumed if resumes else full) if full else None,
        ),
        "base_memory_mb": param(
            mem_plain.intercept.value / 1024.0,
            "MB",
            m_src,
            "RSS intercept of the plain sidecar's process tree against idle connections",
        ),
        "connection_kb": param(
            max(mem_plain.slope.value, 0.0),
            "KB",
            m_src,
            "slope of RSS against idle plain connections",
        ),
        "tls_connection_kb": param(
            max(mem_tls.slope.value - mem_plain.slope.value, 0.0) if mem_tls else 0.0,
            "KB",
            m_src if mem_tls else NO_TLS,
            "slope of RSS against idle mTLS connections, less the plain slope" if mem_tls else None,
        ),
        "tcp_connection_cpu_us": param(
            conn["tcp"].value,
            "us",
            m_src,
            "the inbound sidecar's process CPU per request "
            "over a new plain connection each, less over one kept-alive connection (both less "
            "wake-ups; median of the blocks): one accepted connection end",
            conn["tcp"],
        ),
        **unmeasured_parameters(),
    }
    if cpu.wake_est is not None and cpu.wake is not None:
        params |= wakeup_parameters(
            m_src,
            cpu.wake_us,
            cpu.wake.x["wakeups"],
            cpu.cache_decay,
            ci=cpu.wake_est,
            origin=cpu.origin,
        )
    if tls is not None:
        params["tls_request_cpu_us"] = tls_request_param(m_src, tls, ci=True)
    if full:
        params["tls_server_resumption"] = param(
            1.0 if resumes else 0.0,
            "count",
            m_src,
            f"the server sidecar resumed {conn['resumed_fraction']:.0%} of the sessions the "
            "lab's client offered (1: at least half)",
        )
    return params


def fit_record(fit: BlackBoxFit, params: dict[str, Any]) -> dict[str, Any]:
    """The fit record: how every parameter was obtained, with CIs, residuals and points."""
    data, record, cpu, hop = fit.record.data, fit.record, fit.cpu, fit.hop
    main_pay = record.main_payload
    baselines = baseline_rows(record.points)
    tick = release_tick(data, baselines)
    st = fit.service_time
    return {
        "method": "meshsim calibrate --proxy-cmd (meshsim/calibrate/blackbox.py): loopback "
        "lab, process-tree CPU and wake-ups per request from /proc, latency from the "
        "load generator corrected for coordinated omission; bootstrap 95% CIs",
        "proxy_command": data["proxy_command"],
        "key_type": Provenance.of(data).key_type,
        "quick": data["quick"],
        "machine": data["machine"],
        "placement": data["placement"],
        "lab": {
            **lab_block(
                data, hop.low, main_pay, hop.echo_cpu_us, hop.network_one_way_us, tick, record.fit
            ),
            "lab_ceiling_rps": round(
                float(data.get("lab_ceiling_rps") or data["capacity_estimate_rps"]), 1
            ),
        },
        "release_tick": tick,
        "client_delay": {
            "method": "as meshsim calibrate's (see its fit record)",
            "baselines": baselines,
        }
        if baselines
        else None,
        "parameters_fitted": sorted(params),
        # The Python probe's speed at the fit: the echo and the load generator are Python
        # whatever the proxy under test is written in (meshsim/calibrate/speed.py).
        "speed_reference": speed.reference(m.speed for m in record.fit),
        "cache_cooling": cache_cooling.record(data.get("cache_cooling"), cpu.cache_decay),
        "service_time": {
            "dist": "constant",
            "unit": "us",
            "samples": fit.service_samples,
            "mean": {"value": round(st.value, 3), "ci95": [round(st.lo, 3), round(st.hi, 3)]},
            "cv": {"value": 0.0, "ci95": [0.0, 0.0]},
            "note": "a black box: the sidecars' process CPU per request less wake-ups at "
            f"the {main_pay} B fit points (a mean per point; the spread between "
            "requests is not observable, so the model charges the mean)",
        },
        "estimates": {
            "process_cpu_us_vs_kib": cpu.line.to_json(),
            "process_cpu_us_vs_rps": cpu.vs_load.to_json(),
            "process_cpu_us_vs_kib_and_wakeups": cpu.wake.to_json() if cpu.wake else None,
            "tls_extra_cpu_us_vs_kib": fit.tls.to_json() if fit.tls else None,
            "connection_costs": {
                k: (v.to_json() if isinstance(v, Estimate) else v) for k, v in fit.conn.items()
            },
            "connection_costs_blocks": data["connection_costs"],
            "memory_kib_plain": fit.memory_plain.to_json(),
            "memory_kib_tls": fit.memory_tls.to_json() if fit.memory_tls else None,
            "hop_latency_us": {
                "added_p50_us": round(hop.added_us, 3),
                "on_path_cpu_us": round(hop.on_path_us, 3),
            },
            "idle_cpu_ms_per_s": {
                k: round(float(v), 3) for k, v in data.get("idle_cpu_ms_per_s", {}).items()
            }
            or None,
        },
        "residuals": {
            "process_cpu_us_vs_kib": cpu.line.residuals,
            "process_cpu_us_vs_kib_and_wakeups": cpu.wake.residuals if cpu.wake else None,
        },
        "points": [point_row(m) for m in record.points],
        "held_out": [i for i, m in enumerate(record.points) if m.point.role == "held_out"],
        "held_out_count": sum(1 for m in record.points if m.point.role == "held_out"),
    }


def fit_command_model(
    data: dict[str, Any], *, name: str = "proxy-cmd", seed: int = 0, workers: int = 1
) -> dict[str, Any]:
    """The model document fitted from :func:`~meshsim.calibrate.blackbox.measure_command`'s
    record (see :mod:`meshsim.calibrate.blackbox` for what differs from the Python proxy's
    fit)."""
    fit = BlackBoxFit.of(data, seed)
    params = parameters(fit, workers)
    machine = data["machine"]
    return {
        "kind": "envoy-sidecar",
        "describes": f"the proxy started by `{data['proxy_command']}` ({name}) as both "
        "sidecars of the calibration lab, HTTP/1.1, measured as a black box",
        "measured_on": f"{machine['host']}: {machine['cpu']}, {machine['cores']} cores, "
        f"kernel {machine['kernel']}; {machine['date']}; workload keys "
        f"{Provenance.of(data).key_type}",
        "parameters": params,
        "fit": fit_record(fit, params),
    }
