"""Issue 3: the mesh mapping and the outbound policy chain, in deterministic cases.

Constant service times and constant arrivals make these exact: each assertion states the
exact outcome (or, where the random draw of a policy matters, its tolerance).
"""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.errors import MeshsimError
from meshsim.policy import RetryOn
from meshsim.policy.mapping import map_traffic
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.sim.dataplanes.routing import L7Proxy
from meshsim.sim.engine import Simulation


def doc(
    traffic: list[dict[str, Any]] | None = None,
    *,
    meshes: list[str] | None = None,
    backend: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    rate: float = 100.0,
    duration: float = 10.0,
    options: dict[str, Any] | None = None,
    extra_services: list[dict[str, Any]] | None = None,
    call: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """frontend (2 replicas, meshed) -> backend; users send to frontend at a constant rate."""
    services = [
        {"name": "frontend", "replicas": 2, "cpu_ms": 0.1, "concurrency": 4096,
         "calls": [{"service": "backend", **(call or {})}]},
        {"name": "backend", "cpu_ms": 1.0, "concurrency": 64,
         **({} if "versions" in (backend or {}) else {"replicas": 2}), **(backend or {})},
        *(extra_services or []),
    ]  # fmt: skip
    return {
        "meshsim": 1, "name": "res", "seed": 4, "duration_s": duration, "warmup_s": 1.0,
        "meshes": meshes or ["istio"],
        "cluster": {"nodes": 3, "cores_per_node": 8},
        "services": services,
        "workloads": [{"name": "users", "target": "frontend", "arrival": "constant",
                       "rate_rps": rate}],
        "traffic": traffic or [],
        "events": events or [],
        "mesh_options": options or {},
    }  # fmt: skip


def summary(d: dict[str, Any]) -> dict[str, Any]:
    return build_summary(run_scenario(from_dict(d)))


# --------------------------------------------------------------------------- mapping


def test_istio_defaults_apply_where_the_scenario_is_silent() -> None:
    """§1.3 / §12.1: 2 retries on connect-failure, refused-stream, unavailable, cancelled,
    no HTTP status; previous_hosts with 5 re-picks; no route timeout; no breaker; no
    outlier detection; LEAST_REQUEST."""
    m = map_traffic(from_dict(doc()), "istio")
    route = m.policy("backend").routes[0]
    assert route.envoy_retry is not None
    assert route.envoy_retry.num_retries == 2
    assert route.envoy_retry.retry_on == {RetryOn.CONNECT_FAILURE, RetryOn.REFUSED_STREAM,
                                          RetryOn.UNAVAILABLE, RetryOn.CANCELLED,
                                          RetryOn.RETRIABLE_STATUS_CODES}  # fmt: skip
    assert route.envoy_retry.retriable_status_codes == frozenset()
    assert route.envoy_retry.previous_hosts
    assert route.envoy_retry.host_selection_retry_max_attempts == 5
    assert route.timeout_s is None
    assert route.fault is None
    assert route.mirror is None
    cluster = m.policy("backend").cluster
    assert cluster.balancer == "least_request"
    assert cluster.thresholds is None
    assert cluster.outlier is None
    assert m.notes == []


def test_istio_maps_destination_rule_with_its_defaults() -> None:
    """§2.2: unset connectionPool fields are 2^32-1; §3.1: outlierDetection defaults."""
    rule = {"service": "backend", "circuit_breaker": {"max_pending_requests": 7},
            "outlier_detection": {"consecutive_5xx": 3}, "retries": {"attempts": 0}}  # fmt: skip
    d = doc([rule])
    policy = map_traffic(from_dict(d), "istio").policy("backend")
    th = policy.cluster.thresholds
    assert th is not None
    assert (th.max_connections, th.max_pending_requests, th.max_requests, th.max_retries) == (
        2**32 - 1, 7, 2**32 - 1, 2**32 - 1)  # fmt: skip
    od = policy.cluster.outlier
    assert od is not None
    assert (od.consecutive_5xx, od.interval_s, od.base_ejection_time_s) == (3, 10.0, 30.0)
    assert (od.max_ejection_percent, od.healthy_panic_threshold) == (10.0, 0.0)
    assert od.enforcing_success_rate == 0.0
    assert policy.routes[0].envoy_retry is None  # attempts: 0 disables retries


def test_linkerd_mapping_defaults_and_notes() -> None:
    """§12.3: no retries unless configured; peak-EWMA; fail-fast; unmappable intent noted."""
    d = doc([{"service": "backend", "load_balancer": "round_robin",
              "circuit_breaker": {"max_connections": 4},
              "retries": {"attempts": 3, "retry_on": ["5xx", "connect-failure"],
                          "per_try_timeout_ms": 100}}])  # fmt: skip
    m = map_traffic(from_dict(d), "linkerd")
    assert m.default.routes[0].retries is False
    policy = m.policy("backend")
    assert policy.cluster.balancer == "peak_ewma"
    assert policy.cluster.failfast
    retry = policy.routes[0].linkerd_retry
    assert retry is not None
    assert (retry.limit, retry.http_statuses, retry.timeout_s) == (3, ((500, 599),), 0.1)
    text = " ".join(m.notes)
    assert "round_robin not mapped" in text
    assert "circuit_breaker not mapped" in text
    assert "connect-failure not mapped" in text


def test_linkerd_notes_only_the_retry_conditions_the_rule_asked_for() -> None:
    """No retry_on: Istio's default conditions stand in, and connect-failure (which Linkerd
    cannot retry) is nothing the rule asked for: no note. retriable-status-codes maps (its
    codes become retry.linkerd.io/http): no note either."""
    rules = [{"service": "backend", "retries": {"attempts": 2}},
             {"service": "ratings", "retries": {"retry_on": ["retriable-status-codes"],
                                                "retriable_status_codes": [503]}}]  # fmt: skip
    ratings = [{"name": "ratings", "cpu_ms": 1.0}]
    m = map_traffic(from_dict(doc(rules, meshes=["linkerd"], extra_services=ratings)), "linkerd")
    assert not any("retry_on" in n for n in m.notes)
    retry = m.policy("ratings").routes[0].linkerd_retry
    assert retry is not None
    assert retry.http_statuses == ((503, 503),)


def test_linkerd_budget_mode_maps_to_service_profile_retries() -> None:
    d = doc([{"service": "backend", "retries": {"attempts": 2, "retry_on": ["5xx"]}}],
            options={"linkerd": {"retry_budget": True}})  # fmt: skip
    m = map_traffic(from_dict(d), "linkerd")
    route = m.policy("backend").routes[0]
    assert route.profile_retry
    assert route.linkerd_retry is None
    assert m.budget == (0.2, 10, 10.0)
    assert any("retry budget" in n for n in m.notes)


def test_istio_has_no_peak_ewma() -> None:
    d = doc([{"service": "backend", "load_balancer": "peak_ewma"}])
    m = map_traffic(from_dict(d), "istio")
    assert m.policy("backend").cluster.balancer == "least_request"
    assert any("peak_ewma is not an Istio algorithm" in n for n in m.notes)


def test_ambient_applies_rules_only_behind_a_waypoint() -> None:
    d = doc([{"service": "backend", "timeout_ms": 100}], meshes=["istio-ambient"])
    m = map_traffic(from_dict(d), "istio-ambient", l7_services=set())
    assert "backend" not in m.services
    assert any("no waypoint" in n for n in m.notes)
    m = map_traffic(from_dict(d), "istio-ambient", l7_services={"backend"})
    assert m.policy("backend").routes[0].timeout_s == 0.1
    s = summary(d)
    assert any("no waypoint" in w for w in s["runs"]["istio-ambient"]["warnings"])


def test_linkerd_fault_injection_is_an_error_unless_emulated() -> None:
    """§7.2, §12.3: Linkerd has no fault injection or mirroring: never a silent no-op."""
    fault = [{"service": "backend", "fault": {"abort": {"percent": 50, "status": 503}}}]
    with pytest.raises(MeshsimError, match="Linkerd has no fault injection"):
        Simulation(from_dict(doc(fault, meshes=["linkerd"])), "linkerd", 1)
    mirror = [{"service": "backend", "mirror": {"service": "frontend"}}]
    with pytest.raises(MeshsimError, match="Linkerd has no mirroring"):
        Simulation(from_dict(doc(mirror, meshes=["linkerd"])), "linkerd", 1)
    d = doc(fault, meshes=["linkerd"], options={"linkerd": {"unsupported": "emulate"}})
    run = summary(d)["runs"]["linkerd"]
    assert any(w.startswith("traffic mapping (linkerd): EMULATED") for w in run["warnings"])
    assert run["resilience"]["backend"]["fault_aborts"] > 0


def test_validate_traffic_names_every_rule_a_mesh_cannot_program() -> None:
    """``meshsim check`` runs the run's translation: each refused rule, by key and mesh."""
    from meshsim.errors import Problem
    from meshsim.policy.mapping import validate_traffic

    rules = [
        {"service": "backend", "retries": {"attempts": 2}},
        {"service": "backend", "fault": {"abort": {"percent": 50, "status": 503}}},
        {"service": "frontend", "retries": {"retry_on": ["5xx", "sometimes"]}},
    ]
    problems = validate_traffic(from_dict(doc(rules, meshes=["istio", "linkerd", "none"])))
    assert [(p.field, p.message.split(":")[0]) for p in problems] == [
        ("traffic[1].fault", "linkerd"),
        ("traffic[2].retries.retry_on", "istio"),
    ]
    assert all(isinstance(p, Problem) and "traffic rule for" in p.message for p in problems)
    assert "sometimes" in problems[1].message
    emulate = doc(rules[:2], meshes=["linkerd"], options={"linkerd": {"unsupported": "emulate"}})
    assert validate_traffic(from_dict(emulate)) == []


# --------------------------------------------------------------------------- the chain


def test_route_timeout_answers_504_while_the_upstream_attempt_is_still_accounted() -> None:
    """A 50 ms backend under a 20 ms route timeout: every call is a 504 at 20 ms, and the
    backend still receives (and serves) every request. Exact."""
    d = doc([{"service": "backend", "timeout_ms": 20}], backend={"cpu_ms": 50.0}, rate=20)
    run = summary(d)["runs"]["istio"]
    res = run["resilience"]["backend"]
    edge = run["edges"]["frontend->backend"]
    assert res["timeouts"] == res["requests"] == edge["requests"] > 0
    assert edge["statuses"] == {"504": edge["requests"]}
    # The server counts by arrival time, the edge by send time: one request straddles the
    # start of the window.
    served = run["services"]["backend"]
    assert abs(served["requests"] - edge["requests"]) <= 1
    assert served["statuses"] == {"200": served["requests"]}
    assert 20.0 <= edge["latency_ms"]["p50"] <= 21.0  # histogram bucket resolution


def test_per_try_timeouts_are_retried_under_5xx_and_every_try_reaches_the_backend() -> None:
    """Per-try 20 ms, 2 retries on 5xx, a 50 ms backend: 3 tries per request, all time out
    (§1.1: per-try timeouts retried under 5xx); the backend receives 3 per request. Exact."""
    d = doc([{"service": "backend",
              "retries": {"attempts": 2, "per_try_timeout_ms": 20, "retry_on": ["5xx"]}}],
            backend={"cpu_ms": 50.0}, rate=10)  # fmt: skip
    run = summary(d)["runs"]["istio"]
    res = run["resilience"]["backend"]
    n = res["requests"]
    assert (res["attempts"], res["retries"], res["per_try_timeouts"]) == (3 * n, 2 * n, 3 * n)
    assert res["retries_exhausted"] == n
    assert run["edges"]["frontend->backend"]["statuses"] == {"504": n}
    served = run["services"]["backend"]["requests"]
    assert abs(served - 3 * n) <= 3  # tries of requests sent around the window's edges


def test_the_per_try_timer_starts_once_the_try_has_its_connection() -> None:
    """§1.1: the per-try timer starts in Envoy's onPoolReady; the time to get a connection
    (a pool's wait, a slow handshake, a connect) counts against the route timeout only.
    Scripted attempts from frontend's sidecar: (a) 300 ms to connect, then answered 50 ms
    later: a 200 at 350 ms, though the per-try timeout is 100 ms; (b) connected at once
    but answered after 150 ms: cut at 100 ms (a per-try timeout, 504), then retried;
    (c) still connecting when the 1 s route timeout fires: a route timeout at 1 s."""
    from meshsim.sim.app import Request

    rule = {"service": "backend", "timeout_ms": 1000,
            "retries": {"attempts": 1, "per_try_timeout_ms": 100, "retry_on": ["5xx"]}}  # fmt: skip
    sim = Simulation(from_dict(doc([rule])), "istio", 1)
    env = sim.env
    proxy = sim.data_plane.sidecars[sim.services["frontend"].pods[0]]  # type: ignore[attr-defined]
    script = [(0.3, 0.05), (0.0, 0.15), (0.0, 0.05), (2.0, 0.05)]

    def attempt(*args: Any) -> Any:
        connect_s, answer_s = script.pop(0) if script else (0.0, 0.05)
        yield env.timeout(connect_s)
        if len(args) > 5 and args[5] is not None:
            args[5]()  # connected
        yield env.timeout(answer_s)
        return 200

    ended: list[tuple[int, float]] = []

    def send(n: int) -> Any:
        start = env.now
        req = Request(n, "users", start, 100)
        status = yield from proxy.outbound(attempt, sim.services["backend"], req,
                                           proxy.workers[0], 100)  # fmt: skip
        ended.append((status, round(env.now - start, 9)))

    def all_three() -> Any:
        yield env.timeout(1.0)  # the warm-up: then the chain counts
        for n in range(3):
            yield env.process(send(n))

    env.process(all_three())
    env.run(until=6.0)
    assert script == []
    (a, b, c) = ended
    assert a == (200, 0.35)
    # Cut at 100 ms; the retry after Envoy's first back-off, uniform in [0, 25 ms).
    assert b[0] == 200
    assert 0.1 + 0.05 <= b[1] < 0.1 + 0.025 + 0.05
    assert c == (504, 1.0)
    res = sim.data_plane.resilience.counters["backend"]  # type: ignore[attr-defined]
    assert (res.attempts, res.per_try_timeouts, res.retries, res.timeouts) == (4, 1, 1, 1)


def test_fault_abort_is_local_and_never_retried() -> None:
    """§7.2: a 100 % abort never reaches the upstream, even with retries on 5xx. Exact."""
    d = doc([{"service": "backend", "fault": {"abort": {"percent": 100, "status": 503}},
              "retries": {"attempts": 2, "retry_on": ["5xx"]}}])  # fmt: skip
    run = summary(d)["runs"]["istio"]
    res = run["resilience"]["backend"]
    assert res["fault_aborts"] == res["requests"] > 0
    assert res["attempts"] == res["retries"] == 0
    assert "backend" not in run["services"] or run["services"]["backend"]["requests"] == 0


def test_fault_delay_delays_exactly_the_sampled_share() -> None:
    d = doc([{"service": "backend", "fault": {"delay": {"percent": 100, "fixed_ms": 30}}}])
    run = summary(d)["runs"]["istio"]
    assert run["resilience"]["backend"]["fault_delays"] == run["resilience"]["backend"]["requests"]
    assert run["edges"]["frontend->backend"]["latency_ms"]["p50"] >= 30.0


def test_header_match_routes_to_its_subset() -> None:
    """A header match sends every call carrying it to v2, whatever the catch-all split."""
    backend = {"versions": [{"name": "v1", "replicas": 2}, {"name": "v2", "replicas": 1}]}
    traffic = [
        {"service": "backend", "split": {"v1": 100}},
        {"service": "backend", "match": {"headers": {"x-canary": "1"}}, "split": {"v2": 100}},
    ]
    for mesh in ("istio", "linkerd"):
        hit = summary(doc(traffic, meshes=[mesh], backend=backend,
                          call={"headers": {"x-canary": "1"}}))["runs"][mesh]  # fmt: skip
        assert set(hit["resilience"]["backend"]["by_endpoint"]) == {"backend-v2-0"}
        miss = summary(doc(traffic, meshes=[mesh], backend=backend))["runs"][mesh]
        assert set(miss["resilience"]["backend"]["by_endpoint"]) == {"backend-v1-0",
                                                                    "backend-v1-1"}  # fmt: skip


def test_mirroring_sends_a_shadow_copy_whose_answer_is_dropped() -> None:
    shadow = [{"name": "shadow", "replicas": 1, "cpu_ms": 1.0,
               "response_bytes": 1024}]  # fmt: skip
    d = doc([{"service": "backend", "mirror": {"service": "shadow"}}], extra_services=shadow)
    run = summary(d)["runs"]["istio"]
    assert run["resilience"]["shadow"]["mirrored"] == run["resilience"]["backend"]["requests"]
    assert abs(run["services"]["shadow"]["requests"] - run["services"]["backend"]["requests"]) <= 2
    assert "frontend->shadow" not in run["edges"]  # the caller never sees the shadow


def test_circuit_breaker_overflow_is_a_local_503_never_retried() -> None:
    """max_connections 1 and max_pending_requests 1 per calling sidecar, a 30 ms backend at
    100 rps: most calls overflow with 503 (UO) and none is retried, although Istio's default
    retries are on; the backend never has more than 2 x (1 + 1) requests from the two
    sidecars in flight."""
    d = doc([{"service": "backend", "circuit_breaker": {"max_connections": 1,
                                                        "max_pending_requests": 1}}],
            backend={"cpu_ms": 30.0})  # fmt: skip
    run = summary(d)["runs"]["istio"]
    res = run["resilience"]["backend"]
    assert res["overflows"] > res["requests"] / 4
    assert res["retries"] == 0
    assert res["attempts"] + res["overflows"] == res["requests"]
    assert run["edges"]["frontend->backend"]["statuses"]["503"] == res["overflows"]
    # At most one request per sidecar at the backend at a time: it never queues.
    assert run["services"]["backend"]["latency_ms"]["p99"] < 31.0


def _burst(breaker: dict[str, int]) -> tuple[list[tuple[int, float]], dict[str, int], int]:
    """Five requests at one instant from frontend's sidecar to backend under ``breaker``,
    each try a scripted 100 ms exchange: (status, latency) in the order they end, the
    breaker's held units and its retry limit under a 50 % retry budget at 50 ms."""
    import dataclasses

    from meshsim.policy import EnvoyRetryBudget, Resource
    from meshsim.sim.app import Request

    sim = Simulation(from_dict(doc([{"service": "backend", "circuit_breaker": breaker}])),
                     "istio", 1)  # fmt: skip
    env = sim.env
    proxy = sim.data_plane.sidecars[sim.services["frontend"].pods[0]]  # type: ignore[attr-defined]

    def attempt(*_: Any) -> Any:
        yield env.timeout(0.1)
        return 200

    ended: list[tuple[int, float]] = []

    def send(n: int) -> Any:
        req = Request(n, "users", env.now, 100)
        status = yield from proxy.outbound(attempt, sim.services["backend"], req,
                                           proxy.workers[0], 100)  # fmt: skip
        ended.append((status, round(env.now - 1.0, 9)))

    def burst() -> Any:
        yield env.timeout(1.0)
        for n in range(5):
            env.process(send(n))

    env.process(burst())
    env.run(until=1.05)
    br = proxy._clusters[("backend", None)].breaker
    held = {r.value: br.active(r) for r in Resource}
    br.thresholds = dataclasses.replace(br.thresholds, retry_budget=EnvoyRetryBudget(50.0, 0))
    limit = br.limit(Resource.RETRIES)
    env.run(until=2.0)
    return ended, held, limit


def test_max_requests_is_taken_when_a_request_gets_its_connection() -> None:
    """§2.1: Envoy takes the max_requests unit when it attaches a request to a connection
    (ConnPoolImplBase::attachStreamToClient); a request in the HTTP/1.1 pending queue holds
    a max_pending_requests unit only. A DestinationRule with maxConnections 2,
    http1MaxPendingRequests 2 and http2MaxRequests 2: of five requests at once two go out,
    two wait for their connections and go out 100 ms later, one overflows (503 UO). Under
    a retry budget the pending requests count once: 50 % of 2 active + 2 pending."""
    ended, held, limit = _burst({"max_connections": 2, "max_pending_requests": 2,
                                 "max_requests": 2})  # fmt: skip
    assert ended == [(503, 0.0), (200, 0.1), (200, 0.1), (200, 0.2), (200, 0.2)]
    assert held == {"max_connections": 2, "max_pending_requests": 2, "max_requests": 2,
                    "max_retries": 0}  # fmt: skip
    assert limit == 2
    # max_requests above the pending requests' reach: the same, pending never in it.
    ended, held, limit = _burst({"max_connections": 2, "max_pending_requests": 2,
                                 "max_requests": 100})  # fmt: skip
    assert [e[0] for e in ended] == [503, 200, 200, 200, 200]
    assert (held["max_requests"], held["max_pending_requests"], limit) == (2, 2, 2)
    # max_requests below max_connections: the third request gets a connection, then
    # overflows; nothing waits.
    ended, held, _ = _burst({"max_connections": 3, "max_pending_requests": 2,
                             "max_requests": 2})  # fmt: skip
    assert ended == [(503, 0.0), (503, 0.0), (503, 0.0), (200, 0.1), (200, 0.1)]
    assert (held["max_connections"], held["max_requests"]) == (2, 2)


def _stale_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies keep killed pods in their view (a control plane that has not caught up)."""
    monkeypatch.setattr(
        L7Proxy, "view", lambda self, s: [p for v in s.versions.values() for p in v.pods]
    )


def test_istio_default_retries_a_connect_failure_to_a_killed_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§1.3: Istio retries connect failures by default (previous_hosts moves the retry to
    the live pod)."""
    _stale_view(monkeypatch)
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 1}]
    istio = summary(doc(events=events))["runs"]["istio"]
    res = istio["resilience"]["backend"]
    assert res["connect_failures"] > 50
    assert res["retries"] == res["connect_failures"]
    assert "1" not in istio["edges"]["frontend->backend"]["statuses"]


