"""L7 proxies (sidecars, waypoints): endpoint selection, traffic splits, the outbound hook.

Endpoint selection uses the shared balancers of :mod:`meshsim.policy` (DESIGN principle 1):
Envoy's ``LEAST_REQUEST`` (P2C over active requests, Istio's default since 1.14,
docs/mesh-semantics.md §4) and linkerd2-proxy's P2C over Peak-EWMA (§5). A balancer's state is per
proxy and per destination service, as in both proxies (Envoy's ``rq_active`` is a per-host
counter shared by the proxy's workers). A ``load_balancer`` in the scenario's traffic rules
overrides the default; a ``split`` picks a version (subset) first, with
:class:`meshsim.policy.WeightedSplit`.

:meth:`L7Proxy.outbound` is the single place where the outbound policy chain (route
timeout, retries and budgets, circuit breakers, outlier detection, fault injection) will
wrap the attempt; today it makes exactly one attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import simpy

from meshsim.policy import BALANCERS, LoadBalancer, WeightedSplit
from meshsim.sim.app import CONNECT_FAILURE
from meshsim.sim.dataplanes.proxy import Proxy, Worker
from meshsim.sim.dataplanes.resilience import outbound as resilient_outbound

if TYPE_CHECKING:
    from meshsim.scenario.model import Call, Scenario
    from meshsim.sim.app import Pod, Request, ServiceRuntime
    from meshsim.sim.dataplanes.resilience_state import ClusterState, Resilience



Attempt = Callable[
    ["L7Proxy", Worker, "Pod", "Request", int], Generator[simpy.Event, Any, int]
]
"""What a data plane does for one try of one request to one chosen endpoint:
``attempt(proxy, worker, pod, request, request_bytes) -> status``."""


class Routes:
    """Per data plane: each service's balancer choice and split (from the traffic rules)."""

    def __init__(self, scenario: Scenario, default_balancer: str) -> None:
        self.default = default_balancer
        self.balancer_of: dict[str, str] = {}
        self.split_of: dict[str, WeightedSplit] = {}
        for rule in scenario.traffic:
            if rule.load_balancer in BALANCERS and rule.service not in self.balancer_of:
                self.balancer_of[rule.service] = rule.load_balancer
            if rule.split and rule.match is None and rule.service not in self.split_of:
                weights: dict[Hashable, int] = {k: round(v * 1000) for k, v in rule.split.items()}
                self.split_of[rule.service] = WeightedSplit(weights)

    def balancer(self, service: str) -> LoadBalancer:
        return BALANCERS[self.balancer_of.get(service, self.default)]()


class EndpointView(Protocol):
    """A proxy's view of endpoints, kept by the control plane (meshsim.sim.controlplane)."""

    def lookup(self, service: ServiceRuntime) -> tuple[int, list[Pod]]: ...


class L7Proxy(Proxy):
    """A proxy that routes HTTP: picks a version and an endpoint for every request."""

    __slots__ = (
        "_balancers", "_clusters", "_groups", "_subsets", "endpoint_view", "resilience", "rng",
        "routes",
    )

    def __init__(
        self,
        *args: Any,
        routes: Routes,
        rng: np.random.Generator,
        resilience: Resilience | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.routes = routes
        self.rng = rng
        self.resilience = resilience
        """The mesh's outbound policy chain (mapping, counters); ``None``: one plain try."""
        self._balancers: dict[str, LoadBalancer] = {}
        self._subsets: dict[str, tuple[int, dict[str, list[Pod]]]] = {}
        self._clusters: dict[tuple[str, str | None], ClusterState] = {}
        """Per destination cluster (service, subset): balancer, breakers, health."""
        self._groups: dict[str, tuple[tuple[int, int, int], dict[str, list[Pod]]]] = {}
        self.endpoint_view: EndpointView | None = None
        """Set by the control plane: endpoints as of this proxy's last update."""

    def view(self, service: ServiceRuntime) -> list[Pod]:
        """All endpoints of ``service`` as this proxy sees them (before any split).

        The resilience chain reads endpoints through this method only; a control plane
        that gives proxies a (stale) view of their own replaces it here. A dead pod in the
        view refuses connections (a connect failure).
        """
        view = self.endpoint_view
        if view is None:
            return service.endpoints
        return view.lookup(service)[1]

    def endpoints(self, service: ServiceRuntime) -> list[Pod]:
        """The ready endpoints this request may go to (after the traffic split, if any)."""
        split = self.routes.split_of.get(service.name)
        if split is None:
            return self.view(service)
        cached = self._subsets.get(service.name)
        seen = self.view(service)
        key = hash((id(seen), len(seen), service.generation))
        if cached is None or cached[0] != key:
            by_version: dict[str, list[Pod]] = {name: [] for name in service.versions}
            for pod in seen:
                by_version[pod.version.name].append(pod)
            cached = self._subsets[service.name] = (key, by_version)
        by_version = cached[1]
        available = [v for v, pods in by_version.items() if pods]
        version = split.choose(self.rng, available)
        return [] if version is None else by_version[str(version)]

    def balancer(self, service: str) -> LoadBalancer:
        lb = self._balancers.get(service)
        if lb is None:
            lb = self._balancers[service] = self.routes.balancer(service)
        return lb

    def outbound(
        self,
        attempt: Attempt,
        service: ServiceRuntime,
        req: Request,
        worker: Worker,
        nbytes: int,
        call: Call | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """THE HOOK for the outbound policy chain.

        With the mesh's :class:`~meshsim.sim.dataplanes.resilience_state.Resilience`, the chain
        of :func:`meshsim.sim.dataplanes.resilience.outbound` runs: route match, fault
        injection, mirroring, split, healthy-endpoint pick, circuit breakers, per-try and
        route timeouts, retries with back-off and budgets. Without one: a single plain
        try. Everything below ``attempt`` (connections, CPU, the peer proxy, the app) is
        policy-free.
        """
        if self.resilience is not None:
            result: int = yield from resilient_outbound(
                self, attempt, service, req, worker, nbytes, call
            )
            return result
        endpoints = self.endpoints(service)
        lb = self.balancer(service.name)
        env = self.env
        host: Hashable | None = lb.pick(endpoints, env.now, self.rng)
        if host is None:
            return CONNECT_FAILURE
        pod: Pod = host  # type: ignore[assignment]
        started = env.now
        lb.on_start(pod, started)
        status: int = yield from attempt(self, worker, pod, req, nbytes)
        lb.on_complete(pod, env.now - started, env.now)
        return status
