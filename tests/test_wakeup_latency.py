"""The latency to run a sleeping proxy thread (``wakeup_latency_us``, ``cluster.wakeup_latency``)
and the lab's measurement of it.

The simulator side is checked exactly where the latency is constant (who pays it, who rides
it) and against the percentiles given where it is drawn (a DKW bound); the lab side against
synthetic percentiles with known excess, and the probe itself on this machine's cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import simpy
import yaml

from meshsim.api import run_scenario
from meshsim.calibrate import wake_latency
from meshsim.calibrate.lab_scenario import wakeup_latency as lab_wakeup_latency
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.host import WakeupLatency
from meshsim.sim.cluster import Node
from meshsim.sim.cpu.fair import FairScheduler
from meshsim.sim.cpu.wakeup_latency import sampler
from meshsim.sim.dataplanes.proxy import Proxy
from meshsim.sim.sampling import Uniforms

ROOT = Path(__file__).resolve().parents[1]


def _proxy(
    env: simpy.Environment,
    node: Node,
    wake_us: float,
    wake_cpu_us: float = 0.0,
    cache_decay_ms: float = 0.0,
    after_share: float = 0.0,
    preemption_cpu_us: float = 0.0,
) -> Proxy:
    """A one-worker sidecar with only the wake-up's and a preemption's costs
    (tests/test_wakeup_cache_decay.py and tests/test_thread_keeps_core.py use it too)."""
    model: Any = SimpleNamespace(
        hop_latency_us=0.0,
        wakeup_cpu_us=wake_cpu_us,
        wakeup_cache_decay_ms=cache_decay_ms,
        wakeup_latency_us=wake_us,
        wakeup_cpu_after_share=after_share,
        preemption_cpu_us=preemption_cpu_us,
        tcp_connection_cpu_us=0.0,
        tls_session_tickets=0,
        tls_server_resumption=False,
    )
    return Proxy(
        env, "p", "sidecar", model, node, 1, stealing=False,
        pick=Uniforms(np.random.default_rng(0)),
    )  # fmt: skip


def _burst(
    env: simpy.Environment, proxy: Proxy, at: float, cpu_s: float, ends: dict[str, float], name: str
) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(at)
    yield from proxy.work(proxy.workers[0], cpu_s)
    ends[name] = env.now


def test_a_burst_that_finds_its_worker_asleep_waits_and_the_next_rides_that_wake_up() -> None:
    """Wake-up latency 50 us, CPU 10 us a burst, one core: A at 0 wakes the thread (runs
    50-60); B at 5 arrives while it is being woken and rides it (queues, runs 60-70); C at
    100 finds it asleep again (150-160), D at 155 finds it busy (160-170)."""
    env = simpy.Environment()
    node = Node(env, 0, 1)
    proxy = _proxy(env, node, wake_us=50.0, wake_cpu_us=3.0)
    ends: dict[str, float] = {}
    for name, at in (("A", 0.0), ("B", 5e-6), ("C", 100e-6), ("D", 155e-6)):
        env.process(_burst(env, proxy, at, 10e-6, ends, name))
    env.run()
    # Each waking burst also pays the wake-up's 3 us of CPU; the riders do not.
    assert ends == pytest.approx({"A": 63e-6, "B": 73e-6, "C": 163e-6, "D": 173e-6}, abs=1e-12)
    assert proxy.workers[0].wakeups == 2
    assert proxy.cpu_s == pytest.approx(46e-6, abs=1e-15)


@pytest.mark.parametrize("scheduler", ["fcfs", "cfs"])
def test_a_wake_up_spent_after_the_work_holds_the_worker_not_the_request(scheduler: str) -> None:
    """As above, with a quarter of the wake-up's 4 us of CPU spent after the woken work
    (wakeup_cpu_after_share 0.25): A at 0 is woken (50 us), runs its 10 us and 3 of the
    wake-up's (50-63) and returns. B, riding the same wake-up, is ready then and runs at once
    (63-73): the event loop goes back to its poll only once the work ready at its wake-up
    is done, so the worker and core go on for that 1 us after B (73-74). C at 100 finds the
    worker asleep: 150-163, and 1 us after. The CPU is the same wherever it falls:
    3 x 10 + 2 x 4 us. The same times under ``cluster.scheduler: cfs``, where the thread goes
    on to its ready burst and to what it owes its poll without giving its core up."""
    env = simpy.Environment()
    if scheduler == "cfs":
        node = Node(env, 0, 1, cpu=FairScheduler(env, 1), resolve=lambda _: ("p", 1024.0, None))
    else:
        node = Node(env, 0, 1)
    proxy = _proxy(env, node, wake_us=50.0, wake_cpu_us=4.0, after_share=0.25)
    ends: dict[str, float] = {}
    for name, at in (("A", 0.0), ("B", 5e-6), ("C", 100e-6)):
        env.process(_burst(env, proxy, at, 10e-6, ends, name))
    env.run()
    assert ends == pytest.approx({"A": 63e-6, "B": 73e-6, "C": 163e-6}, abs=1e-12)
    assert env.now == pytest.approx(164e-6, abs=1e-12)
    assert proxy.workers[0].wakeups == 2
    assert proxy.cpu_s == pytest.approx(38e-6, abs=1e-15)
    assert node.busy_s == pytest.approx(38e-6, abs=1e-15)


def test_without_a_wakeup_latency_nothing_waits() -> None:
    env = simpy.Environment()
    proxy = _proxy(env, Node(env, 0, 1), wake_us=0.0)
    ends: dict[str, float] = {}
    env.process(_burst(env, proxy, 0.0, 10e-6, ends, "A"))
    env.run()
    assert ends == {"A": pytest.approx(10e-6, abs=1e-15)}
    assert proxy.wakes is False


@pytest.mark.statistical
def test_draws_follow_the_percentiles_given() -> None:
    """100,000 draws; by the DKW inequality the empirical CDF is within
    sqrt(ln(2 / 1e-6) / 2e5) = 0.0085 of the true one everywhere, except once in a million
    runs. Between the percentiles the CDF is linear, so at each value given the true CDF is
    its percentile; beyond the highest, nothing."""
    spec = WakeupLatency(percentiles_us={10: 20.0, 50: 40.0, 99: 400.0, 100: 1000.0})
    draw = sampler(spec, np.random.default_rng(4))
    x = np.array([draw() for _ in range(100_000)]) * 1e6
    eps = math.sqrt(math.log(2 / 1e-6) / (2 * 100_000))
    for pct, us in spec.percentiles_us.items():
        assert float(np.mean(x <= us)) == pytest.approx(pct / 100.0, abs=eps)
    # Below the lowest percentile given, its value: 10 % of the draws are exactly 20 us.
    assert float(np.mean(x == 20.0)) == pytest.approx(0.10, abs=eps)
    # The sampler's mean is the trapezoids' (0.1 x 20 + 0.4 x 30 + 0.49 x 220 + 0.01 x 700).
    assert draw.mean * 1e6 == pytest.approx(2.0 + 12.0 + 107.8 + 7.0, rel=1e-3)


def _model_with(tmp_path: Path, wake_us: float | None) -> Path:
    doc = yaml.safe_load((ROOT / "models/calibrated/lab.yaml").read_text())
    doc["parameters"]["request_cpu_cv"]["value"] = 0.0
    # Every request's CPU the same whatever the latency: no drift, and a wake-up's CPU not
    # depending on how long its thread slept (which the latency moves).
    for name in ("cpu_drift_cv", "cpu_drift_ms", "wakeup_cache_decay_ms"):
        doc["parameters"].pop(name, None)
    # And all of it before the woken burst: spent after it, it would keep the worker busy
    # for the response path, which would then not find it asleep.
    doc["parameters"].pop("wakeup_cpu_after_share", None)
    doc["parameters"].pop("wakeup_latency_us", None)  # (None: the model has none)
    if wake_us is not None:
        doc["parameters"]["wakeup_latency_us"] = {
            "value": wake_us, "unit": "us", "source": "test",
        }  # fmt: skip
    path = tmp_path / f"model-{wake_us}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _sidecars(model: Path, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = {
        "meshsim": 1, "name": "wake", "seed": 2, "duration_s": 6, "warmup_s": 1,
        "meshes": ["istio"],
        "cluster": {"nodes": 1, "cores_per_node": 2, **(cluster or {}),
                    "network": {"same_node_us": 0, "cross_node_us": 0, "client_us": 0}},
        "services": [{"name": "app", "concurrency": 1,
                      "cpu_ms": {"dist": "constant", "mean": 0.2}}],
        "workloads": [{"name": "w", "target": "app", "arrival": "constant", "rate_rps": 20}],
        "mesh_options": {"meshed_clients": True,
                         "istio": {"workers": 1, "telemetry": True, "model": str(model)}},
    }  # fmt: skip
    run: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    return run


def test_at_low_load_each_of_the_four_traversals_pays_one_wake_up(tmp_path: Path) -> None:
    """At 20 requests a second nothing overlaps: each sidecar's request and response paths
    find its worker asleep, so a request pays the model's constant 250 us four times."""
    without = _sidecars(_model_with(tmp_path, None))["workloads"]["w"]["latency_ms"]
    with_wake = _sidecars(_model_with(tmp_path, 250.0))["workloads"]["w"]["latency_ms"]
    assert with_wake["p50"] - without["p50"] == pytest.approx(1.0, abs=0.005)
    assert with_wake["p99"] - without["p99"] == pytest.approx(1.0, abs=0.01)


