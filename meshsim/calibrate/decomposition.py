"""Where the lab's latency goes, measured and simulated: a per-hop decomposition side by side.

The lab (:mod:`meshsim.calibrate.lab`) gives three clocks per request: the load generator's
latency (from the intended send time), and each sidecar's access-log ``duration_ms``, from
the request parsed to the response written. Their differences split the latency into three
parts (:func:`lab_parts`):

- **outside the client sidecar** = load generator - client sidecar: the load generator's own
  lag and CPU, the wait for one of its connections, the request waiting in the client
  sidecar's socket until its event loop reads it, and the loopback;
- **the client sidecar's share** = client sidecar - server sidecar: its own work on both
  paths, the hops between the sidecars, and the server sidecar's socket wait;
- **the server side** = server sidecar: its work and the echo behind it.

Per process the lab also measures the run delay (schedstat: runnable, waiting for its core)
per request: the "queueing for a core" that the simulator's cores produce too.

The simulated lab gives the same three parts from the same arithmetic on its own clocks
(:mod:`meshsim.calibrate.sim_trace`: the load generator's latency and the two sidecars' spans
per request), so the two compare one to one, and, where the lab has no clock, the finer
parts of each: waiting for a core, for the proxy's worker, for a connection, the CPU, the
network and the measured baseline drawn outside the proxies.

Differences of quantiles are not quantiles of differences: the p50 rows are the lab's own
method (the p50 of one clock less the p50 of the other), applied to both sides alike; the
means add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from meshsim.calibrate.sim_trace import RequestParts
    from meshsim.calibrate.validate import Comparison

STATS = ("p50", "mean")
"""The statistics each part is compared on."""
TAIL = ("p50", "p90", "p99")
"""The quantiles each span is compared on, as a whole (a span is one clock: no differences)."""
SPANS = {
    "end_to_end": "end to end (load generator)",
    "client_sidecar": "client sidecar's span",
    "server_sidecar": "server sidecar's span (it and the echo)",
}
PARTS = {
    "end_to_end": "end to end (load generator)",
    "outside_client_sidecar": "outside the client sidecar",
    "client_sidecar_share": "client sidecar's share",
    "server_side": "server side (server sidecar + echo)",
    "release": "of all that, the load generator's wait to send: its timer, then a free "
    "connection (intended to sent)",
}
"""The lab-shaped parts, in the order they are shown, with their labels; ``release`` is in
``outside_client_sidecar``, from the load generator's two clocks (records since run AB): the
lab's sends when a connection is free, so the wait for one is in it as well."""
SECTION_LABELS = {
    "outside": "outside the client sidecar",
    "client": "client sidecar's share",
    "server": "server side",
}
"""The simulated sections (:data:`meshsim.calibrate.sim_trace.SECTIONS`), as the parts."""
PROCESSES = ("load_generator", "client_sidecar", "server_sidecar", "echo")
SIDECARS = ("client_sidecar", "server_sidecar")
PART_LABELS = {
    "core_wait": "queueing for a core",
    "wake_latency": "a sleeping sidecar thread being woken",
    "worker_wait": "queueing for its thread (an event loop busy) or the echo's slot",
    "release_wait": "waiting for the load generator's timer to release it",
    "cpu": "CPU (proxy work, the echo, the load generator)",
    "connection_wait": "waiting for one of the load generator's connections",
    "connection_setup": "a sidecar opening a connection (its pool had none idle)",
    "network": "network and hop latency",
    "baseline": "measured baseline outside the proxies (drawn)",
}
NOT_MEASURED = (
    "not measured: the lab record has no access-log durations (`sidecar_duration_ms`, "
    "recorded by calibrations since the decomposition was added); the simulated side is "
    "shown alone"
)


# --------------------------------------------------------------------------- the arithmetic


