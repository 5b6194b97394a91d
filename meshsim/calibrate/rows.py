"""A lab point as the fit records keep it, and the per-request figures every fit reads.

Shared by the fit of meshsim's own sidecar (:mod:`meshsim.calibrate.model_fit`), the black
box's (:mod:`meshsim.calibrate.blackbox`) and the churn study
(:mod:`meshsim.calibrate.churn`): a point's row (:func:`point_row`), a baseline's passes as
one row (:func:`baseline_row`) and the load generator's effective release tick from those
(:func:`release_tick`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from meshsim.calibrate import host_phases, speed
from meshsim.calibrate.cache_cooling import cold_wakeups
from meshsim.calibrate.points import Measured
from meshsim.calibrate.release import effective_tick

KIB = 1024.0


def sidecar_cpu(m: Measured) -> float:
    """Mean process CPU per request of the two sidecars (one model serves both)."""
    c = m.process_cpu_us_per_request
    return (c["client_sidecar"] + c["server_sidecar"]) / 2.0


def sidecar_wakeups(m: Measured, decay_ms: float | None = None) -> float | None:
    """Mean voluntary context switches per request of the two sidecars (None: not measured);
    with ``decay_ms``, each counted as the share of a cold one its sleep cooled
    (:func:`meshsim.calibrate.cache_cooling.cold_wakeups`)."""
    return cold_wakeups(
        m.process_cpu_us_per_request, m.wakeups_per_request, m.achieved_rps, decay_ms
    )


def sidecar_preemptions(m: Measured) -> float | None:
    """Mean involuntary context switches per request of the two sidecars (None: not
    counted, in records measured before them)."""
    p = m.preemptions_per_request
    if "client_sidecar" not in p or "server_sidecar" not in p:
        return None
    return (p["client_sidecar"] + p["server_sidecar"]) / 2.0


def bare_cpu(m: Measured, side: str, wake_us: float, decay_ms: float | None = None) -> float:
    """A sidecar's CPU per request at a point, less its wake-ups' share."""
    c = m.process_cpu_us_per_request
    w = m.wakeups_per_request
    cold = cold_wakeups(c, w, m.achieved_rps, decay_ms, (side,)) if side in w else 0.0
    return c[side] - wake_us * (cold or 0.0)


def kib(m: Measured) -> float:
    return 2.0 * m.point.payload / KIB  # the echo returns the body: request + response


def baseline_row(ms: list[Measured]) -> dict[str, Any]:
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
    lateness = [r.release_lateness_ms for r in ms if r.release_lateness_ms]

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
        # The load generator's timer lateness at this load (ms, quantiles; the median of the
        # passes' at each), which the simulated load generator's releases draw from.
        "release_lateness_ms": [round(float(v), 4) for v in np.median(lateness, axis=0)]
        if lateness and len({len(q) for q in lateness}) == 1
        else None,
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


def baseline_rows(points: list[Measured]) -> list[dict[str, Any]]:
    """One :func:`baseline_row` per load without proxies (payload, rate, keep-alive), over
    its passes."""
    groups: dict[tuple[int, float, bool], list[Measured]] = {}
    for m in points:
        if not m.point.proxied and m.latency_quantiles_ms:
            key = (m.point.payload, m.point.rps, m.point.config.keep_alive)
            groups.setdefault(key, []).append(m)
    return [baseline_row(ms) for ms in groups.values()]


def lab_block(
    data: dict[str, Any],
    low: Measured,
    main_payload: int,
    echo_cpu_us: float,
    network_one_way_us: float,
    tick: dict[str, Any] | None,
    fit_points: list[Measured],
) -> dict[str, Any]:
    """The fit record's ``lab``: the simulated lab's settings that both fits read the same
    way."""
    return {
        "connections": low.point.connections,
        "payload_bytes": main_payload,
        "echo_cpu_us": round(echo_cpu_us, 3),
        "network_one_way_us": round(network_one_way_us, 3),
        "capacity_estimate_rps": round(data["capacity_estimate_rps"], 1),
        # The load generator's effective timer tick (meshsim.calibrate.release): the
        # simulated one releases requests on it when the baselines are from each request's
        # send (lab_scenario.lab_scenario).
        "release_tick_ms": tick["value"] if tick else None,
        "load_generator_cpu_us": round(
            float(np.mean([m.process_cpu_us_per_request["load_generator"] for m in fit_points])),
            3,
        ),
    }


def release_tick(data: dict[str, Any], baselines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The effective release tick from the baselines' clumps (:func:`effective_tick`'s
    record), or None for records measured without it."""
    nominal = data.get("release_tick_ms")
    if nominal is None:
        return None
    return effective_tick(baselines, float(nominal))


def point_row(m: Measured) -> dict[str, Any]:
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
        # Involuntary context switches (absent in records measured before them).
        "preemptions_per_request": {k: round(v, 4) for k, v in m.preemptions_per_request.items()},
        "requests_per_release": m.requests_per_release,
        "release_lateness_ms": m.release_lateness_ms or None,
        "latency_from_send_ms": {k: round(v, 4) for k, v in m.latency_from_send_ms.items()} or None,
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
        # Each sidecar's CPU per 100 ms period (meshsim.calibrate.period_cpu); absent in
        # records measured before 2026-12-03.
        "period_cpu": m.period_cpu or None,
        # Throttled points: the limit as a multiple of the unlimited use, and the cgroup's
        # limit in millicores and cpu.stat over the load (meshsim.calibrate.throttle).
        **({"cpu_limit": p.cpu_limit, "cgroup": m.cgroup} if m.cgroup else {}),
    }
