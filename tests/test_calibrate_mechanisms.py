"""The calibration fit recovers costs that do not scale with requests (wake-ups, TCP
connection ends, the size-independent TLS cost) from a synthetic lab record whose process CPU
is generated from known values, and validation matches each point with the right baseline and
judges utilisation on the busier core."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshsim.calibrate.calibration import fit_model, write_model
from meshsim.calibrate.fit import fit_plane
from meshsim.calibrate.model_fit import LabRecord, fit_request_cpu, wakeup_plane
from meshsim.calibrate.points import LabConfig, Measured, Point
from meshsim.calibrate.validate import baseline_for, core_utilisation, lab_scenario
from meshsim.calibrate.validation_report import calibration_lines
from meshsim.models import load_model
from meshsim.proxy.fastpath import WHOLE_BODY_BYTES
from meshsim.sim.cpu.drift import period_lag1, period_mean_cv

# The truth the synthetic lab is generated from (microseconds).
BARE_US = 70.0  # per request, no wake-up, 0 KiB
PER_KIB_US = 0.4
WAKEUP_US = 45.0
TCP_END_US = 80.0
TLS_FIXED_US = 25.0
TLS_PER_KIB_US = 1.2
STREAMED_US = 20.0  # a request body larger than the proxy holds whole (WHOLE_BODY_BYTES)


def preemptions_at(rps: float, payload: int) -> float:
    """Involuntary switches per request, rising with load and more for larger bodies (not a
    combination of the KiB and the wake-ups, so the plane can tell them apart)."""
    return 0.2 + 0.15 * (rps / 3600.0) * float(np.log2(payload / 64.0))


def wakeups_at(rps: float) -> float:
    """Wake-ups per request falling with load, as measured (about 1.6 at 500 rps)."""
    return 2.0 * float(np.exp(-rps / 2500.0))


def measured(
    cfg: LabConfig,
    payload: int,
    rps: float,
    proxied: bool,
    role: str,
    rng: np.random.Generator,
    preemption_us: float = 0.0,
) -> Measured:
    kib = 2.0 * payload / 1024.0
    wake = wakeups_at(rps)
    preempted = preemptions_at(rps, payload)
    cpu = BARE_US + PER_KIB_US * kib + WAKEUP_US * wake + 8.0 * cfg.filters
    cpu += preemption_us * preempted
    if payload > WHOLE_BODY_BYTES:
        cpu += STREAMED_US
    if cfg.mtls:
        cpu += TLS_FIXED_US + TLS_PER_KIB_US * kib
    if not cfg.keep_alive:
        cpu += 2.0 * TCP_END_US
    per_req = {"echo": 30.0, "load_generator": 40.0}
    wakes = {"echo": 0.8, "load_generator": 0.8}
    preempts: dict[str, float] = {}
    if proxied:
        for side in ("client_sidecar", "server_sidecar"):
            per_req[side] = cpu + rng.normal(0.0, 0.5)
            wakes[side] = wake
            preempts[side] = preempted
    samples = list(rng.lognormal(np.log(40.0), 0.3, 300)) if proxied else []
    return Measured(
        point=Point(cfg, payload, rps, 8, proxied, 5.0, role),
        achieved_rps=rps or 9000.0,
        latency_ms={"p50": 0.8 if proxied else 0.3, "p90": 1.2, "p99": 2.0, "mean": 0.9},
        requests=5000,
        errors=0,
        warnings=[],
        client_cpu_us=samples,
        server_cpu_us=samples,
        process_cpu_us_per_request=per_req,
        latency_quantiles_ms=[] if proxied else [0.3] * 10,
        wakeups_per_request=wakes,
        preemptions_per_request=preempts,
        run_delay_us_per_request=dict.fromkeys(per_req, 10.0),
    )


def synthetic_record(seed: int = 3, preemption_us: float = 0.0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    base = LabConfig()
    pts = []
    for pay in (128, 1024, 8192, 32768):
        for rps in (1000.0, 3600.0):
            pts.append(measured(base, pay, rps, True, "fit", rng, preemption_us))
            pts.append(measured(base, pay, rps, False, "fit", rng))
    for cfg in (LabConfig(mtls=True), LabConfig(filters=4)):
        for pay in (128, 1024, 8192, 32768):
            pts.append(measured(cfg, pay, 1000.0, True, "fit", rng))
    pts.append(measured(LabConfig(keep_alive=False), 1024, 1000.0, True, "fit", rng))
    for repeat in range(2):
        held = [
            measured(base, 1024, 5000.0, True, "held_out", rng),
            measured(base, 1024, 5000.0, False, "baseline", rng),
            measured(base, 1024, 0.0, True, "held_out", rng),
            measured(LabConfig(keep_alive=False), 1024, 5000.0, False, "baseline", rng),
        ]
        for m in held:
            m.point = replace(m.point, repeat=repeat)
            m.latency_ms = {k: v * (1.0 + 0.5 * repeat) for k, v in m.latency_ms.items()}
        pts += held
    return {
        "quick": False,
        "capacity_estimate_rps": 10000.0,
        "placement": {"load_generator": 0, "client_sidecar": 0, "server_sidecar": 1, "echo": 1},
        "points": [m.to_json() for m in pts],
        "memory_kib": {
            "plain": [[0, 50000.0], [100, 50450.0], [200, 50900.0]],
            "tls": [[0, 50000.0], [100, 57000.0], [200, 64000.0]],
        },
        "handshake_cpu_us": {"client": [1000.0] * 20, "server": [1100.0] * 20},
        "telemetry_cpu_us": [7.0] * 50,
        "idle_cpu_ms_per_s": {"client_sidecar": 0.0},
        "machine": {
            "host": "test",
            "cpu": "synthetic",
            "cores": 2,
            "kernel": "k",
            "python": "3.11",
            "openssl": "o",
            "libraries": {},
            "date": "d",
        },
    }


def test_plane_fit_recovers_two_slopes_with_cis() -> None:
    rng = np.random.default_rng(8)
    kib = np.repeat([0.25, 2.0, 16.0, 64.0], 4)
    wake = np.tile([1.6, 1.1, 0.5, 0.2], 4)
    y = 70.0 + 0.4 * kib + 45.0 * wake + rng.normal(0, 1.0, len(kib))
    f = fit_plane({"kib": kib, "wakeups": wake}, y, seed=2)
    assert f.intercept.covers(70.0)
    assert f.slopes["kib"].covers(0.4)
    assert f.slopes["wakeups"].covers(45.0)
    with pytest.raises(ValueError):
        fit_plane({"kib": kib, "wakeups": 2 * kib}, y)  # collinear: cannot be separated


def test_the_streamed_bodies_step_beyond_the_plane_instead_of_tilting_it() -> None:
    """meshsim's proxy streams request bodies above 16 KiB at a cost of its own. Fitted in one
    plane with the smaller bodies, the 32 KiB points steepen the KiB slope and lower the
    intercept every small request is charged; fitted beside it, they give the step."""
    rec = LabRecord.of(synthetic_record())
    one = wakeup_plane(rec.base, seed=2)
    assert one is not None
    # The closed form of that tilt: 20 us x cov(KiB, streamed) / var(KiB) over the four
    # payloads (0.25, 2, 16, 64 KiB moved): +0.33 us/KiB, and the intercept 0.33 x 20.6
    # (the mean KiB) - 20 x 1/4 (the share streamed) = 1.7 us lower.
    assert one.slopes["kib"].value == pytest.approx(PER_KIB_US + 0.33, abs=0.05)
    assert one.intercept.value == pytest.approx(BARE_US - 1.7, abs=1.0)
    cpu = fit_request_cpu(rec, seed=2)
    assert cpu.intercept == pytest.approx(BARE_US, abs=1.0)
    assert cpu.per_kib == pytest.approx(PER_KIB_US, abs=0.05)
    assert cpu.streamed is not None
    assert cpu.streamed.value == pytest.approx(STREAMED_US, abs=1.5)
    assert cpu.streamed_bodies == (32768,)


def test_preemptions_are_kept_where_they_cost_and_recorded_where_they_do_not() -> None:
    """A third regressor, kept only where its CI stays above 0; either way the record says
    what the fit found, so that a reader sees what was left out."""
    costly = fit_request_cpu(LabRecord.of(synthetic_record(preemption_us=6.0)), seed=2)
    assert costly.preemption is not None
    assert costly.preemption.value == pytest.approx(6.0, abs=1.0)
    assert costly.preemption_tried == costly.preemption
    assert costly.wakeup_us == pytest.approx(WAKEUP_US, abs=1.0)
    free = fit_request_cpu(LabRecord.of(synthetic_record()), seed=2)
    assert free.preemption is None
    assert free.preemption_tried is not None
    assert free.preemption_tried.covers(0.0)
    kept = fit_model(synthetic_record(preemption_us=6.0))
    assert kept["parameters"]["preemption_cpu_us"]["value"] == pytest.approx(6.0, abs=1.0)
    assert kept["fit"]["estimates"]["preemption_cpu_us"]["kept"] is True
    left = fit_model(synthetic_record())
    assert "preemption_cpu_us" not in left["parameters"]
    assert left["fit"]["estimates"]["preemption_cpu_us"]["kept"] is False
    said = "\n".join(calibration_lines(left["fit"]))
    assert "third regressor" in said
    assert "left out of the model" in said
    said = "\n".join(calibration_lines(kept["fit"]))
    assert "per involuntary context switch (preemption_cpu_us)" in said
    assert "left out" not in said


def test_fit_recovers_wakeup_tcp_and_tls_costs() -> None:
    doc = fit_model(synthetic_record())
    v = {k: p["value"] for k, p in doc["parameters"].items()}
    assert v["wakeup_cpu_us"] == pytest.approx(WAKEUP_US, abs=1.0)
    # The slope rests on the three payloads the proxy holds whole (0.25-16 KiB moved; the
    # fourth is the step's): a standard error of about 0.02 us/KiB.
    assert v["payload_cpu_us_per_kib"] == pytest.approx(PER_KIB_US, abs=0.05)
    # What the simulator charges per request without wake-ups is the bare cost.
    bare = (
        v["socket_io_us"]
        + v["http_parse_request_us"]
        + v["http_parse_response_us"]
        + v["telemetry_us"]
        + v["routing_us"]
    )
    assert bare == pytest.approx(BARE_US, abs=1.5)
    assert v["tcp_connection_cpu_us"] == pytest.approx(TCP_END_US, abs=1.0)
    assert v["tls_request_cpu_us"] == pytest.approx(TLS_FIXED_US, abs=1.5)
    assert v["tls_record_cpu_us_per_kib"] == pytest.approx(TLS_PER_KIB_US, abs=0.05)
    assert v["l7_filter_us"] == pytest.approx(8.0, abs=0.5)
    assert v["buffered_request_max_kib"] == WHOLE_BODY_BYTES / 1024
    assert v["streamed_request_cpu_us"] == pytest.approx(STREAMED_US, abs=1.5)
    fit = doc["fit"]
    assert "wakeup_cpu_us" in fit["parameters_fitted"]
    # every baseline is kept, with its keep-alive, and the closed-loop one
    # every baseline is kept once, its passes pooled, with its keep-alive
    rows = fit["client_delay"]["baselines"]
    assert sorted(
        (b["rps"], b["keep_alive"], b["passes"]) for b in rows if b["role"] == "baseline"
    ) == [(5000.0, False, 2), (5000.0, True, 2)]
    assert all(len(b["delay_ms"]) == 20 for b in rows if b["role"] == "baseline")


def test_the_fit_takes_the_cpu_drift_from_the_fit_points_periods(tmp_path: Path) -> None:
    data = synthetic_record()
    assert "cpu_drift_cv" not in fit_model(data)["parameters"]  # no CPU per period: none
    request_cv = fit_model(data)["parameters"]["request_cpu_cv"]["value"]
    tau = 0.2
    rho = period_lag1(tau, 0.1)
    for p in data["points"]:
        if p["point"]["role"] == "fit" and p["point"]["proxied"]:
            # 300 requests a period at every load (exact figures: the drift's, 0.06 per
            # period, on Poisson requests and the model's per-request noise).
            n = 300.0
            poisson = 1.0 / np.sqrt(n)
            var = 0.06**2 + poisson**2 + (request_cv * poisson) ** 2
            f = {"periods": 50, "cpu_cv": float(np.sqrt(var)), "requests_cv": poisson,
                 "poisson_cv": poisson, "lag1": rho * 0.06**2 / var}  # fmt: skip
            p["period_cpu"] = {"client_sidecar": f, "server_sidecar": f}
        else:
            # Held-out points' periods are not the fit's to use.
            p["period_cpu"] = {"server_sidecar": {"periods": 50, "cpu_cv": 0.5,
                                                  "requests_cv": 0.01, "poisson_cv": 0.01,
                                                  "lag1": 0.9}}  # fmt: skip
    doc = fit_model(data)
    params = doc["parameters"]
    assert params["cpu_drift_ms"]["value"] == pytest.approx(200.0, abs=0.1)  # request_cv rounded
    assert params["cpu_drift_cv"]["value"] == pytest.approx(
        0.06 / period_mean_cv(1.0, tau, 0.1), abs=0.001
    )
    est = doc["fit"]["estimates"]["cpu_drift"]
    assert est["samples"] == 2 * sum(
        1 for p in data["points"] if p["point"]["role"] == "fit" and p["point"]["proxied"]
    )
    out = tmp_path / "drifting.yaml"
    write_model(doc, out)
    assert load_model(out).cpu_drift == pytest.approx(
        (params["cpu_drift_cv"]["value"], 0.2), rel=1e-3
    )


def test_records_without_wakeup_counts_fit_as_before() -> None:
    data = synthetic_record()
    for p in data["points"]:
        p["wakeups_per_request"] = {}
    doc = fit_model(data)
    assert "wakeup_cpu_us" not in doc["parameters"]
    assert doc["fit"]["estimates"]["process_cpu_us_vs_kib_and_wakeups"] is None


def test_each_point_gets_the_baseline_of_its_keep_alive_and_loop() -> None:
    fit = fit_model(synthetic_record())["fit"]
    point = {
        "payload_bytes": 1024,
        "rps": 5000.0,
        "connections": 8,
        "keep_alive": False,
        "mtls": False,
    }
    b = baseline_for(fit, point)
    assert b is not None
    assert b["keep_alive"] is False
    assert b["rps"] == 5000.0
    # a closed loop takes the highest open-loop load of its keep-alive (not a closed loop
    # without proxies, which runs several times faster)
    closed = baseline_for(fit, {**point, "rps": 0.0, "keep_alive": True})
    assert closed is not None
    assert closed["rps"] == 5000.0
    assert closed["keep_alive"]
    doc = lab_scenario(Path("m.yaml"), fit, {**point, "rps": 0.0, "keep_alive": True})
    load = doc["workloads"][0]
    assert load["arrival"] == "closed"
    assert load["client_cpu_ms"]["mean"] == pytest.approx(0.040)
    assert "client_delay_ms" not in load
    assert doc["services"][0]["cpu_ms"]["mean"] == pytest.approx(0.030)


def test_held_out_passes_merge_into_medians_and_a_range() -> None:
    from meshsim.calibrate.validate import held_out_points, merge_passes

    fit = fit_model(synthetic_record())["fit"]
    groups = held_out_points(fit["points"], fit["held_out"])
    assert [len(g) for g in groups] == [2, 2]  # open loop and saturation, two passes each
    merged = merge_passes(groups[0])
    # the passes' p50 are 0.8 and 1.2 ms: median 1.0, range 0.8..1.2
    assert merged["latency_ms"]["p50"] == pytest.approx(1.0)
    assert merged["passes_range"]["p50"] == pytest.approx([0.8, 1.2])
    assert merged["passes"] == 2


def test_core_utilisation_counts_every_process_on_the_core() -> None:
    placement = {"load_generator": 0, "client_sidecar": 0, "server_sidecar": 1, "echo": 1}
    point = {
        "achieved_rps": 5000.0,
        "process_cpu_us_per_request": {
            "load_generator": 40.0,
            "client_sidecar": 80.0,
            "server_sidecar": 85.0,
            "echo": 30.0,
        },
    }
    # core 0: 120 us x 5000/s = 0.60; core 1: 115 us x 5000/s = 0.575
    assert core_utilisation(point, placement) == pytest.approx(0.60)
    assert core_utilisation(point, {}) != core_utilisation(point, {})  # nan: no placement


def test_full_grid_measures_held_out_points_in_passes_after_the_fit() -> None:
    from meshsim.calibrate.points import REPEATS, grid

    pts = grid(quick=False)
    roles = [p.role for p in pts]
    last_fit = max(i for i, r in enumerate(roles) if r == "fit")
    held = pts[last_fit + 1 :]
    assert all(p.role != "fit" for p in held)
    # pass after pass, each the same sequence of points: a point's passes are minutes apart
    repeats = [p.repeat for p in held]
    assert repeats == sorted(repeats)
    assert set(repeats) == set(range(REPEATS))
    per_pass = len(held) // REPEATS
    first = [(p.config, p.payload, p.rps, p.proxied) for p in held[:per_pass]]
    assert all(
        [(p.config, p.payload, p.rps, p.proxied) for p in held[r * per_pass : (r + 1) * per_pass]]
        == first
        for r in range(REPEATS)
    )
    assert {p.repeat for p in grid(quick=True)} == {0}


def test_each_configuration_is_paired_with_the_base_point_measured_just_before() -> None:
    from meshsim.calibrate.points import grid

    pts = grid(quick=False)
    for i, p in enumerate(pts):
        if p.role == "fit" and p.config != LabConfig():
            ref = pts[i - 1]
            assert ref.config == LabConfig()
            assert (ref.payload, ref.rps, ref.proxied) == (p.payload, p.rps, p.proxied)


def test_a_configuration_cost_is_the_difference_from_its_paired_base_point() -> None:
    # The filter points' own base pairs drift: measured later, 10 us dearer per request. The
    # per-filter cost must come from the pairs (8 us), not from the earlier base points.
    data = synthetic_record()
    pts = [Measured.from_json(d) for d in data["points"]]
    out = []
    for m in pts:
        if m.point.config == LabConfig(filters=4):
            twin = Measured.from_json(m.to_json())
            twin.point = replace(twin.point, config=LabConfig())
            twin.process_cpu_us_per_request = {
                k: v - 4 * 8.0 + (10.0 if "sidecar" in k else 0.0)
                for k, v in m.process_cpu_us_per_request.items()
            }
            m.process_cpu_us_per_request = {
                k: v + (10.0 if "sidecar" in k else 0.0)
                for k, v in m.process_cpu_us_per_request.items()
            }
            out.append(twin)
        out.append(m)
    data["points"] = [m.to_json() for m in out]
    v = fit_model(data)["parameters"]["l7_filter_us"]["value"]
    assert v == pytest.approx(8.0, abs=0.3)
