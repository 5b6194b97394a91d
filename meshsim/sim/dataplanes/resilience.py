"""The outbound policy chain of an L7 proxy, driven in simulated time (DESIGN principle 1).

:func:`outbound` is what :meth:`meshsim.sim.dataplanes.routing.L7Proxy.outbound` runs for
every request a sidecar or waypoint sends. It walks the steps of
:mod:`meshsim.policy.chain` (the same steps the real proxy takes, on the same translation,
:mod:`meshsim.policy.mapping`) with simpy: route selection, fault injection and mirroring
(a shadow request, response dropped, its CPU paid), then per try: pick (split, healthy
endpoints, balancer), admit (``max_requests``; with HTTP/1.1 ``max_connections`` and a
``max_pending_requests`` queue), the attempt bounded by the route deadline and, from
the moment it has its connection (Envoy's ``onPoolReady``), the per-try deadline, record
(outlier detection or failure accrual), decide (retry, back-off). What only the
simulator does is listed in the chain module's table of clock differences: a try that
times out answers 504 while the upstream work goes on in the background and is still
accounted; Linkerd with no ready endpoint queues the request and fails fast (503) if none
becomes ready within 3 s (§5.1), polling every 50 ms (a rare path), and sheds it (503, not
retried) when the queue is full or already failing fast; a pod that died but is still in
the proxy's view (a stale endpoint) refuses the connection: a connect failure after one
round trip (Linkerd over HTTP/2 holds it pending instead, and sends it nothing).

The hot path stays cheap: without a timeout the try runs inline (``yield from``), the
retry state is built only after a failure, and absent policies cost a ``None`` check. A
process is spawned per try only when a deadline must race it.

Counters (per destination service, events at simulated times inside the measurement
window) feed ``runs.<mesh>.resilience`` in ``summary.json``. A request that starts
outside the window counts into a scratch set (:meth:`Resilience.tally`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, cast

import simpy

from meshsim.policy import FailFastVerdict, Outcome, Resource
from meshsim.policy.chain import ClusterRuntime, Exchange, inject_fault
from meshsim.sim.app import CONNECT_FAILURE, GRPC_STATUS, OK, RESET, TIMEOUT
from meshsim.sim.uncontended import first_of, spawn

if TYPE_CHECKING:
    from meshsim.policy.mapping import RoutePolicy, ServicePolicy
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Pod, Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Worker
    from meshsim.sim.dataplanes.resilience_state import Counters, Resilience
    from meshsim.sim.dataplanes.routing import Attempt, L7Proxy

__all__ = ["outbound"]

GATEWAY_TIMEOUT = 504
SERVICE_UNAVAILABLE = 503
NOT_FOUND = 404
FAILFAST_POLL_S = 0.05

_TRANSPORT = {CONNECT_FAILURE: Outcome.connect_failure(), RESET: Outcome.reset()}
_RESPONSES: dict[int, Outcome] = {}


def _outcome(status: int) -> Outcome:
    found = _TRANSPORT.get(status) or _RESPONSES.get(status)
    if found is None:
        if status == TIMEOUT:
            found = Outcome.per_try_timeout()
        elif status >= GRPC_STATUS:
            # A gRPC server's error: a 200 whose headers end the stream with grpc-status
            # (Trailers-Only), where Envoy's retry conditions and outlier detection read it
            # as linkerd2-proxy does (§1.1, §3.2).
            found = _RESPONSES[status] = Outcome.response(OK, grpc_status=status - GRPC_STATUS)
        else:
            found = _RESPONSES[status] = Outcome.response(status)
    return found


_PER_TRY_TIMEOUT = Outcome.per_try_timeout()
_ROUTE_TIMEOUT = Outcome.route_timeout()


class _Call:
    """What the steps of one request share: where it goes and how it is counted."""

    __slots__ = ("attempt", "counting", "nbytes", "policy", "proxy", "req", "res", "service",
                 "source", "stats", "worker")  # fmt: skip

    def __init__(
        self, proxy: L7Proxy, attempt: Attempt, service: ServiceRuntime, req: Request,
        worker: Worker, nbytes: int, policy: ServicePolicy, counting: bool,
        source: str | None = None,
    ) -> None:  # fmt: skip
        res = proxy.resilience
        assert res is not None
        self.res: Resilience = res
        self.proxy = proxy
        self.attempt = attempt
        self.service = service
        self.req = req
        self.worker = worker
        self.nbytes = nbytes
        self.policy = policy
        self.counting = counting
        """The request started inside the measurement window: its events count."""
        self.source = source
        """Where the request's connection to the proxy comes from, when not the proxy's own
        pod (a waypoint's, a node Envoy's or a gateway's caller)."""
        self.stats: Counters = res.tally(service.name, counting)


class _Try:
    """One attempt in flight; settled exactly once (when it ends, or when it times out)."""

    __slots__ = ("cluster", "host", "settled", "started")

    def __init__(self, cluster: ClusterRuntime, host: Pod, started: float) -> None:
        self.cluster = cluster
        self.host = host
        self.started = started
        self.settled = False


def _settle(t: _Try, now: float) -> None:
    if t.settled:
        return
    t.settled = True
    cs = t.cluster
    cs.settle(t.host, t.started, now)
    if cs.conn_limit is not None:
        _release_conn(cs)


def _release_conn(cs: ClusterRuntime) -> None:
    br = cs.breaker
    assert br is not None
    while cs.pending:
        waiter = cs.pending.popleft()
        if not waiter.triggered:
            br.release(Resource.PENDING_REQUESTS)
            waiter.succeed()  # the connection passes to the first waiting request
            return
    br.release(Resource.CONNECTIONS)


def _run_try(
    c: _Call,
    pod: Pod,
    t: _Try,
    hole: Generator[simpy.Event, Any, int] | None = None,
    connected: Callable[[], object] | None = None,
) -> Generator[simpy.Event, Any, int]:
    if hole is None:
        status: int = yield from c.attempt(c.proxy, c.worker, pod, c.req, c.nbytes, connected)
    else:
        status = yield from hole
        if status == CONNECT_FAILURE:
            c.stats.connect_failures += 1
    _settle(t, c.proxy.env.now)
    return status


def _endpoints(
    proxy: L7Proxy, service: ServiceRuntime, version: str | None
) -> tuple[list[Pod], tuple[int, int, int]]:
    """The endpoints of ``service`` (of its subset ``version``) that ``proxy``'s balancer
    holds ready, and the key of the view they come from."""
    view: list[Pod] = proxy.view(service)
    res = proxy.resilience
    locality = res.locality if res is not None else None
    if locality is not None:  # zone hints narrow what the proxy is told (meshsim.sim.zones)
        view = locality.told(proxy, service, view)
    key = (id(view), len(view), service.generation)
    eps = view
    if version is not None:
        cache = proxy._groups
        cached = cache.get(service.name)
        if cached is None or cached[0] != key:
            by_version: dict[str, list[Pod]] = {name: [] for name in service.versions}
            for pod in view:
                by_version.setdefault(pod.version.name, []).append(pod)
            cached = cache[service.name] = (key, by_version)
        eps = cached[1].get(version, [])
    if res is not None and not res.envoy and res.sim.deaths and res.h2(service):
        eps = _connected(proxy, eps)
    return eps, key


def _connected(proxy: L7Proxy, eps: list[Pod]) -> list[Pod]:
    """Linkerd over HTTP/2: the endpoints whose connection is up. A dead pod's is down (its
    connections closed as it died, or black-holed ones found dead) and every reconnect
    fails, so the balancer holds it as pending and P2C leaves it out; no request is sent to
    it (:mod:`meshsim.policy.reconnect`, docs/mesh-semantics.md §5). One back from a
    healed partition is pending until the proxy's next reconnect attempt (§5.1). (Over
    HTTP/1.1 linkerd2-proxy connects per request: a dead pod stays in and its tries fail.)"""
    zones = proxy.resilience.sim.zones
    pending = zones.pending
    name = proxy.name
    if zones.rejoined:
        return [p for p in eps if not pending(name, p)]
    return [p for p in eps if p.alive or not pending(name, p)]


def _choose_version(c: _Call, ex: Exchange) -> str | None:
    if ex.route.split is None:
        return None
    if ex.envoy:
        return ex.choose_version(c.res.rng_split)
    available = {p.version.name for p in c.proxy.view(c.service)}
    unready = {v for v in available if _queue_refuses(c, v)}
    return ex.choose_version(c.res.rng_split, available, unready)


def _queue_refuses(c: _Call, version: str) -> bool:
    """Whether this proxy's balancer queue for the backend ``version`` refuses requests now:
    it is in fail-fast (§5.1), or full.

    linkerd2-proxy's queue leaves fail-fast as soon as an endpoint becomes ready (a breaker
    on probation, a new endpoint), not when a request next comes; here that is noticed at
    the next pick, which is the first moment it matters.
    """
    cs: ClusterRuntime | None = c.proxy._clusters.get((c.service.name, version))
    if cs is None or cs.failfast is None:
        return False
    ff = cs.failfast
    now = c.proxy.env.now
    if not ff.poll(now):
        return cs.queued >= ff.queue_capacity
    if _ready_endpoints(c, version, cs, now):
        ff.set_ready(True, now)
        return False
    return True


def _ready_endpoints(c: _Call, version: str | None, cs: ClusterRuntime, now: float) -> list[Pod]:
    """The endpoints of ``version`` that Linkerd's balancer could send to now: in the view,
    connected, and not shut by failure accrual."""
    eps, _ = _endpoints(c.proxy, c.service, version)
    if cs.accrual is not None:
        eps = cs.accrual.ready(eps, now)  # type: ignore[assignment]
    return eps


def _cluster(
    res: Resilience, proxy: L7Proxy, service: ServiceRuntime, version: str | None
) -> ClusterRuntime:
    key = (service.name, version)
    cs: ClusterRuntime | None = proxy._clusters.get(key)
    if cs is None:
        cluster = res.policies.policy(service.name).cluster
        h1 = not res.h2(service)
        cs = proxy._clusters[key] = ClusterRuntime(cluster, h1=h1, now=res.env.now)
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
    source: str | None = None,
) -> Generator[simpy.Event, Any, int]:
    """One request from ``proxy`` to ``service`` through the mesh's policy chain.

    Not a generator itself: it hands over the chain's, so that the events of the request
    do not pass through one more frame each (the route is matched, and the request
    counted, when it is called, which its callers do as they start it).
    """
    res = proxy.resilience
    assert res is not None
    env = proxy.env
    policy = res.policies.policy(service.name)
    if call is not None:
        route = policy.route(call.path, call.headers)
    else:
        route = policy.route(req.path, req.headers)
    c = _Call(proxy, attempt, service, req, worker, nbytes, policy,
              res.warm <= env.now < res.end, source)  # fmt: skip
    c.stats.requests += 1
    if route is None or route.fault is not None:
        return _faulted(c, route)
    if route.mirror is not None:
        _mirror(c, route)
    return _tries(c, _exchange(c, route))


