"""The order in which one request meets the policies: pick, admit, try, record, decide.

Written once and driven by both clocks (docs/DESIGN.md, principle 1): the simulator's
outbound chain (:mod:`meshsim.sim.dataplanes.resilience`, a simpy generator that yields)
and the real proxy's (:mod:`meshsim.proxy.forward` through :mod:`meshsim.proxy.policies`,
a coroutine that awaits). The steps, for one request on one route
(:class:`~meshsim.policy.mapping.RoutePolicy`):

0. **fault**: Istio's fault filter, before the router: a delay, then an independent abort
   (a local reply, never retried), :func:`inject_fault`. The :class:`Exchange` (and its
   route deadline) starts after it: the router's timer does not count the delay;
1. **pick**: the traffic split (:meth:`Exchange.choose_version`: Envoy picks the weighted
   cluster once per request, Linkerd re-picks per try among available backends), then
   the endpoints the cluster's health allows (:meth:`ClusterRuntime.healthy`: outlier
   ejections, failure-accrual breakers) and the balancer's choice
   (:meth:`Exchange.pick`: Envoy's ``previous_hosts`` on retries);
2. **admit**: the circuit breaker's ``max_requests`` (:meth:`ClusterRuntime.admit`), taken
   when the request has its connection (Envoy's ``attachStreamToClient``: a request in the
   pending queue holds a ``max_pending_requests`` unit only); overflow is a local 503 UO,
   never retried;
3. **try**: :meth:`Exchange.dispatch`, the attempt bounded by :meth:`Exchange.try_deadline`,
   then :meth:`ClusterRuntime.settle`;
4. **record**: outlier detection or failure accrual see the outcome
   (:meth:`ClusterRuntime.record`: how many of them ejected or shut the host);
5. **decide**: :meth:`Exchange.decide` (Envoy's retry policy with the ``max_retries``
   breaker, Linkerd's route retries, or ServiceProfile retries under a budget), and a
   back-off that would overrun the route deadline ends the request with a 504
   (:meth:`Exchange.backoff_overruns`).

Each step names the counter it moves (``Verdict.event``; the names are the fields of
``runs.<mesh>.resilience`` in ``summary.json``), so both drivers count the same events.

What the two clocks still do differently, and why (the only place this is listed):

=========================  ===================================  ==================================
step                       simulator (simpy, simulated time)    real proxy (asyncio, monotonic)
=========================  ===================================  ==================================
waiting (delay, back-off)  ``yield env.timeout(s)``             ``await asyncio.sleep(s)``
``now``                    ``env.now``                          ``time.monotonic()``
random streams             named streams per purpose (faults,   one generator per listener
                           retries, health, splits, balancers;  (``Route.rng``) for every draw
                           first picks use the balancer's,      but health's (ejection and
                           retries the retries' stream)         penalty jitter: a fixed seed)
route match                per request, on the call's path and  a listener is one route, its
                           headers (Envoy's route order)        rule's: ``match`` not evaluated
clusters                   one :class:`ClusterRuntime` per      one per listener, across its
                           (service, subset), per proxy         subsets (hosts 0..n-1)
HTTP/1.1 connections       the chain queues a request for one   the upstream pools hold real
(``max_connections``,      of ``max_connections`` (one request  connections and queue for them,
pending requests)          each), bounded by the pending limit  on the same breaker's resources
``max_requests``           taken with a connection's slot       taken when the pool hands over
                           (before the attempt opens it)        an open connection (a failed
                                                                connect takes none)
no ready endpoint          Linkerd: queue up to 3 s, then fail  503 at once (no balancer queue);
                           fast, and a split gives the backend  so a split gives a Linkerd backend
                           weight 0 while it fails fast; Envoy: with no ready host weight 0 at
                           503 UH at once                       once
an endpoint whose          Linkerd over HTTP/2: pending while   Linkerd: connects per request, so
connection is down         it reconnects, so no try goes to it  the try that finds the host down
(Linkerd)                  (the failure model says whether the  fails (503); then it is pending
                           connection is up;                    until its next attempt is due (the
                           ``meshsim.policy.reconnect``)        same back-off), and the request
                                                                then sent to it is that attempt
the attempt                modelled hops, CPU and app; a try    a real upstream connection; a try
                           that times out runs on in the        that times out is closed
                           background
per-try deadline           a process races the try; its timer   ``asyncio.wait_for`` on the head,
                           starts when the attempt reports its  once the pool gave a connection
                           connection (the route deadline       and the request is out
                           bounds the connection's set-up)
mirroring                  a shadow request, response dropped   not emulated (the lab drops it)
request bodies             the call's size: Linkerd retries     retries only a body it holds
                           none over 64 KiB, Envoy any size     whole, up to 64 KiB, any mesh
gRPC statuses              a gRPC service's error is a 200      HTTP/1.1 without gRPC framing:
                           with grpc-status in its headers      a grpc-status field of the
                           (Trailers-Only); Linkerd's accrual   response head (the Trailers-
                           and retries would read trailers      Only form) is read; a chunked
                           too, but none are sent               body's trailers never are
counters                   ``Counters`` per destination         Prometheus counters per listener
                           service, in the measurement window   (retries, overflows, ejections)
=========================  ===================================  ==================================
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshsim.policy import (
    BALANCERS,
    CircuitBreaker,
    FailFast,
    FailureAccrual,
    HashKey,
    LinkerdRetryState,
    LoadBalancer,
    Outcome,
    OutcomeKind,
    OutlierDetector,
    Resource,
    RetryState,
    ServiceProfileRetry,
    StopReason,
    TpsBudget,
    per_try_deadline,
)

if TYPE_CHECKING:
    import numpy as np

    from meshsim.policy.fault import FaultDecision
    from meshsim.policy.mapping import ClusterPolicy, RoutePolicy

__all__ = ["ClusterRuntime", "Exchange", "Verdict", "inject_fault"]

_CONN_UNLIMITED = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Exchange.decide` concluded after one try."""

    retry: bool
    delay_s: float = 0.0
    event: str | None = None
    """The counter this decision moves (``retries`` when it retries), or ``None``."""


