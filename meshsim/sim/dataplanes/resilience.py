"""The outbound policy chain of an L7 proxy, driven in simulated time (DESIGN principle 1).

:func:`outbound` is what :meth:`meshsim.sim.dataplanes.routing.L7Proxy.outbound` runs for
every request a sidecar or waypoint sends. It applies the mesh's mapping
(:mod:`meshsim.sim.dataplanes.mapping`) with the state machines of :mod:`meshsim.policy`,
in the order the proxies do:

1. route selection (header / path match), then fault injection (Istio's fault filter runs
   before the router: delay, then an independent abort; an abort is a local reply, never
   retried) and mirroring (a shadow request, response dropped, its CPU paid);
2. per try: the traffic split (Envoy picks the weighted cluster once per request; Linkerd's
   retries sit above its backend distribution, so each try re-picks among available
   backends), endpoint selection over healthy endpoints (outlier-ejected or accrual-shut
   ones left out; Envoy's ``previous_hosts`` on retries), the circuit breaker
   (``max_requests``; with HTTP/1.1 ``max_connections`` and a ``max_pending_requests``
   queue; overflow = a local 503 UO, never retried), then the attempt itself, bounded by
   the per-try and route deadlines. A try that times out answers 504 (per-try: retryable
   under 5xx / gateway-error; route: final) while the upstream work goes on in the
   background and is still accounted (CPU, the server's request count);
3. outlier detection / failure accrual record the outcome; the retry policy (Envoy's, with
   the ``max_retries`` breaker; Linkerd's route retries; or ServiceProfile retries under a
   TpsBudget) decides, and the back-off is a simpy timeout.

Linkerd with no ready endpoint queues the request and fails fast (503) if none becomes
ready within 3 s (§5.1), polling every 50 ms (a rare path). Envoy with no healthy host
answers 503 (UH) at once. A pod that died but is still in the proxy's view (a stale
endpoint) refuses the connection: a connect failure after one round trip.

The hot path stays cheap: without a timeout the try runs inline (``yield from``), the
retry state is built only after a failure, and absent policies cost a ``None`` check. A
process is spawned per try only when a deadline must race it.

Counters (per destination service, events at simulated times inside the measurement
window) feed ``runs.<mesh>.resilience`` in ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING, Any, cast

import simpy

from meshsim.policy import (
    CircuitBreaker,
    LinkerdRetryState,
    Outcome,
    Resource,
    RetryState,
    ServiceProfileRetry,
    StopReason,
)
from meshsim.sim.app import CONNECT_FAILURE, RESET, TIMEOUT
from meshsim.sim.dataplanes.mapping import RoutePolicy
from meshsim.sim.dataplanes.resilience_state import ClusterState, Resilience

if TYPE_CHECKING:

    from meshsim.scenario.model import Call
    from meshsim.sim.app import Pod, Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Worker
    from meshsim.sim.dataplanes.routing import Attempt, L7Proxy

__all__ = ["outbound"]

GATEWAY_TIMEOUT = 504
SERVICE_UNAVAILABLE = 503
FAILFAST_POLL_S = 0.05

_TRANSPORT = {CONNECT_FAILURE: Outcome.connect_failure(), RESET: Outcome.reset()}
_RESPONSES: dict[int, Outcome] = {}


def _outcome(status: int) -> Outcome:
    found = _TRANSPORT.get(status) or _RESPONSES.get(status)
    if found is None:
        if status == TIMEOUT:
            found = Outcome.per_try_timeout()
        else:
            found = _RESPONSES[status] = Outcome.response(status)
    return found


_PER_TRY_TIMEOUT = Outcome.per_try_timeout()
_ROUTE_TIMEOUT = Outcome.route_timeout()

# --------------------------------------------------------------------------- helpers


class _Try:
    """One attempt in flight; settled exactly once (when it ends, or when it times out)."""

    __slots__ = ("cluster", "host", "settled", "started")

    def __init__(self, cluster: ClusterState, host: Pod, started: float) -> None:
        self.cluster = cluster
        self.host = host
        self.started = started
        self.settled = False


def _settle(t: _Try, now: float) -> None:
    if t.settled:
        return
    t.settled = True
    cs = t.cluster
    cs.lb.on_complete(t.host, now - t.started, now)
    br = cs.breaker
    if br is not None:
        br.release(Resource.REQUESTS)
        if cs.conn_limit is not None:
            _release_conn(cs, br)


def _release_conn(cs: ClusterState, br: CircuitBreaker) -> None:
    while cs.pending:
        waiter = cs.pending.popleft()
        if not waiter.triggered:
            br.release(Resource.PENDING_REQUESTS)
            waiter.succeed()  # the connection passes to the first waiting request
            return
    br.release(Resource.CONNECTIONS)


def _run_try(
    attempt: Attempt, proxy: L7Proxy, worker: Worker, pod: Pod, req: Request, nbytes: int,
    t: _Try,
) -> Generator[simpy.Event, Any, int]:  # fmt: skip
    status: int = yield from attempt(proxy, worker, pod, req, nbytes)
    _settle(t, proxy.env.now)
    return status


def _view_of(proxy: L7Proxy, service: ServiceRuntime) -> list[Pod]:
    view: list[Pod] = proxy.view(service)
    return view


def _endpoints(
    proxy: L7Proxy, service: ServiceRuntime, version: str | None
) -> tuple[list[Pod], tuple[int, int, int]]:
    view = _view_of(proxy, service)
    key = (id(view), len(view), service.generation)
    if version is None:
        return view, key
    cache = proxy._groups
    cached = cache.get(service.name)
    if cached is None or cached[0] != key:
        by_version: dict[str, list[Pod]] = {name: [] for name in service.versions}
        for pod in view:
            by_version.setdefault(pod.version.name, []).append(pod)
        cached = cache[service.name] = (key, by_version)
    return cached[1].get(version, []), key


def _choose_version(
    res: Resilience, proxy: L7Proxy, service: ServiceRuntime, route: RoutePolicy
) -> str | None:
    split = route.split
    if split is None:
        return None
    if res.envoy:
        # Envoy's weighted_clusters: the subset is chosen whatever its endpoints.
        return str(split.choose(res.rng_split))
    view = _view_of(proxy, service)
    available = {p.version.name for p in view}
    chosen = split.choose(res.rng_split, [v for v in split.weights if v in available])
    return None if chosen is None else str(chosen)


def _cluster(
    res: Resilience, proxy: L7Proxy, service: ServiceRuntime, version: str | None
) -> ClusterState:
    key = (service.name, version)
    cs: ClusterState | None = proxy._clusters.get(key)
    if cs is None:
        policy = res.policies.policy(service.name)
        h1 = not res.h2(service)
        cs = proxy._clusters[key] = ClusterState(res, policy, h1, res.env.now)
    return cs


# --------------------------------------------------------------------------- the chain


def outbound(
    proxy: L7Proxy,
    attempt: Attempt,
    service: ServiceRuntime,
    req: Request,
    worker: Worker,
    nbytes: int,
    call: Call | None = None,
) -> Generator[simpy.Event, Any, int]:
    """One request from ``proxy`` to ``service`` through the mesh's policy chain."""
    res = proxy.resilience
    assert res is not None
    env = proxy.env
    policy = res.policies.policy(service.name)
    if call is not None:
        route = policy.route(call.path, call.headers)
    else:
        route = policy.route(req.path, req.headers)
    stats = res.stats(service.name)
    counting = res.warm <= env.now < res.end
    if counting:
        stats.requests += 1
    if route is None:
        return 404  # no route matches: Envoy's NR, Linkerd's 404
    fault = route.fault
    if fault is not None:
        injected = fault.decide(res.rng_faults)
        if injected.delay_s > 0:
            if counting:
                stats.fault_delays += 1
            yield env.timeout(injected.delay_s)
        if injected.abort_status is not None:
            if counting:
                stats.fault_aborts += 1
            return injected.abort_status
    mirror = route.mirror
    if mirror is not None and mirror.policy.should_mirror(res.rng_mirror):
        target = res.sim.services.get(mirror.service)
        if target is not None:
            if counting:
                res.stats(target.name).mirrored += 1
            env.process(_shadow(res, proxy, attempt, target, mirror.subset, req, worker, nbytes))
    start = env.now
    deadline = start + route.timeout_s if route.timeout_s else math.inf
    per_try = route.per_try_timeout_s
    envoy = res.envoy
    version = _choose_version(res, proxy, service, route)
    retry: RetryState | LinkerdRetryState | None = None
    profile: ServiceProfileRetry | None = None
    if route.profile_retry:
        profile = ServiceProfileRetry(res.budget(proxy.name, service.name),
                                      failure_statuses=route.profile_failures)  # fmt: skip
    status = SERVICE_UNAVAILABLE
    while True:
        # ---------------------------------------------------------- pick an endpoint
        cs = _cluster(res, proxy, service, version)
        eps, key = _endpoints(proxy, service, version)
        now = env.now
        if cs.outlier is not None:
            cs.sync_hosts(eps, key)
            if now >= cs.outlier.next_sweep_at:
                cs.outlier.poll(now, res.rng_health)
            eps = cs.outlier.eligible(eps)  # type: ignore[assignment]
        if cs.accrual is not None:
            eps = cs.accrual.ready(eps, now)  # type: ignore[assignment]
        if not eps:
            if cs.failfast is None:
                if counting:
                    stats.no_healthy += 1
                status = SERVICE_UNAVAILABLE  # Envoy 503 UH: a local reply, not retried
                break
            waited = yield from _await_ready(res, proxy, service, version, cs, deadline)
            if waited is None:
                if env.now >= deadline:
                    status = GATEWAY_TIMEOUT
                    if counting:
                        stats.timeouts += 1
                    break
                if counting:
                    stats.failfasts += 1
                outcome = Outcome.failfast()
                status = SERVICE_UNAVAILABLE
                if retry is None and route.linkerd_retry is not None:
                    retry = LinkerdRetryState(route.linkerd_retry, nbytes)
                if retry is not None:
                    d = retry.decide(outcome, env.now, res.rng_retries)
                    if d.retry:
                        if counting:
                            stats.retries += 1
                        if d.delay_s > 0:
                            yield env.timeout(d.delay_s)
                        continue
                break
            eps = waited
            now = env.now
        elif cs.failfast is not None and not cs.failfast.ready:
            cs.failfast.set_ready(True, now)
        lb = cs.lb
        if retry is not None and envoy:
            host: Hashable | None = lb.pick(
                eps,
                now,
                res.rng_retries,
                hash_key=proxy.name if policy.cluster.hash_source else None,
                previous_hosts=retry.previous_hosts,  # type: ignore[union-attr]
                reselect_attempts=retry.reselect_attempts,  # type: ignore[union-attr]
            )
        elif policy.cluster.hash_source:
            host = lb.pick(eps, now, proxy.rng, hash_key=proxy.name)
        else:
            host = lb.pick(eps, now, proxy.rng)
        pod: Pod = host  # type: ignore[assignment]
        # ---------------------------------------------------------- circuit breaker
        br = cs.breaker
        if br is not None:
            if not br.try_acquire(Resource.REQUESTS):
                if counting:
                    stats.overflows += 1
                status = SERVICE_UNAVAILABLE  # 503 UO, x-envoy-overloaded: never retried
                break
            if cs.conn_limit is not None and not br.try_acquire(Resource.CONNECTIONS):
                if not br.try_acquire(Resource.PENDING_REQUESTS):
                    br.release(Resource.REQUESTS)
                    if counting:
                        stats.overflows += 1
                    status = SERVICE_UNAVAILABLE
                    break
                waiter = env.event()
                cs.pending.append(waiter)
                if deadline < math.inf:
                    yield waiter | env.timeout(max(0.0, deadline - env.now))
                    if not waiter.triggered:
                        # Timed out in the pending queue: leave it.
                        waiter.succeed()  # marks it handled; _release_conn skips it
                        br.release(Resource.PENDING_REQUESTS)
                        br.release(Resource.REQUESTS)
                        status = GATEWAY_TIMEOUT
                        if counting:
                            stats.timeouts += 1
                        break
                else:
                    yield waiter
                now = env.now
        # ---------------------------------------------------------- the attempt
        if counting:
            stats.attempts += 1
            name = pod.name
            stats.by_endpoint[name] = stats.by_endpoint.get(name, 0) + 1
        lb.on_start(pod, now)
        if cs.accrual is not None:
            cs.accrual.on_dispatch(pod, now)
        if retry is not None:
            retry.on_attempt(pod)
        t = _Try(cs, pod, now)
        try_deadline = deadline if per_try is None else min(deadline, now + per_try)
        timed_out: Outcome | None = None
        if not pod.alive:
            # A stale endpoint: the pod is gone, the connection is refused.
            yield env.timeout(2.0 * proxy.hop_s)
            status = CONNECT_FAILURE
            _settle(t, env.now)
            if counting:
                stats.connect_failures += 1
        elif try_deadline == math.inf:
            status = yield from attempt(proxy, worker, pod, req, nbytes)
            _settle(t, env.now)
        else:
            proc = env.process(_run_try(attempt, proxy, worker, pod, req, nbytes, t))
            yield proc | env.timeout(max(0.0, try_deadline - now))
            if proc.triggered:
                status = cast(int, proc.value)
            else:
                # The caller gets a 504; the upstream attempt runs on, in the background.
                _settle(t, env.now)
                if try_deadline >= deadline:
                    timed_out = _ROUTE_TIMEOUT
                    if counting:
                        stats.timeouts += 1
                else:
                    timed_out = _PER_TRY_TIMEOUT
                    if counting:
                        stats.per_try_timeouts += 1
                status = GATEWAY_TIMEOUT
        now = env.now
        outcome = timed_out if timed_out is not None else _outcome(status)
        # ---------------------------------------------------------- health
        od = cs.outlier
        if od is not None and od.record(pod, outcome, now, res.rng_health) and counting:
            stats.ejections += 1
        if cs.accrual is not None:
            breaker = cs.accrual.breaker(pod)
            trips = breaker.trips
            breaker.record(outcome, now, res.rng_health)
            if breaker.trips > trips and counting:
                stats.ejections += 1
        # ---------------------------------------------------------- retry?
        if timed_out is _ROUTE_TIMEOUT:
            break
        if profile is not None:
            decision = profile.decide(outcome, now, nbytes)
            if not decision.retry:
                if decision.reason is StopReason.BUDGET_EXHAUSTED and counting:
                    stats.budget_exhausted += 1
                break
        else:
            if 100 <= status < 400 or not route.retries:
                break
            if retry is None:
                if envoy:
                    retry = RetryState(route.envoy_retry, br if br is not None else None)
                else:
                    retry = LinkerdRetryState(route.linkerd_retry, nbytes)
                retry.on_attempt(pod)
            decision = retry.decide(outcome, now, res.rng_retries)
            if not decision.retry:
                if counting:
                    if decision.reason is StopReason.RETRY_OVERFLOW:
                        stats.retry_overflows += 1
                    elif decision.reason is StopReason.RETRIES_EXHAUSTED:
                        stats.retries_exhausted += 1
                break
        if counting:
            stats.retries += 1
        delay = decision.delay_s
        if delay > 0:
            if now + delay >= deadline:
                yield env.timeout(deadline - now)
                status = GATEWAY_TIMEOUT
                if counting:
                    stats.timeouts += 1
                break
            yield env.timeout(delay)
        if route.repick_split_per_try:
            version = _choose_version(res, proxy, service, route)
    if isinstance(retry, RetryState):
        retry.close()
    return status