def _faulted(c: _Call, route: RoutePolicy | None) -> Generator[simpy.Event, Any, int]:
    """A request without a route, or on a route that injects faults."""
    if route is None:
        return NOT_FOUND  # no route matches: Envoy's NR, Linkerd's 404
    aborted = yield from _fault(c, route)
    if aborted is not None:
        return aborted
    if route.mirror is not None:
        _mirror(c, route)
    status: int = yield from _tries(c, _exchange(c, route))
    return status


def _exchange(c: _Call, route: RoutePolicy) -> Exchange:
    # The router's timer starts after the fault filter: the deadline does not count the
    # injected delay.
    res = c.res
    budget = res.budget(c.proxy.name, c.service.name) if route.profile_retry else None
    return Exchange(route, envoy=res.envoy, now=res.env.now, body_bytes=c.nbytes, budget=budget)


def _fault(c: _Call, route: RoutePolicy) -> Generator[simpy.Event, Any, int | None]:
    """Step 0: the fault filter's delay, then its abort (a local reply, never retried)."""
    injected = inject_fault(route, c.res.rng_faults)
    assert injected is not None
    if injected.delay_s > 0:
        c.stats.fault_delays += 1
        yield c.proxy.env.timeout(injected.delay_s)
    if injected.abort_status is not None:
        c.stats.fault_aborts += 1
        return injected.abort_status
    return None


