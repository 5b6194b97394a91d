"""A host's slow spells: fitted from the lab's periods (meshsim.calibrate.host_spells) and
simulated on top of its phases (cluster.host_speed.spells, meshsim.sim.cpu.host_speed)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy

from meshsim.calibrate.host_spells import (
    fit_cores,
    fit_spells,
    spell_periods,
    spell_spec,
    without_spells,
)
from meshsim.scenario.host import HostSpeed
from meshsim.sim.cluster import Node
from meshsim.sim.cpu import host_speed


def _sidecar(cpu_ms: list[float], requests: list[int]) -> dict[str, Any]:
    return {"cpu_ms_series": cpu_ms, "requests_series": requests}


def _point(spells: list[range], factor: float = 1.5, periods: int = 50) -> dict[str, Any]:
    """Fifty periods of 500 requests at 25 ms, 1.5 times that in the spells' periods."""
    cpu = [25.0] * periods
    for run in spells:
        for k in run:
            cpu[k] = 25.0 * factor
    return {"server_sidecar": _sidecar(cpu, [500] * periods)}


def test_spells_are_runs_of_periods_above_the_threshold() -> None:
    point = _point([range(10, 14), range(30, 33)])
    slow = spell_periods(point["server_sidecar"])
    assert slow is not None
    assert list(np.flatnonzero(slow)) == [10, 11, 12, 13, 30, 31, 32]
    # Two points: 4 + 3 and 2 spell periods in 100, three spells, each 1.5 times the rest.
    fit = fit_spells([point, _point([range(0, 2)])], "server_sidecar")
    assert fit is not None
    assert fit.factor.value == pytest.approx(1.5)
    assert fit.share.value == pytest.approx(9 / 100)
    assert fit.dwell_ms.value == pytest.approx(9 / 3 * 100.0)
    assert (fit.periods, fit.spells, fit.points) == (100, 3, 2)


def test_too_few_requests_or_no_series_say_nothing() -> None:
    assert spell_periods({"cpu_cv": 0.1}) is None  # an older record: figures only
    assert spell_periods(_sidecar([25.0] * 50, [40] * 50)) is None
    assert fit_spells([{"server_sidecar": {"cpu_cv": 0.1}}], "server_sidecar") is None


def test_a_core_without_spells_fits_none_and_each_core_is_its_sidecars() -> None:
    quiet = {"client_sidecar": _sidecar([25.0] * 50, [500] * 50)}
    busy = _point([range(5, 8)])
    cores = fit_cores([{**quiet, **busy}], {"client_sidecar": 0, "server_sidecar": 1})
    assert cores["0"]["spells"] == 0
    assert cores["0"]["share"]["value"] == 0.0
    assert cores["1"]["spells"] == 1
    assert cores["1"]["dwell_ms"]["value"] == pytest.approx(300.0)


def test_the_drift_is_fitted_from_the_periods_out_of_spells() -> None:
    point = _point([range(10, 14)])
    # Constant out of the spells: nothing left to vary there.
    figures = without_spells(point)["server_sidecar"]
    assert figures["periods"] == 46
    assert figures["cpu_cv"] == pytest.approx(0.0, abs=1e-12)
    # A record without series keeps its figures.
    assert without_spells({"server_sidecar": {"cpu_cv": 0.1}}) == {
        "server_sidecar": {"cpu_cv": 0.1}
    }
    # Too few requests a period to tell a spell: every period, as figures() reads them now
    # (with the residual on the requests), not the figures the record was written with.
    few = {**_sidecar([2.0, 2.4, 2.1, 2.6, 2.2, 2.3], [40, 48, 42, 50, 45, 47]), "cpu_cv": 0.9}
    again = without_spells({"server_sidecar": few})["server_sidecar"]
    assert again["periods"] == 6
    assert again["cpu_cv"] < 0.9
    assert "residual_cv" in again


def test_the_simulated_spells_keep_the_fits_mean_cost() -> None:
    spec = spell_spec(
        {"factor": {"value": 1.5}, "share": {"value": 0.1}, "dwell_ms": {"value": 300.0}}
    )
    mean = (1 - spec["slow_share"]) * spec["fast_factor"] + spec["slow_share"] * spec["slow_factor"]
    assert mean == pytest.approx(1.0)
    assert spec["slow_factor"] / spec["fast_factor"] == pytest.approx(1.5)
    assert spec["slow_dwell_ms"] == 300.0


def _speeds(spec: HostSpeed, seconds: float, seed: int = 4) -> tuple[np.ndarray, Node]:
    """``node.speed`` every 1 ms over ``seconds`` of a node running ``spec``."""
    env = simpy.Environment()
    node = Node(env, 0, 1)
    host_speed.start(env, node, spec, np.random.default_rng(seed))
    seen: list[float] = []

    def probe() -> Generator[simpy.Event, Any, None]:
        while True:
            seen.append(node.speed)
            yield env.timeout(0.001)

    env.process(probe())
    env.run(until=seconds)
    return np.array(seen), node


