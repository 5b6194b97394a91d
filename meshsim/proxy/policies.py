"""A proxy listener's policies: the scenario's one translation, driven by the chain's steps.

A listener's ``traffic`` mapping has the shape of one entry of a scenario's ``traffic``
list (without ``service``). It goes through the same translation as the simulator
(:func:`meshsim.policy.mapping.translate`, for the listener's ``mesh``, Istio by default),
so with no ``retries`` an Istio listener retries as istiod programs Envoy (2 retries on
connect-failure, refused-stream, unavailable, cancelled) and with no ``circuit_breaker``
nothing overflows; every state machine and every step of the chain is
:mod:`meshsim.policy.chain`'s (DESIGN principle 1). What the proxy still does differently
from the simulator is listed once, in that module's table.

One key is the proxy's own, beside the scenario's::

    failure_accrual: {mode: consecutive | unified, max_failures, backoff_min_s,
                      backoff_max_s, backoff_jitter}   (Linkerd's per-endpoint breaker;
                      refused beside retries under the retry budget, a ServiceProfile)

``split`` needs the listener's ``subsets`` (the version of each upstream).
``circuit_breaker.max_connections`` bounds the listener's upstream connections and
``max_pending_requests`` the requests waiting for one (see :class:`ConnectionLimits`);
past either, the proxy answers 503 (``UO``, ``x-envoy-overloaded``) as Envoy does. An
upstream connect may take the mesh's connect timeout
(:func:`meshsim.policy.mapping.connect_timeout_s`: Istio's ``meshConfig.connectTimeout``,
10 s; Linkerd's 1 s), then fails as a connect failure.

A listener with neither ``traffic`` nor ``mesh`` is a plain forwarder
(:class:`~meshsim.proxy.seam.PassThrough`, the calibration's base configuration).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from meshsim.errors import MeshsimError
from meshsim.policy import (
    BALANCERS,
    ENVOY_CONNECT_TIMEOUT_S,
    CircuitBreaker,
    LinkerdBackOff,
    LoadBalancer,
    Outcome,
    Resource,
    TpsBudget,
)
from meshsim.policy.chain import ClusterRuntime, Exchange, Verdict, inject_fault
from meshsim.policy.mapping import (
    TRAFFIC_MESHES,
    ServicePolicy,
    TrafficRuleError,
    connect_timeout_s,
    translate,
)
from meshsim.policy.reconnect import EndpointConnections
from meshsim.proxy.seam import NO_FAULT, Attempt, Fault, PassThrough, RoutePolicy

if TYPE_CHECKING:
    from meshsim.scenario.options import MeshOptions

# The real proxy has no source address to hash yet, so ring_hash and maglev stay out.
_BALANCERS: dict[str, type[LoadBalancer]] = {
    name: cls for name, cls in BALANCERS.items() if name not in ("ring_hash", "maglev")
}

SUPPORTED_BALANCERS = frozenset(_BALANCERS)

_LISTENER = "upstream"
"""The service name a listener's rule is translated under (a listener is one service)."""


