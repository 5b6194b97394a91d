"""What the validation's residuals point to, in words: one function per mechanism.

Each ``_…`` function below reads the fit record and the held-out comparison and returns one
paragraph, or None when its mechanism does not show; :func:`diagnose` lists those that do, in
the order the validation report prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from meshsim.calibrate.validate import UTIL_LIMIT, Comparison

Fit = dict[str, Any]
Rows = list[Comparison]


def fmt_ci(e: dict[str, Any]) -> str:
    """An estimate and its 95 % CI, to three significant figures."""
    return f"{e['value']:.3g} (95% CI {e['ci95'][0]:.3g}..{e['ci95'][1]:.3g})"


def _cpu_falls_with_load(fit: Fit, rows: Rows) -> str | None:
    """Per-request CPU falls with load: explained by wake-ups when they were fitted."""
    est = fit["estimates"]
    slope = est["process_cpu_us_vs_rps"]["slope"]
    if not slope["ci95"][1] < 0:
        return None
    plane = est.get("process_cpu_us_vs_kib_and_wakeups")
    if plane:
        return _cpu_falls_with_wakeups(slope, plane, rows)
    idle = est.get("idle_cpu_ms_per_s")
    if idle:
        sidecars = max(idle.get("client_sidecar", 0.0), idle.get("server_sidecar", 0.0))
        why = (
            f"An idle sidecar uses {sidecars:.1f} ms of CPU per second (measured over "
            f"seconds without traffic, /proc resolution {idle['resolution_ms_per_s']:.1f}"
            " ms/s), so the fall is not a fixed background cost (timers, polling): it "
            "is work per event-loop wake-up shared by the requests that one wake-up "
            "serves, more of them as load rises (batching). The model format has no "
            "such mechanism; "
        )
    else:
        why = (
            "CPU that does not scale with requests (event-loop wake-ups, timers) is "
            "spread over more requests as load rises; "
        )
    return (
        f"Per-request process CPU falls with load ({slope['value']:+.3f} us per rps, 95% CI "
        f"{slope['ci95'][0]:+.3f}..{slope['ci95'][1]:+.3f}; the echo's too). "
        + why
        + "the model charges the constant cost fitted at the fit loads, so it over-predicts "
        "CPU at high load and under-predicts the saturation throughput."
    )


def _cpu_falls_with_wakeups(slope: dict[str, Any], plane: dict[str, Any], rows: Rows) -> str:
    w = plane["slopes"]["wakeups"]
    pts = plane["points"]
    lo, hi = min(pts, key=lambda q: q["wakeups"]), max(pts, key=lambda q: q["wakeups"])
    res = float(np.std([q["residual"] for q in pts]))
    pairs = [
        (r.measured["wakeups_per_request"], r.predicted.get("wakeups_per_request"))
        for r in rows
        if "wakeups_per_request" in r.measured
    ]
    return (
        f"Per-request process CPU falls with load ({slope['value']:+.4f} us per rps, 95% CI "
        f"{slope['ci95'][0]:+.4f}..{slope['ci95'][1]:+.4f}), and the wake-ups fall with it: "
        f"the sidecars' voluntary context switches per request go from {hi['wakeups']:.2f} "
        f"(CPU {hi['y']:.0f} us) to {lo['wakeups']:.2f} (CPU {lo['y']:.0f} us) over the fit "
        f"points. CPU = a + b KiB + w wake-ups fits them with w = {fmt_ci(w)} us per "
        f"wake-up (residual sd {res:.1f} us). The model charges w on each burst that finds "
        "its worker idle (wakeup_cpu_us), so the simulator's CPU per request falls with "
        "load by the same mechanism"
        + (
            ": predicted against measured wake-ups per request at the held-out points are "
            + ", ".join(f"{m:.2f}/{q:.2f}" for m, q in pairs if q is not None)
            + " (measured/predicted; the table below)."
            if pairs
            else "."
        )
    )


def _tail_without_proxies(fit: Fit, rows: Rows) -> str | None:
    """The lab's own tail (load generator -> echo), drawn as a baseline or missing."""
    direct = [p for p in fit["points"] if not p["proxied"] and p["latency_ms"]["p50"] > 0]
    if not direct:
        return None
    tail = float(np.median([p["latency_ms"]["p99"] / p["latency_ms"]["p50"] for p in direct]))
    if fit.get("client_delay"):
        return (
            f"The lab's tail exists without the proxies (load generator -> echo alone: p99 / "
            f"p50 = {tail:.0f}, median over the direct points). Each prediction draws that "
            "baseline, measured at the point's payload and load, as a per-request delay "
            "outside the proxies (client_delay_ms), less the load generator's and the echo's "
            "CPU, which the simulated lab charges on the request's path on their cores, and "
            "less what its load generator and echo make of the baseline themselves (their "
            "clumps and queues: meshsim.calibrate.baseline_residual), so the errors are of "
            "what the proxies add. The rest of the draw (the loopback, the kernel's "
            "scheduling) is independent of the proxy path; in the lab it is not."
        )
    if tail <= 5:
        return None
    return (
        f"The lab's tail exists without the proxies: load generator -> echo alone has "
        f"p99 / p50 = {tail:.0f} (median over the direct points). The simulated lab "
        "takes only the baseline's p50 as network delay, so that tail (the load "
        "generator's and the echo's pauses, scheduling on two shared cores) is missing "
        "from every predicted p90/p99; no proxy parameter can supply it."
    )


