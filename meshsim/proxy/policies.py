"""Route policies built from a scenario ``traffic`` entry, driving :mod:`meshsim.policy`.

This module only translates: the scenario's Istio-flavoured keys into the shared policy
objects, and the proxy's :class:`Attempt` into their :class:`Outcome`. Every decision
(retry or not, back-off, which host, eject or not, overflow or not, inject a fault or not)
is made by :mod:`meshsim.policy`, the same code the simulator runs (DESIGN principle 1).

Keys read (others are ignored here)::

    timeout_ms, retries: {attempts, per_try_timeout_ms, retry_on, backoff_base_ms},
    circuit_breaker: {max_connections, max_pending_requests, max_requests, max_retries},
    outlier_detection: {consecutive_5xx, interval_s, base_ejection_s, max_ejection_percent},
    load_balancer: round_robin | least_request | random | peak_ewma,
    fault: {delay: {percent, fixed_ms}, abort: {percent, status}},
    split: {<subset>: weight, ...}        (needs the listener's ``subsets``, one per upstream),
    failure_accrual: {mode: consecutive | unified, max_failures, backoff_min_s,
                      backoff_max_s, backoff_jitter}   (Linkerd's per-endpoint breaker)

``circuit_breaker.max_connections`` bounds the route's upstream connections and
``max_pending_requests`` the requests waiting for one (see :class:`ConnectionLimits`);
past either, the proxy answers 503 (``UO``, ``x-envoy-overloaded``) as Envoy does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshsim.errors import MeshsimError
from meshsim.policy import (
    BALANCERS,
    CircuitBreaker,
    FailureAccrual,
    FaultAbort,
    FaultDelay,
    FaultInjection,
    LinkerdBackOff,
    LoadBalancer,
    Outcome,
    OutlierConfig,
    OutlierDetector,
    Resource,
    RetryPolicy,
    RetryState,
    Thresholds,
    WeightedSplit,
)
from meshsim.proxy.seam import NO_FAULT, Attempt, Fault, PassThrough, RetryTracker, RoutePolicy

# The real proxy has no source address to hash yet, so ring_hash and maglev stay out.
_BALANCERS: dict[str, type[LoadBalancer]] = {
    name: cls for name, cls in BALANCERS.items() if name not in ("ring_hash", "maglev")
}


SUPPORTED_BALANCERS = frozenset(_BALANCERS)


def outcome_of(attempt: Attempt) -> Outcome:
    if attempt.status is not None:
        return Outcome.response(attempt.status)
    if attempt.failure == "connect_failure":
        return Outcome.connect_failure()
    if attempt.failure == "per_try_timeout":
        return Outcome.per_try_timeout()
    return Outcome.reset()


class _Retries:
    def __init__(self, state: RetryState) -> None:
        self.state = state

    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> float | None:
        self.state.on_attempt(attempt.host)
        decision = self.state.decide(outcome_of(attempt), now, rng)
        return decision.delay_s if decision.retry else None

    def close(self) -> None:
        self.state.close()


class ConnectionLimits:
    """A route's ``max_connections`` and ``max_pending_requests``, on its shared breaker."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def try_connection(self) -> bool:
        return self.breaker.try_acquire(Resource.CONNECTIONS)

    def release_connection(self) -> None:
        self.breaker.release(Resource.CONNECTIONS)

    def try_pending(self) -> bool:
        return self.breaker.try_acquire(Resource.PENDING_REQUESTS)

    def release_pending(self) -> None:
        self.breaker.release(Resource.PENDING_REQUESTS)