def test_a_hosts_wakeup_latency_replaces_the_models(tmp_path: Path) -> None:
    """A constant 100 us host (all percentiles one value) instead of the model's 250 us."""
    model = _model_with(tmp_path, 250.0)
    base = _sidecars(_model_with(tmp_path, None))["workloads"]["w"]["latency_ms"]
    host = _sidecars(model, {"wakeup_latency": {"percentiles_us": {50: 100.0}}})
    assert host["workloads"]["w"]["latency_ms"]["p50"] - base["p50"] == pytest.approx(
        0.4, abs=0.005
    )


def _doc(wake: Any, nodes: int = 1) -> dict[str, Any]:
    return {
        "meshsim": 1, "name": "w", "duration_s": 2, "warmup_s": 1, "meshes": ["none"],
        "cluster": {"nodes": nodes, "wakeup_latency": wake},
        "services": [{"name": "app"}],
        "workloads": [{"name": "w", "target": "app", "rate_rps": 10}],
    }  # fmt: skip


def test_a_wakeup_latency_must_rise_and_match_the_nodes() -> None:
    with pytest.raises(ScenarioError) as err:
        from_dict(_doc({"percentiles_us": {50: 40.0, 99: 30.0}}))
    # One problem, at the key: not also "expected a list" from the union's other branch,
    # nor pydantic's name for the validator in the path.
    assert [(p.field, p.message) for p in err.value.problems] == [
        (
            "cluster.wakeup_latency",
            "percentiles_us falls from 40 µs at p50 to 30 µs at p99: a latency's "
            "percentiles cannot fall",
        )
    ]
    with pytest.raises(ScenarioError) as err:
        from_dict(_doc([{"percentiles_us": {50: 40.0}}], nodes=2))
    assert "wakeup_latency lists 1 nodes but the cluster has 2" in str(err.value)
    with pytest.raises(ScenarioError) as err:
        from_dict(_doc({"percentiles_us": {150: 40.0}}))
    assert "percentiles_us" in str(err.value)
    ok = from_dict(_doc([{"percentiles_us": {50: 40.0}}, {"percentiles_us": {50: 9.0}}], 2))
    assert ok.cluster.node_wakeup_latency(1) == WakeupLatency(percentiles_us={50: 9.0})