def _unchecked_busy_cores(fit: Fit, rows: Rows) -> str | None:
    """Points left unchecked because the core a sidecar shares is busy, not the sidecar."""
    excluded = [
        r
        for r in rows
        if not r.saturation and not r.checked and r.utilisation < UTIL_LIMIT <= r.core_utilisation
    ]
    if not excluded:
        return None
    return (
        f"{len(excluded)} held-out point(s) are not checked although the busier sidecar's "
        f"own share is below {UTIL_LIMIT:.0%}: their core, shared with the load generator "
        "or the echo, is above it ("
        + ", ".join(
            f"{r.point['config']} {r.point['rps']:g} rps: sidecar "
            f"{r.utilisation:.0%}, core "
            f"{r.core_utilisation:.0%}, p50 {r.measured['p50']:.1f} ms"
            for r in excluded
        )
        + "). The lab's latency there varies by orders of magnitude between passes."
    )


def _wakeups_overcounted(fit: Fit, rows: Rows) -> str | None:
    """The simulator counts more idle bursts than the kernel counted sleeps."""
    plane = fit["estimates"].get("process_cpu_us_vs_kib_and_wakeups")
    counted = [
        r
        for r in rows
        if "wakeups_per_request" in r.measured
        and r.predicted.get("wakeups_per_request") == r.predicted.get("wakeups_per_request")
        and not r.point["mtls"]
        and r.point["keep_alive"]
    ]
    over = [
        r
        for r in counted
        if not r.saturation
        and r.predicted["wakeups_per_request"] > 1.3 * r.measured["wakeups_per_request"]
    ]
    scale = fit.get("wakeup_scale")
    if scale and counted:
        return _wakeups_rescaled(fit, scale, counted)
    if not (over and plane):
        return None
    w = plane["slopes"]["wakeups"]["value"]
    worst = max(
        over, key=lambda r: r.predicted["wakeups_per_request"] - r.measured["wakeups_per_request"]
    )
    extra = (worst.predicted["wakeups_per_request"] - worst.measured["wakeups_per_request"]) * w
    sat = [r for r in counted if r.saturation]
    return (
        "The simulator's idle bursts are not the kernel's sleeps: below saturation it "
        "counts more bursts that find a sidecar idle than the sidecars slept ("
        + ", ".join(
            f"{r.point['rps']:g} rps: {r.predicted['wakeups_per_request']:.2f} "
            f"vs {r.measured['wakeups_per_request']:.2f}"
            for r in over
        )
        + (
            f"; at saturation {sat[0].predicted['wakeups_per_request']:.2f} vs "
            f"{sat[0].measured['wakeups_per_request']:.2f}"
            if sat
            else ""
        )
        + "). On a shared core the echo's (or the load generator's) wake-up preempts the "
        "sidecar in the middle of its callback, and the sidecar then finds the reply ready "
        "without sleeping; the simulator's FCFS core runs bursts to completion. So it "
        f"over-charges a sidecar up to {extra:.0f} us per request below saturation "
        f"({worst.point['rps']:g} rps). Refitting the wake-up cost on the simulator's own "
        "count instead was tried: its count falls too slowly with load, and the refit's "
        "intercept extrapolates to half the measured CPU at saturation (+49% throughput)."
    )