def _await_ready(
    res: Resilience,
    proxy: L7Proxy,
    service: ServiceRuntime,
    version: str | None,
    cs: ClusterState,
    deadline: float,
) -> Generator[simpy.Event, Any, list[Pod] | None]:
    """Linkerd's balancer queue: wait for a ready endpoint, or fail fast after 3 s (§5.1)."""
    env = res.env
    ff = cs.failfast
    assert ff is not None
    if ff.admit(env.now, cs.queued).value != "enqueue":
        return None
    cs.queued += 1
    ff.set_ready(False, env.now, queued=cs.queued)
    try:
        while True:
            trips = ff.trips_at
            step = FAILFAST_POLL_S
            if trips is not None:
                step = min(step, max(0.0, trips - env.now))
            step = min(step, max(0.0, deadline - env.now))
            yield env.timeout(step)
            eps, _ = _endpoints(proxy, service, version)
            if cs.accrual is not None:
                eps = cs.accrual.ready(eps, env.now)  # type: ignore[assignment]
            if eps:
                ff.set_ready(True, env.now)
                return eps
            if ff.poll(env.now) or env.now >= deadline:
                return None
    finally:
        cs.queued -= 1


def _shadow(
    res: Resilience,
    proxy: L7Proxy,
    attempt: Attempt,
    service: ServiceRuntime,
    subset: str | None,
    req: Request,
    worker: Worker,
    nbytes: int,
) -> Generator[simpy.Event, Any, None]:
    """A mirrored copy: the proxy's request-path CPU, one attempt, the response dropped."""
    cs = _cluster(res, proxy, service, subset)
    eps, _ = _endpoints(proxy, service, subset)
    eps = [p for p in eps if p.alive]
    if not eps:
        return
    yield from proxy.work(worker, proxy.costs(nbytes, 0, res.mtls)[0])
    env = res.env
    started = env.now
    pod: Pod = cs.lb.pick(eps, started, res.rng_mirror)  # type: ignore[assignment]
    lb = cs.lb
    lb.on_start(pod, started)
    yield from attempt(proxy, worker, pod, req, nbytes)
    lb.on_complete(pod, env.now - started, env.now)