# --------------------------------------------------------------------------- the lab


def _uniform(lo: float, hi: float) -> dict[str, float]:
    return {f"p{q:g}": lo + (hi - lo) * q / 100.0 for q in wake_latency.PERCENTILES}


def test_the_excess_over_the_fit_floor_and_its_mean() -> None:
    """Uniform 100-300 us over a floor of 50: uniform 50-250, mean 150; below the floor,
    0."""
    pct = _uniform(100.0, 300.0)
    assert wake_latency.excess_mean_us(pct, 50.0) == pytest.approx(150.0, rel=1e-9)
    assert wake_latency.excess(pct, 150.0)[0.0] == 0.0
    # Half of 0-100 us is under a floor of 50: mean 0.5 x 0 + 0.5 x 25 = 12.5 us.
    assert wake_latency.excess_mean_us(_uniform(0.0, 100.0), 50.0) == pytest.approx(12.5)


def test_passes_merge_by_median_and_the_floor_is_the_fit_points() -> None:
    a, b, c = _uniform(10.0, 110.0), _uniform(20.0, 120.0), _uniform(60.0, 160.0)
    merged = wake_latency.merge([{"0": a}, {"0": b}, {"0": c}, None])
    assert merged["0"]["p50"] == b["p50"]
    # Median of the fit points' 1st percentiles (11, 21, 61, 61): 41.
    assert wake_latency.floor_us([{"0": a, "1": b}, {"0": c, "1": c}]) == pytest.approx(41.0)
    assert wake_latency.floor_us([{"0": a}, None]) is None


