"""A sleeping worker's caches cool (``wakeup_cache_decay_ms``): a wake-up after sleeping ``t``
costs ``wakeup_cpu_us * (1 - exp(-t / decay))``.

Checked exactly on hand-placed bursts, and against the closed form for Poisson arrivals: an
M/G/1 server's idle periods are exponential with the arrival rate ``lam`` (memoryless), so a
wake-up costs ``wakeup_cpu_us / (1 + lam * decay)`` on average.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy
import yaml
from test_wakeup_latency import _burst
from test_wakeup_latency import _proxy as _latency_proxy

from meshsim.sim.cluster import Node
from meshsim.sim.dataplanes.proxy import Proxy

ROOT = Path(__file__).resolve().parents[1]


def _proxy(env: simpy.Environment, wake_cpu_us: float, decay_ms: float) -> Proxy:
    return _latency_proxy(env, Node(env, 0, 1), 0.0, wake_cpu_us, decay_ms)


def test_a_wake_up_costs_what_the_sleep_before_it_cooled() -> None:
    """100 us per cold wake-up, decay 1 ms, 10 us bursts. A at 1 ms (asleep since the
    start): 100 (1 - e^-1) = 63.212 us. B 0.5 ms after A ended: 100 (1 - e^-0.5) = 39.347.
    C while B runs: it rides B's wake-up and pays nothing."""
    env = simpy.Environment()
    proxy = _proxy(env, 100.0, 1.0)
    ends: dict[str, float] = {}
    a_cost = 100e-6 * (1 - math.exp(-1.0))
    a_end = 1e-3 + a_cost + 10e-6
    b_cost = 100e-6 * (1 - math.exp(-0.5))
    env.process(_burst(env, proxy, 1e-3, 10e-6, ends, "A"))
    env.process(_burst(env, proxy, a_end + 0.5e-3, 10e-6, ends, "B"))
    env.process(_burst(env, proxy, a_end + 0.5e-3 + 5e-6, 10e-6, ends, "C"))
    env.run()
    b_end = a_end + 0.5e-3 + b_cost + 10e-6
    assert ends == pytest.approx({"A": a_end, "B": b_end, "C": b_end + 10e-6}, abs=1e-12)
    w = proxy.workers[0]
    assert w.wakeups == 2
    assert w.wake_cpu_s == pytest.approx(a_cost + b_cost, abs=1e-15)
    assert proxy.cpu_s == pytest.approx(a_cost + b_cost + 30e-6, abs=1e-15)


def test_without_a_decay_every_wake_up_costs_the_same() -> None:
    env = simpy.Environment()
    proxy = _proxy(env, 100.0, 0.0)
    ends: dict[str, float] = {}
    env.process(_burst(env, proxy, 1e-3, 10e-6, ends, "A"))
    env.process(_burst(env, proxy, 1.2e-3, 10e-6, ends, "B"))
    env.run()
    assert proxy.workers[0].wake_cpu_s == pytest.approx(200e-6, abs=1e-15)


@pytest.mark.parametrize(("rate", "decay_ms"), [(1000.0, 1.0), (250.0, 2.0), (4000.0, 0.1)])
def test_poisson_wake_ups_cost_the_closed_form_mean(rate: float, decay_ms: float) -> None:
    """20,000 Poisson arrivals of 1 us bursts: the mean wake-up costs 100 / (1 + rate x
    decay) us. Each cost lies in [0, 100], so the mean of 20,000 has a standard deviation
    under 100 / (2 sqrt(20000)) = 0.35 us; the tolerance is 1.5 us (over four of them)."""
    env = simpy.Environment()
    proxy = _proxy(env, 100.0, decay_ms)
    rng = np.random.default_rng(7)
    gaps = rng.exponential(1.0 / rate, 20_000)

    def arrivals() -> Generator[simpy.Event, Any, None]:
        for gap in gaps:
            yield env.timeout(float(gap))
            env.process(proxy.work(proxy.workers[0], 1e-6))

    env.process(arrivals())
    env.run()
    w = proxy.workers[0]
    expected_us = 100.0 / (1.0 + rate * decay_ms * 1e-3)
    assert w.wake_cpu_s * 1e6 / w.wakeups == pytest.approx(expected_us, abs=1.5)


