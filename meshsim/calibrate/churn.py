"""Connection churn across proxy stacks and key types: ``meshsim calibrate churn MODELS...``.

Connection churn (keep-alive off, short-lived clients, scale-downs) is where the meshes'
architectures differ most, and what a new connection costs depends on the certificates:
Istio's default workload keys are RSA 2048, Linkerd's and ztunnel's ECDSA P-256
(docs/mesh-semantics.md, sections 8.1-8.3). For each calibrated model given, the process it
was calibrated on (its fit record's proxy command, or meshsim's own proxy for a model
without one) runs in one lab, and two things are measured in the same run:

1. **Connection costs per key type.** :func:`meshsim.calibrate.lab_costs.connection_costs`
   with each key type, in rounds that visit every stack and key type in turn (rotated from
   round to round), so that a comparison is between figures measured minutes apart, not
   hours: the server sidecar's CPU per new connection (plain), per full mTLS handshake and
   per resumed one, each a difference of two modes measured back to back. These figures
   include the wake-ups the extra work brings (no fitted wake-up cost is subtracted, unlike
   the model's parameters), so they are a little higher than the model's.
2. **The keep-alive-off check.** With the key type the model was calibrated with, the lab
   measures keep-alive-off points (a new connection per request on every hop; plain, and
   mTLS when the command has ``{mtls}``): a closed loop, and open loops at fractions of
   its throughput, each in two passes minutes apart (their spread is the lab's own noise),
   with baselines without proxies at the same loads. The simulator then predicts each point
   from the model (:func:`meshsim.calibrate.lab_scenario.predict`, the lab topology with
   ``keep_alive`` off), its baselines taken from this run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate import lab_costs
from meshsim.calibrate.calibration import load_fit, machine_info
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Measured, Point
from meshsim.calibrate.proxycmd import ProxyCommand
from meshsim.calibrate.rows import baseline_row, point_row
from meshsim.calibrate.stacks import key_type_label, stack_label
from meshsim.errors import MeshsimError
from meshsim.proxy.ca import KEY_TYPES, check_key_type

Log = Callable[[str], None]
PAYLOAD = 256
CONNECTIONS = 8
LOAD_FRACTIONS = (0.3, 0.6)
"""Open-loop loads of the keep-alive-off check, as fractions of the closed loop's rate."""


@dataclass(frozen=True)
class Stack:
    """A calibrated model and the process it was calibrated on."""

    model: Path
    name: str
    label: str
    proxy: ProxyCommand | None
    """None: meshsim's own proxy (the lab's default sidecars)."""
    key_type: str
    """The key type the model's handshakes were calibrated with."""

    @staticmethod
    def from_model(path: Path) -> Stack:
        fit = load_fit(path)
        template = fit.get("proxy_command")
        proxy = ProxyCommand.parse(str(template)) if template else None
        return Stack(path, path.stem, stack_label(fit), proxy, key_type_label(fit))

    @property
    def mtls(self) -> bool:
        return self.proxy is None or self.proxy.mtls

    @property
    def keepalive_knob(self) -> bool:
        return self.proxy is None or self.proxy.keepalive_knob


def _block_costs(b: dict[str, Any]) -> dict[str, float]:
    """One :func:`~meshsim.calibrate.lab_costs.connection_costs` block as per-connection CPU
    differences (us)."""
    cpu = {
        k: float(b[k]["cpu_us"])
        for k in ("keepalive", "plain_connection", "tls_full", "tls_resumed")
    }
    return {
        "full_us": cpu["tls_full"] - cpu["plain_connection"],
        "resumed_us": cpu["tls_resumed"] - cpu["plain_connection"],
        "tcp_us": cpu["plain_connection"] - cpu["keepalive"],
        "mtls_connection_us": cpu["tls_full"] - cpu["keepalive"],
        "resumed_fraction": float(b["resumed_fraction"]),
    }