def outcome_of(attempt: Attempt) -> Outcome:
    if attempt.status is not None:
        # A grpc-status in the head: a Trailers-Only response, so not in trailers.
        return Outcome.response(attempt.status, grpc_status=attempt.grpc_status)
    if attempt.failure == "connect_failure":
        return Outcome.connect_failure()
    if attempt.failure == "per_try_timeout":
        return Outcome.per_try_timeout()
    if attempt.failure == "route_timeout":
        return Outcome.route_timeout()
    return Outcome.reset()


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
    """One listener's route and cluster, for ``hosts`` upstream hosts numbered 0..hosts-1."""

    def __init__(
        self,
        service: ServicePolicy,
        hosts: int,
        subsets: tuple[str, ...] | None = None,
        *,
        envoy: bool = True,
        budget: tuple[float, int, float] | None = None,
        connect_timeout_s: float = ENVOY_CONNECT_TIMEOUT_S,
        reconnects: bool = False,
    ) -> None:
        self.service = service
        self.route = service.routes[0]
        """The listener's rule (a listener is one route: ``match`` is not evaluated)."""
        self.envoy = envoy
        self.hosts = list(range(hosts))
        self.timeout_s = self.route.timeout_s
        self.per_try_timeout_s = self.route.per_try_timeout_s
        self.connect_timeout_s = connect_timeout_s
        now = time.monotonic()
        self.cluster = ClusterRuntime(
            service.cluster, h1=True, now=now, hosts=self.hosts, balancers=_BALANCERS
        )
        self.connection_limits: ConnectionLimits | None = None
        if self.cluster.conn_limit is not None:
            assert self.cluster.breaker is not None
            self.connection_limits = ConnectionLimits(self.cluster.breaker)
        self.subset_hosts: dict[str, list[int]] = {}
        if self.route.split is not None:
            self._check_subsets(subsets)
        self.budget: TpsBudget | None = None
        if budget is not None:
            ratio, min_per_s, ttl = budget
            self.budget = TpsBudget(ttl, min_per_s, ratio, now=now)
        self._single = Exchange(self.route, envoy=envoy, now=now, budget=self.budget)
        """The chain's steps for a request's only try (never decides: it has no retries)."""
        self._rng = np.random.default_rng(0)
        """Outlier detection, failure accrual and reconnects draw only for ejection, penalty
        and back-off jitter."""
        self.connections = EndpointConnections() if reconnects else None
        """Linkerd over HTTP/2: a host whose connect failed is pending while it reconnects
        (the chain's table of clock differences)."""

    def _check_subsets(self, subsets: tuple[str, ...] | None) -> None:
        if subsets is None or len(subsets) != len(self.hosts):
            raise MeshsimError(
                "traffic.split needs the listener's subsets: the version of each upstream"
            )
        for host, subset in enumerate(subsets):
            self.subset_hosts.setdefault(subset, []).append(host)
        split = self.route.split
        assert split is not None
        unknown = sorted(str(k) for k in set(split.weights) - set(self.subset_hosts))
        if unknown:
            raise MeshsimError(
                f"traffic.split names subsets {unknown} that no upstream belongs to "
                f"(subsets: {sorted(self.subset_hosts)})"
            )

    @property
    def simple(self) -> bool:
        """No timers, faults or retries: the proxy may serve requests without a task."""
        route = self.route
        return (
            not route.retries
            and route.timeout_s is None
            and route.fault is None
            and (route.per_try_timeout_s is None)
        )

    # -- step 0 ----------------------------------------------------------------------------

    def fault(self, now: float, rng: np.random.Generator) -> Fault:
        decision = inject_fault(self.route, rng)
        if decision is None:
            return NO_FAULT
        return Fault(decision.delay_s, decision.abort_status)

    # -- steps 1 to 4, for a request's only try (the fast path) -------------------------

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        return self.pick_for(self._single, now, rng)

    def pick_for(self, ex: Exchange, now: float, rng: np.random.Generator) -> int | None:
        """Step 1 for ``ex``: the split's subset, its healthy hosts, the balancer's choice."""
        candidates: list[Any] = self.hosts
        if self.route.split is not None:
            subset = ex.choose_version(rng, set(self.subset_hosts), self._unready(now))
            if subset is None:
                return None
            candidates = self.subset_hosts[subset]
        candidates = self.cluster.healthy(candidates, now, rng)
        if self.connections is not None:
            candidates = self.connections.ready(candidates, now)
        if not candidates:
            return None
        host = ex.pick(self.cluster, candidates, now, rng, rng)
        return None if host is None else int(host)

    def _unready(self, now: float) -> set[str] | frozenset[str]:
        """Linkerd: the subsets with no ready host. Without a balancer queue such a backend
        fails at once, as one in fail-fast does, so a split gives it weight 0 (the chain's
        table of clock differences)."""
        accrual, connections = self.cluster.accrual, self.connections
        if self.envoy or (accrual is None and connections is None):
            return frozenset()
        unready: set[str] = set()
        for subset, hosts in self.subset_hosts.items():
            ready: list[Any] = hosts if accrual is None else accrual.ready(hosts, now)
            if connections is not None:
                ready = connections.ready(ready, now)
            if not ready:
                unready.add(subset)
        return unready

    def admit(self, host: int, now: float) -> bool:
        if not self.cluster.admit():
            return False
        self.cluster.dispatch(host, now)
        return True

    def release(self, host: int, started: float, now: float) -> None:
        self.cluster.settle(host, started, now)

    def record(self, attempt: Attempt, now: float) -> list[int]:
        connections = self.connections
        if connections is not None:
            if attempt.failure == "connect_failure":
                connections.failed(attempt.host, now, self._rng)
            elif attempt.status is not None:
                connections.connected(attempt.host)
        ejected = self.cluster.record(attempt.host, outcome_of(attempt), now, self._rng)
        return [attempt.host] if ejected else []

    def retry_state(self) -> ProxyExchange:
        """A request's exchange; its route deadline starts now (after the fault filter)."""
        return ProxyExchange(self, time.monotonic())


class ProxyExchange:
    """One request on a :class:`MeshPolicy`: the chain's :class:`Exchange` on the proxy."""

    __slots__ = ("ex", "policy", "started")

    def __init__(self, policy: MeshPolicy, now: float) -> None:
        self.policy = policy
        self.ex = Exchange(policy.route, envoy=policy.envoy, now=now, budget=policy.budget)
        self.started = now

    @property
    def deadline(self) -> float:
        return self.ex.deadline

    def pick(self, hosts: int, now: float, rng: np.random.Generator) -> int | None:
        return self.policy.pick_for(self.ex, now, rng)

    def admit(self, host: int, now: float) -> bool:
        cluster = self.policy.cluster
        if not cluster.admit():
            return False
        self.ex.dispatch(cluster, host, now)
        self.started = now
        return True

    def release(self, host: int, now: float) -> None:
        self.policy.cluster.settle(host, self.started, now)

    def connect_failed(self, host: int, now: float) -> None:
        self.ex.connect_failed(host)

    def record(self, attempt: Attempt, now: float) -> list[int]:
        return self.policy.record(attempt, now)

    def decide(self, attempt: Attempt, now: float, rng: np.random.Generator) -> Verdict:
        policy = self.policy
        return self.ex.decide(attempt.host, outcome_of(attempt), now, rng, policy.cluster.breaker)

    def backoff_overruns(self, now: float, delay_s: float) -> bool:
        return self.ex.backoff_overruns(now, delay_s)

    def close(self) -> None:
        self.ex.close()