_STOP = Verdict(False)
_LOAD_SHED = Verdict(False, event="load_shed")
_STOP_EVENTS = {
    StopReason.RETRY_OVERFLOW: Verdict(False, event="retry_overflows"),
    StopReason.RETRIES_EXHAUSTED: Verdict(False, event="retries_exhausted"),
    StopReason.BUDGET_EXHAUSTED: Verdict(False, event="budget_exhausted"),
}


def inject_fault(route: RoutePolicy, rng: np.random.Generator) -> FaultDecision | None:
    """Step 0: the fault filter's decision, or ``None`` when the route injects no faults."""
    fault = route.fault
    return None if fault is None else fault.decide(rng)


class ClusterRuntime:
    """One client proxy's state for one destination cluster: balancer, breaker, health.

    Built from the cluster's :class:`~meshsim.policy.mapping.ClusterPolicy` (the
    DestinationRule, or Linkerd's annotations). ``hosts`` fixes the outlier detector's host
    set (the proxy's upstreams); without it :meth:`sync_hosts` follows the endpoints.
    """

    __slots__ = ("accrual", "breaker", "conn_limit", "failfast", "lb", "outlier", "pending",
                 "queued", "view_key")  # fmt: skip

    def __init__(
        self,
        cluster: ClusterPolicy,
        *,
        h1: bool,
        now: float,
        hosts: Sequence[Hashable] = (),
        balancers: dict[str, type[LoadBalancer]] | None = None,
    ) -> None:
        self.lb: LoadBalancer = (balancers or BALANCERS)[cluster.balancer]()
        self.breaker: CircuitBreaker | None = None
        self.conn_limit: int | None = None
        self.pending: deque[Any] = deque()
        """Requests waiting for a connection (the simulator's HTTP/1.1 pending queue)."""
        thresholds = cluster.thresholds
        if thresholds is not None:
            self.breaker = CircuitBreaker(thresholds)
            if h1 and thresholds.max_connections < _CONN_UNLIMITED:
                # HTTP/1.1: one request per connection; beyond max_connections requests wait
                # in the pending queue (bounded by max_pending_requests), mesh-semantics §2.1.
                self.conn_limit = thresholds.max_connections
        self.outlier: OutlierDetector | None = (
            None if cluster.outlier is None else OutlierDetector(cluster.outlier, hosts, now=now)
        )
        self.view_key: tuple[int, int, int] | None = None
        self.accrual: FailureAccrual | None = None
        if cluster.accrual_mode is not None:
            mode, most = cluster.accrual_mode, cluster.accrual_max_failures
            backoff = cluster.accrual_backoff
            self.accrual = FailureAccrual(mode, most)
            if backoff is not None:
                self.accrual = FailureAccrual(mode, most, backoff)
        self.failfast: FailFast | None = FailFast.outbound() if cluster.failfast else None
        self.queued = 0

    def sync_hosts(self, endpoints: Sequence[Hashable], key: tuple[int, int, int]) -> None:
        """Keep the outlier detector's host set equal to the cluster's endpoints."""
        od = self.outlier
        if od is None or key == self.view_key:
            return
        self.view_key = key
        current = set(endpoints)
        for host in list(od._monitors):
            if host not in current:
                od.remove_host(host)
        for host in endpoints:
            od.add_host(host)

    # -- 1. pick (health) ------------------------------------------------------------------

    def healthy(self, endpoints: list[Any], now: float, rng: np.random.Generator) -> list[Any]:
        """The endpoints a balancer may choose from: outlier-ejected and accrual-shut ones
        left out (the detector's due interval sweeps run first)."""
        od = self.outlier
        if od is not None:
            if now >= od.next_sweep_at:
                od.poll(now, rng)
            endpoints = od.eligible(endpoints)
        if self.accrual is not None:
            endpoints = self.accrual.ready(endpoints, now)
        return endpoints

    # -- 2. admit --------------------------------------------------------------------------

    def admit(self) -> bool:
        """The breaker's ``max_requests``; False is an overflow (503 UO, never retried)."""
        br = self.breaker
        return br is None or br.try_acquire(Resource.REQUESTS)

    # -- 3. try ----------------------------------------------------------------------------

    def dispatch(self, host: Hashable, now: float) -> None:
        """A try starts on ``host``: the balancer and the accrual breaker see it."""
        self.lb.on_start(host, now)
        if self.accrual is not None:
            self.accrual.on_dispatch(host, now)

    def settle(self, host: Hashable, started: float, now: float) -> None:
        """A try is over (answered, failed or timed out): free its ``max_requests`` slot."""
        self.lb.on_complete(host, now - started, now)
        if self.breaker is not None:
            self.breaker.release(Resource.REQUESTS)

    # -- 4. record -------------------------------------------------------------------------

    def record(self, host: Hashable, outcome: Outcome, now: float, rng: np.random.Generator) -> int:
        """Outlier detection and failure accrual see ``outcome``; the number of them that
        ejected ``host`` (Envoy) or shut its breaker (Linkerd) on it."""
        ejected = 0
        od = self.outlier
        # A try that ends after its host left the cluster (a black-holed connect outlasting
        # the endpoint removal) has no monitor to report to, as in Envoy.
        if od is not None and od.has_host(host) and od.record(host, outcome, now, rng):
            ejected += 1
        if self.accrual is not None:
            breaker = self.accrual.breaker(host)
            trips = breaker.trips
            breaker.record(outcome, now, rng)
            if breaker.trips > trips:
                ejected += 1
        return ejected