def summarise_costs(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over the rounds of each per-connection cost."""
    rows = [_block_costs(b) for b in blocks]
    out: dict[str, Any] = {"rounds": len(rows)}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        out[k] = {
            "median": round(float(np.median(vals)), 2),
            "range": [round(min(vals), 2), round(max(vals), 2)],
        }
    return out


def measure_connection_costs(
    lab: Lab, stacks: list[Stack], key_types: list[str], rounds: int, requests: int, log: Log
) -> dict[str, Any]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {k: [] for k in key_types} for s in stacks
    }
    combos = [(s, k) for s in stacks if s.mtls for k in key_types]
    for r in range(rounds):
        shift = r % max(len(combos), 1)
        for s, k in combos[shift:] + combos[:shift]:
            lab.use(s.proxy, k)
            block = lab_costs.connection_costs(lab, requests, tls=True)
            out[s.name][k].append(block)
            c = _block_costs(block)
            log(
                f"round {r + 1}/{rounds} {s.name} {k}: full {c['full_us']:.0f} us, resumed "
                f"{c['resumed_us']:.0f} us ({c['resumed_fraction']:.0%} resumed), TCP "
                f"{c['tcp_us']:.0f} us"
            )
    return out


def _noka_points(stack: Stack) -> list[LabConfig]:
    cfgs = [LabConfig(keep_alive=False)]
    if stack.mtls:
        cfgs.append(LabConfig(mtls=True, keep_alive=False))
    return cfgs


def measure_keepalive_off(
    lab: Lab, stacks: list[Stack], passes: int, duration_s: float, log: Log
) -> dict[str, Any]:
    """Keep-alive-off points per stack (see the module docstring); JSON-able rows."""
    out: dict[str, Any] = {}
    rates: dict[tuple[str, str], float] = {}
    seed = 100
    # The lab without proxies opens a connection per request too (the load generator's and
    # the echo's CPU): loads above what it carries alone measure the lab, not the proxies.
    first = next((s for s in stacks if s.keepalive_knob), None)
    if first is None:
        return out
    lab.use(first.proxy, first.key_type)
    direct = lab.measure(
        Point(
            LabConfig(keep_alive=False), PAYLOAD, 0.0, CONNECTIONS, False, duration_s, "baseline"
        ),
        seed=seed,
    )
    ceiling = direct.achieved_rps
    out["_lab_without_proxies"] = {
        "closed_loop_rps": round(ceiling, 1),
        "p50_ms": direct.latency_ms["p50"],
    }
    log(f"lab without proxies, keep-alive off, closed loop: {ceiling:.0f} rps")
    for rep in range(passes):
        for s in stacks:
            if not s.keepalive_knob:
                continue
            lab.use(s.proxy, s.key_type)
            rows = out.setdefault(s.name, {"points": [], "baselines": []})
            for cfg in _noka_points(s):
                seed += 1
                sat = lab.measure(
                    Point(cfg, PAYLOAD, 0.0, CONNECTIONS, True, duration_s, "held_out", rep),
                    seed=seed,
                )
                rows["points"].append(point_row(sat))
                key = (s.name, cfg.name)
                if key not in rates:
                    rates[key] = min(sat.achieved_rps, ceiling)
                log(
                    f"pass {rep + 1} {s.name} {cfg.name} closed loop: "
                    f"{sat.achieved_rps:.0f} rps, p50 {sat.latency_ms['p50']:.3f} ms"
                )
                for f in LOAD_FRACTIONS:
                    rps = round(f * rates[key], 1)
                    for proxied in (True, False):
                        seed += 1
                        role = "held_out" if proxied else "baseline"
                        m = lab.measure(
                            Point(cfg, PAYLOAD, rps, CONNECTIONS, proxied, duration_s, role, rep),
                            seed=seed,
                        )
                        if proxied:
                            rows["points"].append(point_row(m))
                        else:
                            rows["baselines"].append(m.to_json())
                        log(
                            f"pass {rep + 1} {s.name} {cfg.name} {rps:g} rps "
                            f"{'proxied' if proxied else 'direct'}: {m.achieved_rps:.0f} "
                            f"rps, p50 {m.latency_ms['p50']:.3f} ms, p99 "
                            f"{m.latency_ms['p99']:.3f} ms"
                        )
    return out


def measure_churn(
    models: list[Path],
    key_types: list[str],
    *,
    rounds: int = 3,
    requests: int = 150,
    passes: int = 2,
    duration_s: float = 2.0,
    log: Log = print,
) -> dict[str, Any]:
    """Both measurements of the module docstring, in one lab and one run."""
    for k in key_types:
        check_key_type(k)
    stacks = [Stack.from_model(p) for p in models]
    names = [s.name for s in stacks]
    if len(set(names)) != len(names):
        raise MeshsimError(f"two models with the same name among {', '.join(names)}")
    lab = Lab(workdir(), proxy=stacks[0].proxy, key_type=stacks[0].key_type)
    try:
        log(f"lab placement: {lab.placement}")
        costs = measure_connection_costs(lab, stacks, key_types, rounds, requests, log)
        noka = measure_keepalive_off(lab, stacks, passes, duration_s, log)
    finally:
        lab.close()
    return {
        "models": {
            s.name: {
                "path": str(s.model),
                "stack": s.label,
                "proxy_command": s.proxy.template if s.proxy else None,
                "model_key_type": s.key_type,
            }
            for s in stacks
        },
        "key_types": key_types,
        "requests_per_mode": requests,
        "connection_costs": costs,
        "keepalive_off": noka,
        "machine": machine_info(),
    }


# ----------------------------------------------------------------- the simulator's check


def _merged_baselines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[float, list[Measured]] = {}
    for d in rows:
        m = Measured.from_json(d)
        groups.setdefault(m.point.rps, []).append(m)
    return [baseline_row(ms) for ms in groups.values()]


def check_keepalive_off(data: dict[str, Any], *, duration_s: float = 4.0) -> list[dict[str, Any]]:
    """Each stack's keep-alive-off points, measured (median over passes, and the range) and
    predicted by the simulator from the stack's model; errors in percent."""
    from meshsim.calibrate.lab_scenario import predict
    from meshsim.calibrate.validate import merge_passes

    out: list[dict[str, Any]] = []
    for name, rows in data["keepalive_off"].items():
        if name.startswith("_"):
            continue
        path = Path(data["models"][name]["path"])
        fit_ka = load_fit(path)  # its baselines: the lab without proxies, keep-alive on
        fit = dict(fit_ka)
        fit["client_delay"] = {"baselines": _merged_baselines(rows["baselines"])}
        groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
        sat_rps: dict[str, float] = {}
        for r in rows["points"]:
            if r["rps"] == 0:
                sat_rps.setdefault(r["config"], r["achieved_rps"])
            groups.setdefault((r["config"], r["rps"]), []).append(r)
        for (cfg, rps), passes in groups.items():
            p = merge_passes(passes)
            pred = predict(path, fit, p, duration_s=duration_s)
            # The same point with the latency outside the proxies taken from the model's own
            # keep-alive-on baselines: the simulator then adds every new connection's cost
            # itself (the load generator's connect and the echo's accept excepted).
            pred_ka = predict(path, fit_ka, p, duration_s=duration_s)
            meas = {
                "p50": p["latency_ms"]["p50"],
                "p99": p["latency_ms"]["p99"],
                "rps": p["achieved_rps"],
            }
            checked = ["rps"] if rps == 0 else ["p50", "p99"]
            delay = p.get("run_delay_us_per_request") or {}
            cpu = p.get("process_cpu_us_per_request") or {}
            out.append(
                {
                    "model": name,
                    "config": cfg,
                    "rps": rps,
                    "passes": p["passes"],
                    "measured": meas,
                    "measured_range": p["passes_range"],
                    "predicted": {k: round(float(pred[k]), 4) for k in ("p50", "p99", "rps")},
                    "predicted_keepalive_baseline": {
                        k: round(float(pred_ka[k]), 4) for k in ("p50", "p99", "rps")
                    },
                    "error_pct_keepalive_baseline": {
                        k: (
                            round(100.0 * (pred_ka[k] - meas[k]) / meas[k], 1)
                            if meas[k]
                            else math.nan
                        )
                        for k in ("p50", "p99", "rps")
                    },
                    "error_pct": {
                        k: (
                            round(100.0 * (pred[k] - meas[k]) / meas[k], 1) if meas[k] else math.nan
                        )
                        for k in ("p50", "p99", "rps")
                    },
                    "noise_pct": {
                        k: (
                            round(
                                100.0
                                * (p["passes_range"][k][1] - p["passes_range"][k][0])
                                / meas[k],
                                1,
                            )
                            if meas[k]
                            else math.nan
                        )
                        for k in ("p50", "p99", "rps")
                    },
                    "checked": checked,
                    "sidecar_cpu_us_per_request": round(
                        (cpu.get("client_sidecar", 0.0) + cpu.get("server_sidecar", 0.0)) / 2, 1
                    ),
                    "sidecar_run_delay_us_per_request": round(
                        (delay.get("client_sidecar", 0.0) + delay.get("server_sidecar", 0.0)) / 2, 1
                    ),
                }
            )
    return out


# ----------------------------------------------------------------- tables


def _fmt(v: float, f: str = "{:.0f}") -> str:
    return "-" if v != v else f.format(v)


def costs_table(data: dict[str, Any]) -> str:
    """Markdown: per stack and key type, the per-connection costs (median [range])."""
    head = (
        "| model | stack | keys | full handshake (us) | resumed (us) | resumed % | "
        "TCP conn (us) | new mTLS conn, all (us) | full RSA / ECDSA |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, by_key in data["connection_costs"].items():
        sums = {k: summarise_costs(b) for k, b in by_key.items() if b}
        ratio = math.nan
        if "rsa-2048" in sums and "ecdsa-p256" in sums:
            ratio = sums["rsa-2048"]["full_us"]["median"] / sums["ecdsa-p256"]["full_us"]["median"]
        for k, s in sums.items():

            def cell(field: str, s: dict[str, Any] = s) -> str:
                lo, hi = s[field]["range"]
                return f"{s[field]['median']:.0f} [{lo:.0f}..{hi:.0f}]"

            lines.append(
                f"| {name} | {data['models'][name]['stack']} | {k} | {cell('full_us')} | "
                f"{cell('resumed_us')} | {100 * s['resumed_fraction']['median']:.0f} | "
                f"{cell('tcp_us')} | {cell('mtls_connection_us')} | "
                + (_fmt(ratio, "{:.2f}") if k == "rsa-2048" else "")
                + " |"
            )
    return "\n".join(lines)


def keepalive_off_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: measured (median of the passes [range]) against predicted (error %), the
    latency outside the proxies from this run's keep-alive-off baselines ("off") or from
    the model's keep-alive-on ones ("on"); bold: the figure the check is about."""
    lines = [
        "| model | configuration | load (rps) | measured rps | predicted rps (err %) | "
        "measured p50 (ms) | predicted p50, off / on (err %) | measured p99 (ms) | "
        "predicted p99, off / on (err %) | sidecar CPU/req (us) | sidecar run delay/req "
        "(us) |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        m, rg = r["measured"], r["measured_range"]
        pred, pred_ka = r["predicted"], r["predicted_keepalive_baseline"]

        def cell(k: str, f: str, m: dict[str, float] = m, rg: dict[str, list[float]] = rg) -> str:
            return f"{f.format(m[k])} [{f.format(rg[k][0])}..{f.format(rg[k][1])}]"

        def predicted(
            k: str,
            f: str,
            both: bool,
            r: dict[str, Any] = r,
            pred: dict[str, float] = pred,
            pred_ka: dict[str, float] = pred_ka,
        ) -> str:
            one = f"{f.format(pred[k])} ({_fmt(r['error_pct'][k], '{:+.0f}')})"
            if both:
                one += (
                    f" / {f.format(pred_ka[k])} "
                    f"({_fmt(r['error_pct_keepalive_baseline'][k], '{:+.0f}')})"
                )
            return f"**{one}**" if k in r["checked"] else one

        load = "closed loop" if r["rps"] == 0 else f"{r['rps']:g}"
        lines.append(
            f"| {r['model']} | {r['config']} | {load} | "
            f"{cell('rps', '{:.0f}')} | {predicted('rps', '{:.0f}', False)} | "
            f"{cell('p50', '{:.2f}')} | {predicted('p50', '{:.2f}', True)} | "
            f"{cell('p99', '{:.2f}')} | {predicted('p99', '{:.2f}', True)} | "
            f"{r['sidecar_cpu_us_per_request']:.0f} | "
            f"{r['sidecar_run_delay_us_per_request']:.0f} |"
        )
    return "\n".join(lines)


def read_record(path: Path) -> dict[str, Any]:
    """A record written by ``meshsim calibrate churn --out``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MeshsimError(f"{path}: cannot read the churn record: {exc}") from None
    if not isinstance(data, dict) or not {"models", "connection_costs", "keepalive_off"} <= set(
        data
    ):
        raise MeshsimError(
            f"{path}: not a churn record (expected 'models', "
            "'connection_costs' and 'keepalive_off')"
        )
    return data


def run_churn(
    models: list[Path],
    key_types: list[str],
    out: Path | None,
    *,
    rounds: int,
    requests: int,
    passes: int,
    log: Log = print,
) -> dict[str, Any]:
    """Measure, check and (with ``out``) write the record; returns it with the check."""
    data = measure_churn(
        models, key_types, rounds=rounds, requests=requests, passes=passes, log=log
    )
    data["keepalive_off_check"] = check_keepalive_off(data)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data))
    return data


__all__ = [
    "KEY_TYPES",
    "Stack",
    "check_keepalive_off",
    "costs_table",
    "keepalive_off_table",
    "measure_churn",
    "read_record",
    "run_churn",
    "summarise_costs",
]