def test_linkerd_leaves_a_killed_pod_out_while_its_reconnects_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§5: linkerd2-proxy's balancer picks only ready endpoints, and an endpoint is ready
    only while its HTTP/2 connection is up: the killed pod's closed as it died and every
    reconnect is refused, so no try goes to it, however stale the view (kept for the whole
    run here). Over HTTP/1.1 (no protocol upgrade) the proxy connects per request: the dead
    pod stays in, and its tries fail (no retries by default; its near-zero failure times
    even draw Peak-EWMA to it). Exact."""
    _stale_view(monkeypatch)
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 1}]
    run = summary(doc(events=events, meshes=["linkerd"]))["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    n = res["requests"]
    assert res["connect_failures"] == 0
    assert run["edges"]["frontend->backend"]["statuses"] == {"200": n}
    h1_options = {"linkerd": {"protocol_upgrade": False}}
    h1 = summary(doc(events=events, meshes=["linkerd"], options=h1_options))["runs"]["linkerd"]
    res = h1["resilience"]["backend"]
    assert res["connect_failures"] > 0.5 * 100 * 8.0
    assert res["retries"] == 0
    assert h1["edges"]["frontend->backend"]["statuses"]["1"] == res["connect_failures"]


def test_istio_max_retries_0_is_unset_for_istiod_but_0_for_cilium(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§2.2: a DestinationRule's maxRetries is a plain int32 that istiod programs only when
    > 0, so ``max_retries: 0`` leaves Istio's 2^32-1 (and says so): the connect failures to
    a killed pod are still all retried. A CiliumEnvoyConfig is Envoy's own API, where 0 is 0:
    no retry is allowed (each one overflows the breaker)."""
    from meshsim.policy import MAX_UINT32

    rule = {"service": "backend", "circuit_breaker": {"max_retries": 0}}
    istio = map_traffic(from_dict(doc([rule])), "istio")
    th = istio.policy("backend").cluster.thresholds
    assert th is not None
    assert th.max_retries == MAX_UINT32
    assert any("max_retries 0 is unset for istiod" in n for n in istio.notes)
    cilium = map_traffic(from_dict(doc([rule])), "cilium")
    raw = cilium.policy("backend").cluster.thresholds
    assert raw is not None
    assert raw.max_retries == 0
    assert not any("max_retries" in n for n in cilium.notes)
    _stale_view(monkeypatch)
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 1}]
    res = summary(doc([rule], events=events))["runs"]["istio"]["resilience"]["backend"]
    assert res["connect_failures"] > 50
    assert res["retries"] == res["connect_failures"]
    assert res["retry_overflows"] == 0


