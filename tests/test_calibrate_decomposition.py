"""The per-hop latency decomposition: the lab's arithmetic on its clocks, the simulated lab's
parts (they add up to each request's latency, and the timed ones match what the scenario
sets), and a lab record from before the decomposition (it says so instead of failing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshsim.calibrate.decomposition import (
    NOT_MEASURED,
    PointDecomposition,
    duration_quantiles,
    lab_parts,
    measured_parts,
    measured_spans,
    render,
    simulated_parts,
    simulated_spans,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "calibrated" / "lab.yaml"


def test_lab_parts_are_the_differences_of_the_three_clocks() -> None:
    latency = {"p50": 1.5, "p90": 3.0, "p99": 6.0, "mean": 1.75}
    sidecars = {
        "client_sidecar": {"p50": 0.75, "p90": 1.0, "p99": 2.0, "mean": 1.0},
        "server_sidecar": {"p50": 0.25, "p90": 0.5, "p99": 1.0, "mean": 0.5},
    }
    assert lab_parts(latency, sidecars) == {
        "end_to_end": {"p50": 1.5, "mean": 1.75},
        "outside_client_sidecar": {"p50": 0.75, "mean": 0.75},
        "client_sidecar_share": {"p50": 0.5, "mean": 0.5},
        "server_side": {"p50": 0.25, "mean": 0.5},
    }
    # One sidecar's durations missing: no parts rather than a wrong one.
    assert lab_parts(latency, {"client_sidecar": sidecars["client_sidecar"]}) is None


def test_duration_quantiles_of_an_access_log() -> None:
    q = duration_quantiles([1.0, 2.0, 3.0, 4.0, 5.0])
    # numpy's linear interpolation between order statistics: p90 = 4 + 0.6 x (5 - 4).
    assert q == {"p50": 3.0, "p90": 4.6, "p99": 4.96, "mean": 3.0, "samples": 5}
    assert duration_quantiles([]) == {}


def test_a_record_without_access_log_durations_says_not_measured() -> None:
    point = {
        "config": "plain-ka-f0",
        "payload_bytes": 1024,
        "rps": 4836.0,
        "latency_ms": {"p50": 1.3, "p90": 2.0, "p99": 3.0, "mean": 1.4},
        "run_delay_us_per_request": {"client_sidecar": 23.0},
    }
    assert measured_parts(point) is None
    predicted = {k: {"p50": 0.5, "mean": 0.5} for k in ("end_to_end", "outside_client_sidecar")}
    predicted |= {k: {"p50": 0.25, "mean": 0.25} for k in ("client_sidecar_share", "server_side")}
    d = PointDecomposition(point, predicted, measured_parts(point))
    text = render([d])
    assert f"Measured: {NOT_MEASURED}." in text
    assert "| outside the client sidecar | n/a | 0.500 | n/a | n/a | 0.500 | n/a |" in text
    doc = d.to_json()
    assert doc["measured_ms"] is None
    assert doc["measured_note"] == NOT_MEASURED
    # With the durations, the same point is decomposed from the medians it carries.
    timed = {
        **point,
        "sidecar_duration_ms": {
            "client_sidecar": {"p50": 0.75, "mean": 0.75},
            "server_sidecar": {"p50": 0.25, "mean": 0.5},
        },
    }
    parts = measured_parts(timed)
    assert parts is not None
    assert parts["outside_client_sidecar"] == pytest.approx({"p50": 0.55, "mean": 0.65})
    text = render([PointDecomposition(timed, predicted, parts)])
    assert "| outside the client sidecar | 0.550 | 0.500 | -0.050 (-9%) |" in text
    assert "release" not in parts  # no latency from the send in this record
    # With the load generator's second clock (from each request's send), its timer's part.
    sent = {**timed, "latency_from_send_ms": {"p50": 1.0, "mean": 1.15}}
    parts = measured_parts(sent)
    assert parts is not None
    assert parts["release"] == pytest.approx({"p50": 0.3, "mean": 0.25})
    text = render([PointDecomposition(sent, predicted, parts)])
    assert "connection (intended to sent) | 0.300 | n/a | n/a | 0.250 | n/a | n/a |" in text


# --------------------------------------------------------------------------- the simulation

ECHO_US = 30.0
LOAD_GENERATOR_US = 40.0
BASELINE_MS = 0.2
CLIENT_US = 15.0  # one-way delay to a pod from outside (the client sidecar has no node)


def _lab_doc(keep_alive: bool, ticked: bool = False) -> dict[str, Any]:
    """The simulated lab at a load where requests queue (3 connections, 4000 rps);
    ``ticked``: the load generator releases them on a 1 ms timer tick."""
    from meshsim.calibrate.validate import lab_scenario

    fit = {
        "lab": {"network_one_way_us": 0.0, "echo_cpu_us": ECHO_US, "release_tick_ms": 1.0},
        "client_delay": {
            "baselines": [
                {
                    "payload_bytes": 1024,
                    "rps": 4000.0,
                    "keep_alive": keep_alive,
                    "delay_ms": [BASELINE_MS],
                    "load_generator_cpu_us": LOAD_GENERATOR_US,
                    "echo_cpu_us": ECHO_US,
                    **({"delay_from": "send"} if ticked else {}),
                }
            ]
        },
    }
    point = {
        "payload_bytes": 1024,
        "rps": 4000.0,
        "connections": 3,
        "keep_alive": keep_alive,
        "mtls": False,
    }
    doc = lab_scenario(MODEL, fit, point, duration_s=0.7, seed=3)
    doc["warmup_s"] = 0.1
    doc["cluster"]["network"] = {"same_node_us": 5.0, "cross_node_us": 10.0, "client_us": CLIENT_US}
    return doc


def _run(doc: dict[str, Any], traced: bool) -> Any:
    from meshsim.calibrate.sim_trace import trace
    from meshsim.rng import replication_seeds
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    scenario = from_dict(doc)
    sim = Simulation(scenario, "istio", replication_seeds(scenario.seed, 1)[0])
    tracer = trace(sim) if traced else None
    sim.run()
    return sim, tracer


@pytest.mark.parametrize(("keep_alive", "ticked"), [(True, False), (False, False), (True, True)])
def test_simulated_parts_add_up_to_each_requests_latency(keep_alive: bool, ticked: bool) -> None:
    sim, tracer = _run(_lab_doc(keep_alive, ticked), traced=True)
    parts = tracer.result()
    n = len(parts.total)
    assert n == sim.recorder.workloads["load"].requests  # every request sent in the window
    tol = 1e-12
    assert np.abs(parts.values.sum(axis=1) - parts.total).max() < tol
    for section in ("outside", "client", "server"):
        assert np.abs(parts.column(section=section) - parts.section_total(section)).max() < tol
    # What the scenario sets, per request and exactly: the timed parts leave the network
    # part with the hops' closed form (so no wait was missed or counted twice).
    client = next(p for p in sim.data_plane.proxies if p.pod is None)
    pod = sim.services["echo"].pods[0]
    hop_s = client.hop_s
    delay = sim.network.delay
    there_and_back = delay(None, pod.node, 1024) + delay(pod.node, None, pod.response_bytes)
    assert np.abs(parts.column("server", "network") - 2 * hop_s).max() < tol
    assert np.abs(parts.column("client", "network") - (2 * hop_s + there_and_back)).max() < tol
    assert np.abs(parts.column("outside", "network")).max() < tol
    assert np.allclose(parts.column(hop="load_generator", part="cpu"), LOAD_GENERATOR_US * 1e-6)
    assert np.allclose(parts.column(hop="echo", part="cpu"), ECHO_US * 1e-6)
    # The baseline's delay, less what the simulated lab makes of it where the baseline was
    # timed from each send (meshsim/calibrate/baseline_residual.py), drawn as it is.
    drawn = sim.scenario.workloads[0].client_delay_ms
    assert drawn is not None
    assert drawn.values is not None
    assert (drawn.values[0] < BASELINE_MS) is ticked
    assert np.allclose(parts.column("outside", "baseline"), drawn.values[0] * 1e-3)
    # No wait is negative: a wake-up's CPU owed after the work (wakeup_cpu_after_share, 1 in
    # the committed model) is not on the request's path, so it is neither its CPU nor taken
    # out of its wait for a core.
    for i, key in enumerate(parts.keys):
        if key[2].endswith("wait"):
            assert parts.values[:, i].min() > -tol, key
    # Requests queue at this load: for a connection, for the sidecars' worker, for a core.
    assert (parts.column(part="connection_wait") > 0).sum() > n // 20
    assert (parts.column(hop="client_sidecar", part="worker_wait") > 0).any()
    assert (parts.column(part="core_wait") > 1e-9).any()
    released = parts.column(hop="load_generator", part="release_wait")
    if ticked:
        # Released on the tick nearest its intended time: late by up to half a tick (and
        # the timer's wait for its thread's core, which here comes to a few microseconds),
        # or early (counted from its release).
        assert (released > 0).mean() > 0.3
        assert 0.45e-3 < released.max() < 0.5e-3 + parts.column(part="core_wait").max()
        # Its clumps queue on the load generator's one thread.
        assert (parts.column(hop="load_generator", part="worker_wait") > 0).mean() > 0.1
    else:
        assert not released.any()
    setup = parts.column(hop="client_sidecar", part="connection_setup")
    if keep_alive:
        assert (setup == 0).mean() > 0.9  # pooled
    else:
        assert (setup >= 2 * delay(None, pod.node, 0) - tol).all()  # a TCP handshake each
    # The lab's shape: the means of its three parts add up to the end-to-end mean.
    shaped = simulated_parts(parts)
    total = sum(shaped[k]["mean"] for k in shaped if k not in ("end_to_end", "release"))
    assert total == pytest.approx(shaped["end_to_end"]["mean"], rel=1e-12)
    # The wait to send, as the lab's two clocks give it (intended to sent, inside "outside"):
    # the timer's, then a free connection's.
    waited = released + parts.column(hop="load_generator", part="connection_wait")
    assert shaped["release"]["mean"] == pytest.approx(waited.mean() * 1e3, rel=1e-9)


def test_each_clocks_tail_is_its_own_quantiles_and_the_report_sets_them_side_by_side() -> None:
    """The spans' quantiles are of each clock as a whole (not differences): the simulated
    ones are the traced run's own percentiles, the measured ones the point's medians."""
    _, tracer = _run(_lab_doc(True), traced=True)
    parts = tracer.result()
    spans = simulated_spans(parts)
    assert spans["server_sidecar"]["p99"] == pytest.approx(
        float(np.percentile(parts.server_span, 99)) * 1e3, rel=1e-12
    )
    assert spans["end_to_end"]["p90"] == pytest.approx(
        float(np.percentile(parts.total, 90)) * 1e3, rel=1e-12
    )
    for clock in spans.values():  # quantiles, in order
        assert clock["p50"] <= clock["p90"] <= clock["p99"]
    point = {
        "config": "plain-ka-f0",
        "payload_bytes": 1024,
        "rps": 4000.0,
        "latency_ms": {"p50": 1.5, "p90": 3.0, "p99": 6.0, "mean": 1.75},
        "sidecar_duration_ms": {
            "client_sidecar": {"p50": 0.75, "p90": 1.0, "p99": 2.0, "mean": 1.0},
            "server_sidecar": {"p50": 0.25, "p90": 0.5, "p99": 1.0, "mean": 0.5},
        },
    }
    measured = measured_spans(point)
    assert measured == {
        "end_to_end": {"p50": 1.5, "p90": 3.0, "p99": 6.0},
        "client_sidecar": {"p50": 0.75, "p90": 1.0, "p99": 2.0},
        "server_sidecar": {"p50": 0.25, "p90": 0.5, "p99": 1.0},
    }
    assert measured_spans({**point, "sidecar_duration_ms": {}}) is None
    predicted = {k: {"p50": 0.5, "mean": 0.5} for k in ("end_to_end", "outside_client_sidecar")}
    predicted |= {k: {"p50": 0.25, "mean": 0.25} for k in ("client_sidecar_share", "server_side")}
    d = PointDecomposition(
        point,
        predicted,
        measured_parts(point),
        spans={"measured": measured, "predicted": spans},
    )
    text = render([d])
    server = spans["server_sidecar"]
    assert (
        f"| server sidecar's span (it and the echo) | 0.250 / {server['p50']:.3f} | "
        f"0.500 / {server['p90']:.3f} | 1.000 / {server['p99']:.3f} |"
    ) in text
    assert d.to_json()["spans_ms"]["measured"]["client_sidecar"] == {
        "p50": 0.75,
        "p90": 1.0,
        "p99": 2.0,
    }


def test_a_traced_run_is_the_same_run() -> None:
    doc = _lab_doc(True)
    traced, _ = _run(doc, traced=True)
    plain, _ = _run(doc, traced=False)
    a, b = traced.recorder.workloads["load"], plain.recorder.workloads["load"]
    assert (a.requests, a.completed) == (b.requests, b.completed)
    assert a.series.latency_sum_s == b.series.latency_sum_s
    assert a.series.latency_max_s == b.series.latency_max_s
    assert traced.env.now == plain.env.now


def test_scenarios_that_run_a_request_elsewhere_are_refused() -> None:
    from meshsim.calibrate.sim_trace import trace
    from meshsim.scenario import from_dict
    from meshsim.sim.engine import Simulation

    doc = _lab_doc(True)
    doc["services"].append({"name": "next", "cpu_ms": 0.01})
    doc["services"][0]["calls"] = [{"service": "next"}]
    with pytest.raises(ValueError, match="calls between services"):
        trace(Simulation(from_dict(doc), "istio", 1))
    doc = _lab_doc(True)
    doc["meshes"] = ["none"]
    with pytest.raises(ValueError, match="sidecar mesh"):
        trace(Simulation(from_dict(doc), "none", 1))


# --------------------------------------------------------------------------- the lab's record


def test_the_lab_reads_every_requests_duration_and_the_sampled_cpu() -> None:
    from meshsim.calibrate.point_record import access_log_samples

    log = (
        b'{"status":200,"duration_ms":0.5,"cpu_us":41.5,"ts":1.5}\n'
        b'{"status":200,"duration_ms":0.75,"cpu_us":null,"ts":2.0}\n'
        b"not json\n"
        b'{"status":503,"duration_ms":2,"cpu_us":null,"ts":2.5}\n'
        b'{"status":200,"duration_ms":1}\n'
    )
    samples = access_log_samples(log)
    assert samples.cpu_us == [41.5]
    assert samples.duration_ms == [0.5, 0.75, 2.0, 1.0]
    # What counts a CFS period's requests: the answered ones that say when.
    assert samples.answered_ts == [1.5, 2.0]


def test_passes_merge_into_median_durations_and_the_parts_follow() -> None:
    from meshsim.calibrate.points import LabConfig, Measured, Point
    from meshsim.calibrate.rows import point_row
    from meshsim.calibrate.validate import merge_passes

    def one_pass(repeat: int, client_p50: float) -> dict[str, Any]:
        durations = {
            "client_sidecar": {"p50": client_p50, "p90": 1.0, "p99": 2.0, "mean": 0.75},
            "server_sidecar": {"p50": 0.25, "p90": 0.5, "p99": 1.0, "mean": 0.25},
        }
        latency = {"p50": 1.0, "p90": 2.0, "p99": 4.0, "mean": 1.25}
        m = Measured(
            point=Point(LabConfig(), 1024, 4000.0, 8, True, 5.0, "held_out", repeat),
            achieved_rps=4000.0,
            latency_ms=latency,
            requests=20000,
            errors=0,
            warnings=[],
            process_cpu_us_per_request={"client_sidecar": 90.0},
            sidecar_duration_ms=durations,
            latency_parts_ms=lab_parts(latency, durations) or {},
        )
        # Through the measurement record's JSON, as the fit record keeps it.
        return point_row(Measured.from_json(m.to_json()))

    rows = [one_pass(0, 0.5), one_pass(1, 0.75), one_pass(2, 0.625)]
    assert rows[0]["latency_parts_ms"]["outside_client_sidecar"] == {"p50": 0.5, "mean": 0.5}
    merged = merge_passes(rows)
    assert merged["sidecar_duration_ms"]["client_sidecar"]["p50"] == 0.625
    assert "latency_parts_ms" not in merged  # recomputed from the medians instead
    assert measured_parts(merged) == {
        "end_to_end": {"p50": 1.0, "mean": 1.25},
        "outside_client_sidecar": {"p50": 0.375, "mean": 0.5},
        "client_sidecar_share": {"p50": 0.375, "mean": 0.5},
        "server_side": {"p50": 0.25, "mean": 0.25},
    }
    # A record from before: the rows have no durations and the merged point none either.
    old = [
        {k: v for k, v in r.items() if k not in ("sidecar_duration_ms", "latency_parts_ms")}
        for r in rows
    ]
    assert measured_parts(merge_passes(old)) is None


def test_the_validation_report_carries_the_decomposition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed model and a recorded held-out row (from before the lab measured the
    durations): the simulated side is written, the measured side says it is missing."""
    import json

    from meshsim.calibrate import validation_report
    from meshsim.calibrate.validate import Comparison

    case = json.loads((ROOT / "tests" / "data" / "calibrate_diagnosis_case.json").read_text())
    row = next(r for r in case["rows"] if not r["saturation"])
    monkeypatch.setattr(validation_report, "validate_model", lambda *_a, **_k: [Comparison(**row)])
    out = tmp_path / "v"
    validation_report.write_validation_report(MODEL, out, command="test", duration_s=1.0)
    report = (out / "report.md").read_text()
    assert "## Per-hop latency decomposition" in report
    assert f"Measured: {NOT_MEASURED}." in report
    assert "| queueing for a core: client_sidecar (lab: run delay) |" in report
    (d,) = json.loads((out / "validation.json").read_text())["decomposition"]
    assert d["measured_ms"] is None
    assert d["measured_note"] == NOT_MEASURED
    assert (d["config"], d["rps"]) == (row["point"]["config"], row["point"]["rps"])
    predicted = d["predicted_ms"]
    parts = ("outside_client_sidecar", "client_sidecar_share", "server_side")
    assert sum(predicted[k]["mean"] for k in parts) == pytest.approx(
        predicted["end_to_end"]["mean"],
        abs=3e-4,  # each rounded to 0.1 us
    )
    assert d["simulated_requests"] > 0