class Exchange:
    """One request's walk through the chain on one route (retry state, deadline)."""

    __slots__ = ("body_bytes", "deadline", "envoy", "profile", "retry", "route")

    def __init__(
        self,
        route: RoutePolicy,
        *,
        envoy: bool,
        now: float,
        body_bytes: int = 0,
        budget: TpsBudget | None = None,
    ) -> None:
        self.route = route
        self.envoy = envoy
        self.body_bytes = body_bytes
        self.deadline = now + route.timeout_s if route.timeout_s else math.inf
        """The route (Istio) or request (Linkerd) deadline; covers retries, never retried."""
        self.retry: RetryState | LinkerdRetryState | None = None
        """Built at the first failure: a request that succeeds at once never needs one."""
        self.profile: ServiceProfileRetry | None = None
        if route.profile_retry:
            assert budget is not None, "ServiceProfile retries need the service's budget"
            self.profile = ServiceProfileRetry(budget, failure_statuses=route.profile_failures)

    # -- 1. pick ---------------------------------------------------------------------------

    def choose_version(
        self,
        rng: np.random.Generator,
        available: set[str] | None = None,
        unready: set[str] | frozenset[str] = frozenset(),
    ) -> str | None:
        """The subset for the next try (``None``: no split, or no available backend).

        Envoy's weighted_clusters choose whatever the subset's endpoints; Linkerd chooses
        among backends with endpoints (``available``, all of them when ``None``), and a
        backend whose balancer queue refuses requests (``unready``: in fail-fast, or full)
        gets weight 0 while another can take the request: linkerd2-proxy's distribution
        skips a backend whose queue is not ready, and the queue's gate is shut in fail-fast
        (§5, §5.1). When no backend is ready the pick is made as if all were, and the chosen
        one fails fast or sheds the request.
        """
        split = self.route.split
        if split is None:
            return None
        if self.envoy or available is None:
            return str(split.choose(rng))
        candidates = [v for v in split.weights if v in available]
        chosen = None
        if unready:
            ready = [v for v in candidates if v not in unready]
            if ready:
                chosen = split.choose(rng, ready)
        if chosen is None:
            chosen = split.choose(rng, candidates)
        return None if chosen is None else str(chosen)

    def pick(
        self,
        cluster: ClusterRuntime,
        endpoints: list[Any],
        now: float,
        rng: np.random.Generator,
        retry_rng: np.random.Generator,
        *,
        hash_key: HashKey | None = None,
    ) -> Any:
        """The balancer's choice among healthy ``endpoints`` (``None`` if there are none).

        On an Envoy retry the ``previous_hosts`` predicate re-picks hosts already tried, with
        the retries' random stream; first tries use the balancer's.
        """
        retry = self.retry
        if retry is not None and self.envoy:
            assert isinstance(retry, RetryState)
            return cluster.lb.pick(
                endpoints,
                now,
                retry_rng,
                hash_key=hash_key,
                previous_hosts=retry.previous_hosts,
                reselect_attempts=retry.reselect_attempts,
            )
        if hash_key is not None:
            return cluster.lb.pick(endpoints, now, rng, hash_key=hash_key)
        return cluster.lb.pick(endpoints, now, rng)

    # -- 3. try ----------------------------------------------------------------------------

    def dispatch(self, cluster: ClusterRuntime, host: Hashable, now: float) -> None:
        """Start a try on ``host``: the balancer, the accrual breaker and the retry's
        hosts see it."""
        cluster.dispatch(host, now)
        if self.retry is not None:
            self.retry.on_attempt(host)

    def connect_failed(self, host: Hashable) -> None:
        """A try on ``host`` failed before it had a connection, so it never took a
        ``max_requests`` unit nor became the balancer's active request (the real proxy,
        whose pool connects before admission): the retry's hosts still see it (Envoy's
        ``onHostAttempted`` on a pool failure)."""
        if self.retry is not None:
            self.retry.on_attempt(host)

    def try_deadline(self, connected_at: float) -> float:
        """The deadline of a try that got its connection at ``connected_at``: the per-try
        timeout from then, within the route deadline (§1.1: Envoy starts the per-try timer
        in ``onPoolReady``, so waiting for a pooled connection and opening one, a black-holed
        connect included, count against the route deadline only)."""
        return per_try_deadline(self.route.per_try_timeout_s, connected_at, self.deadline)

    # -- 5. decide -------------------------------------------------------------------------

    def decide(
        self,
        host: Hashable,
        outcome: Outcome,
        now: float,
        rng: np.random.Generator,
        breaker: CircuitBreaker | None,
    ) -> Verdict:
        """Retry (after ``delay_s``) or stop, after ``outcome`` of the try on ``host``."""
        if outcome.kind is OutcomeKind.ROUTE_TIMEOUT:
            return _STOP
        if self.profile is not None:
            decision = self.profile.decide(outcome, now, self.body_bytes)
        else:
            route = self.route
            if not route.retries or (
                outcome.kind is OutcomeKind.RESPONSE
                and 100 <= outcome.effective_status < 400
                and not outcome.is_grpc_error  # a gRPC failure comes in a 200
            ):
                return _STOP
            retry = self.retry
            if retry is None:
                if self.envoy:
                    retry = RetryState(route.envoy_retry, breaker)
                else:
                    retry = LinkerdRetryState(route.linkerd_retry, self.body_bytes)
                retry.on_attempt(host)
                self.retry = retry
            decision = retry.decide(outcome, now, rng)
        if not decision.retry:
            return _STOP_EVENTS.get(decision.reason, _STOP)  # type: ignore[arg-type]
        return Verdict(True, decision.delay_s, "retries")

    def decide_failfast(self, now: float, rng: np.random.Generator) -> Verdict:
        """Linkerd's fail-fast (503) is retryable by a route's retries (§6.2): another
        backend may be ready. ServiceProfile retries never retry it: to them it is an error,
        a result they do not retry, which deposits into the budget (§6.1)."""
        if self.profile is not None:
            self.profile.decide(Outcome.failfast(), now, self.body_bytes)
            return _STOP
        if self.retry is None and self.route.linkerd_retry is not None:
            self.retry = LinkerdRetryState(self.route.linkerd_retry, self.body_bytes)
        if self.retry is None:
            return _STOP
        decision = self.retry.decide(Outcome.failfast(), now, rng)
        return Verdict(True, decision.delay_s, "retries") if decision.retry else _STOP

    def decide_load_shed(self, now: float) -> Verdict:
        """Linkerd's balancer queue refuses the request (full, or its gate shut in
        fail-fast, §5.1): the request is shed (503) and never retried,
        not even by a route's retries (§6.2, unlike a fail-fast); ServiceProfile retries
        deposit for it, as for any error (§6.1)."""
        if self.profile is not None:
            self.profile.decide(Outcome.load_shed(), now, self.body_bytes)
        return _LOAD_SHED

    def backoff_overruns(self, now: float, delay_s: float) -> bool:
        """A back-off that reaches the deadline ends the request there (504)."""
        return delay_s > 0 and now + delay_s >= self.deadline

    def close(self) -> None:
        """The request is over: release a held ``max_retries`` slot."""
        if isinstance(self.retry, RetryState):
            self.retry.close()