def _mirror(c: _Call, route: RoutePolicy) -> None:
    mirror = route.mirror
    assert mirror is not None
    if not mirror.policy.should_mirror(c.res.rng_mirror):
        return
    target = c.res.sim.services.get(mirror.service)
    if target is None:
        return
    if c.counting:
        c.res.stats(target.name).mirrored += 1
    c.proxy.env.process(_shadow(c, target, mirror.subset))


def _tries(c: _Call, ex: Exchange) -> Generator[simpy.Event, Any, int]:
    """Steps 1-5, once per try, until a try's outcome stands; then the exchange is closed."""
    env = c.proxy.env
    res = c.res
    stats = c.stats
    version = _choose_version(c, ex)
    while True:
        cs = _cluster(res, c.proxy, c.service, version)
        picked: Pod | int | _Wait | None = _pick_ready(c, ex, cs, version)
        if picked is _WAIT:
            picked = yield from _pick_waiting(c, ex, cs, version)
        if picked is None:
            # A fail-fast that the route's retries retry. Linkerd's retries sit above the
            # backend distribution: the retry picks the backend again (§6.2).
            if ex.route.repick_split_per_try:
                version = _choose_version(c, ex)
            continue
        if isinstance(picked, int):
            ex.close()
            return picked
        assert not isinstance(picked, _Wait)
        pod = picked
        if cs.breaker is not None:
            admitted = yield from _admit(c, ex, cs)
            if admitted is not None:
                ex.close()
                return admitted
        else:
            # Without a breaker admission always succeeds and never waits, so no generator;
            # the chain's step is still taken, as the real proxy takes it (the two clocks
            # walk the same steps: tests/test_two_clocks.py).
            cs.admit()
        status, timed_out = yield from _try(c, ex, cs, pod)
        now = env.now
        outcome = timed_out if timed_out is not None else _outcome(status)
        stats.ejections += cs.record(pod, outcome, now, res.rng_health)
        verdict = ex.decide(pod, outcome, now, res.rng_retries, cs.breaker)
        if verdict.event is not None:
            stats.count(verdict.event)
        if not verdict.retry:
            ex.close()
            return status
        delay = verdict.delay_s
        if ex.backoff_overruns(now, delay):
            yield env.timeout(ex.deadline - now)
            stats.timeouts += 1
            ex.close()
            return GATEWAY_TIMEOUT
        if delay > 0:
            yield env.timeout(delay)
        if ex.route.repick_split_per_try:
            version = _choose_version(c, ex)