# --------------------------------------------------------------------------- the lab's side


def _curve(decay_ms: float, floor: float = 40.0, amp: float = 150.0) -> dict[str, Any]:
    gaps = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0]
    return {
        "core": 1, "waker": 0, "working_set_kib": 1024, "repeats": 40, "gaps_ms": gaps,
        "cold_us": [floor + amp * -math.expm1(-g / decay_ms) for g in gaps],
        "warm_us": [floor] * len(gaps),
    }  # fmt: skip


def _cool(data: dict[str, Any], constant_us: float, cold_us: float, decay_ms: float) -> None:
    """Re-cost a synthetic record's sidecars: each wake-up, charged ``constant_us`` there,
    now costs ``cold_us`` times the share its mean sleep cooled. The sleep depends on the
    CPU it sets, so each point is solved as a fixed point."""
    from meshsim.calibrate.cache_cooling import cold_wakeups

    for p in data["points"]:
        cpu, wakes = p["process_cpu_us_per_request"], p["wakeups_per_request"]
        for side in ("client_sidecar", "server_sidecar"):
            if side not in cpu:
                continue
            rest = cpu[side] - constant_us * wakes[side]
            total = rest
            for _ in range(50):
                share = cold_wakeups({side: total}, wakes, p["achieved_rps"], decay_ms, (side,))
                total = rest + cold_us * (share or 0.0)
            cpu[side] = total


@pytest.mark.parametrize("decay_ms", [0.5, 3.0, 12.0])
def test_the_probe_curve_gives_back_its_time_constant(decay_ms: float) -> None:
    """An exact curve: the time constant to the grid's step (3.2 %), floor and amplitude
    to the rounding that step leaves."""
    from meshsim.calibrate.cache_cooling import fit_decay

    fit = fit_decay(_curve(decay_ms))
    assert fit is not None
    assert fit["decay_ms"] == pytest.approx(decay_ms, rel=0.032)
    assert fit["cold_floor_us"] == pytest.approx(40.0, abs=3.0)
    assert fit["amplitude_us"] == pytest.approx(150.0, abs=5.0)


def test_caches_that_do_not_cool_give_no_time_constant() -> None:
    from meshsim.calibrate.cache_cooling import fit_decay, merge

    flat = _curve(3.0, floor=100.0, amp=5.0)
    assert fit_decay(flat) is None
    assert fit_decay(None) is None
    # Two probes merge into their per-gap medians; a failed one (None) is left out.
    merged = merge([_curve(3.0), None, _curve(3.0, floor=60.0)])
    assert merged is not None
    assert merged["probes"] == 2
    assert merged["cold_us"][0] == pytest.approx(50.0)


def test_cold_wake_ups_count_the_share_each_sleep_cooled() -> None:
    """A sidecar at 500 rps, 100 us a request, one wake-up a request: busy 5 %, so it sleeps
    0.95 / 500 s = 1.9 ms before each; with a 1.9 ms decay half of a cold one."""
    from meshsim.calibrate.cache_cooling import cold_share, cold_wakeups

    assert cold_share(1.9, 1.9) == pytest.approx(0.5)
    cpu = {"client_sidecar": 100.0, "server_sidecar": 100.0}
    wakes = {"client_sidecar": 1.0, "server_sidecar": 0.5}
    assert cold_wakeups(cpu, wakes, 500.0, None) == pytest.approx(0.75)
    # The server sleeps 3.8 ms before each of its half wake-ups: 0.5 x 3.8 / 5.7.
    expected = (1.0 * 0.5 + 0.5 * 3.8 / (3.8 + 1.9)) / 2
    assert cold_wakeups(cpu, wakes, 500.0, 1.9) == pytest.approx(expected)
    assert cold_wakeups(cpu, {"client_sidecar": 1.0}, 500.0, 1.9) is None


