"""The workload's release_tick_ms: requests released on a load generator's timer ticks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict

SERVICE_MS = 0.001


def _doc(arrival: str, rate: float, tick: float | None, *, mesh: str = "none") -> dict[str, Any]:
    workload: dict[str, Any] = {
        "name": "load",
        "target": "echo",
        "arrival": arrival,
        "rate_rps": rate,
    }
    if tick is not None:
        workload["release_tick_ms"] = tick
    return {
        "meshsim": 1,
        "name": "release-tick",
        "seed": 5,
        "duration_s": 4.0,
        "warmup_s": 0.0,
        "meshes": [mesh],
        "cluster": {
            "nodes": 1,
            "cores_per_node": 16,
            "network": {"same_node_us": 0, "cross_node_us": 0, "client_us": 0},
        },
        "services": [{"name": "echo", "replicas": 1, "concurrency": 64, "cpu_ms": SERVICE_MS}],
        "workloads": [workload],
    }


def _latency(doc: dict[str, Any]) -> dict[str, float]:
    mesh = doc["meshes"][0]
    out: dict[str, float] = build_summary(run_scenario(from_dict(doc)))["runs"][mesh]["workloads"][
        "load"
    ]["latency_ms"]
    return out


def test_constant_arrivals_wait_for_the_nearest_tick() -> None:
    # Intended times 0.4 ms apart on a 1 ms tick repeat every 2 ms: of 0.4, 0.8, 1.2, 1.6,
    # 2.0 ms, released at 0, 1, 1, 2, 2 ms, two leave late (by 0.2 and 0.4 ms) and three on
    # time or early (counted from their release): a mean wait of 0.12 ms, a worst of 0.4.
    plain = _latency(_doc("constant", 2500.0, None))
    ticked = _latency(_doc("constant", 2500.0, 1.0))
    assert ticked["mean"] - plain["mean"] == pytest.approx(0.12, abs=0.002)
    assert ticked["p50"] == pytest.approx(plain["p50"], rel=0.02)  # histogram precision
    # p90 is a histogram bucket's value: 2 % precision.
    assert ticked["p90"] - plain["p50"] == pytest.approx(0.4, rel=0.02)


def test_poisson_arrivals_wait_an_eighth_of_a_tick_on_average() -> None:
    # A Poisson arrival's offset from its nearest tick is uniform on (-tick/2, tick/2): half
    # leave late, by tick/4 on average, so the mean wait is tick/8. 16,000 requests: the
    # standard error of the mean wait is 0.0016 ms.
    plain = _latency(_doc("poisson", 4000.0, None))
    ticked = _latency(_doc("poisson", 4000.0, 2.0))
    assert ticked["mean"] - plain["mean"] == pytest.approx(2.0 / 8, abs=0.008)


def test_poisson_clumps_match_the_closed_form() -> None:
    # Each tick with at least one arrival releases once: x / (1 - exp(-x)) requests per
    # release, x the arrivals per tick (3.29 at 3150 rps on 1 ms). 12,600 requests in ~3,800
    # releases: the clump size's standard error is about 0.02.
    doc = _doc("poisson", 3150.0, 1.0)
    out = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]["workloads"]["load"]
    x = 3150.0 * 1e-3
    assert out["requests_per_release"] == pytest.approx(x / -math.expm1(-x), abs=0.08)


@pytest.mark.long
def test_a_busy_core_makes_bigger_clumps() -> None:
    # A load generator on the client sidecar's core (client_cpu_ms, meshed_clients) sends
    # what is due once it has the core back. The same arrivals (same seed) then leave in
    # fewer, bigger clumps than from a generator that needs no core (its client_cpu_ms
    # omitted); each release's window only ever ends later.
    def per_release(client_cpu: float | None) -> float:
        doc = _doc("poisson", 3150.0, 1.0, mesh="istio")
        doc["cluster"].update({"nodes": 2, "cores_per_node": 1})
        if client_cpu is not None:
            doc["workloads"][0]["client_cpu_ms"] = client_cpu
        doc["mesh_options"] = {"meshed_clients": True, "istio": {"workers": 1}}
        run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
        value: float = run["workloads"]["load"]["requests_per_release"]
        return value

    assert per_release(0.2) > 1.005 * per_release(None)


def test_a_clump_takes_in_what_falls_due_while_the_loop_sends_it() -> None:
    # The lab's load generator sends a clump one request at a time and reads its clock
    # before each: the half tick it sends within moves on with the CPU of the sends before
    # it (half of client_cpu_ms each). Requests due at 0.2, 0.4, 0.6 and 0.8 ms on a 1 ms
    # grid: at tick 0 the half tick ends at 0.5 ms. Sending one in 0.04 ms moves it to
    # 0.54 and 0.58 ms: 0.6 waits for tick 1 (two clumps of two; each request counted from
    # when the loop reached it, or from when it was due if that came first: 0, 0.04, 0.6,
    # 0.8 ms). In 0.12 ms, to 0.62, 0.74, 0.86: all four leave in one, reached at 0, 0.12,
    # 0.24 and 0.36 ms.
    def clumps(client_cpu_ms: float) -> tuple[int, list[float]]:
        from meshsim.sim.engine import Simulation

        doc = _doc("constant", 5000.0, 1.0, mesh="istio")
        doc["duration_s"] = 0.0009
        doc["mesh_options"] = {"meshed_clients": True}
        doc["workloads"][0]["client_cpu_ms"] = client_cpu_ms
        sims: list[Simulation] = []
        run_scenario(from_dict(doc), keep_records=True, observe=sims.append)
        (driver,) = sims[0].workloads
        assert driver.sent == 4
        records = sims[0].recorder.records or []
        starts = sorted(r.started_at * 1e3 for r in records if r.kind == "workload")
        return driver.releases_in_window or 0, starts

    assert clumps(0.08) == (2, pytest.approx([0.0, 0.04, 0.6, 0.8]))
    assert clumps(0.24) == (1, pytest.approx([0.0, 0.12, 0.24, 0.36]))


@pytest.mark.long
def test_clumps_share_a_sidecar_wake_up() -> None:
    # One release per tick that has an arrival: lambda * tick / (1 - exp(-lambda * tick))
    # requests per release (3.3 at 3150 rps on 1 ms). The client sidecar wakes once per
    # clump instead of once per request, so its wake-ups per request fall.
    def wakeups(tick: float | None) -> float:
        # The calibration lab's shape: two one-core nodes, one worker per sidecar.
        doc = _doc("poisson", 3150.0, tick, mesh="istio")
        doc["cluster"].update({"nodes": 2, "cores_per_node": 1})
        doc["mesh_options"] = {
            "meshed_clients": True,
            "istio": {
                "workers": 1,
                "h2_upgrade": False,
                "mtls": "DISABLE",
                "model": "models/calibrated/lab.yaml",
            },
        }
        run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
        side = run["proxies"]["by_kind"]["sidecar"]
        value: float = side["wakeups"] / side["requests"]
        return value

    assert wakeups(1.0) < 0.7 * wakeups(None)


def test_a_closed_loop_has_no_release_tick() -> None:
    doc = _doc("closed", 1.0, 1.0)
    w = doc["workloads"][0]
    del w["rate_rps"]
    w["clients"] = 2
    with pytest.raises(ScenarioError, match="release_tick_ms"):
        from_dict(doc)


def test_release_tick_must_be_positive() -> None:
    with pytest.raises(ScenarioError, match="release_tick_ms"):
        from_dict(_doc("poisson", 100.0, 0.0))


def test_requests_due_halfway_between_ticks_are_released() -> None:
    """At 2000 rps on a 1 ms tick every other intended time is halfway between two ticks,
    and the nearest tick rounds to one whose half-tick horizon ends exactly on it: the
    release must take it (a request at the horizon is within half a tick), or the loop
    would wait for that same tick forever. Two requests leave per release."""
    import signal

    def hung(*_: object) -> None:  # a guard against the endless loop, not a speed goal
        raise TimeoutError("the release loop did not advance")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        doc = _doc("constant", 2000.0, 1.0)
        run = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]["workloads"]["load"]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert run["achieved_rps"] == pytest.approx(2000.0, rel=1e-3)
    assert run["requests_per_release"] == pytest.approx(2.0, abs=0.01)


def _timed(arrival: str, rate: float, lateness: list[float]) -> dict[str, Any]:
    doc = _doc(arrival, rate, 1.0)
    doc["workloads"][0]["release_lateness_ms"] = lateness
    out: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]["workloads"][
        "load"
    ]
    return out


def test_a_late_timer_delays_each_request_by_its_lateness() -> None:
    # Requests 10 ms apart, each slept for: the timer fires 0.3 ms after each is due, and
    # each leaves alone, 0.3 ms late (its latency counts from its intended time).
    plain = _latency(_doc("constant", 100.0, None))
    late = _timed("constant", 100.0, [0.3, 0.3])
    assert late["latency_ms"]["mean"] - plain["mean"] == pytest.approx(0.3, abs=1e-6)
    assert late["requests_per_release"] == pytest.approx(1.0)


def test_an_early_timer_sends_early_and_counts_from_the_send() -> None:
    plain = _latency(_doc("constant", 100.0, None))
    early = _timed("constant", 100.0, [-0.3, -0.3])
    assert early["latency_ms"]["mean"] == pytest.approx(plain["mean"], abs=1e-6)
    assert early["requests_per_release"] == pytest.approx(1.0)


@pytest.mark.parametrize("lateness", [[0.5, 0.5], [0.0, 1.0]])
def test_timer_clumps_match_the_closed_form(lateness: list[float]) -> None:
    # A release sends the request it slept for and every one due by half a tick after the
    # timer fired: 1 + rate x (mean lateness + tick / 2) requests, 4.15 at 3150 rps with a
    # mean lateness of 0.5 ms on a 1 ms tick. The quantiles [0, 1] (at 1/4 and 3/4) draw a
    # quarter at 0, half uniform between, a quarter at 1: a mean of 0.5 too. About 3,000
    # releases of 12,600 requests: the clump size's standard error is about 0.04.
    out = _timed("poisson", 3150.0, lateness)
    assert out["requests_per_release"] == pytest.approx(1 + 3.15 * (0.5 + 0.5), abs=0.15)


def test_release_lateness_needs_a_tick_and_increasing_quantiles() -> None:
    doc = _doc("poisson", 100.0, None)
    doc["workloads"][0]["release_lateness_ms"] = [0.1, 0.2]
    with pytest.raises(ScenarioError, match="needs 'release_tick_ms'"):
        from_dict(doc)
    doc = _doc("poisson", 100.0, 1.0)
    doc["workloads"][0]["release_lateness_ms"] = [0.3, 0.2]
    with pytest.raises(ScenarioError, match="increasing order"):
        from_dict(doc)


def _event_loop_lateness(
    rate: float, service_ms: float, slack_us: float, seconds: float
) -> list[float]:
    """The timer lateness (ms) of each wake-up of a ``release_timer: event_loop`` load
    generator, its requests served in ``service_ms`` with nothing else on the way."""
    from meshsim.sim.engine import Simulation

    doc = _doc("constant" if seconds < 1.0 else "poisson", rate, 1.0)
    doc["duration_s"] = seconds
    doc["workloads"][0].update({"release_timer": "event_loop", "timer_slack_us": slack_us})
    doc["services"][0]["cpu_ms"] = service_ms
    sims: list[Simulation] = []
    run_scenario(from_dict(doc), observe=sims.append)
    return [v * 1e3 for w in sims[0].workloads for v in w.release_lateness_s]


def test_an_event_loop_timer_sleeps_whole_ticks_from_its_last_sleep() -> None:
    # Requests 10 ms apart, each answered r ms after it leaves (r = 0.0026: the 1 us
    # service and the payload's copies). Each sleep is armed for the clock's truncated
    # millisecond plus the rounded delay, and the loop sleeps whole milliseconds from its
    # last sleep (the last answer), then the 0.3 ms slack: the first fires 0.3 ms late; the
    # second is armed at 10.3 ms for 20 (9.7 rounds to 10) and sleeps 10 ms from 10.3 + r,
    # 0.6 + r late; the third is armed at 20.6 + r for 29 (9.4 - r rounds to 9) and sleeps
    # 9 ms from 20.6 + 2r, early; the fourth, armed at 29.9 + 2r for 39, is 0.2 + 3r late.
    r = _latency(_doc("constant", 100.0, None))["mean"]
    late = _event_loop_lateness(100.0, 0.001, 300.0, 0.045)
    assert late == pytest.approx([0.3, 0.6 + r, -0.1 + 2 * r, 0.2 + 3 * r], abs=1e-6)


def test_an_event_loop_timer_is_armed_once_its_clump_is_sent() -> None:
    # uvloop's call_later reads the clock as it arms the timer, and the lab's load
    # generator arms its next sleep after sending the clump: the clock has moved on by the
    # sends' CPU (half of client_cpu_ms each). Requests 10 ms apart, answered in about 6 ms;
    # the first leaves at 10.3 ms (0.3 ms of slack). Sent in 0.1 ms, the next sleep is armed
    # at 10.4 for 20 (9.6 rounds to 10) and fires late; sent in 0.5 ms, it is armed at 10.8
    # for 19 (9.2 rounds to 9), and the loop, asleep since the answer, fires it early.
    def lateness(client_cpu_ms: float) -> list[float]:
        from meshsim.sim.engine import Simulation

        doc = _doc("constant", 100.0, 1.0, mesh="istio")
        doc["duration_s"] = 0.025
        doc["services"][0]["cpu_ms"] = 5.0
        doc["mesh_options"] = {"meshed_clients": True}
        doc["workloads"][0].update(
            {"release_timer": "event_loop", "timer_slack_us": 300.0, "client_cpu_ms": client_cpu_ms}
        )
        sims: list[Simulation] = []
        run_scenario(from_dict(doc), observe=sims.append)
        return [v * 1e3 for w in sims[0].workloads for v in w.release_lateness_s]

    quick, slow = lateness(0.2), lateness(1.0)
    assert quick[0] == pytest.approx(0.3)
    assert slow[0] == pytest.approx(0.3)
    assert 0.3 < quick[1] < 1.3  # due 20 ms: a whole tick from the answer, plus the slack
    assert -0.7 < slow[1] < 0.0  # due 19 ms: the same, a tick sooner


def test_an_event_loop_timer_fires_for_a_response_past_its_tick() -> None:
    # Answered 9.8 + e ms after leaving (e: the payload's copies): the first request
    # leaves at 10.3 ms (0.3 slack). The second's timer is due at 20 ms and its loop would
    # wake at 20.6 (10 ms from 10.3, plus the slack), but the first answer wakes it at
    # 20.1 + e: it fires then. The third's is due at 30, and the second answer (at
    # 29.9 + 2e) reset the loop's sleep to a whole millisecond from then: 1.2 + 2e late.
    plain = _doc("constant", 100.0, None)
    plain["services"][0]["cpu_ms"] = 9.8
    e = _latency(plain)["mean"] - 9.8
    late = _event_loop_lateness(100.0, 9.8, 300.0, 0.035)
    assert late == pytest.approx([0.3, 0.1 + e, 1.2 + 2 * e], abs=1e-6)


def test_an_event_loop_timer_is_within_half_a_tick_plus_its_slack() -> None:
    # Sleeping through (requests 50 ms apart on average, answered in 1 us), a request due
    # d ticks after the loop armed its timer is released round(d) - d + slack ticks late:
    # uniform within half a tick of the slack. With 0.2 ms of slack: mean 0.2 ms, early
    # 30 % of the time, none beyond 0.7 ms. About 1,200 wake-ups: standard errors 0.008 ms
    # on the mean and 0.013 on the share early; the gaps' fractional parts are uniform
    # within 2 % at this rate. Outside the band only where the answer (2.6 us after the
    # release) crosses a tick before the loop sleeps, a tick earlier: 0.26 % of wake-ups.
    late = _event_loop_lateness(20.0, 0.001, 200.0, 60.0)
    assert len(late) > 1000
    assert sum(late) / len(late) == pytest.approx(0.2, abs=0.03)
    assert sum(v < 0 for v in late) / len(late) == pytest.approx(0.3, abs=0.045)
    outside = [v for v in late if not -0.3 - 1e-6 <= v <= 0.7 + 0.003]
    assert len(outside) <= 0.01 * len(late)
    assert all(v < -0.3 for v in outside)


def test_release_timer_needs_a_tick_and_excludes_a_drawn_lateness() -> None:
    doc = _doc("poisson", 100.0, None)
    doc["workloads"][0]["release_timer"] = "event_loop"
    with pytest.raises(ScenarioError, match="needs 'release_tick_ms'"):
        from_dict(doc)
    doc = _doc("poisson", 100.0, 1.0)
    doc["workloads"][0].update({"release_timer": "event_loop", "release_lateness_ms": [0, 1]})
    with pytest.raises(ScenarioError, match="give one"):
        from_dict(doc)


def test_a_timer_on_an_idle_core_waits_for_the_host_to_run_it() -> None:
    # The test above's first timer, the loop asleep and its node idle: it fires at 10.3 ms
    # (0.3 ms of slack) and the loop runs one draw of cluster.idle_wakeup_latency later, here
    # a constant 80 us; without the key nothing is added.
    from meshsim.sim.engine import Simulation

    def lateness(idle: dict[str, Any] | None, app_ms: float = 5.0) -> list[float]:
        doc = _doc("constant", 100.0, 1.0, mesh="istio")
        doc["duration_s"] = 0.025
        doc["services"][0]["cpu_ms"] = app_ms
        doc["mesh_options"] = {"meshed_clients": True}
        doc["workloads"][0].update(
            {"release_timer": "event_loop", "timer_slack_us": 300.0, "client_cpu_ms": 0.2}
        )
        if idle is not None:
            doc["cluster"]["idle_wakeup_latency"] = idle
        sims: list[Simulation] = []
        run_scenario(from_dict(doc), observe=sims.append)
        return [v * 1e3 for w in sims[0].workloads for v in w.release_lateness_s]

    fixed = {"percentiles_us": {0: 80.0, 100: 80.0}}
    plain, idle = lateness(None), lateness(fixed)
    assert plain[0] == pytest.approx(0.3)
    assert idle[0] == pytest.approx(0.38)
    # The second timer: its loop went to sleep 0.08 ms later after the late first release,
    # so it fires 0.08 ms later whatever the node does. With the echo's 12 ms of CPU from
    # 10.4 ms a core of the node is busy then: nothing more. With 5 ms the node is idle
    # again: one more draw.
    busy_plain, busy_idle = lateness(None, app_ms=12.0), lateness(fixed, app_ms=12.0)
    assert busy_idle[0] == pytest.approx(0.38)
    assert busy_idle[1] - busy_plain[1] == pytest.approx(0.08)
    assert idle[1] - plain[1] == pytest.approx(0.16)
    doc = _doc("poisson", 100.0, 1.0)
    doc["cluster"]["idle_wakeup_latency"] = [{"percentiles_us": {50: 1.0}}] * 2
    with pytest.raises(ScenarioError, match="idle_wakeup_latency lists 2 nodes"):
        from_dict(doc)