def test_outlier_detection_is_istiod_s_under_istio_and_raw_envoy_s_under_cilium() -> None:
    """§3.1 and §12.2: istiod turns success-rate detection off, sets the panic threshold to
    minHealthPercent (0 %) and copies maxEjectionPercent only above 0 (0 leaves Envoy's
    10 %); a CiliumEnvoyConfig is Envoy's own API: success-rate enforcing 100, panic 50 %,
    and 0 % is 0 %. Before, Cilium took istiod's values and Istio's 0 ejected nothing."""
    rule = {"service": "backend", "outlier_detection": {"max_ejection_percent": 0}}
    istio = map_traffic(from_dict(doc([rule])), "istio").policy("backend").cluster.outlier
    cilium = map_traffic(from_dict(doc([rule])), "cilium").policy("backend").cluster.outlier
    assert istio is not None
    assert cilium is not None
    assert (istio.enforcing_success_rate, istio.healthy_panic_threshold) == (0.0, 0.0)
    assert istio.max_ejection_percent == 10.0
    assert (cilium.enforcing_success_rate, cilium.healthy_panic_threshold) == (100.0, 50.0)
    assert cilium.max_ejection_percent == 0.0
    assert (istio.consecutive_5xx, cilium.consecutive_5xx) == (5, 5)


