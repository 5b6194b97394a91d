"""The latency outside the proxies that the simulated lab draws: the measured baseline's
beyond what the simulated lab's own load generator and echo make of it
(meshsim/calibrate/baseline_residual.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshsim.calibrate.baseline_residual import residual_delay_ms, simulated_baseline_ms
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.lab_scenario import baseline_for, lab_scenario
from meshsim.rng import replication_seeds
from meshsim.scenario import from_dict
from meshsim.sim.engine import Simulation

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "calibrated" / "lab.yaml"


def _baseline(fit: dict[str, Any], rps: float) -> dict[str, Any]:
    base = baseline_for(fit, {"payload_bytes": 1024, "rps": rps, "keep_alive": True})
    assert base is not None
    assert base["rps"] == rps
    return base


def test_the_simulated_baseline_with_its_residual_is_the_measured_baseline() -> None:
    # The lowest held-out 1 KiB baseline of the committed record: the simulated load
    # generator and echo make 0.043 ms of its 0.050 at the median (from the send, less their
    # CPU); drawn with the residual, the simulated baseline is the measured one again. With
    # the whole measured delay drawn it is nearly twice that, and timed from the intended
    # send (its release's wait for the timer too) 0.07 ms longer still.
    fit = load_fit(MODEL)
    base = _baseline(fit, 3347.1)
    measured = float(np.median(base["delay_ms"]))
    alone = float(np.median(simulated_baseline_ms(MODEL, fit, base)))
    assert alone < measured
    point = {"payload_bytes": 1024, "rps": 3347.1, "connections": 32, "keep_alive": True,
             "mtls": False, "config": "baseline"}  # fmt: skip
    doc = lab_scenario(MODEL, fit, point, duration_s=3.0, scheduler="fcfs")
    doc["meshes"] = ["none"]
    lg_ms, echo_ms = base["load_generator_cpu_us"] / 1e3, base["echo_cpu_us"] / 1e3
    doc["workloads"][0]["client_cpu_ms"] = {"dist": "constant", "mean": lg_ms}
    doc["services"][0]["cpu_ms"] = {"dist": "constant", "mean": echo_ms}
    assert doc["workloads"][0]["client_delay_ms"]["values"] == residual_delay_ms(MODEL, fit, base)
    scenario = from_dict(doc)
    sim = Simulation(scenario, "none", replication_seeds(scenario.seed, 1)[0])
    sim.workloads[0].from_send_s = timed = []
    sim.run()
    drawn = float(np.median(timed)) * 1e3 - lg_ms - echo_ms
    assert abs(drawn - measured) <= 0.1 * measured


@pytest.mark.long
def test_the_residual_never_exceeds_the_measured_delay_nor_goes_below_zero() -> None:
    fit = load_fit(MODEL)
    base = _baseline(fit, 13388.5)
    residual = residual_delay_ms(MODEL, fit, base)
    measured = sorted(base["delay_ms"])
    assert len(residual) == len(measured)
    assert all(0.0 <= r <= m + 1e-9 for r, m in zip(residual, measured, strict=True))
    # At 13,388 rps the simulated load generator's clumps and the echo's queue alone take
    # longer than the lab's whole delay at the median: nothing is left to draw there.
    assert float(np.median(residual)) == 0.0
    assert float(np.median(simulated_baseline_ms(MODEL, fit, base))) > float(np.median(measured))