class _Wait:
    """Step 1 found no ready endpoint, and Linkerd's balancer queue waits for one."""


_WAIT = _Wait()


def _pick_ready(
    c: _Call, ex: Exchange, cs: ClusterRuntime, version: str | None
) -> Pod | int | _Wait:
    """Step 1 as far as it goes without waiting: a healthy endpoint, or a final status, or
    ``_WAIT`` (then :func:`_pick_waiting`). Not a generator: it almost never waits."""
    proxy, res = c.proxy, c.res
    eps, key = _endpoints(proxy, c.service, version)
    now = proxy.env.now
    if cs.outlier is not None:
        cs.sync_hosts(eps, key)
    locality = res.locality
    if locality is None:
        eps = cs.healthy(eps, now, res.rng_health)
    else:  # zones: meshsim.sim.zones
        eps = locality.select(proxy, c.service, eps, cs.healthy(eps, now, res.rng_health))
    if not eps:
        if cs.failfast is None:
            c.stats.no_healthy += 1
            return SERVICE_UNAVAILABLE  # Envoy 503 UH: a local reply, not retried
        return _WAIT
    if cs.failfast is not None and not cs.failfast.ready:
        cs.failfast.set_ready(True, now)
    return _choose(c, ex, cs, eps, now)


def _pick_waiting(
    c: _Call, ex: Exchange, cs: ClusterRuntime, version: str | None
) -> Generator[simpy.Event, Any, Pod | int | None]:
    """Step 1 after :func:`_pick_ready` found nothing ready: Linkerd's balancer queue, then
    an endpoint, or ``None`` to try again (a fail-fast that its route retries retry), or a
    final status (a queue in fail-fast or full sheds the request)."""
    ff = cs.failfast
    assert ff is not None
    now = c.proxy.env.now
    if ff.admit(now, cs.queued) is not FailFastVerdict.ENQUEUE:
        # The queue is not ready (its gate shut in fail-fast, or full), so the route's
        # LoadShed, right above the backend distribution, fails the request at once: a
        # LoadShedError, which route retries never retry. Only the requests already queued
        # when fail-fast begins get a (retryable) FailFastError (§5.1).
        shed = ex.decide_load_shed(now)
        assert shed.event is not None
        c.stats.count(shed.event)
        return SERVICE_UNAVAILABLE
    waited = yield from _await_ready(c, version, cs, ex.deadline)
    if waited is not None:
        return _choose(c, ex, cs, waited, c.proxy.env.now)
    return (yield from _failed_fast(c, ex))


def _choose(c: _Call, ex: Exchange, cs: ClusterRuntime, eps: list[Pod], now: float) -> Pod:
    """The balancer's choice among the healthy ``eps``."""
    proxy = c.proxy
    hash_key = _source_address(c) if c.policy.cluster.hash_source else None
    pod: Pod = ex.pick(cs, eps, now, proxy.rng, c.res.rng_retries, hash_key=hash_key)
    locality = c.res.locality
    if locality is not None:
        locality.state.count(proxy.node, pod)
    return pod