class MeshPolicy:
    """One route's policies, for ``hosts`` upstream hosts numbered 0..hosts-1."""

    def __init__(
        self, traffic: dict[str, Any], hosts: int, subsets: tuple[str, ...] | None = None
    ) -> None:
        self.hosts = list(range(hosts))
        ms = traffic.get("timeout_ms")
        self.timeout_s: float | None = None if ms is None else float(ms) / 1000.0
        retries = traffic.get("retries")
        self.retry_policy: RetryPolicy | None = None
        self.per_try_timeout_s: float | None = None
        if retries:
            per_try = retries.get("per_try_timeout_ms")
            self.per_try_timeout_s = None if per_try is None else float(per_try) / 1000.0
            base = retries.get("backoff_base_ms")
            self.retry_policy = RetryPolicy.istio(
                retries.get("attempts"),
                retry_on=retries.get("retry_on"),
                per_try_timeout_s=self.per_try_timeout_s,
                backoff_base_s=None if base is None else float(base) / 1000.0,
            )
        cb = traffic.get("circuit_breaker") or {}
        defaults = Thresholds()
        self.breaker = CircuitBreaker(
            Thresholds(
                max_connections=int(cb.get("max_connections", defaults.max_connections)),
                max_pending_requests=int(
                    cb.get("max_pending_requests", defaults.max_pending_requests)
                ),
                max_requests=int(cb.get("max_requests", defaults.max_requests)),
                max_retries=int(cb.get("max_retries", defaults.max_retries)),
            )
        )
        od = traffic.get("outlier_detection")
        self.outlier: OutlierDetector | None = None
        if od:
            config = OutlierConfig.istio(
                consecutive_5xx_errors=int(od.get("consecutive_5xx", 5)),
                interval_s=float(od.get("interval_s", 10.0)),
                base_ejection_time_s=float(od.get("base_ejection_s", 30.0)),
                max_ejection_percent=float(od.get("max_ejection_percent", 10.0)),
            )
            self.outlier = OutlierDetector(config, self.hosts)
        name = str(traffic.get("load_balancer", "least_request"))
        if name not in _BALANCERS:
            raise MeshsimError(
                f"traffic.load_balancer: expected one of {sorted(_BALANCERS)}, not {name!r}"
            )
        self.balancer = _BALANCERS[name]()
        fault = traffic.get("fault") or {}
        delay, abort = fault.get("delay"), fault.get("abort")
        self.fault_injection: FaultInjection | None = None
        if delay or abort:
            self.fault_injection = FaultInjection(
                delay=FaultDelay(
                    float(delay.get("fixed_ms", 0)) / 1000.0, float(delay.get("percent", 100))
                )
                if delay
                else None,
                abort=FaultAbort(int(abort.get("status", 503)), float(abort.get("percent", 100)))
                if abort
                else None,
            )
        self.connection_limits = ConnectionLimits(self.breaker)
        self.split: WeightedSplit | None = None
        self.subset_hosts: dict[str, list[int]] = {}
        split = traffic.get("split")
        if split:
            self._set_split(split, subsets)
        self.accrual: FailureAccrual | None = None
        fa = traffic.get("failure_accrual")
        if fa:
            self.accrual = _accrual(fa)
        self._started: dict[int, float] = {}
        self._rng = np.random.default_rng(0)

    def _set_split(self, split: Any, subsets: tuple[str, ...] | None) -> None:
        if not isinstance(split, dict):
            raise MeshsimError("traffic.split: expected a mapping of subset to weight")
        if subsets is None or len(subsets) != len(self.hosts):
            raise MeshsimError(
                "traffic.split needs the listener's subsets: the version of each upstream"
            )
        for host, subset in enumerate(subsets):
            self.subset_hosts.setdefault(subset, []).append(host)
        unknown = sorted(set(split) - set(self.subset_hosts))
        if unknown:
            raise MeshsimError(
                f"traffic.split names subsets {unknown} that no upstream belongs to "
                f"(subsets: {sorted(self.subset_hosts)})"
            )
        # Envoy's weights are integers; scenario weights may be fractions of 100.
        weights = {str(k): round(float(v) * 1000) for k, v in split.items()}
        try:
            self.split = WeightedSplit(weights)
        except ValueError as exc:
            raise MeshsimError(f"traffic.split: {exc}") from None

    @property
    def simple(self) -> bool:
        """No timers, faults or retries: the proxy may serve requests without a task."""
        return (
            self.retry_policy is None
            and self.timeout_s is None
            and self.per_try_timeout_s is None
            and self.fault_injection is None
        )

    def fault(self, now: float, rng: np.random.Generator) -> Fault:
        if self.fault_injection is None:
            return NO_FAULT
        decision = self.fault_injection.decide(rng)
        return Fault(decision.delay_s, decision.abort_status)

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        candidates: list[Any] = self.hosts
        if self.split is not None:
            subset = self.split.choose(rng)
            if subset is None:
                return None
            candidates = self.subset_hosts[str(subset)]
        if self.outlier is not None:
            self.outlier.poll(now, rng)
            candidates = self.outlier.eligible(candidates)
        if self.accrual is not None:
            candidates = self.accrual.ready(candidates, now)
            if not candidates:
                return None
        host = self.balancer.pick(candidates, now, rng)
        return None if host is None else int(host)  # type: ignore[call-overload]

    def admit(self, host: int, now: float) -> bool:
        if not self.breaker.try_acquire(Resource.REQUESTS):
            return False
        if self.accrual is not None:
            self.accrual.on_dispatch(host, now)
        self.balancer.on_start(host, now)
        self._started[host] = now
        return True

    def release(self, host: int, now: float) -> None:
        self.breaker.release(Resource.REQUESTS)
        self.balancer.on_complete(host, now - self._started.get(host, now), now)

    def record(self, attempt: Attempt, now: float) -> list[int]:
        ejected = False
        outcome = outcome_of(attempt)
        if self.outlier is not None:
            # The detector draws only for ejection-time jitter.
            ejected = bool(self.outlier.record(attempt.host, outcome, now, self._rng))
        if self.accrual is not None:
            breaker = self.accrual.breaker(attempt.host)
            trips = breaker.trips
            breaker.record(outcome, now, self._rng)
            ejected = ejected or breaker.trips > trips
        return [attempt.host] if ejected else []

    def retry_state(self) -> RetryTracker:
        return _Retries(RetryState(self.retry_policy, self.breaker))


def _accrual(raw: Any) -> FailureAccrual:
    if not isinstance(raw, dict):
        raise MeshsimError("traffic.failure_accrual: expected a mapping")
    default = LinkerdBackOff.accrual_default()
    try:
        return FailureAccrual(
            mode=str(raw.get("mode", "consecutive")),
            max_failures=int(raw.get("max_failures", 7)),
            backoff=LinkerdBackOff(
                float(raw.get("backoff_min_s", default.min_s)),
                float(raw.get("backoff_max_s", default.max_s)),
                float(raw.get("backoff_jitter", default.jitter)),
            ),
        )
    except (TypeError, ValueError) as exc:
        raise MeshsimError(f"traffic.failure_accrual: {exc}") from None


def policy_for(
    traffic: dict[str, Any], hosts: int = 1, subsets: tuple[str, ...] | None = None
) -> RoutePolicy:
    if not traffic:
        return PassThrough()
    return MeshPolicy(traffic, hosts, subsets)