def _rule(traffic: dict[str, Any]) -> Any:
    from meshsim.scenario.traffic import TrafficRule

    try:
        return TrafficRule.model_validate({"service": _LISTENER, **traffic})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MeshsimError(f"traffic.{where}: {first['msg']}") from None


def _accrual(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MeshsimError("traffic.failure_accrual: expected a mapping")
    default = LinkerdBackOff.accrual_default()
    try:
        mode = str(raw.get("mode", "consecutive"))
        if mode not in ("consecutive", "unified"):
            raise ValueError(f'mode: expected "consecutive" or "unified" (not {mode!r})')
        return {
            "accrual_mode": mode,
            "accrual_max_failures": int(raw.get("max_failures", 7)),
            "accrual_backoff": LinkerdBackOff(
                float(raw.get("backoff_min_s", default.min_s)),
                float(raw.get("backoff_max_s", default.max_s)),
                float(raw.get("backoff_jitter", default.jitter)),
            ),
        }
    except (TypeError, ValueError) as exc:
        raise MeshsimError(f"traffic.failure_accrual: {exc}") from None


def listener_policy(
    traffic: dict[str, Any], mesh: str = "istio", options: MeshOptions | None = None
) -> tuple[ServicePolicy, str, tuple[float, int, float] | None]:
    """A listener's ``traffic`` as ``mesh`` programs it with ``options`` (a scenario's
    ``mesh_options``; the defaults when None): the scenario's translation. Returns the
    service policy, the mesh's flavour (``envoy``, ``linkerd``) and any retry budget."""
    from meshsim.scenario.options import MeshOptions

    if mesh not in TRAFFIC_MESHES:
        raise MeshsimError(f"mesh: expected one of {list(TRAFFIC_MESHES)}, not {mesh!r}")
    raw = dict(traffic)
    accrual = _accrual(raw.pop("failure_accrual")) if "failure_accrual" in raw else None
    rule = _rule(raw)
    try:
        mapped = translate([rule], mesh, options if options is not None else MeshOptions())
    except TrafficRuleError as exc:
        raise MeshsimError(f"traffic.{exc.field}: {exc}") from None
    service = mapped.policy(_LISTENER)
    if accrual is not None:
        if service.routes[0].profile_retry:
            raise MeshsimError(
                "traffic.failure_accrual: retries under the retry budget make a "
                "ServiceProfile, and Linkerd's proxies do no circuit breaking (failure "
                "accrual) for a Service that has one (docs/mesh-semantics.md §6.4)"
            )
        service = dataclasses.replace(
            service, cluster=dataclasses.replace(service.cluster, **accrual)
        )
    balancer = service.cluster.balancer
    if balancer not in _BALANCERS:
        raise MeshsimError(
            f"traffic.load_balancer: expected one of {sorted(_BALANCERS)}, not {balancer!r}"
        )
    return service, mapped.flavour, mapped.budget


def policy_for(
    traffic: dict[str, Any],
    hosts: int = 1,
    subsets: tuple[str, ...] | None = None,
    mesh: str | None = None,
    options: MeshOptions | None = None,
) -> RoutePolicy:
    """The policy of a listener: ``traffic`` as ``mesh`` programs it (Istio when only
    ``traffic`` is given) with ``options``; a plain forwarder when neither is given."""
    from meshsim.scenario.options import MeshOptions

    if not traffic and mesh is None:
        return PassThrough()
    mesh = mesh or "istio"
    options = options if options is not None else MeshOptions()
    service, flavour, budget = listener_policy(traffic, mesh, options)
    linkerd = flavour != "envoy"
    return MeshPolicy(
        service,
        hosts,
        subsets,
        envoy=not linkerd,
        budget=budget,
        connect_timeout_s=connect_timeout_s(mesh, options),
        # Between Linkerd's proxies HTTP/2 (the protocol upgrade): readiness follows the
        # connection. Its HTTP/1.1 client connects per request and is always ready.
        reconnects=linkerd and options.linkerd.protocol_upgrade,
    )


__all__ = [
    "SUPPORTED_BALANCERS",
    "ConnectionLimits",
    "MeshPolicy",
    "ProxyExchange",
    "listener_policy",
    "outcome_of",
    "policy_for",
]
