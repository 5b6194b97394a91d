"""Calibrated models side by side: ``meshsim calibrate compare models/calibrated/*.yaml``.

One row per model file (meshsim's Python proxy, HAProxy's C event loop, the Rust reference
sidecar, a user's Envoy...), with the costs the lab separates: CPU per request (the model's
fixed part and per KiB, and what the lab measured per request at its lowest fit load and
at saturation, wake-ups included), CPU per wake-up, TLS per request and per KiB, full and
resumed handshakes, a TCP connection, and memory (base and per idle connection).

Every figure is read from the model file and its fit record (``NAME.fit.json``); a model
without a fit record (a shipped, published-figure model) shows its parameters only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshsim.errors import MeshsimError
from meshsim.models import load_model

FIXED_PARTS = (
    "socket_io_us",
    "http_parse_request_us",
    "http_parse_response_us",
    "routing_us",
    "telemetry_us",
)
"""The model parameters that are charged once per request whatever its size."""

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("fixed_cpu_us", "CPU/req fixed (us)", "{:.1f}"),
    ("per_kib_us", "CPU/KiB (us)", "{:.2f}"),
    ("wakeup_us", "CPU/wake-up (us)", "{:.1f}"),
    ("measured_low_us", "CPU/req low load (us)", "{:.1f}"),
    ("wakeups_low", "wake-ups/req low load", "{:.2f}"),
    ("measured_sat_us", "CPU/req saturation (us)", "{:.1f}"),
    ("tls_request_us", "TLS/req (us)", "{:.1f}"),
    ("tls_per_kib_us", "TLS/KiB (us)", "{:.2f}"),
    ("handshake_us", "TLS handshake (us)", "{:.0f}"),
    ("resumed_us", "TLS resumed (us)", "{:.0f}"),
    ("tcp_connection_us", "TCP conn (us)", "{:.1f}"),
    ("base_memory_mb", "base RSS (MB)", "{:.1f}"),
    ("connection_kb", "KB/conn", "{:.1f}"),
    ("tls_connection_kb", "KB/mTLS conn extra", "{:.1f}"),
)


@dataclass
class StackRow:
    """One model's costs (NaN: the model or its fit record does not say)."""

    model: str
    stack: str
    key_type: str = "-"
    """The workload certificates' key type the handshakes were measured with ("-": none)."""
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def stack_label(fit: dict[str, Any] | None) -> str:
    """What ran in the lab: the proxy command's program, or meshsim's Python proxy."""
    if not fit:
        return "published figures"
    cmd = fit.get("proxy_command")
    if not cmd:
        return "Python (meshsim proxy)"
    prog = Path(str(cmd).split()[0]).name
    if "haproxy" in prog:
        return "C (HAProxy)"
    if "rust" in prog:
        return "Rust (tokio+hyper)"
    if prog == "meshsim-sidecar":
        return "Python (black box)"
    return prog


def key_type_label(fit: dict[str, Any] | None) -> str:
    """The key type of the lab's certificates: the fit record's, or ``ecdsa-p256`` for lab
    records from before ``--key-type`` (the lab CA issued nothing else then); ``-`` for a
    model without a fit record."""
    if not fit:
        return "-"
    return str(fit.get("key_type") or "ecdsa-p256")


def _param(params: dict[str, Any], name: str) -> float:
    entry = params.get(name)
    if isinstance(entry, dict) and isinstance(entry.get("value"), int | float):
        return float(entry["value"])
    return math.nan


def _measured(fit: dict[str, Any]) -> dict[str, float]:
    """The sidecars' mean process CPU and wake-ups per request at the lowest fit load of the
    lab's main payload, and CPU per request at saturation (closed loop)."""
    main = (fit.get("lab") or {}).get("payload_bytes")
    base = [
        r
        for r in fit.get("points", ())
        if r.get("role") == "fit"
        and r.get("proxied")
        and not r.get("mtls")
        and r.get("keep_alive", True)
        and not r.get("filters")
    ]

    def sidecars(r: dict[str, Any], key: str) -> float:
        d = r.get(key) or {}
        if "client_sidecar" not in d or "server_sidecar" not in d:
            return math.nan
        return (float(d["client_sidecar"]) + float(d["server_sidecar"])) / 2.0

    out = {"measured_low_us": math.nan, "wakeups_low": math.nan, "measured_sat_us": math.nan}
    open_loop = [r for r in base if r["rps"] > 0 and r["payload_bytes"] == main]
    if open_loop:
        low = min(open_loop, key=lambda r: r["rps"])
        lows = [r for r in open_loop if r["rps"] == low["rps"]]
        out["measured_low_us"] = sum(sidecars(r, "process_cpu_us_per_request") for r in lows) / len(
            lows
        )
        out["wakeups_low"] = sum(sidecars(r, "wakeups_per_request") for r in lows) / len(lows)
    sat = [r for r in base if r["rps"] == 0]
    if sat:
        out["measured_sat_us"] = sum(sidecars(r, "process_cpu_us_per_request") for r in sat) / len(
            sat
        )
    return out


