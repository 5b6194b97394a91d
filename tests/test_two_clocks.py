"""One policy, two clocks: the simulator and the real proxy program and walk the same chain.

1. The translation: for every scenario in ``scenarios/`` and every mesh that applies traffic
   rules, the policies the simulator's data plane holds and the ones a proxy listener gets
   for the same rule (its ``traffic`` mapping, as ``meshsim lab`` writes it) are equal
   objects, defaults included; a rule one refuses, the other refuses with the same words.
2. The chain: the same script of upstream outcomes (503, 503, 200; a try that times out; a
   full breaker) through the simulator (simpy, a scripted attempt) and through the real
   proxy (asyncio, a scripted upstream on a socket) gives the same decisions, step by step:
   every pick, admission, recorded outcome and retry decision (delays included: both draw
   from a generator of the same seed, in the same order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy
from proxy.helpers import arun, get_once
from proxy.lab import proxy_for

from meshsim.errors import MeshsimError
from meshsim.policy.chain import ClusterRuntime, Exchange
from meshsim.policy.mapping import TRAFFIC_MESHES
from meshsim.proxy.lab import traffic_dict
from meshsim.proxy.policies import SUPPORTED_BALANCERS, listener_policy
from meshsim.scenario import from_dict, load_scenario
from meshsim.sim.app import Request
from meshsim.sim.engine import Simulation

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))

# --------------------------------------------------------------------------- 1. translation


def _sim_policies(scenario: Any, mesh: str) -> Any:
    sim = Simulation(scenario, mesh, 1)
    return sim.data_plane.resilience.policies  # type: ignore[attr-defined]


@pytest.mark.parametrize("mesh", TRAFFIC_MESHES)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_simulator_and_proxy_get_identical_policies(path: Path, mesh: str) -> None:
    scenario = load_scenario(path)
    options = scenario.mesh_options
    try:
        policies = _sim_policies(scenario, mesh)
    except MeshsimError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        # The simulator refuses the scenario: the proxy refuses the rule that is to blame,
        # in the same words.
        refused = []
        for rule in scenario.traffic:
            try:
                listener_policy(traffic_dict(rule), mesh, options)
            except MeshsimError as caught:
                refused.append(refusal in str(caught))
        assert any(refused), refusal
        return
    # A service no rule names: the mesh's defaults, on both clocks.
    default, _, budget = listener_policy({}, mesh, options)
    assert default.routes[0] == policies.default.routes[0]
    assert default.cluster == policies.default.cluster
    assert budget == policies.budget
    for rule in scenario.traffic:
        if rule.service not in policies.services:
            assert mesh == "istio-ambient"  # no waypoint: L4 only, rules not applied
            continue
        sim_policy = policies.policy(rule.service)
        if (rule.load_balancer or "least_request") not in SUPPORTED_BALANCERS and (
            sim_policy.cluster.hash_source
        ):
            with pytest.raises(MeshsimError, match="load_balancer"):
                listener_policy(traffic_dict(rule), mesh, options)
            continue  # the proxy has no source address to hash (the chain's table)
        proxy_policy, _, _ = listener_policy(traffic_dict(rule), mesh, options)
        route = proxy_policy.routes[0]
        # The rule's own route in the simulator's route table (a listener is one route).
        assert route in sim_policy.routes
        if sum(r.service == rule.service for r in scenario.traffic) == 1:
            assert proxy_policy.cluster == sim_policy.cluster
            assert proxy_policy.routes == sim_policy.routes


def test_the_scenarios_exercise_the_translation() -> None:
    """The comparison above covers retries, breakers, detection, splits and faults."""
    keys = set()
    for path in SCENARIOS:
        for rule in load_scenario(path).traffic:
            keys |= {k for k, v in rule if v is not None and k != "service"}
    assert {"retries", "circuit_breaker", "outlier_detection", "split", "fault"} <= keys


# --------------------------------------------------------------------------- 2. the chain


@dataclass(frozen=True)
class Step:
    """What the upstream does with one try: answer ``status`` after ``delay_s``."""

    status: int
    delay_s: float = 0.005


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every call of the chain's steps, in order, whichever clock makes it."""
    log: list[tuple[Any, ...]] = []
    pick, admit, record, decide = (
        Exchange.pick,
        ClusterRuntime.admit,
        ClusterRuntime.record,
        Exchange.decide,
    )

    def traced_pick(self: Exchange, cluster: ClusterRuntime, endpoints: list[Any],
                    *args: Any, **kw: Any) -> Any:  # fmt: skip
        host = pick(self, cluster, endpoints, *args, **kw)
        log.append(("pick", len(endpoints), None if host is None else 0))
        return host

    def traced_admit(self: ClusterRuntime) -> bool:
        ok = admit(self)
        log.append(("admit", ok))
        return ok

    def traced_record(self: ClusterRuntime, host: Any, outcome: Any, *args: Any) -> int:
        n = record(self, host, outcome, *args)
        log.append(("record", outcome.kind.value, outcome.status, n))
        return n

    def traced_decide(self: Exchange, host: Any, outcome: Any, *args: Any) -> Any:
        verdict = decide(self, host, outcome, *args)
        if self.route.retries or self.profile is not None:
            # A route without retries decides nothing (the proxy's fast path never asks).
            log.append(("decide", verdict.retry, verdict.event, round(verdict.delay_s, 12)))
        return verdict

    monkeypatch.setattr(Exchange, "pick", traced_pick)
    monkeypatch.setattr(ClusterRuntime, "admit", traced_admit)
    monkeypatch.setattr(ClusterRuntime, "record", traced_record)
    monkeypatch.setattr(Exchange, "decide", traced_decide)
    return log