def test_the_share_charged_is_what_the_cpu_leaves_unexplained() -> None:
    """The fit points' floor is the median of their 1st percentiles (30 and 32 us): 31. The
    lowest load's cores are uniform 30-130 us, so the excess over 31 is 0 up to p1 and then
    rises to 99 us at p100: mean 99^2 / 200 = 49.005 us. With 100 us unexplained per
    traversal all of it is charged; with 20 us, 20 (a share of 20 / 49.005)."""
    fit_points = [{"0": _uniform(29.0, 129.0)}, {"0": _uniform(31.0, 131.0)}]
    low = {"0": _uniform(30.0, 130.0), "1": _uniform(30.0, 130.0)}
    wake = wake_latency.charged(fit_points, low, 100.0)
    assert wake is not None
    assert wake["floor_us"] == pytest.approx(31.0)
    assert wake["excess_mean_us"] == pytest.approx(99.0**2 / 200.0, abs=1e-3)
    assert wake["scale"] == 1.0
    assert wake["charged_us"] == wake["excess_mean_us"]
    tight = wake_latency.charged(fit_points, low, 20.0)
    assert tight is not None
    assert tight["charged_us"] == pytest.approx(20.0, abs=1e-3)
    # Each point's draws are scaled by the same share.
    spec = wake_latency.wakeup_spec(_uniform(40.0, 140.0), tight)
    assert spec["percentiles_us"][100.0] == pytest.approx(109.0 * tight["scale"], abs=0.01)
    assert wake_latency.charged([None], low, 20.0) is None


def test_the_simulated_lab_gives_each_node_its_cores_excess() -> None:
    fit = {
        "placement": {"echo": 1, "client_sidecar": 0},
        "wake_latency": {"floor_us": 31.0, "scale": 1.0},
    }
    point = {"0": _uniform(40.0, 140.0), "1": _uniform(130.0, 230.0)}
    spec = lab_wakeup_latency(fit, point)["wakeup_latency"]
    assert spec[0]["percentiles_us"][50.0] == pytest.approx(180.0 - 31.0)  # node 0: core 1
    assert spec[1]["percentiles_us"][50.0] == pytest.approx(90.0 - 31.0)  # node 1: core 0
    assert lab_wakeup_latency(fit, None) == {}
    assert lab_wakeup_latency({**fit, "wake_latency": None}, point) == {}


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="the probe pins processes to two cores (Linux)",
)
def test_the_probe_times_hops_to_a_sleeping_process_from_each_sender() -> None:
    core, other = sorted(os.sched_getaffinity(0))[:2]
    cross, same = wake_latency.probe_core(core, [other, core], seconds=0.05)
    sent = int(0.05 * wake_latency.RATE)
    for x in (cross, same):
        # Some timestamps may find the child awake and are not counted; most find it asleep.
        assert sent // 2 <= len(x) <= sent
        assert (x > 0).all()
    probe = {str(core): {"same": same, "cross": cross}}
    rec = wake_latency.point_wakeups(probe, probe)
    assert list(rec[str(core)]) == [f"p{q:g}" for q in wake_latency.PERCENTILES]
    assert rec[str(core)]["p50"] == pytest.approx(float(np.median(same)), abs=0.01)
    cross_rec = wake_latency.point_wakeups(probe, probe, "cross")
    assert cross_rec[str(core)]["p50"] == pytest.approx(float(np.median(cross)), abs=0.01)