def model_row(path: Path) -> StackRow:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MeshsimError(f"{path}: cannot read the model: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("parameters"), dict):
        raise MeshsimError(f"{path}: not a model file (expected a mapping with 'parameters')")
    params: dict[str, Any] = doc["parameters"]
    fit_file = path.with_name(path.stem + ".fit.json")
    fit: dict[str, Any] | None = None
    if fit_file.exists():
        try:
            fit = json.loads(fit_file.read_text())
        except (OSError, ValueError) as exc:
            raise MeshsimError(f"{fit_file}: cannot read the fit record: {exc}") from None
    row = StackRow(path.stem, stack_label(fit), key_type_label(fit))
    v = row.values
    v["fixed_cpu_us"] = sum(_param(params, k) for k in FIXED_PARTS)
    v["per_kib_us"] = _param(params, "payload_cpu_us_per_kib")
    v["wakeup_us"] = _param(params, "wakeup_cpu_us")
    v["tls_request_us"] = _param(params, "tls_request_cpu_us")
    v["tls_per_kib_us"] = _param(params, "tls_record_cpu_us_per_kib")
    # A handshake as the simulator charges it (one side of a mutual TLS 1.3 handshake):
    # published models split it into key exchange, signing and verification.
    model = load_model(path)
    v["handshake_us"] = model.handshake_cpu_us("server")
    v["resumed_us"] = model.handshake_cpu_us("server", resumed=True)
    v["tcp_connection_us"] = _param(params, "tcp_connection_cpu_us")
    v["base_memory_mb"] = _param(params, "base_memory_mb")
    v["connection_kb"] = _param(params, "connection_kb")
    v["tls_connection_kb"] = _param(params, "tls_connection_kb")
    v.update(
        _measured(fit)
        if fit
        else {"measured_low_us": math.nan, "wakeups_low": math.nan, "measured_sat_us": math.nan}
    )
    if fit:
        row.notes.append(
            f"measured on {fit.get('machine', {}).get('host', '?')} "
            f"{fit.get('machine', {}).get('date', '')}" + (" (--quick)" if fit.get("quick") else "")
        )
        hs = params.get("tls_handshake_overhead_cpu_us", {})
        if "in-memory" in str(hs.get("note", "")):
            row.notes.append("handshake timed in memory (Python ssl objects), not on the process")
    return row


def compare_rows(paths: list[Path]) -> list[StackRow]:
    return [model_row(p) for p in paths]


def _cell(value: float, fmt: str) -> str:
    return "-" if math.isnan(value) else fmt.format(value)


def markdown_table(rows: list[StackRow]) -> str:
    head = ["model", "stack", "keys", *(title for _k, title, _f in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.model,
            r.stack,
            r.key_type,
            *(_cell(r.values.get(k, math.nan), f) for k, _t, f in COLUMNS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.model}: {n}" for r in rows for n in r.notes]
    return "\n".join(lines + (["", *notes] if notes else []))


def rich_table(rows: list[StackRow]) -> Any:
    """The same table transposed for a terminal: one column per model."""
    from rich.table import Table

    table = Table(title="calibrated proxy stacks (lab, loopback, one worker each)")
    table.add_column("cost")
    for r in rows:
        table.add_column(f"{r.model}\n{r.stack}\n{r.key_type}", justify="right")
    for key, title, fmt in COLUMNS:
        table.add_row(title, *(_cell(r.values.get(key, math.nan), fmt) for r in rows))
    notes = "; ".join(f"{r.model}: {n}" for r in rows for n in r.notes)
    if notes:
        table.caption = notes
    return table


__all__ = [
    "COLUMNS",
    "StackRow",
    "compare_rows",
    "key_type_label",
    "markdown_table",
    "model_row",
    "rich_table",
    "stack_label",
]