def test_the_fit_recovers_a_cold_wake_ups_cost_and_the_probes_decay() -> None:
    """A synthetic lab whose sidecars pay 300 us per fully cold wake-up, cooled with a 3 ms
    time constant: the fit charges that cost and the probe's decay. Fitted as a constant
    (no probe), a wake-up comes out at a fraction of it and the bare cost low: neither is
    right (62 and 57 us)."""
    from test_calibrate_mechanisms import BARE_US, WAKEUP_US, synthetic_record

    from meshsim.calibrate.calibration import fit_model

    cold_us, decay_ms = 300.0, 3.0
    data = synthetic_record()
    _cool(data, WAKEUP_US, cold_us, decay_ms)
    constant = fit_model(data)["parameters"]
    data["cache_cooling"] = _curve(decay_ms)
    doc = fit_model(data)
    v = {k: q["value"] for k, q in doc["parameters"].items()}
    assert v["wakeup_cache_decay_ms"] == pytest.approx(decay_ms, rel=0.032)
    assert v["wakeup_cpu_us"] == pytest.approx(cold_us, rel=0.05)
    bare_keys = ("socket_io_us", "http_parse_request_us", "http_parse_response_us",
                 "telemetry_us", "routing_us")  # fmt: skip
    assert sum(v[k] for k in bare_keys) == pytest.approx(BARE_US, abs=2.0)
    assert doc["fit"]["cache_cooling"]["fit"]["decay_ms"] == v["wakeup_cache_decay_ms"]
    assert "wakeup_cache_decay_ms" not in constant
    assert constant["wakeup_cpu_us"]["value"] < 0.5 * cold_us
    assert sum(constant[k]["value"] for k in bare_keys) < BARE_US - 10.0


@pytest.mark.slow
def test_rescaled_cold_wake_ups_charge_the_labs_cold_wake_up_cpu(lab_model_1kib: Path) -> None:
    """With a decay the rescaling counts cold wake-ups on both sides: at the fit points the
    CPU the simulator charged for wake-ups equals the lab's switches, each weighted by the
    share its mean sleep cooled, times the fitted cold cost (to the 2 % it stops at)."""
    from meshsim.calibrate.sim_terms import fit_points, lab_wakeups, rescale_wakeups

    model = lab_model_1kib
    doc = yaml.safe_load(model.read_text())
    doc["parameters"]["wakeup_cache_decay_ms"] = {"value": 1.0, "unit": "ms", "source": "test"}
    model.write_text(yaml.safe_dump(doc, sort_keys=False))
    fit = json.loads(model.with_suffix(".fit.json").read_text())
    per_switch = fit["wakeup_scale"]["per_switch_us"]
    record = rescale_wakeups(model, duration_s=0.6, log=lambda _: None)
    assert record is not None
    lab = sum(lab_wakeups(r, 1.0) for r in fit_points(fit))
    simulated = sum(p["simulated_idle_bursts"] for p in record["points"])
    cost = yaml.safe_load(model.read_text())["parameters"]["wakeup_cpu_us"]["value"]
    assert simulated * cost == pytest.approx(lab * per_switch, rel=0.03)
    # A cold wake-up's share is below one: fewer of them than switches.
    assert lab < sum(lab_wakeups(r) for r in fit_points(fit))


def test_the_report_says_how_fast_the_host_cooled() -> None:
    from meshsim.calibrate.validation_report import calibration_lines

    fit = json.loads((ROOT / "models/calibrated/lab.fit.json").read_text())
    fit.pop("cache_cooling", None)  # a record from before the probe
    assert not any("cache cooling" in line for line in calibration_lines(fit))
    fit["cache_cooling"] = {"curve": {**_curve(3.0), "probes": 3}, "fit": {"decay_ms": 3.0}}
    lines = calibration_lines(fit)
    cooling = [line for line in lines if "cache cooling" in line]
    assert cooling == [
        "- the host's cache cooling (wakeup_cache_decay_ms): 3.00 ms, from a pinned process's "
        "1024 KiB walk woken after a sleep (40 us after 0 ms, 54 us after 0.3 ms, 83 us after "
        "1 ms, 135 us after 3 ms, 185 us after 10 ms, 190 us after 30 ms; 3 probes over the "
        "run)"
    ]
    assert any("per fully cold wake-up" in line for line in lines)


