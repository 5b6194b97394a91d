"""The calibrated model's document: its parameters, each naming the measurement and the
derivation it came from (:func:`parameters`), and the fit record beside it
(:func:`fit_record`: machine, software, every estimate with its bootstrap CI, residuals and
every point with its role).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from meshsim.calibrate import cache_cooling, speed
from meshsim.calibrate.cgroup import OLDER_RECORDS
from meshsim.calibrate.cpu_drift import LAG1_BOUNDS
from meshsim.calibrate.fit import Estimate, LineFit
from meshsim.calibrate.rows import baseline_rows, lab_block, point_row, release_tick

if TYPE_CHECKING:
    from meshsim.calibrate.cpu_drift import Drift
    from meshsim.calibrate.model_fit import (
        ConfigCosts,
        Handshake,
        HopLatency,
        LabRecord,
        Memory,
        RequestCpu,
    )


def param(
    value: float, unit: str, source: str, note: str | None = None, ci: Estimate | None = None
) -> dict[str, Any]:
    """A model parameter; with ``ci``, its bootstrap 95 % CI as the parameter's range."""
    d: dict[str, Any] = {"value": round(float(value), 3), "unit": unit, "source": source}
    if note:
        d["note"] = note
    if ci is not None:
        lo, hi = round(min(ci.lo, value), 3), round(max(ci.hi, value), 3)
        if lo < hi and lo >= 0.0:
            d["range"] = [lo, hi]
            d["range_source"] = f"{source}: bootstrap 95% CI of the fit"
    return d


def _est(e: Estimate) -> dict[str, Any]:
    return {"value": round(e.value, 3), "ci95": [round(e.lo, 3), round(e.hi, 3)]}


def parameters(
    data: dict[str, Any],
    cpu: RequestCpu,
    costs: ConfigCosts,
    hs: Handshake,
    mem: Memory,
    lat: HopLatency,
    drift: Drift | None = None,
) -> dict[str, Any]:
    """The model's parameters, each with its source and derivation."""
    src = (
        f"measurement: `meshsim calibrate{' --quick' if data['quick'] else ''}` "
        f"on {data['machine']['host']} ({data['machine']['cpu']})"
    )
    return {
        **_request_cpu(src, cpu, costs),
        **_latency(src, lat),
        **_tls(src, costs, hs),
        **_memory(src, mem),
        **drift_parameters(src, drift),
        **unmeasured_parameters(),
    }


def drift_parameters(src: str, drift: Drift | None) -> dict[str, Any]:
    """``cpu_drift_cv`` and ``cpu_drift_ms`` from the fit points' CPU per period
    (:func:`meshsim.calibrate.cpu_drift.fit_drift`); none without a drift."""
    if drift is None:
        return {}
    how = (
        f"the sidecars' CPU per 100 ms period at {drift.samples} sidecar-points with 70 or "
        "more requests a period (/proc schedstat every 10 ms, access-log answer times): "
        "out of the host's slow spells: the variance of its residual on its line on the "
        "requests per period over the requests' own noise's (median, "
        f"{drift.period_cv:.3f} per period) and that excess's lag-1 correlation "
        f"({drift.period_lag1:.2f})"
    )
    return {
        "cpu_drift_cv": param(
            drift.cv.value, "ratio", src, f"{how}; the process's cv from the period's", drift.cv
        ),
        "cpu_drift_ms": param(
            drift.time_constant_ms.value,
            "ms",
            src,
            f"{how}: the time constant whose 100 ms means correlate so"
            + (
                " (the fit's upper bound on the correlation: the drift lasts at least this long)"
                if drift.period_lag1 >= LAG1_BOUNDS[1]
                else ""
            ),
            drift.time_constant_ms,
        ),
    }