def test_spells_multiply_the_phases() -> None:
    """Phases of 1 and 1.6 (half the time, 5 ms) and spells of 2x (a quarter of the time,
    50 ms): the node runs at each product, and on average at the product of the means.
    Over 200 s the spells' share of time has a standard deviation of about 0.008 (an
    alternating renewal process, correlation time 37.5 ms): 0.03 is 3.5 of them."""
    spells = HostSpeed(slow_factor=2.0, slow_share=0.25, slow_dwell_ms=50.0)
    spec = HostSpeed(slow_factor=1.6, slow_share=0.5, slow_dwell_ms=5.0, spells=spells)
    seen, _ = _speeds(spec, 200.0)
    assert set(np.round(seen, 9)) == {1.0, 1.6, 2.0, 3.2}
    assert float(np.mean(seen >= 2.0)) == pytest.approx(0.25, abs=0.03)
    assert float(seen.mean()) == pytest.approx(spec.mean_factor(), rel=0.03)
    assert spec.mean_factor() == pytest.approx(1.3 * 1.25)


def test_spells_do_not_change_the_phases_draws() -> None:
    phases = {"slow_factor": 1.6, "slow_share": 0.5, "slow_dwell_ms": 5.0}
    spells = HostSpeed(slow_factor=2.0, slow_share=0.25, slow_dwell_ms=50.0)
    _, alone = _speeds(HostSpeed(**phases), 20.0)
    _, both = _speeds(HostSpeed(**phases, spells=spells), 20.0)
    assert alone.slow_phases == both.slow_phases > 0


def test_spells_are_two_states() -> None:
    with pytest.raises(ValueError, match="spells are two states"):
        HostSpeed(
            slow_factor=1.0, slow_share=0.0, slow_dwell_ms=1.0, spells=HostSpeed(trace=[1.0, 2.0])
        )


def test_the_simulated_lab_runs_each_node_with_its_cores_spells() -> None:
    from meshsim.calibrate.lab_scenario import host_speed as lab_host_speed

    spells = {
        "factor": {"value": 1.5}, "share": {"value": 0.1}, "dwell_ms": {"value": 300.0},
        "periods": 500, "spells": 5, "points": 10,
    }  # fmt: skip
    quiet = {**spells, "spells": 0, "share": {"value": 0.0}}
    fit = {"placement": {"echo": 1, "client_sidecar": 0}}
    out = lab_host_speed(fit, None, None, {"1": spells, "0": quiet})["host_speed"]
    # Node 0 holds the echo (lab core 1, which had spells), node 1 the client sidecar.
    assert out[0]["spells"] == spell_spec(spells)
    assert out[0]["slow_share"] == 0.0  # no phases measured: constant under the spells
    assert "spells" not in out[1]
    HostSpeed(**out[0])  # a valid scenario value
    # No spells given: nothing to add.
    assert lab_host_speed(fit, None, None) == {}


def test_a_held_out_point_is_predicted_with_the_spells_its_own_passes_had() -> None:
    from meshsim.calibrate.host_spells import point_spells

    placement = {"client_sidecar": 0, "server_sidecar": 1}

    def held(spells: list[range], **kw: Any) -> dict[str, Any]:
        return {"config": "plain-ka-f0", "payload_bytes": 1024, "rps": 5000.0,
                "period_cpu": _point(spells), **kw}  # fmt: skip

    plain = [held([range(3, 5)]), held([])]
    # A CPU-limited point takes its own passes' spells, not its unlimited twin's.
    limited = [held([], cgroup={"limit_m": 300}), held([range(7, 10)], cgroup={"limit_m": 300})]
    for passes, dwell in ((plain, 200.0), (limited, 300.0)):
        spells = point_spells(placement, passes)["1"]
        assert (spells["spells"], spells["periods"]) == (1, 100)
        assert spells["dwell_ms"]["value"] == pytest.approx(dwell)
    # A point whose passes had none has none, whatever the fit points had.
    assert point_spells(placement, [held([])])["1"]["spells"] == 0


def test_the_report_names_each_cores_spells() -> None:
    from meshsim.calibrate.throttled_report import spell_sentence

    point = {**_point([range(10, 14)]), "client_sidecar": _sidecar([25.0] * 50, [500] * 50)}
    cores = fit_cores([point, point], {"client_sidecar": 0, "server_sidecar": 1})
    text = spell_sentence({"host_spells": cores})
    assert "core 0 none in 100 periods" in text
    assert "core 1 1.50x (95% CI 1.50..1.50) for 400 ms (400..400), 8.0 % of the time" in text
    assert "no slow spells" in spell_sentence({})


def test_a_throttled_points_simulated_runs_stand_beside_its_passes() -> None:
    from meshsim.calibrate.validate import Comparison
    from meshsim.calibrate.validation_tables import spread_table

    figures = {"p50": 1.0, "p90": 1.5, "p99": 3.0, "rps": 5000.0}
    r = Comparison(
        point={"config": "plain-ka-f0", "payload_bytes": 1024, "rps": 5000.0},
        measured=figures,
        predicted=figures,
        error_pct=dict.fromkeys(figures, 0.0),
        utilisation=0.3,
        saturation=False,
        spread={"p50": [0.9, 1.1], "p99": [2.1, 42.3], "rps": [4990.0, 5010.0]},
        passes=3,
        cpu_limit_m=300.0,
        simulated_runs={"p50": [1.0, 1.0, 1.1], "p99": [2.5, 10.64, 2.8]},
    )
    text = spread_table([r])
    assert text.splitlines()[1].endswith("  2.50..10.64")
    assert "whose median is the speed-adjusted prediction, each a pass long" in text
    assert r.to_json()["simulated_runs"]["p99"] == [2.5, 10.64, 2.8]
    # An unlimited point has no runs column.
    r.simulated_runs = {}
    assert "simulated runs" not in spread_table([r])