def test_istio_default_does_not_retry_a_503() -> None:
    """§1.3: since 1.24 no HTTP status is retried by default. Exact: no retries at all."""
    events = [{"at_s": 0.0, "action": "errors", "target": "backend", "rate": 0.5,
               "status": 503}]  # fmt: skip
    run = summary(doc(events=events))["runs"]["istio"]
    res = run["resilience"]["backend"]
    assert res["retries"] == 0
    assert res["attempts"] == res["requests"]
    assert run["edges"]["frontend->backend"]["statuses"]["503"] > 0


def test_linkerd_fails_fast_after_3_s_without_ready_endpoints() -> None:
    """§5.1: with every backend pod gone, requests wait 3 s, then fail fast with 503; later
    ones are shed at once (503) while the queue's gate is shut."""
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 2}]
    run = summary(doc(events=events, meshes=["linkerd"], rate=20))["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    edge = run["edges"]["frontend->backend"]
    assert abs(res["failfasts"] - 3.0 * 20) <= 5  # what the callers queued in 3 s
    assert res["load_shed"] > 0
    assert edge["statuses"]["503"] == res["failfasts"] + res["load_shed"]
    assert 3000.0 <= edge["latency_ms"]["p999"] <= 3100.0


def test_linkerd_sheds_new_requests_while_the_queue_fails_fast() -> None:
    """§5.1, §6.2: a queue in fail-fast shuts its gate, so the route's LoadShed (right above
    the backend distribution, below the retries) sheds every new request: a LoadShedError,
    never retried. Only the requests already queued when fail-fast begins get a
    FailFastError, which the route's retries retry; the retry is a new request and is shed
    in turn. Exact: one retry per fail-fast, every 503 a load shed."""
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 2}]
    d = doc([{"service": "backend", "retries": {"attempts": 2, "retry_on": ["5xx"]}}],
            events=events, meshes=["linkerd"], rate=20)  # fmt: skip
    run = summary(d)["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    assert res["failfasts"] > 0
    assert res["retries"] == res["failfasts"]
    assert res["load_shed"] > res["failfasts"]
    assert run["edges"]["frontend->backend"]["statuses"]["503"] == res["load_shed"]


def test_outlier_detection_ejects_the_failing_replica() -> None:
    """One of 4 backend pods fails every request: after 5 consecutive 5xx each calling
    sidecar ejects it (max_ejection_percent 50 allows one of 4)."""
    events = [{"at_s": 2.0, "action": "errors", "target": "backend", "count": 1, "rate": 1.0}]
    d = doc([{"service": "backend", "outlier_detection": {"consecutive_5xx": 5,
                                                          "max_ejection_percent": 50}}],
            backend={"replicas": 4}, events=events)  # fmt: skip
    run = summary(d)["runs"]["istio"]
    res = run["resilience"]["backend"]
    assert res["ejections"] == 2  # one per calling sidecar, ejected for 30 s > the run
    # Before the errors: a quarter of 100 rps for a second; then 5 errors per sidecar.
    assert res["by_endpoint"]["backend-v1-0"] <= 25 * 1.5 + 2 * 5
    # Istio's default 10 %: (0 + 1) / 4 > 10 %, nothing is ever ejected (§3.2).
    d["traffic"][0]["outlier_detection"].pop("max_ejection_percent")
    assert summary(d)["runs"]["istio"]["resilience"]["backend"]["ejections"] == 0


def _penalty_outlasts_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure accrual shuts an endpoint for 1000 s: it never goes on probation in a run."""
    from functools import partial

    from meshsim.policy import LinkerdBackOff
    from meshsim.policy.mapping import linkerd as linkerd_mapping
    from meshsim.policy.mapping.policies import ClusterPolicy

    backoff = LinkerdBackOff(1000.0, 1000.0, 0.0)
    monkeypatch.setattr(linkerd_mapping, "ClusterPolicy",
                        partial(ClusterPolicy, accrual_backoff=backoff))  # fmt: skip


def _failing_canary(**extra: Any) -> dict[str, Any]:
    """Linkerd, backend v1 and v2 split 50/50; v2 answers every request with a 500 and the
    callers' failure accrual (consecutive, 7) shuts it within the first half second; 3 s
    later each caller's v2 balancer is in fail-fast."""
    backend = {"versions": [{"name": "v1", "replicas": 1}, {"name": "v2", "replicas": 1}]}
    events = [{"at_s": 0.0, "action": "errors", "target": "backend-v2", "rate": 1.0}]
    rule = {"service": "backend", "split": {"v1": 50, "v2": 50}, **extra}
    return doc([rule], meshes=["linkerd"], backend=backend, events=events,
               options={"linkerd": {"failure_accrual": "consecutive"}})  # fmt: skip


def test_linkerd_split_gives_a_backend_in_fail_fast_weight_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§5: a backend whose balancer is in fail-fast gets weight 0 while another is ready.
    From 5 s on (v2 has been failing fast since about 3.5 s) every call goes to v1 and
    succeeds; none fails fast. Exact."""
    _penalty_outlasts_the_run(monkeypatch)
    d = _failing_canary()
    d["warmup_s"] = 5.0
    run = summary(d)["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    n = res["requests"]
    assert n > 0
    assert res["failfasts"] == 0
    assert res["by_endpoint"] == {"backend-v1-0": n}
    assert run["edges"]["frontend->backend"]["statuses"] == {"200": n}


def test_the_proxy_gives_a_linkerd_backend_with_no_ready_host_weight_0() -> None:
    """The real proxy has no balancer queue: a backend with no ready host fails at once, as
    one in fail-fast does, so a Linkerd split sends everything to the other (the chain's
    table). Once both are shut the pick is made as if neither were: no host (503)."""
    import numpy as np

    from meshsim.policy import Outcome
    from meshsim.proxy.policies import MeshPolicy, policy_for

    accrual = {"max_failures": 1, "backoff_min_s": 60, "backoff_max_s": 60}
    traffic = {"split": {"v1": 50, "v2": 50}, "failure_accrual": accrual}
    policy = policy_for(traffic, 2, ("v1", "v2"), mesh="linkerd")
    assert isinstance(policy, MeshPolicy)
    rng = np.random.default_rng(0)
    now = 0.0
    policy.cluster.record(1, Outcome.response(500), now, rng)  # v2's only host shuts
    assert {policy.pick(2, now, rng) for _ in range(40)} == {0}
    policy.cluster.record(0, Outcome.response(500), now, rng)
    assert {policy.pick(2, now, rng) for _ in range(40)} == {None}


def test_the_proxy_holds_a_linkerd_host_whose_connect_failed_pending_for_its_back_off() -> None:
    """§5, §5.1: the real proxy connects per request, so the try that finds a host down
    fails (the chain's table); the host is then pending for linkerd2-proxy's outbound
    connect back-off (100 ms, then 200 ms, ..., each with up to 10 % jitter), the request
    sent when it is due being the next attempt; an answer ends the back-off. Istio, and
    Linkerd over HTTP/1.1 (which connects per request and is always ready), keep it."""
    import numpy as np

    from meshsim.proxy.policies import policy_for
    from meshsim.proxy.seam import Attempt
    from meshsim.scenario.options import MeshOptions

    rng = np.random.default_rng(0)
    refused = Attempt(0, None, "connect_failure")
    policy = policy_for({}, 1, mesh="linkerd")
    policy.record(refused, 0.0)
    assert policy.pick(1, 0.0999, rng) is None
    assert policy.pick(1, 0.1101, rng) == 0
    policy.record(refused, 0.2)  # the attempt failed: the back-off goes on
    assert policy.pick(1, 0.3999, rng) is None
    assert policy.pick(1, 0.4201, rng) == 0
    policy.record(Attempt(0, 200), 0.5)
    policy.record(refused, 0.6)  # a new loss: the back-off starts again
    assert policy.pick(1, 0.6999, rng) is None
    assert policy.pick(1, 0.7101, rng) == 0
    h1 = MeshOptions.model_validate({"linkerd": {"protocol_upgrade": False}})
    for other in (policy_for({}, 1, mesh="istio"), policy_for({}, 1, mesh="linkerd",
                                                             options=h1)):  # fmt: skip
        other.record(refused, 0.0)
        assert other.pick(1, 0.0, rng) == 0


def test_linkerd_retries_a_fail_fast_on_a_backend_picked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§6.2: a fail-fast is retryable because the retry may go to another backend: route
    retries sit above the backend distribution. The calls that chose v2 while its endpoint
    was shut wait in its queue; when the queue fails fast (about 3.5 s) each is retried
    once, on v1 (v2 now has weight 0), and succeeds. Every call succeeds. Exact."""
    _penalty_outlasts_the_run(monkeypatch)
    run = summary(_failing_canary(retries={"attempts": 2, "retry_on": ["5xx"]}))["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    n = res["requests"]
    queued = res["failfasts"]
    assert queued > 0.5 * 100 * 2.0  # the calls that chose v2 between 1 s and 3 s at least
    assert res["retries"] == queued
    assert res["by_endpoint"] == {"backend-v1-0": n}
    edge = run["edges"]["frontend->backend"]
    assert edge["statuses"] == {"200": n}
    assert edge["latency_ms"]["p999"] > 2000.0  # they waited in v2's queue


def test_linkerd_service_profile_retries_turn_failure_accrual_off() -> None:
    """§6.4: Linkerd's proxies do no circuit breaking for a Service with a ServiceProfile;
    retries under the retry budget stand for one. Accrual stays off for that service (a
    note says why) and on for the others; the proxy refuses a listener asking for both."""
    from meshsim.proxy.policies import listener_policy
    from meshsim.scenario.options import MeshOptions

    retries = {"attempts": 1, "retry_on": ["5xx"]}
    for options, rule in (
        ({"retry_budget": True, "failure_accrual": "consecutive"}, {}),
        ({"retry_budget": True}, {"outlier_detection": {"consecutive_5xx": 5}}),
    ):
        d = doc([{"service": "backend", "retries": retries, **rule}],
                meshes=["linkerd"], options={"linkerd": options})  # fmt: skip
        m = map_traffic(from_dict(d), "linkerd")
        policy = m.policy("backend")
        assert policy.routes[0].profile_retry
        assert policy.cluster.accrual_mode is None
        assert any("backend: " in n and "no circuit breaking" in n for n in m.notes)
        assert not any("mapped to failure accrual" in n for n in m.notes)
    assert m.default.cluster.accrual_mode is None  # no failure_accrual option here
    both = {"retry_budget": True, "failure_accrual": "consecutive"}
    d = doc([{"service": "backend", "retries": retries}], meshes=["linkerd"],
            options={"linkerd": both})  # fmt: skip
    assert map_traffic(from_dict(d), "linkerd").default.cluster.accrual_mode == "consecutive"
    budget = MeshOptions.model_validate({"linkerd": {"retry_budget": True}})
    with pytest.raises(MeshsimError, match="no circuit breaking"):
        listener_policy({"retries": retries, "failure_accrual": {}}, "linkerd", budget)


def test_linkerd_sheds_a_request_when_the_balancer_queue_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """§6.2: a full balancer queue sheds the request: 503 at once, never retried (unlike a
    fail-fast, which a route's retries retry), counted as load_shed. Queues of 5 here (not
    10 000): with every backend pod gone, each caller queues 5 requests and sheds the next
    ones until the queue fails fast 3 s later; each of the 5 queued requests fails fast and
    is retried once, and the retry is shed (the queue's gate is shut then). Exact."""
    from meshsim.policy import FailFast

    monkeypatch.setattr(FailFast, "outbound", classmethod(lambda cls: cls(3.0, 5)))
    events = [{"at_s": 2.0, "action": "kill", "target": "backend", "count": 2}]
    d = doc([{"service": "backend", "retries": {"attempts": 2, "retry_on": ["5xx"]}}],
            events=events, meshes=["linkerd"], rate=20)  # fmt: skip
    run = summary(d)["runs"]["linkerd"]
    res = run["resilience"]["backend"]
    shed = res["load_shed"]
    assert shed > 2 * 10  # 10 rps per caller for 2.5 s, less the 5 queued
    assert res["failfasts"] == 2 * 5
    assert res["retries"] == 2 * 5
    assert run["edges"]["frontend->backend"]["statuses"]["503"] == shed


def test_service_profile_retries_deposit_for_a_fail_fast_and_a_load_shed() -> None:
    """§6.1: ServiceProfile retries do not retry an error (a fail-fast, a load shed: errors
    below the retry layer, not responses), and every result they do not retry deposits
    into the budget (linkerd2-proxy http/retry.rs: ``Err(_) => false``, then
    ``budget.deposit()``). Exact: one token each."""
    import numpy as np

    from meshsim.policy import TpsBudget
    from meshsim.policy.chain import Exchange
    from meshsim.policy.mapping import RoutePolicy

    budget = TpsBudget(ttl_s=10.0, min_per_s=0, ratio=0.2)
    assert budget.balance(0.0) == 0
    ex = Exchange(RoutePolicy(profile_retry=True), envoy=False, now=0.0, budget=budget)
    assert not ex.decide_failfast(0.0, np.random.default_rng(0)).retry
    assert budget.balance(0.0) == 1
    shed = Exchange(RoutePolicy(profile_retry=True), envoy=False, now=0.0, budget=budget)
    assert shed.decide_load_shed(0.0).event == "load_shed"
    assert budget.balance(0.0) == 2


# --------------------------------------------------------------------------- consistent hash


def test_a_consistent_hash_ring_over_pods_is_the_ring_over_their_names() -> None:
    """A ring (or Maglev table) hashes each host's ``str()``: a pod's is its name, so where
    a key lands depends on the pods, not on where they sit in memory, and a run repeats in
    another process. Exact: every key picks the pod the ring over the names picks."""
    import numpy as np

    from meshsim.policy import Maglev, RingHash

    sim = Simulation(from_dict(doc(backend={"replicas": 4})), "istio", 4)
    pods = sim.services["backend"].pods
    names = [p.name for p in pods]
    rng = np.random.default_rng(0)
    for cls in (RingHash, Maglev):
        by_pod, by_name = cls(), cls()
        for key in range(50):
            pod = by_pod.pick(pods, 0.0, rng, hash_key=f"caller-{key}")
            assert pod.name == by_name.pick(names, 0.0, rng, hash_key=f"caller-{key}")


def _ring(
    mesh: str, options: dict[str, Any] | None = None, **changes: Any
) -> tuple[Simulation, dict[str, int]]:
    """Six web pods call api (four pods, ring_hash on the source); the attempts per pod."""
    d: dict[str, Any] = {
        "meshsim": 1, "name": "ring", "seed": 5, "duration_s": 4.0, "warmup_s": 1.0,
        "meshes": [mesh], "cluster": {"nodes": 3, "cores_per_node": 4},
        "services": [
            {"name": "web", "replicas": 6, "cpu_ms": 0.3, "calls": [{"service": "api"}]},
            {"name": "api", "replicas": 4, "cpu_ms": 0.5},
        ],
        "workloads": [{"name": "users", "target": "web", "rate_rps": 300}],
        "traffic": [{"service": "api", "load_balancer": "ring_hash"}],
        "mesh_options": options or {},
        **changes,
    }  # fmt: skip
    sim = Simulation(from_dict(d), mesh, 5)
    sim.run()
    return sim, sim.data_plane.resilience.stats("api").by_endpoint  # type: ignore[attr-defined]


def _ring_picks(sim: Simulation, keys: list[str]) -> set[str]:
    """The api pods a ring over api's endpoints gives ``keys``."""
    import numpy as np

    from meshsim.policy import RingHash

    ring, rng = RingHash(), np.random.default_rng(0)
    pods = sim.services["api"].endpoints
    return {ring.pick(pods, 0.0, rng, hash_key=key).name for key in keys}


@pytest.mark.parametrize(
    ("mesh", "options"),
    [
        ("istio", None),
        ("istio-ambient", {"istio-ambient": {"waypoints": ["api"]}}),
        ("cilium", None),
    ],
)
def test_hashing_the_source_keeps_each_calling_pod_on_its_own_endpoint(
    mesh: str, options: dict[str, Any] | None
) -> None:
    """§4: ``useSourceIp`` hashes the downstream connection's source address: at a sidecar
    the calling pod's; at a waypoint the calling pod's too (ztunnel spoofs it on the HBONE
    connection, and the waypoint's internal listener takes it over); at Cilium's node Envoy
    the calling pod's (a transparent redirect). So behind a shared proxy each web pod still
    sticks to one api pod of its own and the six spread over several, as with sidecars,
    not all onto one. Exact: the api pods tried are those a ring gives the web pods."""
    sim, tried = _ring(mesh, options)
    expected = _ring_picks(sim, [p.name for p in sim.services["web"].pods])
    assert len(expected) > 1
    assert set(tried) == expected


def test_a_gateway_hashes_its_clients_not_itself() -> None:
    """§4: at an ingress gateway the downstream connection is the client's: each workload
    (one client) sticks to one api pod of its own, whichever gateway replica it enters by.
    Exact, as above."""
    workloads = [
        {"name": f"shop-{i}", "target": "api", "rate_rps": 50, "via": "ingress"} for i in range(6)
    ]
    gateways = [{"name": "ingress", "replicas": 2, "routes": [{"service": "api"}]}]
    sim, tried = _ring("istio", workloads=workloads, gateways=gateways)
    expected = _ring_picks(sim, [f"client/{w['name']}" for w in workloads])
    assert len(expected) > 1
    assert set(tried) == expected