def _scenario(traffic: dict[str, Any], mesh: str) -> Any:
    return from_dict({
        "meshsim": 1, "name": "two-clocks", "seed": 1, "duration_s": 10, "warmup_s": 0,
        "meshes": [mesh], "cluster": {"nodes": 1, "cores_per_node": 4},
        "services": [
            {"name": "frontend", "replicas": 1, "cpu_ms": 0.1, "calls": [{"service": "backend"}]},
            {"name": "backend", "replicas": 1, "cpu_ms": 0.1},
        ],
        "workloads": [{"name": "users", "target": "frontend", "arrival": "constant",
                       "rate_rps": 1}],
        "traffic": [{"service": "backend", **traffic}] if traffic else [],
    })  # fmt: skip


def simulated(
    traffic: dict[str, Any], mesh: str, script: list[Step], starts: list[float]
) -> list[int]:
    """The simulator's chain: requests sent at ``starts`` (seconds) from frontend's sidecar
    to backend, each try answered by the next step of ``script``. Returns the statuses in
    the order the requests ended, then how many steps were left unused."""
    sim = Simulation(_scenario(traffic, mesh), mesh, 1)
    env = sim.env
    dp: Any = sim.data_plane
    proxy = dp.sidecars[sim.services["frontend"].pods[0]]
    shared = np.random.default_rng(7)
    proxy.rng = shared
    dp.resilience.rng_retries = shared
    steps = list(script)

    def attempt(*args: Any) -> Generator[simpy.Event, Any, int]:
        connected = args[5] if len(args) > 5 else None
        if connected is not None:
            connected()  # a connection at once, as the proxy's to its scripted upstream
        step = steps.pop(0)
        yield env.timeout(step.delay_s)
        return step.status

    statuses: list[int] = []

    def send(at: float, n: int) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at)
        req = Request(n, "users", env.now, 100)
        status = yield from proxy.outbound(attempt, sim.services["backend"], req,
                                           proxy.workers[0], 100)  # fmt: skip
        statuses.append(status)

    start = env.now
    for n, at in enumerate(starts):
        env.process(send(at, n))
    env.run(until=start + 5)
    return [*statuses, len(steps)]