def duration_quantiles(durations_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and mean of one sidecar's ``duration_ms`` over a point (and how many)."""
    if not durations_ms:
        return {}
    a = np.asarray(durations_ms, dtype=float)
    out = {f"p{q}": round(float(np.percentile(a, q)), 4) for q in (50, 90, 99)}
    out["mean"] = round(float(a.mean()), 4)
    out["samples"] = len(a)
    return out


def lab_parts(
    latency_ms: Mapping[str, float],
    sidecar_ms: Mapping[str, Mapping[str, float]],
    from_send_ms: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]] | None:
    """The three lab-shaped parts (and the end-to-end latency) for each of :data:`STATS`,
    in ms, and with ``from_send_ms`` (the latency from each request's send) the wait for
    the load generator's timer; None when either sidecar's durations are missing."""
    client = sidecar_ms.get("client_sidecar") or {}
    server = sidecar_ms.get("server_sidecar") or {}
    if not all(s in client and s in server and s in latency_ms for s in STATS):
        return None
    parts = {
        "end_to_end": {s: latency_ms[s] for s in STATS},
        "outside_client_sidecar": {s: latency_ms[s] - client[s] for s in STATS},
        "client_sidecar_share": {s: client[s] - server[s] for s in STATS},
        "server_side": {s: server[s] for s in STATS},
    }
    if from_send_ms and all(s in from_send_ms for s in STATS):
        parts["release"] = {s: latency_ms[s] - from_send_ms[s] for s in STATS}
    return parts


def _stats_ms(seconds: np.ndarray) -> dict[str, float]:
    if not len(seconds):
        return {s: float("nan") for s in STATS}
    return {"p50": float(np.percentile(seconds, 50)) * 1e3, "mean": float(seconds.mean()) * 1e3}


def simulated_parts(parts: RequestParts) -> dict[str, dict[str, float]]:
    """The lab-shaped parts of a traced simulation: the same arithmetic as
    :func:`lab_parts`, on the load generator's latency and the two sidecars' spans."""
    # As the lab's load generator stamps a request sent: once its timer released it and one
    # of its connections was free.
    released = parts.column(hop="load_generator", part="release_wait") + parts.column(
        hop="load_generator", part="connection_wait"
    )
    shaped = lab_parts(
        _stats_ms(parts.total),
        {
            "client_sidecar": _stats_ms(parts.client_span),
            "server_sidecar": _stats_ms(parts.server_span),
        },
        _stats_ms(parts.total - released) if len(released) == len(parts.total) else None,
    )
    assert shaped is not None
    return shaped


def simulated_spans(parts: RequestParts) -> dict[str, dict[str, float]]:
    """The quantiles (ms) of the load generator's latency and of each sidecar's span: where in
    the chain a tail is made, which the parts' differences of p50s cannot say."""
    columns = {
        "end_to_end": parts.total,
        "client_sidecar": parts.client_span,
        "server_sidecar": parts.server_span,
    }
    return {
        k: {q: float(np.percentile(v, int(q[1:]))) * 1e3 if len(v) else float("nan") for q in TAIL}
        for k, v in columns.items()
    }


