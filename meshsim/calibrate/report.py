"""``reports/validation/``: the calibration, the held-out comparison and its errors, with figures.

Run ``python -m meshsim.calibrate.report --calibrate --out reports/validation`` (what
``make validate`` runs): calibrates the proxy in the loopback lab (``--quick`` for the small
grid), writes ``models/calibrated/lab.yaml`` and its fit record, simulates the held-out points,
and writes ``report.md``, ``validation.json`` and ``figures/*.png``. Without ``--calibrate`` it
validates an existing model (``--model``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate.calibration import calibrate_lab, load_fit
from meshsim.calibrate.validate import (
    UTIL_LIMIT,
    Comparison,
    failures,
    figures,
    load_label,
    spread_table,
    table,
    validate_model,
    wakeup_table,
)
from meshsim.models import load_model

GOALS = {"p50": 10.0, "p99": 20.0, "rps": 10.0}


def diagnose(fit: dict[str, Any], rows: list[Comparison]) -> list[str]:
    """Which mechanism the residuals point to, in words."""
    notes = []
    est = fit["estimates"]
    slope = est["process_cpu_us_vs_rps"]["slope"]
    idle = est.get("idle_cpu_ms_per_s")
    plane = est.get("process_cpu_us_vs_kib_and_wakeups")
    if slope["ci95"][1] < 0 and plane:
        w = plane["slopes"]["wakeups"]
        pts = plane["points"]
        lo, hi = min(pts, key=lambda q: q["wakeups"]), max(pts, key=lambda q: q["wakeups"])
        res = float(np.std([q["residual"] for q in pts]))
        pairs = [(r.measured["wakeups_per_request"], r.predicted.get("wakeups_per_request"))
                 for r in rows if "wakeups_per_request" in r.measured]
        notes.append(
            f"Per-request process CPU falls with load ({slope['value']:+.4f} us per rps, 95% CI "
            f"{slope['ci95'][0]:+.4f}..{slope['ci95'][1]:+.4f}), and the wake-ups fall with it: "
            f"the sidecars' voluntary context switches per request go from {hi['wakeups']:.2f} "
            f"(CPU {hi['y']:.0f} us) to {lo['wakeups']:.2f} (CPU {lo['y']:.0f} us) over the fit "
            f"points. CPU = a + b KiB + w wake-ups fits them with w = {_fmt_ci(w)} us per "
            f"wake-up (residual sd {res:.1f} us). The model charges w on each burst that finds "
            "its worker idle (wakeup_cpu_us), so the simulator's CPU per request falls with "
            "load by the same mechanism"
            + (": predicted against measured wake-ups per request at the held-out points are "
               + ", ".join(f"{m:.2f}/{q:.2f}" for m, q in pairs if q is not None)
               + " (measured/predicted; the table below)." if pairs else "."))
    elif slope["ci95"][1] < 0:
        if idle:
            sidecars = max(idle.get("client_sidecar", 0.0), idle.get("server_sidecar", 0.0))
            why = (f"An idle sidecar uses {sidecars:.1f} ms of CPU per second (measured over "
                   f"seconds without traffic, /proc resolution {idle['resolution_ms_per_s']:.1f}"
                   " ms/s), so the fall is not a fixed background cost (timers, polling): it "
                   "is work per event-loop wake-up shared by the requests that one wake-up "
                   "serves, more of them as load rises (batching). The model format has no "
                   "such mechanism; ")
        else:
            why = ("CPU that does not scale with requests (event-loop wake-ups, timers) is "
                   "spread over more requests as load rises; ")
        notes.append(
            f"Per-request process CPU falls with load ({slope['value']:+.3f} us per rps, 95% CI "
            f"{slope['ci95'][0]:+.3f}..{slope['ci95'][1]:+.3f}; the echo's too). " + why +
            "the model charges the constant cost fitted at the fit loads, so it over-predicts "
            "CPU at high load and under-predicts the saturation throughput.")
    direct = [p for p in fit["points"] if not p["proxied"] and p["latency_ms"]["p50"] > 0]
    if direct and fit.get("client_delay"):
        tail = float(np.median([p["latency_ms"]["p99"] / p["latency_ms"]["p50"] for p in direct]))
        notes.append(
            f"The lab's tail exists without the proxies (load generator -> echo alone: p99 / "
            f"p50 = {tail:.0f}, median over the direct points). Each prediction draws that "
            "baseline, measured at the point's payload and load, as a per-request delay "
            "outside the proxies (client_delay_ms), less the load generator's and the echo's "
            "CPU, which the simulated lab charges on the request's path on their cores, so "
            "the errors are of what the proxies add. The rest of the draw (the load "
            "generator's timer lag, the loopback) is independent of the proxy path; in the "
            "lab it is not.")
    elif direct:
        tail = float(np.median([p["latency_ms"]["p99"] / p["latency_ms"]["p50"] for p in direct]))
        if tail > 5:
            notes.append(
                f"The lab's tail exists without the proxies: load generator -> echo alone has "
                f"p99 / p50 = {tail:.0f} (median over the direct points). The simulated lab "
                "takes only the baseline's p50 as network delay, so that tail (the load "
                "generator's and the echo's pauses, scheduling on two shared cores) is missing "
                "from every predicted p90/p99; no proxy parameter can supply it.")
    lg_charged = any(b.get("load_generator_cpu_us")
                     for b in (fit.get("client_delay") or {}).get("baselines", []))
    excluded = [r for r in rows if not r.saturation and not r.checked
                and r.utilisation < UTIL_LIMIT <= r.core_utilisation]
    if excluded:
        notes.append(
            f"{len(excluded)} held-out point(s) are not checked although the busier sidecar's "
            f"own share is below {UTIL_LIMIT:.0%}: their core, shared with the load generator "
            "or the echo, is above it ("
            + ", ".join(f"{r.point['config']} {r.point['rps']:g} rps: sidecar "
                        f"{r.utilisation:.0%}, core "
                        f"{r.core_utilisation:.0%}, p50 {r.measured['p50']:.1f} ms"
                        for r in excluded)
            + "). The lab's latency there varies by orders of magnitude between passes.")
    counted = [r for r in rows if "wakeups_per_request" in r.measured
               and r.predicted.get("wakeups_per_request") == r.predicted.get("wakeups_per_request")
               and not r.point["mtls"] and r.point["keep_alive"]]
    over = [r for r in counted if not r.saturation
            and r.predicted["wakeups_per_request"] > 1.3 * r.measured["wakeups_per_request"]]
    if over and plane:
        w = plane["slopes"]["wakeups"]["value"]
        worst = max(over, key=lambda r: r.predicted["wakeups_per_request"]
                    - r.measured["wakeups_per_request"])
        extra = (worst.predicted["wakeups_per_request"]
                 - worst.measured["wakeups_per_request"]) * w
        sat = [r for r in counted if r.saturation]
        notes.append(
            "The simulator's idle bursts are not the kernel's sleeps: below saturation it "
            "counts more bursts that find a sidecar idle than the sidecars slept ("
            + ", ".join(f"{r.point['rps']:g} rps: {r.predicted['wakeups_per_request']:.2f} "
                        f"vs {r.measured['wakeups_per_request']:.2f}" for r in over)
            + (f"; at saturation {sat[0].predicted['wakeups_per_request']:.2f} vs "
               f"{sat[0].measured['wakeups_per_request']:.2f}" if sat else "")
            + "). On a shared core the echo's (or the load generator's) wake-up preempts the "
            "sidecar in the middle of its callback, and the sidecar then finds the reply ready "
            "without sleeping; the simulator's FCFS core runs bursts to completion. So it "
            f"over-charges a sidecar up to {extra:.0f} us per request below saturation "
            f"({worst.point['rps']:g} rps). Refitting the wake-up cost on the simulator's own "
            "count instead was tried: its count falls too slowly with load, and the refit's "
            "intercept extrapolates to half the measured CPU at saturation (+49% throughput).")
    inflight = [r for r in rows if r.checked and not r.saturation
                and r.measured["rps"] * r.point["latency_ms"]["mean"] / 1000.0
                > 0.6 * r.point["connections"]]
    low = [r for r in rows if "p50" in r.checked]
    if inflight and low and sum(r.error_pct["p50"] < -10 for r in low) >= len(low) / 2:
        notes.append(
            "p50 is under-predicted at mid loads, where the load generator's "
            f"{inflight[0].point['connections']} connections are nearly all in use (Little's "
            "law, throughput x mean latency: "
            + ", ".join(f"{r.point['config']} {r.point['rps']:g} rps: "
                        f"{r.measured['rps'] * r.point['latency_ms']['mean'] / 1000.0:.1f}"
                        for r in inflight)
            + " in flight). A request that finds them all busy waits for one, and the wait "
            "counts (corrected latency), which amplifies any extra delay. The simulated lab "
            "holds a connection for the proxied path only and draws the baseline delay after "
            "it; holding it for the whole baseline delay instead was tried and saturates the "
            "simulated pool at ~7200 rps where the lab reaches 8200: the part of the baseline "
            "spent on the connection (loopback, the reads) and the part before sending (the "
            "load generator's timer lag) are not measured separately.")
    tls = est.get("tls_extra_cpu_us_vs_kib")
    if tls and tls["intercept"]["value"] > 20 and "tls_request_cpu_us" not in (
            fit.get("parameters_fitted") or ()):
        notes.append(
            f"mTLS adds {tls['intercept']['value']:.0f} us per request independent of size (the "
            "model format only has a per-KiB record cost): a fixed per-request TLS cost is "
            "missing; if it approaches the handshake cost, the proxy is re-handshaking "
            "(connections not reused).")
    low = [r for r in rows if "p50" in r.checked]
    if low and all(r.error_pct["p50"] < -10 for r in low):
        notes.append(
            "p50 is under-predicted at every checked load: latency outside the proxies' CPU "
            "(wake-up latency of four pinned processes sharing two cores, the load generator's "
            "own CPU on the client core, other tenants of the machine) is larger than the "
            "constant hop_latency_us fitted at the lowest load"
            + (" plus the measured baseline." if fit.get("client_delay") else "."))
    p99 = [r for r in rows if "p99" in r.checked]
    if p99 and sum(r.error_pct["p99"] < -20 for r in p99) > len(p99) / 2:
        cv = est.get("request_cpu_cv")
        if cv:
            notes.append(
                f"p99 is under-predicted although the simulator draws each request's CPU "
                f"with cv {cv['value']:.2f} (request_cpu_cv: the callbacks' measured spread, "
                "the event-loop and kernel share taken as constant, a lower bound): the "
                "measured tail is wider than per-request CPU variability explains. Candidates "
                "the model lacks: variability of the event-loop and kernel share, the load "
                "generator's pauses on the client core (it shares the core with the client "
                "sidecar; "
                + ("the simulator charges its mean CPU on the request's path, not its "
                   "pauses)" if lg_charged else "the simulator does not model it)")
                + ", and the four pinned "
                "processes' scheduler wake-up and preemption delays on two cores.")
        else:
            notes.append(
                "p99 is under-predicted: the simulator charges each request the model's "
                "constant CPU (no request_cpu_cv in the model; the fitted distribution, cv "
                f"{fit['service_time']['cv']['value']:.2f}, is recorded but not used), and "
                "the measured tail includes scheduler preemption by other processes.")
    return notes


def run_delay_table(fit: dict[str, Any], rows: list[Comparison]) -> str:
    names = ("load_generator", "client_sidecar", "server_sidecar", "echo")
    sel = [r for r in rows if r.point.get("run_delay_us_per_request")]
    if not sel:
        return ""
    lines = [f"{'config':<14} {'load':>9}  " + " ".join(f"{n:>15}" for n in names) + "  (us)"]
    for r in sel:
        d = r.point["run_delay_us_per_request"]
        load = load_label(r)
        lines.append(f"{r.point['config']:<14} {load:>9}  "
                     + " ".join(f"{d.get(n, float('nan')):>15.1f}" for n in names))
    return "\n".join(lines)


def _fmt_ci(e: dict[str, Any]) -> str:
    return f"{e['value']:.3g} (95% CI {e['ci95'][0]:.3g}..{e['ci95'][1]:.3g})"


def render(model_path: Path, fit: dict[str, Any], rows: list[Comparison], figs: list[Path],
           bad: list[str], command: str, out: Path) -> str:
    model = load_model(model_path)
    st = fit["service_time"]
    est = fit["estimates"]
    lines = [
        "# Validation report: meshsim's proxy, calibrated and predicted", "",
        f"Generated by `{command}`. Model: `{model_path}` (fit record "
        f"`{model_path.stem}.fit.json`).", "",
        "## Machine and placement", "",
        f"- {model.measured_on}",
        f"- cores: {json.dumps(fit['placement'])}",
        f"- grid: {'quick' if fit['quick'] else 'full'}; capacity estimate "
        f"{fit['lab']['capacity_estimate_rps']:.0f} rps; {fit['lab']['connections']} "
        "connections; loads are Poisson", "",
        "## Calibration", "",
        f"- per-request service time (sidecar callbacks' CPU): **{st['dist']}** "
        f"({st['samples']} samples), mean {_fmt_ci(st['mean'])} us, cv {_fmt_ci(st['cv'])}, "
        f"p99 {_fmt_ci(st['p99'])} us; log-likelihood lognormal "
        f"{st['goodness_of_fit']['lognormal']['loglik']:.0f} / gamma "
        f"{st['goodness_of_fit']['gamma']['loglik']:.0f}, KS D "
        f"{st['goodness_of_fit']['lognormal']['ks_d']:.3f} / "
        f"{st['goodness_of_fit']['gamma']['ks_d']:.3f}",
        f"- process CPU per request vs KiB: intercept "
        f"{_fmt_ci(est['process_cpu_us_vs_kib']['intercept'])} us, slope "
        f"{_fmt_ci(est['process_cpu_us_vs_kib']['slope'])} us/KiB",
        f"- process CPU per request vs load: slope "
        f"{_fmt_ci(est['process_cpu_us_vs_rps']['slope'])} us per rps",
        f"- handshake CPU per side: {_fmt_ci(est['handshake_cpu_us_per_side'])} us",
        *([f"- per-request CPU variability (request_cpu_cv): "
           f"{_fmt_ci(est['request_cpu_cv'])} (callbacks' cv "
           f"{est['request_cpu_cv']['callbacks_cv']:.3f} x their mean "
           f"{est['request_cpu_cv']['callbacks_mean_us']:.1f} us / process CPU "
           f"{est['request_cpu_cv']['process_cpu_us']:.1f} us per request)"]
          if est.get("request_cpu_cv") else []),
        *(["- idle CPU (ms per s, no traffic): "
           + ", ".join(f"{k} {v:g}" for k, v in est["idle_cpu_ms_per_s"].items())]
          if est.get("idle_cpu_ms_per_s") else []),
        *([f"- latency outside the proxies: {len(fit['client_delay']['baselines'])} measured "
           "baselines (load generator -> echo), drawn per request at the held-out point's "
           "payload and load (fit record `client_delay`)"] if fit.get("client_delay") else []),
        f"- memory per idle connection: plain {_fmt_ci(est['memory_kib_plain']['slope'])} KiB, "
        f"mTLS {_fmt_ci(est['memory_kib_tls']['slope'])} KiB",
    ]
    if est.get("filter_cpu_us"):
        lines.append(f"- per synthetic filter: {_fmt_ci(est['filter_cpu_us']['slope'])} us")
    if est.get("tls_extra_cpu_us_vs_kib"):
        t = est["tls_extra_cpu_us_vs_kib"]
        lines.append(f"- mTLS extra CPU per request (less wake-ups): intercept "
                     f"{_fmt_ci(t['intercept'])} us (tls_request_cpu_us), slope "
                     f"{_fmt_ci(t['slope'])} us/KiB")
    if est.get("process_cpu_us_vs_kib_and_wakeups"):
        w = est["process_cpu_us_vs_kib_and_wakeups"]
        lines.append(f"- process CPU per request = a + b KiB + w wake-ups: a "
                     f"{_fmt_ci(w['intercept'])} us, b {_fmt_ci(w['slopes']['kib'])} us/KiB, "
                     f"w {_fmt_ci(w['slopes']['wakeups'])} us per wake-up (wakeup_cpu_us; "
                     "wake-ups are voluntary context switches per request)")
    if est.get("tcp_connection_cpu_us"):
        t = est["tcp_connection_cpu_us"]
        lines.append(f"- TCP connection end (keep-alive off - on, per end): {t['value']:.3g} us "
                     f"(range over sidecars {t['ci95'][0]:.3g}..{t['ci95'][1]:.3g}; "
                     "tcp_connection_cpu_us)")
    lines += ["", "| parameter | value | unit |", "|---|---:|---|"]
    lines += [f"| {n} | {p.value:g} | {p.unit} |" for n, p in model.parameters.items()]
    lines += ["", "## Held-out comparison", "", "```", table(rows), "```", ""]
    spreads = spread_table(rows)
    if spreads:
        lines += ["The lab's own noise: each held-out point was measured in several passes, "
                  "minutes apart (the table above gives their medians). The range over the "
                  "passes, and whether the prediction falls inside it:", "",
                  "```", spreads, "```", ""]
    wakes = wakeup_table(rows)
    if wakes:
        lines += ["Sidecar wake-ups per request (voluntary context switches), measured against "
                  "the simulator's count of bursts that found their worker idle:", "",
                  "```", wakes, "```", ""]
    delays = run_delay_table(fit, rows)
    if delays:
        lines += ["Measured run delay per request (time runnable, waiting for the core, "
                  "schedstat), by process: how much the processes sharing a core hold each "
                  "other up. The simulator's FCFS cores produce this queueing only in the "
                  "mean; preemption and wake-up latency are not modelled.", "",
                  "```", delays, "```", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figs]
    lines += ["", "## Goals", ""]
    for key, goal in GOALS.items():
        sel = [r for r in rows if key in r.checked]
        worst = max((abs(r.error_pct[key]) for r in sel), default=float("nan"))
        verdict = "no checked point" if not sel else ("met" if worst <= goal else "MISSED")
        lines.append(f"- {key} within {goal:g}%: worst {worst:.1f}% over {len(sel)} point(s): "
                     f"**{verdict}**")
    lines += ["", "## What the residuals point to", ""]
    lines += [f"- {n}" for n in diagnose(fit, rows)] or ["- nothing beyond noise"]
    if bad:
        lines += ["", "## Threshold failures", ""] + [f"- {b}" for b in bad]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m meshsim.calibrate.report")
    ap.add_argument("--out", type=Path, default=Path("reports/validation"))
    ap.add_argument("--model", type=Path, default=Path("models/calibrated/lab.yaml"))
    ap.add_argument("--calibrate", action="store_true", help="run the lab first")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration-s", type=float, default=4.0)
    args = ap.parse_args(argv)
    command = "python -m meshsim.calibrate.report " + " ".join(argv or sys.argv[1:])
    if args.calibrate:
        calibrate_lab(args.model, quick=args.quick)
    fit = load_fit(args.model)
    rows = validate_model(args.model, duration_s=args.duration_s)
    figs = figures(rows, args.out / "figures")
    bad = failures(rows, GOALS["p50"], GOALS["p99"], GOALS["rps"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(render(args.model, fit, rows, figs, bad, command,
                                               args.out))
    (args.out / "validation.json").write_text(json.dumps(
        {"model": str(args.model), "rows": [r.to_json() for r in rows], "failures": bad,
         "diagnosis": diagnose(fit, rows)}, indent=1))
    print(table(rows))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
