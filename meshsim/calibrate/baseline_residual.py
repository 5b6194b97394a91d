"""The latency outside the proxies that the simulated lab does not make itself.

The lab's baseline (load generator -> echo, no proxies; :func:`meshsim.calibrate.rows.
baseline_row`) is each request's latency from its send less the load generator's and the
echo's CPU for it. What is left is not all outside the simulated lab: the load generator
reads a response only once its timer's callback has sent the rest of its clump, and the echo
answers a clump one request after another, and the simulated lab's load generator and echo do
both themselves (their thread, their slot, their cores). Drawn whole as ``client_delay_ms``,
that queueing counted twice wherever the simulated lab queues them again, which under
``cluster.scheduler: cfs`` it does (a response reaching the load generator while it sends;
the echo handed a batch while its sidecar runs its slice). The simulated baseline, with
nothing drawn, takes 0.015 to 0.145 ms at the median (1 KiB, keep-alive) against the
measured 0.029 to 0.112: half of it at the lowest load, all of it from 8368 rps up
(reports/validation/cpu-limits.md, "The baseline counted twice").

:func:`residual_delay_ms` is what the measured baseline has beyond the simulated one, quantile
by quantile (floored at zero): the lab scenario draws that, where :func:`residual_applies`
(older baselines are drawn whole). The simulated baseline is the lab
scenario itself at the baseline's load with the mesh ``none`` (the load generator in its pod
on its core, ``mesh_options.meshed_clients``; the echo on the other), the baseline's own CPUs
and no drawn delay, timed as the lab's load generator times it (from each send: the
workload's ``from_send_s``). The two cores are not shared there, so it is the same under
either scheduler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate.points import OPEN_LOOP_CONNECTIONS
from meshsim.rng import replication_seeds
from meshsim.scenario import from_dict

BASELINE_RUN_S = 3.0
"""Simulated seconds of each baseline (the lab scenario's warm-up included): 4,000 to 40,000
requests in its window at the baselines' loads, for the 1,000 to 3,000 measured values (1,000
quantiles a pass)."""


_CACHE: dict[str, list[float]] = {}


def residual_applies(base: Mapping[str, Any]) -> bool:
    """Whether the baseline can be simulated as it was measured: timed from each send (not
    from the intended time, as records before the load generator stamped its sends), with
    the load generator's and the echo's CPU recorded. Else its delay is drawn whole."""
    return (
        base.get("delay_from") == "send"
        and base.get("load_generator_cpu_us") is not None
        and base.get("echo_cpu_us") is not None
    )


def simulated_baseline_ms(
    model_path: Path, fit: dict[str, Any], base: Mapping[str, Any]
) -> np.ndarray:
    """Each request's latency (ms) from its send in the simulated lab without proxies at the
    baseline ``base``'s load, payload and keep-alive, less the load generator's and the
    echo's CPU per request, as the measured baseline is reduced."""
    from meshsim.calibrate.lab_scenario import lab_scenario
    from meshsim.sim.engine import Simulation

    point = {
        "payload_bytes": int(base["payload_bytes"]),
        "rps": float(base["rps"]),
        "connections": OPEN_LOOP_CONNECTIONS,
        "keep_alive": bool(base.get("keep_alive", True)),
        "mtls": False,
        "config": "baseline",
    }
    lg_ms = float(base["load_generator_cpu_us"]) / 1000.0
    echo_ms = float(base["echo_cpu_us"]) / 1000.0
    doc = lab_scenario(
        model_path, fit, point, duration_s=BASELINE_RUN_S, outside_delay=False, scheduler="fcfs"
    )
    doc["meshes"] = ["none"]
    doc["workloads"][0]["client_cpu_ms"] = {"dist": "constant", "mean": lg_ms}
    doc["services"][0]["cpu_ms"] = {"dist": "constant", "mean": echo_ms}
    scenario = from_dict(doc)
    sim = Simulation(scenario, "none", replication_seeds(scenario.seed, 1)[0])
    timed: list[float] = []
    sim.workloads[0].from_send_s = timed
    sim.run()
    return np.asarray(timed) * 1e3 - lg_ms - echo_ms


def residual_delay_ms(
    model_path: Path, fit: dict[str, Any], base: Mapping[str, Any]
) -> list[float]:
    """The measured baseline's delay values (``base["delay_ms"]``, sorted quantiles) less
    the simulated baseline's at the same levels, each floored at zero (cached per model and
    baseline)."""
    key = json.dumps([str(model_path), base], sort_keys=True, default=str)
    cached = _CACHE.get(key)
    if cached is None:
        measured = np.sort(np.asarray(base["delay_ms"], dtype=float))
        simulated = simulated_baseline_ms(model_path, fit, base)
        levels = (np.arange(len(measured)) + 0.5) / len(measured)
        floor = np.quantile(simulated, levels) if len(simulated) else np.zeros(len(measured))
        cached = _CACHE[key] = np.maximum(measured - floor, 0.0).round(4).tolist()
    return list(cached)
