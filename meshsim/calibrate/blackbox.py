"""Black-box calibration: ``meshsim calibrate --proxy-cmd "CMD ..."``.

The same lab, grid and fit as meshsim's own proxy (:mod:`meshsim.calibrate.calibration`),
with the sidecars started from a command template (:mod:`meshsim.calibrate.proxycmd`):
HAProxy, the Rust reference sidecar in ``proxies/rust-sidecar``, or a user's Envoy or
linkerd2-proxy binary. What differs is only what a black box lets the lab see:

- CPU per request is the process tree's (schedstat, all threads and children), the whole
  of it: there is no access log with the callbacks' CPU, so the fixed per-request cost is
  not split into parsing, routing and telemetry (it is all in ``socket_io_us``), and its
  variability from request to request is not known (no ``request_cpu_cv``: the simulator
  charges the mean).
- TLS handshakes are not timed in memory with Python's SSL objects but on the proxy itself:
  the server sidecar's CPU per request over a new mTLS connection each, less over a new
  plain connection each (:func:`meshsim.calibrate.lab_costs.connection_costs`), so a
  handshake costs what that proxy's TLS library makes it cost (OpenSSL for HAProxy, rustls
  for the Rust sidecar). A resumed handshake is measured the same way.
- The configurations measured are those the template can express: mTLS with ``{mtls}``,
  keep-alive off with ``{keepalive}``; never the synthetic filters.

The model document has the same kind (``envoy-sidecar``) and parameters as the Python
proxy's, so ``meshsim validate`` and the simulator take it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate import cache_cooling, lab_costs, speed
from meshsim.calibrate.calibration import machine_info, refit_in_sim_terms, write_model
from meshsim.calibrate.fit import Estimate, bootstrap, fit_line
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.model_document import (
    param,
    tls_request_param,
    unmeasured_parameters,
    wakeup_parameters,
)
from meshsim.calibrate.model_fit import LabRecord, wakeup_plane
from meshsim.calibrate.points import (
    LabConfig,
    Measured,
    Point,
    estimate_capacity,
    grid,
    point_line,
    scale,
)
from meshsim.calibrate.proxycmd import ProxyCommand
from meshsim.calibrate.rows import (
    baseline_rows,
    kib,
    lab_block,
    point_row,
    release_tick,
    sidecar_cpu,
    sidecar_wakeups,
)
from meshsim.proxy.loadgen import TIMER_TICK_S

Log = Callable[[str], None]


def measure_command(
    cmd: ProxyCommand, quick: bool, log: Log = print, key_type: str = "ecdsa-p256"
) -> dict[str, Any]:
    """Run the lab grid with the command's sidecars, their certificates' keys of
    ``key_type``; a JSON-able record like :func:`meshsim.calibrate.calibration.measure_lab`'s."""
    lab = Lab(workdir(), proxy=cmd, key_type=key_type)
    try:
        log(f"proxy under test: {cmd.template} (workload keys {key_type})")
        log(f"lab placement: {lab.placement}")
        cap = estimate_capacity(lab, quick, log)
        pts = grid(quick, mtls=cmd.mtls, filters=False, keep_alive_off=cmd.keepalive_knob)
        ceiling = lab_ceiling(lab, cap, max(p.rps for p in pts), log)
        points = scale(pts, min(cap, ceiling))
        n_conn = 100 if quick else 400
        # Connection costs in blocks at the start, middle and end of the grid (as the
        # Python lab's handshakes), so that their spread counts the machine's drift.
        blocks = [lab_costs.connection_costs(lab, n_conn // 2, tls=cmd.mtls)]
        cooling = [lab.probe_cache_cooling()]  # as the Python lab's, same three moments
        middle = len(points) // 2
        measured: list[Measured] = []
        for i, p in enumerate(points):
            if i == middle:
                blocks.append(lab_costs.connection_costs(lab, n_conn // 2, tls=cmd.mtls))
                cooling.append(lab.probe_cache_cooling())
            m = lab.measure(p, seed=i + 1)
            measured.append(m)
            log(
                point_line(i, len(points), p, m)
                + ", sidecar CPU "
                + (f"{sidecar_cpu(m):.1f} us/req" if p.proxied else "-")
            )
        memory = lab_costs.connection_memory(
            lab, (0, 50, 100, 200) if quick else (0, 100, 200, 300, 400)
        )
        if not cmd.mtls:
            memory.pop("tls", None)
        blocks.append(lab_costs.connection_costs(lab, n_conn // 2, tls=cmd.mtls))
        cooling.append(lab.probe_cache_cooling())
        idle = lab_costs.idle_cpu_ms_per_s(lab, 2.0 if quick else 5.0)
        log(f"idle CPU (ms per s): {idle}")
        return {
            "quick": quick,
            "proxy_command": cmd.template,
            "key_type": key_type,
            "capacity_estimate_rps": cap,
            "lab_ceiling_rps": ceiling,
            "placement": lab.placement,
            "points": [m.to_json() for m in measured],
            "memory_kib": memory,
            "connection_costs": blocks,
            "cache_cooling": cache_cooling.merge(cooling),
            "idle_cpu_ms_per_s": idle,
            "release_tick_ms": TIMER_TICK_S * 1000.0,
            "machine": machine_info(),
        }
    finally:
        lab.close()


def lab_ceiling(lab: Lab, capacity: float, top: float, log: Log = print) -> float:
    """The rate the grid's loads are fractions of: the proxied path's capacity, or less when
    the lab itself (the Python load generator's open loop and echo, without proxies) cannot
    carry the grid's highest open-loop load of it.

    A compiled proxy's closed loop runs faster than the load generator can send Poisson
    arrivals: on a 2-core machine the Rust sidecar's closed loop gave 27k rps while the lab
    without proxies queued for seconds at 16k. Probes without proxies at ``top`` times the
    candidate rate shrink it by 0.7 until the lab keeps up: throughput within 5 % of the
    target and p50 within 3x (+0.2 ms) of its p50 at a light load.
    """
    base = LabConfig()
    ref = lab.measure(Point(base, 256, round(0.05 * capacity, 1), 8, False, 1.0))
    limit = 3.0 * ref.latency_ms["p50"] + 0.2
    rate = capacity
    for _ in range(6):
        target = round(top * rate, 1)
        probe = lab.measure(Point(base, 256, target, 8, False, 1.0))
        ok = probe.achieved_rps >= 0.95 * target and probe.latency_ms["p50"] <= limit
        log(
            f"lab ceiling probe without proxies at {target:g} rps: {probe.achieved_rps:.0f} "
            f"rps, p50 {probe.latency_ms['p50']:.3f} ms (limit {limit:.3f}): "
            + ("keeps up" if ok else "does not keep up")
        )
        if ok:
            break
        rate *= 0.7
    return rate


def _connection_costs(
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


def fit_command_model(
    data: dict[str, Any], *, name: str = "proxy-cmd", seed: int = 0, workers: int = 1
) -> dict[str, Any]:
    """The model document fitted from :func:`measure_command`'s record (see the module
    docstring for what differs from the Python proxy's fit)."""
    # The same sorting of points, and of configurations paired with their base, as the
    # Python proxy's fit.
    record = LabRecord.of(data)
    pts, fit_pts, base_fit, direct_fit = record.points, record.fit, record.base, record.direct
    main_pay = record.main_payload

    proc_line = fit_line(
        [kib(m) for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 1
    )
    proc_vs_load = fit_line(
        [m.achieved_rps for m in base_fit], [sidecar_cpu(m) for m in base_fit], seed=seed + 2
    )
    # The host's cache cooling, where the lab probed it: as in the Python proxy's fit.
    cache_decay = cache_cooling.fit_decay(data.get("cache_cooling"))
    decay_ms = cache_decay["decay_ms"] if cache_decay else None
    wake = wakeup_plane(base_fit, seed + 8, decay_ms)
    if wake is not None:
        intercept, per_kib_est = wake.intercept, wake.slopes["kib"]
        wake_est = wake.slopes["wakeups"]
    else:
        intercept, per_kib_est, wake_est = proc_line.intercept, proc_line.slope, None
    origin = ""
    if wake is not None and wake.intercept.value < 0.0:
        # A cost per wake-up steeper than the fixed cost is large (an event loop that
        # handles more events per epoll_wait as load grows) tips the intercept below zero.
        # A request cannot cost less than nothing: the plane is refitted through the origin,
        # each slope's CI widened to hold its new value.
        design = np.column_stack([wake.x["kib"], wake.x["wakeups"]])
        coef = np.linalg.lstsq(design, np.asarray(wake.y), rcond=None)[0]
        origin = (
            f"; the free fit's intercept was {wake.intercept.value:.1f} us, so the plane "
            "was refitted through the origin"
        )
        intercept = Estimate(0.0, 0.0, max(wake.intercept.hi, 0.0))
        per_kib_est, wake_est = (
            Estimate(float(c), min(e.lo, float(c)), max(e.hi, float(c)))
            for c, e in zip(coef, (wake.slopes["kib"], wake.slopes["wakeups"]), strict=True)
        )
    wake_us = max(wake_est.value, 0.0) if wake_est is not None else 0.0

    def bare(m: Measured) -> float:
        return sidecar_cpu(m) - wake_us * (sidecar_wakeups(m, decay_ms) or 0.0)

    # What the simulator charges per request at the main payload, without wake-ups: the
    # closest a black box gets to a service time (its mean; the spread is not observable).
    main = np.asarray([bare(m) for m in base_fit if m.point.payload == main_pay])
    st_mean = bootstrap(main, lambda a: float(np.mean(a)), seed=seed)
    tpairs = record.paired_with_base(LabConfig(mtls=True))
    tls = (
        fit_line([kib(m) for m, _ in tpairs], [bare(m) - bare(b) for m, b in tpairs], seed=seed + 4)
        if len(tpairs) >= 2
        else None
    )
    conn = _connection_costs(data["connection_costs"], wake_us, decay_ms)
    mem = data["memory_kib"]
    mem_plain = fit_line([r[0] for r in mem["plain"]], [r[1] for r in mem["plain"]], seed=seed + 6)
    mem_tls = (
        fit_line([r[0] for r in mem["tls"]], [r[1] for r in mem["tls"]], seed=seed + 7)
        if "tls" in mem
        else None
    )

    low = min(
        (m for m in base_fit if m.point.payload == main_pay and m.point.rps > 0),
        key=lambda m: m.point.rps,
    )
    ref = min(
        (m for m in direct_fit if m.point.payload == main_pay),
        key=lambda m: abs(m.point.rps - low.point.rps),
    )
    added = (low.latency_ms["p50"] - ref.latency_ms["p50"]) * 1000.0
    on_path = sidecar_cpu(low)
    hop = max((added - 2.0 * on_path) / 4.0, 0.0)
    echo_cpu = float(np.mean([m.process_cpu_us_per_request["echo"] for m in direct_fit]))
    net_us = max((ref.latency_ms["p50"] * 1000.0 - echo_cpu) / 2.0, 1.0)

    cmd = data["proxy_command"]
    # Records from before --key-type were all measured with ECDSA P-256 certificates.
    key_type = str(data.get("key_type", "ecdsa-p256"))
    m_src = (
        f"measurement: `meshsim calibrate{' --quick' if data['quick'] else ''} "
        f"--key-type {key_type} --proxy-cmd ...` on {data['machine']['host']} "
        f"({data['machine']['cpu']})"
    )
    black = "a black box: not separable from the fixed per-request CPU (in socket_io_us)"
    tls_note = "not measured: the command template has no {mtls}"
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
            max(intercept.value, 0.0),
            "us",
            m_src,
            "intercept of the sidecars' process-tree CPU per request (schedstat) "
            "at 0 KiB"
            + (" and no wake-up" if wake is not None else "")
            + ": all of a black box's fixed per-request cost (parsing, routing, "
            f"event loop, kernel I/O){origin}",
            intercept,
        ),
        "payload_cpu_us_per_kib": param(
            max(per_kib_est.value, 0.0),
            "us/KiB",
            m_src,
            "slope of process CPU per request against KiB moved (request + echoed response)",
            per_kib_est,
        ),
        "http_parse_request_us": param(0.0, "us", f"{m_src}: {black}"),
        "http_parse_response_us": param(0.0, "us", f"{m_src}: {black}"),
        "routing_us": param(0.0, "us", f"{m_src}: {black}"),
        "telemetry_us": param(0.0, "us", f"{m_src}: {black}"),
        "l7_filter_us": param(
            0.0, "us", "not measured: a proxy command has no synthetic-filter knob"
        ),
        "hop_latency_us": param(
            hop,
            "us",
            m_src,
            f"(added p50 {added:.1f} us at "
            f"{low.point.rps:g} rps - 2 x process CPU {on_path:.1f}) / 4 "
            "traversals",
        ),
        "tls_record_cpu_us_per_kib": param(
            max(tls.slope.value, 0.0) if tls else 0.0,
            "us/KiB",
            m_src if tls else tls_note,
            "slope of (mTLS - plain) process CPU per request (less wake-ups) against KiB moved"
            if tls
            else None,
            tls.slope if tls else None,
        ),
        "tls_key_exchange_cpu_us": param(0.0, "us", "counted in tls_handshake_overhead_cpu_us"),
        "tls_handshake_overhead_cpu_us": param(
            full.value if full else 0.0,
            "us",
            m_src if full else tls_note,
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
            m_src if full else tls_note,
            (
                f"as the full handshake, resuming the previous connection's session "
                f"({conn['resumed_fraction']:.0%} resumed)"
                if resumes
                else f"the proxy resumed {conn['resumed_fraction']:.0%} of the sessions offered: a "
                "reconnect costs a full handshake"
            )
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
            m_src if mem_tls else tls_note,
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
    if wake_est is not None and wake is not None:
        params |= wakeup_parameters(
            m_src, wake_us, wake.x["wakeups"], cache_decay, ci=wake_est, origin=origin
        )
    if tls is not None:
        params["tls_request_cpu_us"] = tls_request_param(m_src, tls, ci=True)

    baselines = baseline_rows(pts)
    tick = release_tick(data, baselines)
    st_json = {
        "dist": "constant",
        "unit": "us",
        "samples": len(main),
        "mean": {
            "value": round(st_mean.value, 3),
            "ci95": [round(st_mean.lo, 3), round(st_mean.hi, 3)],
        },
        "cv": {"value": 0.0, "ci95": [0.0, 0.0]},
        "note": "a black box: the sidecars' process CPU per request less wake-ups at "
        f"the {main_pay} B fit points (a mean per point; the spread between "
        "requests is not observable, so the model charges the mean)",
    }
    fit_block = {
        "method": "meshsim calibrate --proxy-cmd (meshsim/calibrate/blackbox.py): loopback "
        "lab, process-tree CPU and wake-ups per request from /proc, latency from the "
        "load generator corrected for coordinated omission; bootstrap 95% CIs",
        "proxy_command": cmd,
        "key_type": key_type,
        "quick": data["quick"],
        "machine": data["machine"],
        "placement": data["placement"],
        "lab": {
            **lab_block(data, low, main_pay, echo_cpu, net_us, tick, fit_pts),
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
        "speed_reference": speed.reference(m.speed for m in fit_pts),
        "cache_cooling": cache_cooling.record(data.get("cache_cooling"), cache_decay),
        "service_time": st_json,
        "estimates": {
            "process_cpu_us_vs_kib": proc_line.to_json(),
            "process_cpu_us_vs_rps": proc_vs_load.to_json(),
            "process_cpu_us_vs_kib_and_wakeups": wake.to_json() if wake else None,
            "tls_extra_cpu_us_vs_kib": tls.to_json() if tls else None,
            "connection_costs": {
                k: (v.to_json() if isinstance(v, Estimate) else v) for k, v in conn.items()
            },
            "connection_costs_blocks": data["connection_costs"],
            "memory_kib_plain": mem_plain.to_json(),
            "memory_kib_tls": mem_tls.to_json() if mem_tls else None,
            "hop_latency_us": {
                "added_p50_us": round(added, 3),
                "on_path_cpu_us": round(on_path, 3),
            },
            "idle_cpu_ms_per_s": {
                k: round(float(v), 3) for k, v in data.get("idle_cpu_ms_per_s", {}).items()
            }
            or None,
        },
        "residuals": {
            "process_cpu_us_vs_kib": proc_line.residuals,
            "process_cpu_us_vs_kib_and_wakeups": wake.residuals if wake else None,
        },
        "points": [point_row(m) for m in pts],
        "held_out": [i for i, m in enumerate(pts) if m.point.role == "held_out"],
        "held_out_count": sum(1 for m in pts if m.point.role == "held_out"),
    }
    return {
        "kind": "envoy-sidecar",
        "describes": f"the proxy started by `{cmd}` ({name}) as both sidecars of the "
        "calibration lab, HTTP/1.1, measured as a black box",
        "measured_on": f"{data['machine']['host']}: {data['machine']['cpu']}, "
        f"{data['machine']['cores']} cores, kernel {data['machine']['kernel']}; "
        f"{data['machine']['date']}; workload keys {key_type}",
        "parameters": params,
        "fit": fit_block,
    }


def calibrate_command(
    cmd: ProxyCommand,
    out: Path,
    *,
    quick: bool,
    log: Log = print,
    seed: int = 0,
    workers: int = 1,
    key_type: str = "ecdsa-p256",
) -> dict[str, Any]:
    """Measure, fit and write ``out`` (the model), its fit record and its measurements."""
    data = measure_command(cmd, quick, log, key_type)
    raw = out.with_suffix(".measurements.json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(data))
    doc = fit_command_model(data, name=out.stem, seed=seed, workers=workers)
    write_model(doc, out)
    # The simulated lab runs one worker per sidecar: its wake-up count stands for a
    # single-threaded proxy's only.
    return refit_in_sim_terms(doc, out, log) if workers == 1 else doc


__all__ = ["calibrate_command", "fit_command_model", "measure_command"]