def test_the_black_box_fit_counts_cold_wake_ups_the_same_way() -> None:
    """The black box's constructed lab (tests/test_proxy_cmd.py) with a 200 us cold wake-up
    cooled over 2 ms: the command's fit gives back both, as the Python proxy's does. Its
    connection costs take each mode's wake-ups out at the share its sleeps cooled: 100
    requests in 0.1 s at 50 us of CPU and one wake-up each sleep 0.95 ms, a 0.322 share."""
    from test_proxy_cmd import PLAIN_CONN, WAKEUP_US, _constructed_record

    from meshsim.calibrate.blackbox_fit import fit_command_model
    from meshsim.calibrate.cache_cooling import cold_share

    cold_us, decay_ms = 200.0, 2.0
    data = _constructed_record()
    _cool(data, WAKEUP_US, cold_us, decay_ms)
    for block in data["connection_costs"]:
        for mode in ("keepalive", "plain_connection"):
            block[mode] = {"cpu_us": 50.0, "wakeups": 1.0, "seconds": 0.1}
        block["plain_connection"]["cpu_us"] = 50.0 + PLAIN_CONN[0]
    data["cache_cooling"] = _curve(decay_ms)
    doc = fit_command_model(data, name="t")
    v = {k: q["value"] for k, q in doc["parameters"].items()}
    assert v["wakeup_cache_decay_ms"] == pytest.approx(decay_ms, rel=0.032)
    assert v["wakeup_cpu_us"] == pytest.approx(cold_us, rel=0.05)
    assert doc["fit"]["cache_cooling"]["fit"]["decay_ms"] == v["wakeup_cache_decay_ms"]
    # Keep-alive: 0.95 ms asleep per wake-up; new connections: (0.1 s - 150 us) / 100.
    ka = 50.0 - v["wakeup_cpu_us"] * cold_share(0.95, v["wakeup_cache_decay_ms"])
    conn = 150.0 - v["wakeup_cpu_us"] * cold_share(0.85, v["wakeup_cache_decay_ms"])
    assert v["tcp_connection_cpu_us"] == pytest.approx(conn - ka, abs=0.01)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="the probe pins processes to two cores (Linux)",
)
def test_the_real_probe_times_cold_and_warm_walks_on_this_machine() -> None:
    """The probe on this machine's first two cores: a median per gap, each walk of a 256 KiB
    working set (4096 lines) taking some CPU; the second walk of a wake-up, warm, no dearer
    than ten times the cold one (it reads the same lines)."""
    from meshsim.calibrate.cache_cooling import probe

    a, b = sorted(os.sched_getaffinity(0))[:2]
    out = probe(b, a, gaps_ms=(0.0, 5.0), repeats=5, working_set_kib=256)
    assert out["gaps_ms"] == [0.0, 5.0]
    assert len(out["cold_us"]) == len(out["warm_us"]) == 2
    assert all(x > 0.0 for x in out["cold_us"] + out["warm_us"])
    assert all(w < 10.0 * c for c, w in zip(out["cold_us"], out["warm_us"], strict=True))


def test_a_probe_that_cannot_run_leaves_the_fit_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshsim.calibrate import cache_cooling

    def fail(*_args: object, **_kw: object) -> dict[str, Any]:
        raise TimeoutError("the child did not connect")

    monkeypatch.setattr(cache_cooling, "probe", fail)
    assert cache_cooling.probe_lab([0, 1]) is None
    assert cache_cooling.merge([None, None]) is None