def _source_address(c: _Call) -> str:
    """What ``useSourceIp`` hashes: the source address of the downstream connection, which is
    the calling pod's at a sidecar (its own app), at a waypoint (ztunnel spoofs the source
    pod's address, and the waypoint's internal listener takes it over from the HBONE
    connection), at Cilium's node Envoy (a transparent redirect) and at a gateway (the
    client), never the shared proxy's own (docs/mesh-semantics.md §4)."""
    if c.source is not None:
        return c.source
    proxy = c.proxy
    own: str = proxy.pod.name if proxy.pod is not None else (proxy.pod_name or proxy.name)
    return own


def _failed_fast(c: _Call, ex: Exchange) -> Generator[simpy.Event, Any, int | None]:
    env = c.proxy.env
    if env.now >= ex.deadline:
        c.stats.timeouts += 1
        return GATEWAY_TIMEOUT
    c.stats.failfasts += 1
    verdict = ex.decide_failfast(env.now, c.res.rng_retries)
    if not verdict.retry:
        return SERVICE_UNAVAILABLE
    c.stats.retries += 1
    if verdict.delay_s > 0:
        yield env.timeout(verdict.delay_s)
    return None


def _admit(c: _Call, ex: Exchange, cs: ClusterRuntime) -> Generator[simpy.Event, Any, int | None]:
    """Step 2: the breaker; ``None`` when admitted, else the final status (503 UO, or 504
    when the route deadline passes in the HTTP/1.1 pending queue).

    Envoy takes the ``max_requests`` unit when a request is attached to a connection
    (``ConnPoolImplBase::attachStreamToClient``): a request waiting in the pending queue
    holds a ``max_pending_requests`` unit only, and one that finds ``max_requests`` full
    when it gets its connection overflows then, leaving the connection in the pool."""
    br = cs.breaker
    if br is not None and cs.conn_limit is not None and not br.try_acquire(Resource.CONNECTIONS):
        if not br.try_acquire(Resource.PENDING_REQUESTS):
            c.stats.overflows += 1
            return SERVICE_UNAVAILABLE  # 503 UO, x-envoy-overloaded: never retried
        waited = yield from _pending(c, ex, cs)
        if waited is not None:
            return waited
    if cs.admit():
        return None
    if cs.conn_limit is not None:
        _release_conn(cs)  # the connection it got goes to the next request that waits
    c.stats.overflows += 1
    return SERVICE_UNAVAILABLE


def _pending(c: _Call, ex: Exchange, cs: ClusterRuntime) -> Generator[simpy.Event, Any, int | None]:
    """The HTTP/1.1 pending queue: ``None`` once a connection passed to this request (its
    pending unit released by whoever passed it), or 504 when the route deadline passes."""
    br = cs.breaker
    assert br is not None
    env = c.proxy.env
    waiter = env.event()
    cs.pending.append(waiter)
    if ex.deadline == math.inf:
        yield waiter
        return None
    yield waiter | env.timeout(max(0.0, ex.deadline - env.now))
    if waiter.triggered:
        return None
    # Timed out in the pending queue: leave it.
    waiter.succeed()  # marks it handled; _release_conn skips it
    br.release(Resource.PENDING_REQUESTS)
    c.stats.timeouts += 1
    return GATEWAY_TIMEOUT