def _wakeups_rescaled(fit: Fit, scale: dict[str, Any], counted: Rows) -> str:
    """The wake-up cost was put in the simulator's count: what that charges at the held-out
    points against what the lab's sleeps cost there, both in cold wake-ups (a switch after
    a short sleep pays a share of the cost: :mod:`meshsim.calibrate.cache_cooling`)."""
    from meshsim.calibrate.cache_cooling import cold_wakeups

    w, w_sim = scale["per_switch_us"], scale["per_simulated_wakeup_us"]
    decay = ((fit.get("cache_cooling") or {}).get("fit") or {}).get("decay_ms")

    def lab_us(r: Comparison) -> str:
        p = r.point
        cold = cold_wakeups(
            p.get("process_cpu_us_per_request") or {},
            p.get("wakeups_per_request") or {},
            float(r.measured["rps"]),
            float(decay) if decay else None,
        )
        return "?" if cold is None else f"{cold * w:.0f}"

    def sim_us(r: Comparison) -> str:
        v = r.predicted.get("wakeup_cpu_us_per_request")
        return "?" if v is None or v != v else f"{v:.0f}"

    return (
        "The simulator's idle bursts are not quite the kernel's sleeps: where the processes "
        "sharing a core are in one cgroup, the process a sidecar's write wakes (the echo, "
        "the load generator) preempts it before its loop sleeps, and it then finds the reply "
        "ready, which the simulator does not see (in cgroups of their own, as a pod's "
        "containers and the lab's components since run S are, it does not preempt, and the "
        "two counts agree). "
        f"The fit's {w:.1f} us per voluntary switch is therefore charged as {w_sim:.1f} us "
        f"per simulated wake-up (x{scale['scale']:.3f}: the lab's switches over the "
        "simulator's idle bursts at the fit points, meshsim/calibrate/sim_terms.py). "
        "Wake-up CPU per request at the held-out points (us), lab (its switches counted in "
        + (
            f"cold ones, wakeup_cache_decay_ms {float(decay):g}, x {w:.0f} us"
            if decay
            else f"the fit's cost, x {w:.0f} us"
        )
        + ") against simulator (what it charged): "
        + ", ".join(
            f"{'sat' if r.saturation else format(r.point['rps'], 'g')}: {lab_us(r)}/{sim_us(r)}"
            for r in counted
        )
        + "."
    )


def _in_flight(r: Comparison) -> float:
    """Requests in flight at a point (Little's law: throughput x mean latency)."""
    return float(r.measured["rps"] * r.point["latency_ms"]["mean"] / 1000.0)


def _p50_low_at_mid_loads(fit: Fit, rows: Rows) -> str | None:
    """p50 under-predicted where the load generator's connections are nearly all in use."""
    inflight = [
        r
        for r in rows
        if r.checked and not r.saturation and _in_flight(r) > 0.6 * r.point["connections"]
    ]
    low = [r for r in rows if "p50" in r.checked]
    if not (inflight and low and sum(r.error_pct["p50"] < -10 for r in low) >= len(low) / 2):
        return None
    return (
        "p50 is under-predicted at mid loads, where the load generator's "
        f"{inflight[0].point['connections']} connections are nearly all in use (Little's "
        "law, throughput x mean latency: "
        + ", ".join(
            f"{r.point['config']} {r.point['rps']:g} rps: {_in_flight(r):.1f}" for r in inflight
        )
        + " in flight). A request that finds them all busy waits for one, and the wait "
        "counts (corrected latency), which amplifies any extra delay. The simulated lab "
        "holds a connection for the proxied path only and draws the baseline delay after "
        "it; holding it for the whole baseline delay instead was tried and saturates the "
        "simulated pool at ~7200 rps where the lab reaches 8200: the part of the baseline "
        "spent on the connection (loopback, the reads) and the part before sending (the "
        "load generator's timer lag) are not measured separately."
    )