def measured_spans(point: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """The lab's same quantiles (a merged point's: each the median over its passes), None
    without access-log durations."""
    durations = point.get("sidecar_duration_ms")
    if not durations or not all(s in durations for s in SIDECARS):
        return None
    lat = point["latency_ms"]
    return {
        "end_to_end": {q: float(lat[q]) for q in TAIL},
        **{s: {q: float(durations[s][q]) for q in TAIL} for s in SIDECARS},
    }


def simulated_core_wait_us(parts: RequestParts) -> dict[str, float]:
    """Mean time per request each process waited for its core, in us."""
    if not len(parts.total):
        return {}
    return {p: float(parts.column(hop=p, part="core_wait").mean()) * 1e6 for p in PROCESSES}


@dataclass(frozen=True)
class Detail:
    """One simulated part: its section of the lab shape, where and what; p50 and mean, ms."""

    section: str
    hop: str
    part: str
    p50_ms: float
    mean_ms: float


def simulated_detail(parts: RequestParts) -> list[Detail]:
    """Every (section, hop, part) the simulation timed, in section order."""
    from meshsim.calibrate.sim_trace import SECTIONS

    out: list[Detail] = []
    for section in SECTIONS:
        for s, hop, part in parts.keys:
            if s == section:
                st = _stats_ms(parts.column(s, hop, part))
                out.append(Detail(s, hop, part, st["p50"], st["mean"]))
    return out


# --------------------------------------------------------------------------- one point


def _num(v: float) -> float | None:
    """A figure for JSON: rounded, None where there is none (NaN is not JSON)."""
    return None if v != v else round(v, 4)


@dataclass
class PointDecomposition:
    """One held-out load: the lab's parts (None: not measured) and the simulation's."""

    point: dict[str, Any]
    predicted: dict[str, dict[str, float]]
    measured: dict[str, dict[str, float]] | None
    core_wait_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per process: ``measured`` (the lab's run delay per request) and ``predicted``."""
    detail: list[Detail] = field(default_factory=list)
    requests: int = 0
    spans: dict[str, dict[str, dict[str, float]] | None] = field(default_factory=dict)
    """``measured`` (None: not measured) and ``predicted`` :data:`TAIL` quantiles of each of
    :data:`SPANS`, ms."""

    @property
    def label(self) -> str:
        p = self.point
        return f"{p['config']} {p['payload_bytes']}B {p['rps']:g} rps"

    def to_json(self) -> dict[str, Any]:
        def r(d: Mapping[str, Mapping[str, float]] | None) -> Any:
            if d is None:
                return None
            return {k: {s: _num(v) for s, v in stats.items()} for k, stats in d.items()}

        return {
            "config": self.point["config"],
            "payload_bytes": self.point["payload_bytes"],
            "rps": self.point["rps"],
            "measured_ms": r(self.measured),
            "predicted_ms": r(self.predicted),
            "measured_note": None if self.measured is not None else NOT_MEASURED,
            "core_wait_us": r(self.core_wait_us),
            "spans_ms": {k: r(v) for k, v in self.spans.items()},
            "simulated_requests": self.requests,
            "simulated_detail_ms": [
                {
                    "section": d.section,
                    "hop": d.hop,
                    "part": d.part,
                    "p50": _num(d.p50_ms),
                    "mean": _num(d.mean_ms),
                }
                for d in self.detail
            ],
        }


def trace_lab(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    *,
    duration_s: float = 4.0,
    scheduler: Literal["fcfs", "cfs"] | None = None,
) -> RequestParts:
    """Simulate one lab point as :func:`meshsim.calibrate.lab_scenario.predict` does (same
    scenario, same seed: the same run), with the per-request tracer attached; ``scheduler``
    as there (None: the simulated lab's)."""
    from meshsim.calibrate.lab_scenario import lab_scenario
    from meshsim.calibrate.sim_trace import trace
    from meshsim.rng import replication_seeds
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    doc = lab_scenario(model_path, fit, point, duration_s=duration_s, scheduler=scheduler)
    scenario = from_dict(doc)
    sim = Simulation(scenario, "istio", replication_seeds(scenario.seed, 1)[0])
    tracer = trace(sim)
    sim.run()
    return tracer.result()


def measured_parts(point: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """The lab's parts of a (merged) held-out point, None without access-log durations."""
    durations = point.get("sidecar_duration_ms")
    if not durations:
        return None
    return lab_parts(point["latency_ms"], durations, point.get("latency_from_send_ms"))


def decompose_point(
    model_path: Path, fit: dict[str, Any], point: dict[str, Any], *, duration_s: float = 4.0
) -> PointDecomposition:
    parts = trace_lab(model_path, fit, point, duration_s=duration_s)
    run_delay = point.get("run_delay_us_per_request") or {}
    predicted_wait = simulated_core_wait_us(parts)
    core = {
        p: {
            "measured": float(run_delay.get(p, float("nan"))),
            "predicted": predicted_wait.get(p, float("nan")),
        }
        for p in PROCESSES
    }
    return PointDecomposition(
        point=point,
        predicted=simulated_parts(parts),
        measured=measured_parts(point),
        core_wait_us=core,
        detail=simulated_detail(parts),
        requests=len(parts.total),
        spans={"measured": measured_spans(point), "predicted": simulated_spans(parts)},
    )


def decompose(
    model_path: Path, fit: dict[str, Any], rows: Sequence[Comparison], *, duration_s: float = 4.0
) -> list[PointDecomposition]:
    """Both decompositions at every open-loop held-out point (a closed loop's latency is
    not checked, and its saturated queues say nothing about where a request's time goes)."""
    return [
        decompose_point(model_path, fit, r.point, duration_s=duration_s)
        for r in rows
        if not r.saturation
    ]


# --------------------------------------------------------------------------- the report


def _f(v: float) -> str:
    if v != v:
        return "n/a"
    text = f"{v:.3f}"
    return "0.000" if text == "-0.000" else text  # a residual's float noise


def _diff(pred: float, meas: float) -> str:
    if pred != pred or meas != meas:
        return "n/a"
    pct = f" ({100.0 * (pred - meas) / meas:+.0f}%)" if abs(meas) > 1e-9 else ""
    return f"{pred - meas:+.3f}{pct}"


def _span_table(d: PointDecomposition) -> list[str]:
    """Each clock's p50, p90 and p99 as a whole, measured / predicted: where a tail is made."""
    meas = d.spans.get("measured")
    pred = d.spans.get("predicted") or {}
    lines = [
        "",
        "Each clock's quantiles as a whole (measured / predicted, ms): where the tail is made.",
        "",
        "| clock | " + " | ".join(TAIL) + " |",
        "|---|" + "---:|" * len(TAIL),
    ]
    for key, label in SPANS.items():
        m = (meas or {}).get(key) or {}
        p = pred.get(key) or {}
        cells = [f"{_f(m.get(q, float('nan')))} / {_f(p.get(q, float('nan')))}" for q in TAIL]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render(points: Sequence[PointDecomposition]) -> str:
    """The decomposition section of ``report.md`` (markdown, no heading)."""
    if not points:
        return "No open-loop held-out point to decompose.\n"
    lines = [
        "Per held-out load: the load generator's latency split by the sidecars' access-log "
        "clocks (`duration_ms`, request parsed to response written), measured in the lab and "
        "simulated (the simulated lab's spans of the same two sidecars, the same seed as the "
        "prediction above). p50 rows are differences of p50s (the lab's method, on both "
        "sides); means add up. Difference = predicted - measured, ms. Below each table, the "
        "simulation's finer parts by section: a sidecar's waits before its request-path burst "
        "fall in the section before its span, as in the lab, where the request waits in the "
        "socket until the event loop reads and parses it.",
        "",
    ]
    for d in points:
        lines += [f"**{d.label}**", ""]
        if d.measured is None:
            lines += [f"Measured: {NOT_MEASURED}.", ""]
        lines += [
            "| part | p50 measured | p50 predicted | p50 difference "
            "| mean measured | mean predicted | mean difference |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        none = {s: float("nan") for s in STATS}
        for key, label in PARTS.items():
            pred = d.predicted.get(key, none)
            meas = (d.measured or {}).get(key, none)
            lines.append(
                f"| {label} | {_f(meas['p50'])} | {_f(pred['p50'])} | "
                f"{_diff(pred['p50'], meas['p50'])} | {_f(meas['mean'])} | "
                f"{_f(pred['mean'])} | {_diff(pred['mean'], meas['mean'])} |"
            )
        for proc in PROCESSES:
            cw = d.core_wait_us.get(proc, {})
            meas_ms = cw.get("measured", float("nan")) / 1e3
            pred_ms = cw.get("predicted", float("nan")) / 1e3
            lines.append(
                f"| queueing for a core: {proc} (lab: run delay) | | | | {_f(meas_ms)} | "
                f"{_f(pred_ms)} | {_diff(pred_ms, meas_ms)} |"
            )
        if d.spans:
            lines += _span_table(d)
        lines += ["", f"Simulated parts ({d.requests} requests), ms:", ""]
        lines += ["| section | hop | part | p50 | mean |", "|---|---|---|---:|---:|"]
        lines += [
            f"| {SECTION_LABELS[x.section]} | {x.hop} | {PART_LABELS.get(x.part, x.part)} | "
            f"{_f(x.p50_ms)} | {_f(x.mean_ms)} |"
            for x in d.detail
        ]
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "NOT_MEASURED",
    "PARTS",
    "PointDecomposition",
    "decompose",
    "decompose_point",
    "duration_quantiles",
    "lab_parts",
    "measured_parts",
    "measured_spans",
    "render",
    "simulated_parts",
    "simulated_spans",
    "trace_lab",
]