def test_the_fit_takes_the_wake_up_latency_out_of_the_hop() -> None:
    from test_calibrate_mechanisms import synthetic_record

    from meshsim.calibrate.calibration import fit_model

    data = synthetic_record()
    plain = fit_model(data)
    before = plain["parameters"]
    assert "wakeup_latency_us" not in before
    assert plain["fit"]["wake_latency"] is None
    for p in data["points"]:
        p["wake_latency_us"] = {"0": _uniform(30.0, 40.0), "1": _uniform(30.0, 40.0)}
    doc = fit_model(data)
    after = doc["parameters"]
    # Floor: the 1st percentile, 30.1 us. Above it the excess rises linearly from 0 at p1
    # to 9.9 us at p100, and is 0 below: mean 10 x 0.99^2 / 2 = 4.9005 us.
    wake = after["wakeup_latency_us"]["value"]
    assert wake == pytest.approx(4.9005, abs=0.001)
    assert before["hop_latency_us"]["value"] > wake
    assert after["hop_latency_us"]["value"] == pytest.approx(
        before["hop_latency_us"]["value"] - wake, abs=0.01
    )
    assert "floor" in after["wakeup_latency_us"]["note"]
    assert doc["fit"]["wake_latency"]["scale"] == 1.0
    # A probe whose excess is more than the hop's unexplained latency: only that is charged,
    # and the hop is left 0.
    for p in data["points"]:
        p["wake_latency_us"] = {"0": _uniform(30.0, 3000.0), "1": _uniform(30.0, 3000.0)}
    big = fit_model(data)
    assert big["parameters"]["hop_latency_us"]["value"] == 0.0
    assert big["parameters"]["wakeup_latency_us"]["value"] == pytest.approx(
        before["hop_latency_us"]["value"], abs=0.01
    )
    assert big["fit"]["wake_latency"]["scale"] < 1.0


def test_a_core_whose_probe_fails_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(core: int, senders: list[int], seconds: float, seed: int) -> list[np.ndarray]:
        if core == 1:
            raise TimeoutError("the child did not connect")
        return [np.array([40.0 + s]) for s in senders]

    monkeypatch.setattr(wake_latency, "probe_core", probe)
    monkeypatch.setattr(wake_latency.os, "sched_setaffinity", lambda *_: None, raising=False)
    out = wake_latency.probe_cores([0, 1])
    assert list(out) == ["0"]
    assert out["0"]["cross"].tolist() == [41.0]  # sent from core 1
    assert out["0"]["same"].tolist() == [40.0]
    assert wake_latency.point_wakeups(out, out)["0"]["p50"] == 40.0


def test_the_report_header_says_proxies_wait_for_their_host() -> None:
    from meshsim.report.render import hosts_line

    one = {"cluster": {"wakeup_latency": {"percentiles_us": {0: 10, 50: 40, 100: 1040}}}}
    # p99 interpolated between p50 (40) and p100 (1040): 40 + 49/50 x 1000 = 1020 us.
    assert hosts_line(one) == (
        "A proxy thread woken from idle waits for its host before it runs: p50 40 µs, "
        "p99 1.02 ms (cluster.wakeup_latency): the latencies include it wherever a "
        "proxy was idle."
    )
    per_node = {"cluster": {"wakeup_latency": [one["cluster"]["wakeup_latency"]] * 3}}
    assert "set node by node for 3 nodes" in hosts_line(per_node)
    both = {"cluster": {**one["cluster"], "host_speed": {"trace": [1, 2]}}}
    assert hosts_line(both).startswith("Hosts replay a measured speed trace of 2 bins")
    assert "p50 40 µs" in hosts_line(both)
    assert hosts_line({"cluster": {}}) == ""
