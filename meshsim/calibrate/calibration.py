"""From lab measurements to a cost-model file: ``meshsim calibrate``'s engine.

:func:`measure_lab` runs the grid of :mod:`meshsim.calibrate.lab`; :func:`fit_model`
(:mod:`meshsim.calibrate.model_fit`) turns the measurements into a model document (kind
``envoy-sidecar``, one worker: the asyncio proxy is single-threaded) whose ``fit`` block records
the machine, the software, the service-time distribution, every estimate with its bootstrap CI,
the residuals, and every measured point with its role (``fit`` or ``held_out``). How each
parameter is derived is written in its ``source`` and ``note``, and summarised in
``reports/validation/README.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from meshsim import __version__
from meshsim.calibrate import cache_cooling, lab_costs, throttle
from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.model_fit import fit_model
from meshsim.calibrate.points import Measured, estimate_capacity, grid, point_line, scale
from meshsim.files import write_atomic
from meshsim.proxy.loadgen import TIMER_TICK_S

Log = Callable[[str], None]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for name in ("numpy", "httptools", "uvloop", "hdrhistogram", "simpy", "cryptography"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = "not installed"
    import os
    import ssl

    machine: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "meshsim": __version__,
        "libraries": libs,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    slice_ns = sched_base_slice_ns()
    if slice_ns is not None:
        machine["sched_base_slice_ns"] = slice_ns
    return machine


def sched_base_slice_ns(sched: Path = Path("/proc/self/sched")) -> int | None:
    """The kernel's EEVDF base slice as it applies here (``se.slice``, scaled by the CPUs it
    sees), which the simulated lab's fair scheduler takes; None on a kernel that does not
    show it (before EEVDF, or without CONFIG_SCHED_DEBUG)."""
    try:
        text = sched.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "se.slice":
            try:
                return int(float(value))
            except ValueError:
                return None
    return None


def telemetry_us(n: int = 3000) -> list[float]:
    """CPU of the proxy's per-request accounting, timed here: one access-log line
    (``json.dumps`` of the proxy's record shape) and the three metric updates."""
    from meshsim.proxy.metrics import ProxyMetrics

    m: Any = ProxyMetrics()
    # The proxy's metrics API is being optimised concurrently: use whichever it offers.
    if hasattr(m, "route"):
        stats = m.route("outbound")
        ops = [stats.latency.observe, stats.cpu.observe]
    else:
        ops = [m.latency.labels("outbound").observe, m.cpu.labels("outbound").observe]
    rec = {
        "ts": 0.0,
        "listener": "outbound",
        "method": "POST",
        "path": "/echo",
        "status": 200,
        "duration_ms": 1.0,
        "tries": 1,
        "upstream": "127.0.0.1:1",
        "flags": "-",
        "request_id": "0" * 25,
        "client": "127.0.0.1",
        "peer": None,
        "request_bytes": 1024,
        "cpu_us": 100.0,
    }
    out = []
    for _ in range(n):
        t0 = time.thread_time_ns()
        for op in ops:
            op(0.001)
        json.dumps(rec, separators=(",", ":"))
        out.append((time.thread_time_ns() - t0) / 1000.0)
    return out


def measure_lab(quick: bool, log: Log = print, key_type: str = "ecdsa-p256") -> dict[str, Any]:
    """Run the lab grid (workload keys of ``key_type``); a JSON-able record of everything
    measured."""
    lab = Lab(workdir(), key_type=key_type)
    try:
        log(f"lab placement: {lab.placement}")
        cap = estimate_capacity(lab, quick, log)
        # The CPU-limited points limit the server sidecar's CPU cgroup.
        log(f"lab cgroups: {lab.cgroups}")
        server_cgroup = lab.container("server_sidecar")
        if server_cgroup is None:
            log("CPU-limited points skipped: the lab's components have no CPU cgroups")
        limits = throttle.CPU_LIMITS if server_cgroup is not None else ()
        points = scale(grid(quick, cpu_limits=limits), cap)
        # Handshakes are timed in three blocks (start, middle, end of the grid) so that
        # their CI sees the machine's drift over the run, not only one moment's noise.
        per_block = (60 if quick else 300) // 3
        blocks = [lab_costs.handshakes(lab, per_block)]
        # The host's cache cooling, likewise at the start, middle and end (2 s each).
        cooling = [lab.probe_cache_cooling()]
        middle = len(points) // 2
        measured: list[Measured] = []
        unlimited: dict[tuple[str, int, float, int], Measured] = {}  # by load and pass
        for i, p in enumerate(points):
            if i == middle:
                blocks.append(lab_costs.handshakes(lab, per_block))
                cooling.append(lab.probe_cache_cooling())
            m = throttle.measure_grid_point(lab, p, unlimited, seed=i + 1)
            measured.append(m)
            log(point_line(i, len(points), p, m))
        memory = lab_costs.connection_memory(
            lab, (0, 50, 100, 200) if quick else (0, 100, 200, 300, 400)
        )
        blocks.append(lab_costs.handshakes(lab, per_block))
        cooling.append(lab.probe_cache_cooling())
        curve = cache_cooling.merge(cooling)
        if curve:
            log(f"cache cooling: {cache_cooling.fit_decay(curve)} ({curve['cold_us']} us cold)")
        hs = {side: [v for b in blocks for v in b[side]] for side in ("client", "server")}
        idle = lab_costs.idle_cpu_ms_per_s(lab, 2.0 if quick else 5.0)
        log(f"idle CPU (ms per s): {idle}")
        return {
            "quick": quick,
            "key_type": key_type,
            "capacity_estimate_rps": cap,
            "placement": lab.placement,
            "points": [m.to_json() for m in measured],
            "memory_kib": memory,
            "handshake_cpu_us": hs,
            "handshake_cpu_us_blocks": blocks,
            "telemetry_cpu_us": telemetry_us(),
            "idle_cpu_ms_per_s": idle,
            "cache_cooling": curve,
            "cpu_limits": {
                "shares": list(limits),
                "cgroup": f"v{server_cgroup.version}" if server_cgroup else None,
                "reason": lab.cgroups,
            },
            "cgroups": lab.cgroups,
            "release_tick_ms": TIMER_TICK_S * 1000.0,
            "machine": machine_info(),
        }
    finally:
        lab.close()


def fit_path(model_path: Path) -> Path:
    """The fit record of a calibrated model: ``NAME.yaml`` -> ``NAME.fit.json``."""
    return model_path.with_name(model_path.stem + ".fit.json")


def load_fit(model_path: Path) -> dict[str, Any]:
    from meshsim.errors import MeshsimError

    p = fit_path(model_path)
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise MeshsimError(f"{p}: cannot read the fit record of {model_path}: {exc}") from None
    return data


def write_model(doc: dict[str, Any], path: Path) -> None:
    """Write the model YAML (the loader's format, unchanged) and its fit record beside it.

    The fit record (machine, software, distribution, CIs, residuals, held-out points) is kept
    in ``NAME.fit.json`` rather than in the YAML because ``meshsim.models`` rejects unknown
    top-level keys and is being extended by another engineer; see the report.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in doc.items() if k != "fit"}
    header = (
        "# Calibrated by `meshsim calibrate` (meshsim/calibrate). Every parameter names "
        "the measurement it came from.\n"
        f"# Fit record (machine, software, CIs, residuals, held-out points): "
        f"{fit_path(path).name}\n"
    )
    text = header + yaml.safe_dump(body, sort_keys=False, width=100)
    write_atomic(path, text.encode("utf-8"))
    write_atomic(fit_path(path), json.dumps(doc.get("fit", {}), indent=1).encode("utf-8"))


def measurements_path(model_path: Path) -> Path:
    """The lab's record of everything it measured for a model: ``NAME.measurements.json``."""
    return model_path.with_suffix(".measurements.json")


def calibrate_lab(
    out: Path, *, quick: bool, log: Log = print, seed: int = 0, key_type: str = "ecdsa-p256"
) -> dict[str, Any]:
    data = measure_lab(quick, log, key_type)
    write_measurements(data, out)
    return _fit_and_write(data, out, log, seed)


def write_measurements(data: dict[str, Any], model_path: Path) -> None:
    """Keep the lab's record of what it measured beside the model fitted from it."""
    raw = measurements_path(model_path)
    raw.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(raw, json.dumps(data).encode("utf-8"))


def refit_from_measurements(
    measurements: Path, out: Path, *, log: Log = print, seed: int = 0, workers: int | None = None
) -> dict[str, Any]:
    """Fit a model again from a stored record of its lab's measurements, without measuring:
    meshsim's own proxy's (``meshsim calibrate``) or a proxy process's (``--proxy-cmd``, with
    its worker threads: ``workers``, else the record's).

    The measurement is the lab's 20 minutes on a quiet machine; the fit and its refit in the
    simulator's terms are the part that changes with meshsim, so a record keeps its value
    across versions. The record is copied beside ``out`` (unless it is already there), so
    that the model's files stay together."""
    from meshsim.errors import MeshsimError

    try:
        record = measurements.read_bytes()
        data = json.loads(record)
    except (OSError, ValueError) as exc:
        raise MeshsimError(f"{measurements}: cannot read a lab measurement record: {exc}") from None
    missing = [
        k for k in ("points", "machine", "placement") if not isinstance(data, dict) or k not in data
    ]
    if missing:
        raise MeshsimError(
            f"{measurements}: not a lab measurement record (as `meshsim calibrate` writes "
            f"NAME.measurements.json): no {', '.join(missing)}"
        )
    if not isinstance(data["points"], list) or not data["points"]:
        raise MeshsimError(f"{measurements}: points: expected the list of measured lab points")
    for i, point in enumerate(data["points"]):
        try:
            Measured.from_json(point)
        except (KeyError, TypeError, ValueError) as exc:
            raise MeshsimError(
                f"{measurements}: points[{i}] is not a measured lab point ({exc!r})"
            ) from None
    black_box = "proxy_command" in data
    if workers not in (None, 1) and not black_box:
        raise MeshsimError(
            f"{measurements}: --workers applies to a proxy process's record (--proxy-cmd); "
            "meshsim's own proxy in the lab runs one worker"
        )
    raw = measurements_path(out)
    if raw.exists() and not raw.samefile(measurements) and raw.read_bytes() != record:
        # Another record beside the model is another lab's twenty minutes: never overwritten.
        raise MeshsimError(
            f"{raw} holds another lab measurement record than {measurements}: move it, or "
            "choose another --out (the record is kept beside the model it was fitted into)"
        )
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(raw, record)
    what = data["proxy_command"].split()[0] if black_box else "meshsim's proxy"
    log(
        f"refitting {out} from {measurements} ({what}, {len(data['points'])} points, "
        f"measured on {data['machine'].get('cpu', '?')})"
    )
    if black_box:
        from meshsim.calibrate.blackbox import fit_and_write_command

        threads = workers if workers is not None else int(data.get("workers", 1))
        return fit_and_write_command(data, out, log=log, seed=seed, workers=threads)
    return _fit_and_write(data, out, log, seed)


def _fit_and_write(data: dict[str, Any], out: Path, log: Log, seed: int) -> dict[str, Any]:
    key_type = str(data.get("key_type", "ecdsa-p256"))
    doc = fit_model(data, name=out.stem, seed=seed)
    # The certificates' key type decides the handshake's cost: its provenance.
    doc["measured_on"] += f"; workload keys {key_type}"
    doc["fit"]["key_type"] = key_type
    write_model(doc, out)
    return refit_in_sim_terms(doc, out, log)


def refit_in_sim_terms(doc: dict[str, Any], out: Path, log: Log) -> dict[str, Any]:
    """The written model with its wake-up cost and hop latency refitted in the simulator's
    terms (:mod:`meshsim.calibrate.sim_terms`); ``doc`` updated to match the files."""
    from meshsim.calibrate.sim_terms import refit_hop_latency, rescale_wakeups

    # A quick calibration (a smoke run) simulates its fit points as briefly as it measured
    # them; a full one, longer than its points, for stable counts.
    duration_s = 1.5 if doc["fit"].get("quick") else 3.0
    wakeups = rescale_wakeups(out, duration_s=duration_s, log=log)
    hop = refit_hop_latency(out, duration_s=duration_s, log=log)
    doc["parameters"] = yaml.safe_load(out.read_text())["parameters"]
    if wakeups is not None:
        doc["fit"]["wakeup_scale"] = wakeups
    if hop is not None:
        doc["fit"]["hop_refit"] = hop
    return doc


__all__ = [
    "calibrate_lab",
    "fit_model",
    "fit_path",
    "load_fit",
    "machine_info",
    "measure_lab",
    "measurements_path",
    "refit_from_measurements",
    "refit_in_sim_terms",
    "write_measurements",
    "write_model",
]
