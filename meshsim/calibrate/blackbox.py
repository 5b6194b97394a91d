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
proxy's, so ``meshsim validate`` and the simulator take it unchanged; it is fitted by
:mod:`meshsim.calibrate.blackbox_fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshsim.calibrate import cache_cooling, lab_costs
from meshsim.calibrate.blackbox_fit import fit_command_model
from meshsim.calibrate.calibration import (
    machine_info,
    refit_in_sim_terms,
    write_measurements,
    write_model,
)
from meshsim.calibrate.lab import Lab, workdir
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
from meshsim.calibrate.rows import sidecar_cpu
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
    # The fit needs it, and a refit from the record (--from-measurements) too.
    data["workers"] = workers
    write_measurements(data, out)
    return fit_and_write_command(data, out, log=log, seed=seed, workers=workers)


def fit_and_write_command(
    data: dict[str, Any], out: Path, *, log: Log, seed: int, workers: int
) -> dict[str, Any]:
    """Fit a proxy process's record and write ``out`` and its fit record."""
    doc = fit_command_model(data, name=out.stem, seed=seed, workers=workers)
    write_model(doc, out)
    # The simulated lab runs one worker per sidecar: its wake-up count stands for a
    # single-threaded proxy's only.
    return refit_in_sim_terms(doc, out, log) if workers == 1 else doc


__all__ = ["calibrate_command", "fit_and_write_command", "measure_command"]