def _try(
    c: _Call, ex: Exchange, cs: ClusterRuntime, pod: Pod
) -> Generator[simpy.Event, Any, tuple[int, Outcome | None]]:
    """Step 3: one attempt, raced by its deadline; the status and, when a deadline cut it
    short, the timeout's outcome."""
    env = c.proxy.env
    now = env.now
    stats = c.stats
    stats.attempts += 1
    name = pod.name
    stats.by_endpoint[name] = stats.by_endpoint.get(name, 0) + 1
    ex.dispatch(cs, pod, now)
    t = _Try(cs, pod, now)
    # With a per-try timeout the attempt says when it has its connection: the timer starts
    # there (§1.1), so a pool's wait and a connect (a black-holed one too) meet only the
    # route deadline.
    ready = None if ex.route.per_try_timeout_s is None else env.event()
    connected = None if ready is None else ready.succeed
    hole = None
    if not pod.alive:
        # A stale endpoint: the pod is gone. Its address refuses the connection, or, in a
        # zone outage, answers nothing (meshsim.sim.zone_failures).
        hole = c.res.sim.zones.blackholed_try(c.proxy, pod, connected)
        if hole is None:
            yield env.timeout(2.0 * c.proxy.hop_s)
            _settle(t, env.now)
            stats.connect_failures += 1
            return CONNECT_FAILURE, None
    if ready is not None:
        return (yield from _race_per_try(c, ex, t, hole, ready))
    try_deadline = ex.deadline
    if try_deadline == math.inf:
        if hole is None:
            status: int = yield from c.attempt(c.proxy, c.worker, pod, c.req, c.nbytes)
        else:
            status = yield from hole
            if status == CONNECT_FAILURE:
                stats.connect_failures += 1
        _settle(t, env.now)
        return status, None
    # The deadline first, then the try (spawn may run its first step now, as its process's
    # Initialize event would, after the deadline's timeout was made): proc | timeout.
    deadline = env.timeout(max(0.0, try_deadline - now))
    proc = spawn(env, _run_try(c, pod, t, hole))
    yield first_of(env, proc, deadline)
    if proc.triggered:
        return cast(int, proc.value), None
    # The caller gets a 504; the upstream attempt runs on, in the background.
    return _timed_out(c, ex, t, try_deadline)


def _race_per_try(
    c: _Call,
    ex: Exchange,
    t: _Try,
    hole: Generator[simpy.Event, Any, int] | None,
    ready: simpy.Event,
) -> Generator[simpy.Event, Any, tuple[int, Outcome | None]]:
    """Step 3 under a per-try timeout: the route deadline races the try until it has its
    connection (``ready``), then the per-try deadline from that moment does."""
    env = c.proxy.env
    now = env.now
    route = None if ex.deadline == math.inf else env.timeout(max(0.0, ex.deadline - now))
    proc = spawn(env, _run_try(c, t.host, t, hole, ready.succeed))
    yield first_of(env, proc, ready) if route is None else first_of(env, proc, ready, route)
    if proc.triggered:
        return cast(int, proc.value), None
    if not ready.triggered or (route is not None and route.processed):
        return _timed_out(c, ex, t, ex.deadline)  # still connecting at the route deadline
    try_deadline = ex.try_deadline(env.now)
    if route is not None and try_deadline >= ex.deadline:
        timer = route
    else:
        timer = env.timeout(max(0.0, try_deadline - env.now))
    yield first_of(env, proc, timer)
    if proc.triggered:
        return cast(int, proc.value), None
    return _timed_out(c, ex, t, try_deadline)


def _timed_out(c: _Call, ex: Exchange, t: _Try, try_deadline: float) -> tuple[int, Outcome | None]:
    """A deadline cut the try short: the caller gets a 504 while the upstream attempt runs
    on in the background."""
    _settle(t, c.proxy.env.now)
    if try_deadline >= ex.deadline:
        c.stats.timeouts += 1
        return GATEWAY_TIMEOUT, _ROUTE_TIMEOUT
    c.stats.per_try_timeouts += 1
    return GATEWAY_TIMEOUT, _PER_TRY_TIMEOUT


def _await_ready(
    c: _Call, version: str | None, cs: ClusterRuntime, deadline: float
) -> Generator[simpy.Event, Any, list[Pod] | None]:
    """Linkerd's balancer queue, which admitted the request: wait for a ready endpoint, or
    fail fast after 3 s (§5.1)."""
    env = c.res.env
    ff = cs.failfast
    assert ff is not None
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
            eps = _ready_endpoints(c, version, cs, env.now)
            if eps:
                ff.set_ready(True, env.now)
                return eps
            if ff.poll(env.now) or env.now >= deadline:
                return None
    finally:
        cs.queued -= 1


def _shadow(
    c: _Call, service: ServiceRuntime, subset: str | None
) -> Generator[simpy.Event, Any, None]:
    """A mirrored copy: the proxy's request-path CPU, one attempt, the response dropped."""
    res, proxy = c.res, c.proxy
    cs = _cluster(res, proxy, service, subset)
    eps, _ = _endpoints(proxy, service, subset)
    eps = [p for p in eps if p.alive]
    if not eps:
        return
    yield from proxy.work(c.worker, proxy.costs(c.nbytes, 0, res.mtls)[0])
    env = res.env
    started = env.now
    pod: Pod = cs.lb.pick(eps, started, res.rng_mirror)  # type: ignore[assignment]
    lb = cs.lb
    lb.on_start(pod, started)
    yield from c.attempt(proxy, c.worker, pod, c.req, c.nbytes)
    lb.on_complete(pod, env.now - started, env.now)