def unmeasured_parameters() -> dict[str, Any]:
    """What the lab does not measure for any proxy: the same assumption or architecture in
    every calibrated model (meshsim's own sidecar and a proxy command's alike)."""
    return {
        "rbac_us": param(
            5.0,
            "us",
            "not measured (the lab has no authorization policy); "
            "MODELLING ASSUMPTION copied from models/istio-sidecar.yaml",
        ),
        "wasm_filter_us": param(
            46.433,
            "us",
            "not measured (the lab runs no Wasm); "
            "MODELLING ASSUMPTION copied from models/istio-sidecar.yaml",
        ),
        "tls_legs": param(1, "count", "architecture: one mTLS leg per sidecar"),
        "tls_sign_cpu_us": param(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_cert_verify_cpu_us": param(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_chain_verify_cpu_us": param(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_chain_verifications": param(
            1, "count", "architecture: meshsim's CA signs workload certificates directly"
        ),
        "cluster_kb": param(0.0, "KB", "not measured: the lab holds one cluster"),
        "endpoint_kb": param(0.0, "KB", "not measured: the lab holds one endpoint"),
    }


def _request_cpu(src: str, cpu: RequestCpu, costs: ConfigCosts) -> dict[str, Any]:
    """The CPU of a request through the sidecar, split into the model's components."""
    st, wake = cpu.service_time, cpu.wakeups
    params: dict[str, Any] = {
        "worker_threads": param(
            1, "count", "architecture: the meshsim proxy is one asyncio event loop on one thread"
        ),
        "socket_io_us": param(
            cpu.socket_io,
            "us",
            src,
            "process CPU per request (/proc) at 0 KiB "
            + ("and no wake-up " if wake is not None else "")
            + f"(intercept {cpu.intercept:.1f}) minus the callbacks' CPU "
            f"({cpu.fixed_callbacks:.1f}): event loop, epoll and kernel I/O",
        ),
        "payload_cpu_us_per_kib": param(
            cpu.per_kib,
            "us/KiB",
            src,
            "slope of process CPU per request against KiB moved (request + echoed response)",
        ),
        "http_parse_request_us": param(
            cpu.parse,
            "us",
            src,
            "half of the callbacks' fixed CPU less "
            "telemetry (the lab does not separate the two directions)",
        ),
        "http_parse_response_us": param(cpu.parse, "us", src, "the other half, see request"),
        "routing_us": param(0.0, "us", f"{src}: not separable from parsing (included there)"),
        "telemetry_us": param(
            cpu.telemetry,
            "us",
            f"{src}: median of timed access-log line + the "
            "histogram updates (the proxy's per-request accounting)",
        ),
        "l7_filter_us": param(
            max(costs.filters.slope.value, 0.0) if costs.filters else 0.0,
            "us",
            src,
            "per synthetic filter (meshsim/calibrate/node.py "
            "FilterChain: a regex match and eight header-rule lookups): slope of "
            "process CPU per request, 0 versus 4 filters",
        ),
        "request_cpu_cv": param(
            cpu.cv.value,
            "ratio",
            src,
            "standard deviation of the "
            f"sidecars' per-request callback CPU ({st.cv.value:.3f} x "
            f"{st.mean.value:.1f} us, access-log samples at the fit loads) "
            f"over their mean process CPU per request ({cpu.process_main:.1f} us, "
            "/proc): the event-loop and kernel share, not measured per "
            "request, is taken as constant (a lower bound)",
        ),
    }
    if wake is not None:
        params |= wakeup_parameters(src, cpu.wakeup_us, wake.x["wakeups"], cpu.cache_decay)
    if cpu.streamed is not None:
        params |= streamed_request_parameters(src, cpu.streamed, cpu.streamed_bodies)
    if cpu.preemption is not None and wake is not None:
        counts = wake.x["preemptions"]
        params["preemption_cpu_us"] = param(
            max(cpu.preemption.value, 0.0),
            "us",
            src,
            "slope of the sidecars' process CPU per request against their involuntary context "
            "switches per request (/proc/PID/task/*/status), fitted jointly with KiB and "
            f"wake-ups over {len(counts)} points ({min(counts):.2f}..{max(counts):.2f} per "
            "request)",
            cpu.preemption,
        )
    if costs.tcp is not None:
        params["tcp_connection_cpu_us"] = param(
            costs.tcp.value,
            "us",
            src,
            "(keep-alive off - on) process CPU per request, less "
            "wake-ups, over the two connection ends each sidecar opens per request (accepts "
            "one, connects one)",
        )
    return params


def streamed_request_parameters(
    src: str, streamed: Estimate, bodies: Sequence[int]
) -> dict[str, Any]:
    """``buffered_request_max_kib`` (meshsim's proxy's own limit) and
    ``streamed_request_cpu_us``, the step beyond it at the ``bodies`` (bytes) measured."""
    from meshsim.proxy.fastpath import WHOLE_BODY_BYTES

    return {
        "buffered_request_max_kib": param(
            WHOLE_BODY_BYTES / 1024.0,
            "KiB",
            "architecture: meshsim/proxy/fastpath.py WHOLE_BODY_BYTES (a larger request body "
            "is streamed through a coroutine of its own)",
        ),
        "streamed_request_cpu_us": param(
            max(streamed.value, 0.0),
            "us",
            src,
            "mean excess of the sidecars' process CPU per request, at the fit points whose "
            f"request body is streamed ({', '.join(f'{b / 1024:g}' for b in bodies)} KiB), "
            "over the plane of KiB and wake-ups fitted on the bodies held whole",
            streamed,
        ),
    }


def wakeup_parameters(
    src: str,
    cost_us: float,
    wakeups: Sequence[float],
    decay: dict[str, float] | None,
    *,
    ci: Estimate | None = None,
    origin: str = "",
) -> dict[str, Any]:
    """``wakeup_cpu_us``, the plane's slope over the fit points' ``wakeups`` per request,
    and with the host's cache-cooling fit (:func:`meshsim.calibrate.cache_cooling.fit_decay`)
    ``wakeup_cache_decay_ms``; the same for every calibrated proxy."""
    cooled = (
        ", each counted as the share of a cold one that its mean sleep cooled "
        "(1 - exp(-sleep / wakeup_cache_decay_ms), the sleep from the sidecar's idle time "
        "and switches per request): a fully cold wake-up's CPU"
        if decay
        else ""
    )
    out = {
        "wakeup_cpu_us": param(
            cost_us,
            "us",
            src,
            "slope of the sidecars' process CPU per request against "
            "their voluntary context switches per request (/proc/PID/task/*/status)"
            f"{cooled}, fitted jointly with KiB over {len(wakeups)} points "
            f"({min(wakeups):.2f}..{max(wakeups):.2f} {'cold-equivalent ' if decay else ''}"
            f"wake-ups per request){origin}",
            ci,
        )
    }
    if decay:
        out["wakeup_cache_decay_ms"] = param(
            decay["decay_ms"],
            "ms",
            src,
            "time constant of a pinned process's 1 MiB walk growing with the sleep before it "
            f"(meshsim/calibrate/cache_cooling.py): {decay['cold_floor_us']:.0f} us woken at "
            f"once, + {decay['amplitude_us']:.0f} us (1 - exp(-sleep / decay)), rms "
            f"{decay['rms_us']:.1f} us",
        )
    return out


def tls_request_param(src: str, tls: LineFit, *, ci: bool = False) -> dict[str, Any]:
    """``tls_request_cpu_us``: the intercept of the (mTLS - plain) line, for every
    calibrated proxy (``ci``: its bootstrap CI as the range)."""
    return param(
        max(tls.intercept.value, 0.0),
        "us",
        src,
        "intercept of (mTLS - plain) process "
        "CPU per request (less wake-ups) against KiB moved: the TLS calls' fixed cost",
        tls.intercept if ci else None,
    )


def _latency(src: str, lat: HopLatency) -> dict[str, Any]:
    """The latency the CPU does not explain: per proxy traversal, and per wake-up."""
    params = {
        "hop_latency_us": param(
            lat.hop_us,
            "us",
            src,
            f"(added p50 {lat.added_us:.1f} us at "
            f"{lat.low.point.rps:g} rps - 2 x on-path CPU {lat.on_path_us:.1f}) / 4 "
            "traversals"
            + (f" - the wake-up latency {lat.wake_us:.1f}" if lat.wake_us is not None else ""),
        )
    }
    if lat.wake is not None:
        w = lat.wake
        params["wakeup_latency_us"] = param(
            w["charged_us"],
            "us",
            src,
            "mean latency of one-way loopback hops to a process sleeping on a lab core, sent "
            f"from the same core, over the fit points' floor (their 1st percentile, "
            f"{w['floor_us']:.1f} us), at {lat.low.point.rps:g} rps, probed right before and "
            f"after the load (meshsim/calibrate/wake_latency.py): {w['excess_mean_us']:.1f} us"
            + (
                f", times {w['scale']:.3f} to fit in the latency the CPU leaves unexplained "
                "there per traversal"
                if w["scale"] < 1.0
                else ""
            ),
        )
    return params


def _tls(src: str, costs: ConfigCosts, hs: Handshake) -> dict[str, Any]:
    """mTLS: the records' CPU against the plain configuration, and whole handshakes."""
    tls = costs.tls
    params = {
        "tls_record_cpu_us_per_kib": param(
            max(tls.slope.value, 0.0) if tls else 0.0,
            "us/KiB",
            src,
            "slope of (mTLS - plain) process CPU per request (less wake-ups) against KiB moved",
        ),
        "tls_key_exchange_cpu_us": param(
            0.0, "us", f"{src}: whole handshakes timed, counted in tls_handshake_overhead_cpu_us"
        ),
        "tls_handshake_overhead_cpu_us": param(
            hs.per_side.value,
            "us",
            src,
            "median CPU per side "
            "of a full mTLS 1.3 handshake with the proxy's own "
            "SSL contexts (in-memory BIO), both sides pooled",
        ),
        "tls_resumption_cpu_us": param(
            hs.per_side.value,
            "us",
            "architecture: the proxy's upstream "
            "pool passes no TLS session, so it never resumes; a "
            "reconnect costs a full handshake",
        ),
        # tls_session_tickets is left out (0): that same pool keeps no ticket.
        "tls_server_resumption": param(
            1,
            "count",
            "architecture: the proxy's server context is Python's ssl (OpenSSL), which issues "
            "TLS 1.3 session tickets and resumes them (meshsim calibrate churn: 99% of the "
            "sessions offered resumed, reports/stacks.md)",
        ),
    }
    if tls is not None:
        params["tls_request_cpu_us"] = tls_request_param(src, tls)
    return params


def _memory(src: str, mem: Memory) -> dict[str, Any]:
    """Resident memory: the idle sidecar's, and each idle connection's, plain and mTLS."""
    return {
        "base_memory_mb": param(
            mem.plain.intercept.value / 1024.0,
            "MB",
            src,
            "RSS intercept of the plain sidecar against idle connections held",
        ),
        "connection_kb": param(
            max(mem.plain.slope.value, 0.0),
            "KB",
            src,
            "slope of RSS against idle plain connections",
        ),
        "tls_connection_kb": param(
            max(mem.tls.slope.value - mem.plain.slope.value, 0.0),
            "KB",
            src,
            "slope of RSS against idle mTLS connections, less the plain slope",
        ),
    }


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
    st, wake, cb_line, proc_line = cpu.service_time, cpu.wakeups, cpu.callbacks, cpu.process
    low, echo_cpu, net_us = lat.low, lat.echo_cpu_us, lat.network_one_way_us
    held = [m for m in pts if m.point.role == "held_out"]
    # The latency outside the proxies, per request: each point without proxies (load
    # generator -> echo) as its measured quantiles less the echo's CPU, which the simulated
    # lab charges itself. Predictions draw from the baseline at the held-out point's payload
    # and load (meshsim/calibrate/validate.py), so what is predicted is what the proxies add.
    baselines = baseline_rows(pts)
    tick = release_tick(data, baselines)
    return {
        "method": "meshsim calibrate (meshsim/calibrate): loopback lab, per-request CPU from "
        "the proxy's access log and /proc, latency from the load generator corrected "
        "for coordinated omission; bootstrap 95% CIs",
        "quick": data["quick"],
        "machine": data["machine"],
        "placement": data["placement"],
        "cgroups": data.get("cgroups", OLDER_RECORDS),
        "lab": {
            **lab_block(data, low, main_pay, echo_cpu, net_us, tick, fit_pts),
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
            "and load, less what the simulated lab's own load generator and echo make "
            "of that baseline, quantile by quantile (their clumps and queues: "
            "meshsim.calibrate.baseline_residual, for baselines timed from each send), "
            "with no network delay between the simulated pods (the "
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
        # How fast the host cooled a sleeping process's caches (meshsim.calibrate.cache_cooling;
        # None: not probed, every wake-up costs the same).
        "cache_cooling": cache_cooling.record(data.get("cache_cooling"), cpu.cache_decay),
        "service_time": st.to_json(),
        "estimates": _estimates(data, cpu, costs, hs, mem, lat),
        "residuals": {
            "process_cpu_us_vs_kib": proc_line.residuals,
            "callbacks_cpu_us_vs_kib": cb_line.residuals,
            "process_cpu_us_vs_kib_and_wakeups": wake.residuals if wake else None,
        },
        "points": [point_row(m) for m in pts],
        "held_out": [i for i, m in enumerate(pts) if m.point.role == "held_out"],
        "held_out_count": len(held),
        # The same held-out loads with the server sidecar under a CPU limit, and why there
        # are none where the host had no writable CPU cgroup (meshsim.calibrate.throttle).
        "throttled": [i for i, m in enumerate(pts) if m.point.role == "throttled"],
        "cpu_limits": data.get("cpu_limits"),
    }


def _estimates(
    data: dict[str, Any],
    cpu: RequestCpu,
    costs: ConfigCosts,
    hs: Handshake,
    mem: Memory,
    lat: HopLatency,
) -> dict[str, Any]:
    """The fit record's estimates: each fitted line, plane and cost with its CI."""
    st, wake = cpu.service_time, cpu.wakeups
    return {
        "callbacks_cpu_us": cpu.callbacks.to_json(),
        "process_cpu_us_vs_kib": cpu.process.to_json(),
        "process_cpu_us_vs_rps": cpu.process_vs_load.to_json(),
        "process_cpu_us_vs_kib_and_wakeups": wake.to_json() if wake else None,
        "streamed_request_cpu_us": (
            {**cpu.streamed.to_json(), "bodies_bytes": list(cpu.streamed_bodies)}
            if cpu.streamed is not None
            else None
        ),
        # Tried as a third regressor wherever the lab counted preemptions; kept (as
        # preemption_cpu_us) only where its CI stays above 0.
        "preemption_cpu_us": (
            {**cpu.preemption_tried.to_json(), "kept": cpu.preemption is not None}
            if cpu.preemption_tried is not None
            else None
        ),
        "tcp_connection_cpu_us": costs.tcp.to_json() if costs.tcp else None,
        "filter_cpu_us": costs.filters.to_json() if costs.filters else None,
        "tls_extra_cpu_us_vs_kib": costs.tls.to_json() if costs.tls else None,
        "request_cpu_cv": {
            **_est(cpu.cv),
            "callbacks_cv": round(st.cv.value, 3),
            "callbacks_mean_us": round(st.mean.value, 3),
            "process_cpu_us": round(cpu.process_main, 3),
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
    }