def proxied(
    traffic: dict[str, Any], mesh: str, script: list[Step], starts: list[float]
) -> list[int]:
    """The real proxy's chain: the same requests through a listener with ``traffic``, to a
    scripted upstream that answers each request with the next step of ``script`` (returns
    what :func:`simulated` returns)."""
    steps = list(script)
    statuses: list[int] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                step = steps.pop(0)
                await asyncio.sleep(step.delay_s)
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % step.status)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        from meshsim.proxy.policies import policy_for

        policy = policy_for(traffic, 1, mesh=mesh)
        async with proxy_for([port], policy=policy) as proxy:
            proxy.states["test"].route.rng = np.random.default_rng(7)
            listen = proxy.port("test")
            loop = asyncio.get_running_loop()
            t0 = loop.time()

            async def send(at: float) -> None:
                await asyncio.sleep(max(0.0, t0 + at - loop.time()))
                statuses.append((await get_once(listen)).status)

            await asyncio.gather(*(send(at) for at in starts))
        server.close()

    arun(main)
    return [*statuses, len(steps)]


SCRIPTS = {
    "503-503-200": ({"retries": {"attempts": 3, "retry_on": ["5xx"]}},
                    [Step(503), Step(503), Step(200)], [0.0]),
    "retries-exhausted": ({"retries": {"attempts": 2, "retry_on": ["5xx"]}},
                          [Step(503), Step(503), Step(503)], [0.0]),
    "defaults-do-not-retry-503": ({"timeout_ms": 3000}, [Step(503)], [0.0]),
    "per-try-timeout": ({"retries": {"attempts": 2, "per_try_timeout_ms": 100,
                                     "retry_on": ["5xx"]}},
                        [Step(200, 0.6), Step(200)], [0.0]),
    "breaker-full": ({"circuit_breaker": {"max_requests": 1}},
                     [Step(200, 0.4), Step(200)], [0.0, 0.15]),
}  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_both_clocks_decide_alike(name: str, mesh: str, trace: list[tuple[Any, ...]]) -> None:
    traffic, script, starts = SCRIPTS[name]
    sim_statuses = simulated(traffic, mesh, script, starts)
    sim_trace = list(trace)
    trace.clear()
    proxy_statuses = proxied(traffic, mesh, script, starts)
    assert trace == sim_trace
    assert proxy_statuses == sim_statuses


def test_the_scripts_decide_what_the_policies_say(trace: list[tuple[Any, ...]]) -> None:
    """The simulator's side of the scripts, written out (the proxy's equals it above)."""
    traffic, script, starts = SCRIPTS["503-503-200"]
    assert simulated(traffic, "istio", script, starts) == [200, 0]
    assert [t[:3] for t in trace if t[0] == "decide"] == [
        ("decide", True, "retries"),
        ("decide", True, "retries"),
        ("decide", False, None),
    ]
    trace.clear()
    traffic, script, starts = SCRIPTS["retries-exhausted"]
    assert simulated(traffic, "istio", script, starts) == [503, 0]
    assert trace[-1][:3] == ("decide", False, "retries_exhausted")
    trace.clear()
    traffic, script, starts = SCRIPTS["per-try-timeout"]
    assert simulated(traffic, "istio", script, starts) == [200, 0]
    assert ("record", "per_try_timeout", None, 0) in trace
    trace.clear()
    traffic, script, starts = SCRIPTS["breaker-full"]
    # The second request overflows while the first holds the only slot (one step unused).
    assert simulated(traffic, "istio", script, starts) == [503, 200, 1]
    assert [t for t in trace if t[0] == "admit"] == [("admit", True), ("admit", False)]
    trace.clear()
    # Linkerd has no connection-pool breaker: both requests reach the upstream.
    assert simulated(traffic, "linkerd", script, starts) == [200, 200, 0]
    trace.clear()
    # Linkerd does not retry without retries; Istio's defaults do not retry a 503 either.
    traffic, script, starts = SCRIPTS["defaults-do-not-retry-503"]
    assert simulated(traffic, "linkerd", script, starts) == [503, 0]
    assert not any(t[0] == "decide" and t[1] for t in trace)
