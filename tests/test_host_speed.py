"""The hosts' fast and slow phases (``cluster.host_speed``) and the lab's measurement of them.

The simulator side is checked against the two-state process's arithmetic (exact where the
process is constant, stated tolerances where it is random); the lab side against synthetic
chunk traces with known phases.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy

from meshsim.api import run_scenario
from meshsim.calibrate import host_phases
from meshsim.calibrate.lab_scenario import host_speed as lab_host_speed
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.host import HostSpeed
from meshsim.sim.cluster import Node
from meshsim.sim.cpu import host_speed


class _Account:
    cpu_s = 0.0


def _back_to_back(
    env: simpy.Environment, node: Node, burst_s: float, n: int, took: list[float]
) -> Generator[simpy.Event, Any, None]:
    acc = _Account()
    for _ in range(n):
        t0 = env.now
        yield from node.execute(burst_s, acc)
        took.append(env.now - t0)


def _run(spec: HostSpeed, burst_s: float, n: int, seed: int = 1) -> tuple[Node, list[float]]:
    env = simpy.Environment()
    node = Node(env, 0, 1)
    host_speed.start(env, node, spec, np.random.default_rng(seed))
    took: list[float] = []
    env.process(_back_to_back(env, node, burst_s, n, took))
    env.run(until=burst_s * n * 10)
    return node, took


def test_without_slow_phases_every_burst_takes_the_fast_factor_exactly() -> None:
    node, took = _run(
        HostSpeed(slow_factor=3.0, slow_share=0.0, slow_dwell_ms=5, fast_factor=2.0), 1e-4, 100
    )
    assert took == [pytest.approx(2e-4, abs=1e-15)] * 100
    # The time a burst holds the core is what it is accounted: a CPU counter on a slow
    # host counts the slow time.
    assert node.busy_s == pytest.approx(100 * 2e-4)
    assert node.slow_phases == 0


def _observe(
    env: simpy.Environment, node: Node, every_s: float, seen: list[float]
) -> Generator[simpy.Event, Any, None]:
    while True:
        seen.append(node.speed)
        yield env.timeout(every_s)


@pytest.mark.statistical
def test_the_phases_follow_the_two_state_arithmetic() -> None:
    """100 s of a host slow a quarter of the time (p = 0.25) at twice the cost (s = 2, f = 1),
    in slow phases of 20 ms (fast ones then last 60 ms):

    - the time-average multiple, seen by an observer every ms, is (1 - p) f + p s = 1.25:
      what a short burst arriving at a random moment takes, on average;
    - a core busy back to back (bursts of 0.2 ms) does work at the harmonic mean instead:
      elapsed over work is 1 / ((1 - p) / f + p / s) = 8 / 7;
    - slow phases begin once per slow + fast mean dwell, 80 ms: about 1250 of them.

    The share of time slow has a standard deviation of sqrt(2 p (1 - p) tau / T) = 0.0075
    over T = 100 s (tau = 15 ms, the chain's correlation time), 0.6 % of either average;
    the count, 3 %. Tolerances 2.5 % and 9 %: a host at its mean speed throughout, or phases
    twice as long, are far outside them."""
    spec = HostSpeed(slow_factor=2.0, slow_share=0.25, slow_dwell_ms=20)
    assert host_speed.fast_dwell_ms(spec) == pytest.approx(60.0)
    assert spec.mean_factor() == pytest.approx(1.25)
    env = simpy.Environment()
    node = Node(env, 0, 1)
    host_speed.start(env, node, spec, np.random.default_rng(11))
    seen: list[float] = []
    took: list[float] = []
    env.process(_observe(env, node, 1e-3, seen))
    env.process(_back_to_back(env, node, 2e-4, 10_000_000, took))
    env.run(until=100.0)
    assert float(np.mean(seen)) == pytest.approx(1.25, rel=0.025)
    assert sum(took) / (len(took) * 2e-4) == pytest.approx(8 / 7, rel=0.025)
    assert node.slow_phases == pytest.approx(100.0 / 0.080, rel=0.09)
    # Each burst runs at one of the two speeds: the one of the phase it starts in.
    assert set(np.round(np.array(took) / 2e-4, 9)) == {1.0, 2.0}


def _one_service(host: Any, nodes: int = 1) -> dict[str, Any]:
    return {
        "meshsim": 1, "name": "phases", "seed": 3, "duration_s": 4, "warmup_s": 1,
        "meshes": ["none"],
        "cluster": {"nodes": nodes, "cores_per_node": 1, "host_speed": host,
                    "network": {"same_node_us": 0, "cross_node_us": 0, "client_us": 0}},
        "services": [{"name": "app", "concurrency": 1,
                      "cpu_ms": {"dist": "constant", "mean": 1.0}}],
        "workloads": [{"name": "w", "target": "app", "rate_rps": 20}],
    }  # fmt: skip


def _latency_ms(doc: dict[str, Any]) -> dict[str, float]:
    run = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]
    lat: dict[str, float] = run["workloads"]["w"]["latency_ms"]
    return lat


def test_a_scenario_runs_its_nodes_at_the_host_speed() -> None:
    """A constant host at twice the cost: a 1 ms request at 20 rps (2 % of the core, so
    almost never queued) takes 2 ms."""
    base = _latency_ms(_one_service(None))
    slow = _latency_ms(_one_service({"slow_factor": 1.0, "slow_share": 0.0,
                                     "slow_dwell_ms": 1, "fast_factor": 2.0}))  # fmt: skip
    assert base["p50"] == pytest.approx(1.0, rel=0.02)
    assert slow["p50"] == pytest.approx(2.0, rel=0.02)


def test_a_list_gives_each_node_its_own_and_must_match_the_nodes() -> None:
    fast = {"slow_factor": 1.0, "slow_share": 0.0, "slow_dwell_ms": 1}
    scenario = from_dict(_one_service([fast, {**fast, "fast_factor": 3.0}], nodes=2))
    assert scenario.cluster.node_host_speed(1) == HostSpeed(**{**fast, "fast_factor": 3.0})
    with pytest.raises(ScenarioError) as err:
        from_dict(_one_service([fast], nodes=2))
    assert "host_speed lists 1 nodes but the cluster has 2" in str(err.value)
    with pytest.raises(ScenarioError) as err:
        from_dict(_one_service({**fast, "slow_share": 1.0}))
    # The mapping's own problem only, not the list branch's "expected a list" too.
    assert [p.field for p in err.value.problems] == ["cluster.host_speed.slow_share"]


# --------------------------------------------------------------------------- the lab


def _chunks(levels_us: list[tuple[float, float]], chunk_us: float = 100.0) -> np.ndarray:
    """A trace of chunks back to back: (phase length ms, chunk time us) in turn."""
    rows = []
    t = 0.0
    for length_ms, each_us in levels_us:
        end = t + length_ms * 1e-3
        while t < end - 1e-12:
            rows.append((t, each_us * 1e-6))
            t += each_us * 1e-6
    return np.asarray(rows)


def test_two_state_finds_the_phases_of_a_trace() -> None:
    """Slow phases of 20 ms at 1.8x among fast ones of 60 ms: share 0.25, factor 1.8,
    dwell 20 ms (within a bin at each phase's edges). A single slow millisecond is an
    interrupt, not a phase: the median filter leaves it out."""
    phases = [(60, 100.0), (20, 180.0)] * 6 + [(30, 100.0), (1, 400.0), (30, 100.0)]
    fit = host_phases.two_state([_chunks(phases)])
    assert fit is not None
    slow_ms = 6 * 20
    total_ms = 6 * 80 + 61
    assert fit["slow_share"] == pytest.approx(slow_ms / total_ms, abs=0.01)
    assert fit["slow_factor"] == pytest.approx(1.8, rel=0.03)
    assert fit["slow_dwell_ms"] == pytest.approx(20.0, abs=1.5)


def test_a_steady_host_has_no_phases_and_the_spec_keeps_the_mean() -> None:
    steady = host_phases.two_state([_chunks([(200, 100.0)]), _chunks([(200, 101.0)])])
    assert steady is not None
    assert steady["slow_share"] == 0.0
    assert host_phases.host_speed_spec(steady) is None
    spec = host_phases.host_speed_spec({"slow_share": 0.3, "slow_factor": 2.0, "slow_dwell_ms": 40})
    assert spec is not None
    assert HostSpeed(**spec).mean_factor() == pytest.approx(1.0, abs=1e-4)
    assert spec["slow_factor"] / spec["fast_factor"] == pytest.approx(2.0, rel=1e-4)


def test_passes_merge_by_median_and_nodes_take_their_lab_cores() -> None:
    a = {"0": {"slow_share": 0.1, "slow_factor": 1.5, "slow_dwell_ms": 10.0}}
    b = {"0": {"slow_share": 0.3, "slow_factor": 1.7, "slow_dwell_ms": 30.0},
         "1": {"slow_share": 0.5, "slow_factor": 2.0, "slow_dwell_ms": 50.0}}  # fmt: skip
    c = {"0": {"slow_share": 0.2, "slow_factor": 1.9, "slow_dwell_ms": 20.0}}
    merged = host_phases.merge([a, b, None, c])
    assert merged["0"] == {"slow_share": 0.2, "slow_factor": 1.7, "slow_dwell_ms": 20.0}
    assert merged["1"] == b["1"]
    # The simulated lab's node 0 runs the echo (lab core 1), node 1 the client side (core 0).
    fit = {"placement": {"echo": 1, "client_sidecar": 0}}
    nodes = lab_host_speed(fit, {"1": b["1"]})["host_speed"]
    assert nodes[0] == host_phases.host_speed_spec(b["1"])
    assert nodes[1]["slow_share"] == 0.0
    assert lab_host_speed(fit, None) == {}


def test_a_trace_is_replayed_bin_by_bin_in_a_loop() -> None:
    """A trace [1, 3, 2] of 1 ms bins, observed at each bin's middle for 30 ms: the series
    from the random starting bin on, round and round; its mean is the time-average."""
    spec = HostSpeed(trace=[1.0, 3.0, 2.0], trace_bin_ms=1.0)
    assert spec.mean_factor() == pytest.approx(2.0)
    env = simpy.Environment()
    node = Node(env, 0, 1)
    host_speed.start(env, node, spec, np.random.default_rng(5))
    seen: list[float] = []

    def observe() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(0.0005)
        while True:
            seen.append(node.speed)
            yield env.timeout(0.001)

    env.process(observe())
    env.run(until=0.030)
    first = [1.0, 3.0, 2.0].index(seen[0])
    assert seen == [[1.0, 3.0, 2.0][(first + i) % 3] for i in range(30)]


def test_a_host_speed_is_a_trace_or_two_states() -> None:
    two = {"slow_factor": 2.0, "slow_share": 0.2, "slow_dwell_ms": 5}
    for bad, message in (
        ({**two, "trace": [1.0]}, "either a trace or the two states"),
        ({"slow_factor": 2.0}, "give slow_factor, slow_share and slow_dwell_ms"),
        ({"trace": []}, "cluster.host_speed.trace"),
    ):
        with pytest.raises(ScenarioError) as err:
            from_dict(_one_service(bad))
        assert message in str(err.value), str(err.value)


def test_the_lab_records_the_bins_and_replays_them_around_a_mean_of_1() -> None:
    fast, slow = _chunks([(4, 100.0)]), _chunks([(2, 100.0), (2, 300.0)])
    rec = host_phases.point_trace({"0": fast}, {"0": slow})
    # Bins of 100, 100, 100, 100, 100, 100, 300, 300 us: mean 150.
    assert rec == {"0": [67, 67, 67, 67, 67, 67, 200, 200]}
    merged = host_phases.merge_traces([rec, None, {"0": [100, 100]}])
    assert merged["0"] == [67] * 6 + [200, 200, 100, 100]
    spec = host_phases.replay_spec(merged["0"])
    assert spec is not None
    assert HostSpeed(**spec).mean_factor() == pytest.approx(1.0, abs=0.01)
    fit = {"placement": {"echo": 1, "client_sidecar": 0}}
    nodes = lab_host_speed(fit, None, {"0": merged["0"]})["host_speed"]
    assert nodes[1] == spec
    assert nodes[0]["slow_share"] == 0.0


def test_a_stall_longer_than_the_scenarios_ceiling_replays_at_the_ceiling() -> None:
    """One 1 ms bin that took 113 times the mean (a quick calibration's, while other work
    shared the host) replays as 100x, which a scenario accepts; the rest are unchanged."""
    bins = [100] * 999 + [11352]
    spec = host_phases.replay_spec(bins)
    assert spec is not None
    assert max(spec["trace"]) == host_phases.MAX_REPLAY_FACTOR == 100.0
    mean = (999 * 100 + 11352) / 1000
    assert spec["trace"][0] == round(100 / mean, 3)
    from_dict(_one_service(spec))  # accepted


def test_a_traced_record_is_speed_adjusted_by_the_traces_time_averages() -> None:
    """Fit points whose traces average 100 us per chunk on both cores; a held-out point's
    two passes 200 and 300 us on core 0 (median 250) and 50 on core 1: factors 2.5 and 0.5,
    whatever its probes said (they are left as the fit's). A record without traces keeps
    the probe's factors."""
    from test_calibrate_mechanisms import synthetic_record

    from meshsim.calibrate import speed
    from meshsim.calibrate.calibration import fit_model
    from meshsim.calibrate.validate import baseline_for, held_out_points, merge_passes, speed_scales

    def phases(us0: float, us1: float) -> dict[str, dict[str, float]]:
        return {
            core: {"slow_share": 0.0, "slow_factor": 1.0, "slow_dwell_ms": 0.0,
                   "mean_chunk_us": us, "seconds": 1.0}
            for core, us in (("0", us0), ("1", us1))
        }  # fmt: skip

    data = synthetic_record()
    for p in data["points"]:
        p["speed"] = speed.point_speed({"0": 1.0, "1": 1.0}, {"0": 1.0, "1": 1.0})
        role, repeat = p["point"]["role"], p["point"]["repeat"]
        if role == "held_out":
            p["host_phases"] = phases(200.0 if repeat == 0 else 300.0, 50.0)
        else:
            p["host_phases"] = phases(100.0, 100.0)
    fit = fit_model(data)["fit"]
    group = next(g for g in held_out_points(fit["points"], fit["held_out"]) if g[0]["rps"] > 0)
    point = merge_passes(group)
    scales, note = speed_scales(fit, group, baseline_for(fit, point))
    assert note == ""
    assert scales["cores"] == {"0": 2.5, "1": 0.5}
    assert scales["sidecars"] == 1.5
    for r in fit["points"]:
        r.pop("host_phases", None)
    scales, _ = speed_scales(fit, group, baseline_for(fit, point))
    assert scales["cores"] == {"0": 1.0, "1": 1.0}


def test_the_report_header_says_the_hosts_have_phases(tmp_path: Path) -> None:
    from meshsim.report import Comparison, render_report
    from meshsim.report.render import hosts_line
    from meshsim.results.store import load_run, save_run

    doc = _one_service({"slow_factor": 1.8, "slow_share": 0.3, "slow_dwell_ms": 40})
    scenario = from_dict(doc)
    result = run_scenario(scenario)
    run = save_run(result, build_summary(result), scenario.to_dict(), tmp_path / "run")
    _, md = render_report(Comparison.of([load_run(run)]), tmp_path / "report.html")
    line = (
        "Hosts are slow 30% of the time, 1.8x their fast speed, in phases of 40 ms on "
        "average (cluster.host_speed): the latency tails include their slow phases."
    )
    assert line in md.read_text()
    assert line in (tmp_path / "report.html").read_text()
    assert hosts_line(_one_service(None)) == ""
    assert "set node by node for 2 nodes" in hosts_line(_one_service([{}, {}]))
    assert "measured speed trace of 3 bins" in hosts_line(_one_service({"trace": [1, 2, 3]}))
