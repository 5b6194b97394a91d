"""The machine-speed index (meshsim/calibrate/speed.py) and the speed-adjusted validation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_calibrate_mechanisms import synthetic_record

from meshsim.calibrate import speed
from meshsim.calibrate.calibration import fit_model
from meshsim.calibrate.points import Measured
from meshsim.calibrate.validate import (
    NO_PROBE,
    Comparison,
    baseline_for,
    colocated_cpu,
    failures,
    held_out_points,
    lab_scenario,
    merge_passes,
    predict,
    scaled_model,
    speed_scales,
)
from meshsim.models import load_model
from meshsim.models.parameters import _SPECS

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "calibrated" / "lab.yaml"


def probed(before0: float, after0: float, before1: float, after1: float) -> dict[str, Any]:
    return speed.point_speed({"0": before0, "1": before1}, {"0": after0, "1": after1})


def test_a_point_factor_is_its_probe_time_over_the_fit_median() -> None:
    # Fit points' probe times (the faster of before and after) on core 0: 0.75, 1.5, 2.0 ->
    # median 1.5; on core 1: 0.5, 0.5, 4.0 -> median 0.5. Binary fractions: the arithmetic
    # is exact.
    fit = [probed(0.75, 1.25, 0.5, 0.5), probed(1.5, 1.5, 0.5, 1.0), probed(2.0, 2.0, 4.0, 4.0)]
    ref = speed.reference([*fit, {}])  # an unprobed point is left out of the median
    assert ref is not None
    assert ref["seconds"] == {"0": 1.5, "1": 0.5}
    assert ref["points"] == 3
    assert ref["probe"] == speed.PROBE
    held = probed(3.0, 3.5, 0.25, 0.5)  # core 0: 3.0 s, twice the fit's; core 1: 0.25, half
    assert speed.factors(speed.probe_s(held), ref) == {"0": 2.0, "1": 0.5}
    assert speed.speed_factor(held, ref) == 1.25
    assert speed.speed_factor({}, ref) is None
    assert speed.reference([{}, {}]) is None


def test_a_point_is_timed_by_its_idle_probes_not_the_samples_during_its_load() -> None:
    # Older records keep a sampler's probes during the load, beside the lab's own processes;
    # the point's time is the faster of its idle probes (the host's slow phase at one of the
    # two moments is left out) and the samples are not read.
    s = {
        "0": {"before": 0.5, "after": 0.75, "during": 2.5, "during_samples": 3},
        "1": {"before": 1.5, "after": 1.0, "during": 3.0, "during_samples": 2},
    }
    assert speed.probe_s(s) == {"0": 0.5, "1": 1.0}
    assert speed.point_speed({"0": 0.5, "1": 1.5}, {"0": 0.75}) == {
        "0": {"before": 0.5, "after": 0.75}
    }


def test_a_fit_record_is_read_with_the_current_reference() -> None:
    # A record whose stored reference came from another method (here: the samples during
    # the load) is re-read from its fit points' probes; without them, as stored.
    fit_point = {"role": "fit", "speed": probed(1.0, 2.0, 0.5, 0.5)}
    held = {"role": "held_out", "speed": probed(8.0, 8.0, 8.0, 8.0)}
    stored = {"probe": speed.PROBE, "seconds": {"0": 4.0, "1": 4.0}, "points": 1}
    fit = {"points": [fit_point, held], "speed_reference": stored}
    ref = speed.fit_reference(fit)
    assert ref is not None
    assert ref["seconds"] == {"0": 1.0, "1": 0.5}
    assert speed.fit_reference({"points": [{"role": "fit"}], "speed_reference": stored}) == stored
    assert speed.fit_reference({}) is None


def test_the_fit_record_keeps_the_fit_points_median_probe_time() -> None:
    data = synthetic_record()
    for p in data["points"]:
        # Fit points at 1.0 s on both cores; held-out passes and baselines at 0.5 s and
        # 0.25 s (the second pass), which must not move the reference.
        s = 1.0 if p["point"]["role"] == "fit" else 0.5 / (1 + p["point"]["repeat"])
        p["speed"] = probed(s, s, s, s)
    fit = fit_model(data)["fit"]
    assert fit["speed_reference"]["seconds"] == {"0": 1.0, "1": 1.0}
    assert fit["speed_reference"]["points"] == sum(
        1 for p in data["points"] if p["point"]["role"] == "fit"
    )
    held = [r for r in fit["points"] if r["role"] != "fit"]
    assert {r["speed"]["0"]["before"] for r in held} == {0.5, 0.25}
    # A baseline over its two passes: the median of 0.5 and 0.25 per core.
    (base,) = [
        b for b in fit["client_delay"]["baselines"] if b["role"] == "baseline" and b["keep_alive"]
    ]
    assert base["speed_probe_s"] == {"0": 0.375, "1": 0.375}


def test_records_without_the_probe_fit_and_validate_as_before() -> None:
    data = synthetic_record()
    assert all(not Measured.from_json(p).speed for p in data["points"])
    fit = fit_model(data)["fit"]
    assert fit["speed_reference"] is None
    passes = held_out_points(fit["points"], fit["held_out"])[0]
    point = merge_passes(passes)
    assert speed_scales(fit, passes, baseline_for(fit, point)) == ({}, NO_PROBE)
    # A real record without the probe (the committed one with its probe fields dropped,
    # as records measured before the probe existed have none) says so too.
    committed = json.loads((ROOT / "models" / "calibrated" / "lab.fit.json").read_text())
    committed["speed_reference"] = None
    for r in committed["points"]:  # (nor the host's phases, traced since)
        for key in ("speed", "host_phases", "host_trace"):
            r.pop(key, None)
    for b in committed["client_delay"]["baselines"]:
        for key in ("speed_probe_s", "host_level_us"):
            b.pop(key, None)
    passes = held_out_points(committed["points"], committed["held_out"])[0]
    point = merge_passes(passes)
    assert speed_scales(committed, passes, baseline_for(committed, point)) == ({}, NO_PROBE)


def test_speed_scales_map_cores_to_the_simulated_lab() -> None:
    data = synthetic_record()
    for p in data["points"]:
        role, repeat = p["point"]["role"], p["point"]["repeat"]
        # Fit at 1.0 s per probe; each held-out pass slower on core 0 (the client's) and
        # faster on core 1 (the server's); the baselines measured right beside them, a little
        # faster still on core 1.
        if role == "fit":
            p["speed"] = probed(1.0, 1.0, 1.0, 1.0)
        elif role == "held_out":
            p["speed"] = probed(2.0, 2.0, 0.5, 0.5) if repeat == 0 else probed(3.0, 3.0, 0.5, 0.5)
        else:
            p["speed"] = probed(2.5, 2.5, 0.25, 0.25)
    fit = fit_model(data)["fit"]
    group = next(g for g in held_out_points(fit["points"], fit["held_out"]) if g[0]["rps"] > 0)
    point = merge_passes(group)
    base = baseline_for(fit, point)
    assert base is not None
    scales, note = speed_scales(fit, group, base)
    assert note == ""
    # The point over the passes: core 0 median of 2.0 and 3.0 = 2.5, core 1 0.5.
    assert scales["cores"] == {"0": 2.5, "1": 0.5}
    # One model serves both sidecars: the mean of their cores' factors.
    assert scales["sidecars"] == 1.5
    # The echo's and the load generator's CPU come from the proxied fit points, measured at
    # the fit's speed (validate.colocated_cpu): scaled by the point's factor on their cores.
    assert colocated_cpu(fit, point) is not None
    assert scales["echo"] == 0.5
    assert scales["load_generator"] == 2.5
    # A record whose fit points lack them takes them from the baseline, measured at 0.25 s
    # (core 1) and 2.5 s (core 0): scaled by the point's probe time over the baseline's.
    for r in fit["points"]:
        if r["role"] == "fit":
            r["process_cpu_us_per_request"].pop("echo", None)
    assert colocated_cpu(fit, point) is None
    scales, note = speed_scales(fit, group, base)
    assert scales["echo"] == 2.0
    assert scales["load_generator"] == 1.0


def test_scaling_the_model_scales_every_cpu_parameter_and_nothing_else(tmp_path: Path) -> None:
    # The list is complete: every envoy-sidecar parameter in microseconds of CPU is in it
    # (hop_latency_us and wakeup_latency_us are the times that are not CPU).
    not_cpu = {"hop_latency_us", "wakeup_latency_us"}
    cpu_like = {
        s.name
        for s in _SPECS
        if "envoy-sidecar" in s.kinds and s.unit in ("us", "us/KiB") and s.name not in not_cpu
    }
    assert cpu_like == speed.CPU_PARAMETERS
    doc = yaml.safe_load(MODEL.read_text())
    values = {k: v["value"] for k, v in doc["parameters"].items()}
    doc["parameters"]["socket_io_us"]["range"] = [0.5, 1.0]
    doc["parameters"]["socket_io_us"]["range_source"] = "test"
    doubled = speed.scale_model(doc, 2.0)
    before, after = doc["parameters"], doubled["parameters"]
    assert set(before) == set(after)
    for name in before:
        if name in speed.CPU_PARAMETERS:
            assert after[name]["value"] == 2.0 * before[name]["value"], name
        else:
            assert after[name] == before[name], name
    assert after["socket_io_us"]["range"] == [1.0, 2.0]
    assert {k: v for k, v in doubled.items() if k != "parameters"} == {
        k: v for k, v in doc.items() if k != "parameters"
    }
    assert {k: v["value"] for k, v in before.items()} == values  # the input is not changed
    assert any(values.get(n, 0.0) > 0 for n in speed.CPU_PARAMETERS)  # something to scale
    # The scaled file is a valid model (written as validate writes it).
    path = scaled_model(MODEL, 2.0, tmp_path, 0)
    model = load_model(path)
    assert model.parameters["http_parse_request_us"].value == 2.0 * values["http_parse_request_us"]
    assert model.parameters["hop_latency_us"].value == values["hop_latency_us"]


def test_the_simulated_lab_scales_the_echo_and_load_generator_cpu() -> None:
    fit = json.loads((ROOT / "models" / "calibrated" / "lab.fit.json").read_text())
    point = merge_passes(held_out_points(fit["points"], fit["held_out"])[0])
    raw = lab_scenario(MODEL, fit, point)
    assert lab_scenario(MODEL, fit, point, cpu_scale={"echo": 1.0, "load_generator": 1.0}) == raw
    scaled = lab_scenario(MODEL, fit, point, cpu_scale={"echo": 2.0, "load_generator": 3.0})
    echo = (raw["services"][0]["cpu_ms"]["mean"], scaled["services"][0]["cpu_ms"]["mean"])
    assert echo[1] == 2.0 * echo[0]
    lg = (
        raw["workloads"][0]["client_cpu_ms"]["mean"],
        scaled["workloads"][0]["client_cpu_ms"]["mean"],
    )
    assert lg[1] == pytest.approx(3.0 * lg[0], rel=1e-15)
    assert scaled["workloads"][0]["client_delay_ms"] == raw["workloads"][0]["client_delay_ms"]


@pytest.mark.slow
def test_factor_one_reproduces_the_raw_prediction_bit_for_bit(tmp_path: Path) -> None:
    fit = json.loads((ROOT / "models" / "calibrated" / "lab.fit.json").read_text())
    point = merge_passes(held_out_points(fit["points"], fit["held_out"])[0])
    raw = predict(MODEL, fit, point, duration_s=1.5)
    same = predict(
        scaled_model(MODEL, 1.0, tmp_path, 0),
        fit,
        point,
        duration_s=1.5,
        cpu_scale={"echo": 1.0, "load_generator": 1.0},
    )
    assert same == raw
    # And a slower machine predicts a slower proxy.
    slow = predict(
        scaled_model(MODEL, 1.5, tmp_path, 1),
        fit,
        point,
        duration_s=1.5,
        cpu_scale={"echo": 1.5, "load_generator": 1.5},
    )
    assert slow["p50"] > raw["p50"]


def row(error: dict[str, float], adjusted: dict[str, float]) -> Comparison:
    pred = {"p50": 1.0, "p90": 1.0, "p99": 1.0, "rps": 1.0}
    return Comparison(
        point={"config": "plain-ka-f0", "payload_bytes": 256, "rps": 100.0},
        measured=pred,
        predicted=pred,
        error_pct=error,
        utilisation=0.1,
        saturation=False,
        checked=["p50", "p99"],
        predicted_speed_adjusted=pred if adjusted else {},
        error_pct_speed_adjusted=adjusted,
    )


def test_goals_are_checked_on_the_speed_adjusted_errors_where_probed() -> None:
    errs = {"p50": 30.0, "p90": 0.0, "p99": 5.0, "rps": 0.0}
    adjusted = {"p50": 5.0, "p90": 0.0, "p99": 25.0, "rps": 0.0}
    r = row(errs, adjusted)
    assert r.checked_against == "speed_adjusted"
    (bad,) = failures([r], 10.0, 20.0, 10.0)
    assert "speed-adjusted p99 error +25.0% exceeds 20%" in bad
    assert "raw +5.0%" in bad
    unprobed = row(errs, {})
    assert unprobed.checked_against == "raw"
    (bad,) = failures([unprobed], 10.0, 20.0, 10.0)
    assert "p50 error +30.0% exceeds 10%" in bad
    doc = r.to_json()
    assert doc["error_pct"] == errs  # the raw errors stay in the record
    assert doc["error_pct_speed_adjusted"] == adjusted
    assert doc["checked_against"] == "speed_adjusted"


def test_the_report_shows_both_predictions_and_says_which_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from meshsim.calibrate import validation_report

    model = tmp_path / "lab.yaml"
    shutil.copy(MODEL, model)
    fit = json.loads((ROOT / "models" / "calibrated" / "lab.fit.json").read_text())
    fit_points = [p for p in fit["points"] if p["role"] == "fit"]
    for p in fit_points:  # the reference is read from the fit points' probes
        p["speed"] = probed(0.008, 0.009, 0.009, 0.008)
    (tmp_path / "lab.fit.json").write_text(json.dumps(fit))
    # A recorded held-out row (p50 measured 0.807 ms, predicted 0.7638: -5.35 %; p99 2.036
    # and 1.4394: -29.3 %) with a speed-adjusted prediction beside it.
    case = json.loads((ROOT / "tests" / "data" / "calibrate_diagnosis_case.json").read_text())
    r = Comparison(**next(r for r in case["rows"] if not r["saturation"]))
    r.predicted_speed_adjusted = {**r.predicted, "p50": 0.8877, "p99": 1.9342}
    r.error_pct_speed_adjusted = {**r.error_pct, "p50": 10.0, "p99": -5.0}
    r.speed_factors = {
        "cores": {"0": 1.25, "1": 0.75},
        "sidecars": 1.0,
        "echo": 0.5,
        "load_generator": 2.0,
    }
    monkeypatch.setattr(validation_report, "validate_model", lambda *_a, **_k: [r])
    monkeypatch.setattr(validation_report, "decompose", lambda *_a, **_k: [])
    out = tmp_path / "v"
    validation_report.write_validation_report(model, out, command="test", duration_s=1.0)
    report = (out / "report.md").read_text()
    assert "### Machine speed" in report
    median = f"fit points' median: core 0 8.00 ms, core 1 8.00 ms over {len(fit_points)} points"
    assert median in report
    assert "The goals are checked on the speed-adjusted predictions" in report
    assert "1.25/0.75     1.00  0.50  2.00" in report
    assert "0.807/0.764/0.888" in report  # p50 measured / raw / adjusted
    assert "2.04/1.44/1.93" in report
    assert "- p50 within 10%: worst 10.0% over 1 point(s) (1 speed-adjusted; raw worst 5.3%)" in (
        report
    )
    assert "- p99 within 20%: worst 5.0% over 1 point(s) (1 speed-adjusted; raw worst 29.3%)" in (
        report
    )
    (doc,) = json.loads((out / "validation.json").read_text())["rows"]
    assert doc["error_pct"]["p99"] == -29.3  # the raw errors stay
    assert doc["error_pct_speed_adjusted"]["p99"] == -5.0
    assert doc["checked_against"] == "speed_adjusted"
    assert doc["speed_factors"]["cores"] == {"0": 1.25, "1": 0.75}


def test_colocated_cpu_follows_a_per_request_and_a_per_second_cost() -> None:
    def row(rps: float, pay: int, echo: float, lg: float, **kw: object) -> dict[str, object]:
        r: dict[str, object] = {
            "role": "fit", "proxied": True, "keep_alive": True, "mtls": False, "filters": 0,
            "rps": rps, "payload_bytes": pay,
            "process_cpu_us_per_request": {"echo": echo, "load_generator": lg},
        }  # fmt: skip
        r.update(kw)
        return r

    # echo = 20 + 0.5 KiB + 20000 / rps; load generator = 25 + 0.25 KiB + 60000 / rps.
    def exact(rps: float, pay: int) -> dict[str, object]:
        kib = pay / 1024
        return row(rps, pay, 20 + 0.5 * kib + 2e4 / rps, 25 + 0.25 * kib + 6e4 / rps)

    grid = [exact(rps, pay) for rps in (1000.0, 4000.0, 6000.0) for pay in (128, 1024, 8192)]
    fit = {
        "points": [
            *grid,
            row(1000.0, 1024, 500.0, 900.0),  # a pass far off: the fit is the median's
            row(2000.0, 1024, 99.0, 99.0, mtls=True),  # another configuration
            row(2000.0, 1024, 99.0, 99.0, proxied=False),  # no proxies beside them
            row(0.0, 128, 19.0, 16.0),  # the proxied closed loops: their median
            row(0.0, 128, 21.0, 18.0),
        ]
    }
    # Beyond the fit's highest load it goes on falling as a per-second cost is spread.
    at = {"payload_bytes": 2048, "rps": 8000.0}
    assert colocated_cpu(fit, at) == pytest.approx(
        {"echo": 20 + 1.0 + 2.5, "load_generator": 25 + 0.5 + 7.5}, rel=1e-9
    )
    # A closed loop: the proxied closed loops' median (at 128 B), moved to the point's 2 KiB
    # by the open loops' slope in KiB (0.5 and 0.25 us per KiB, times 1.875 KiB).
    assert colocated_cpu(fit, {**at, "rps": 0.0}) == pytest.approx(
        {"echo": 20.0 + 0.9375, "load_generator": 17.0 + 0.46875}, rel=1e-9
    )
    # A slope in KiB that would carry a closed loop's CPU below zero (a noisy host's quick
    # grid: 4 KiB closed loops moved to 256 B) is no estimate: the point keeps its
    # baseline's own measurement (None here).
    steep = [row(1000.0, 128, 40.0, 40.0), row(4000.0, 128, 30.0, 30.0)]
    steep += [row(1000.0, 8192, 1000.0, 1000.0), row(4000.0, 8192, 990.0, 990.0)]
    steep += [row(0.0, 8192, 30.0, 30.0)]  # about 120 us per KiB: 30 - 120 x 7.9 < 0
    assert colocated_cpu({"points": steep}, {"payload_bytes": 128, "rps": 0.0}) is None
    assert colocated_cpu({"points": steep}, {"payload_bytes": 8192, "rps": 0.0}) == {
        "echo": 30.0,
        "load_generator": 30.0,
    }
    # One fit load is too few to follow the load.
    fit["points"] = [r for r in fit["points"] if r["rps"] in (0.0, 1000.0)]
    assert colocated_cpu(fit, at) is None


def test_each_pass_replays_its_own_host_and_the_prediction_is_their_median() -> None:
    from meshsim.calibrate.validate import median_figures, per_pass_hosts

    passes = [
        {"host_trace": {"0": [100, 101]}, "host_phases": {"0": {}}, "wake_latency_us": {"0": {}}},
        {"host_trace": {"0": [100, 2143]}, "host_phases": None, "wake_latency_us": None},
        {"host_trace": {"0": [99, 100]}},
    ]
    hosts = per_pass_hosts(passes)
    assert [h["trace"] for h in hosts] == [q["host_trace"] for q in passes]
    assert hosts[0]["phases"] == {"0": {}}
    assert hosts[2]["phases"] is None
    assert hosts[0]["wakeups"] == {"0": {}}
    assert hosts[2]["wakeups"] is None
    # One pass, or a pass without its trace: the merged point's host is replayed.
    assert per_pass_hosts(passes[:1]) == []
    assert per_pass_hosts([*passes, {"host_trace": None}]) == []
    # A stalled pass's run moves the median no further than the middle run.
    runs = [
        {"p99": 1.8, "p50": 0.70},
        {"p99": 10.4, "p50": 0.69},
        {"p99": 1.9, "p50": 0.71, "x": 1.0},
    ]
    assert median_figures(runs) == {"p99": 1.9, "p50": 0.70}


def test_a_missed_goal_says_how_far_the_labs_own_passes_were_apart() -> None:
    # The goal is never widened; the failure line puts the lab's pass-to-pass range beside it.
    errs = {"p50": 0.0, "p90": 0.0, "p99": -28.0, "rps": 0.0}
    wide = replace(row(errs, errs), passes=3, spread={"p99": [0.9, 1.4]})
    (bad,) = failures([wide], 10.0, 20.0, 10.0)
    assert bad.endswith(
        "; the lab's 3 passes spanned 0.9..1.4, 50% of their median, wider than the goal"
    )
    narrow = replace(wide, spread={"p99": [0.95, 1.05]})
    (bad,) = failures([narrow], 10.0, 20.0, 10.0)
    assert bad.endswith("spanned 0.95..1.05, 10% of their median")
    (bad,) = failures([replace(wide, passes=1)], 10.0, 20.0, 10.0)
    assert "passes" not in bad