def _tls_fixed_cost_missing(fit: Fit, rows: Rows) -> str | None:
    """A size-independent mTLS cost the model did not take as a parameter."""
    tls = fit["estimates"].get("tls_extra_cpu_us_vs_kib")
    if not (
        tls
        and tls["intercept"]["value"] > 20
        and "tls_request_cpu_us" not in (fit.get("parameters_fitted") or ())
    ):
        return None
    return (
        f"mTLS adds {tls['intercept']['value']:.0f} us per request independent of size (the "
        "model format only has a per-KiB record cost): a fixed per-request TLS cost is "
        "missing; if it approaches the handshake cost, the proxy is re-handshaking "
        "(connections not reused)."
    )


def _p50_low_everywhere(fit: Fit, rows: Rows) -> str | None:
    low = [r for r in rows if "p50" in r.checked]
    if not (low and all(r.error_pct["p50"] < -10 for r in low)):
        return None
    return (
        "p50 is under-predicted at every checked load: latency outside the proxies' CPU "
        "(wake-up latency of four pinned processes sharing two cores, the load generator's "
        "own CPU on the client core, other tenants of the machine) is larger than the "
        "constant hop_latency_us fitted at the lowest load"
        + (" plus the measured baseline." if fit.get("client_delay") else ".")
    )


def _p99_low(fit: Fit, rows: Rows) -> str | None:
    """p99 under-predicted at most checked points: what per-request variability misses."""
    p99 = [r for r in rows if "p99" in r.checked]
    if not (p99 and sum(r.error_pct["p99"] < -20 for r in p99) > len(p99) / 2):
        return None
    cv = fit["estimates"].get("request_cpu_cv")
    if not cv:
        return (
            "p99 is under-predicted: the simulator charges each request the model's "
            "constant CPU (no request_cpu_cv in the model; the fitted distribution, cv "
            f"{fit['service_time']['cv']['value']:.2f}, is recorded but not used), and "
            "the measured tail includes scheduler preemption by other processes."
        )
    lg_charged = any(
        b.get("load_generator_cpu_us") for b in (fit.get("client_delay") or {}).get("baselines", [])
    )
    return (
        f"p99 is under-predicted although the simulator draws each request's CPU "
        f"with cv {cv['value']:.2f} (request_cpu_cv: the callbacks' measured spread, "
        "the event-loop and kernel share taken as constant, a lower bound): the "
        "measured tail is wider than per-request CPU variability explains. Candidates "
        "the model lacks: variability of the event-loop and kernel share, the load "
        "generator's pauses on the client core (it shares the core with the client "
        "sidecar; "
        + (
            "the simulator charges its mean CPU on the request's path, not its pauses)"
            if lg_charged
            else "the simulator does not model it)"
        )
        + ", and the four pinned "
        "processes' scheduler wake-up and preemption delays on two cores."
    )


DIAGNOSES: tuple[Callable[[Fit, Rows], str | None], ...] = (
    _cpu_falls_with_load,
    _tail_without_proxies,
    _unchecked_busy_cores,
    _wakeups_overcounted,
    _p50_low_at_mid_loads,
    _tls_fixed_cost_missing,
    _p50_low_everywhere,
    _p99_low,
)
"""The mechanisms checked, in the order the report lists them."""


def diagnose(fit: Fit, rows: Rows) -> list[str]:
    """Which mechanisms the residuals point to, one paragraph each."""
    return [note for check in DIAGNOSES if (note := check(fit, rows)) is not None]
