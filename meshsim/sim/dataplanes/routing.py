"""L7 proxies (sidecars, waypoints): endpoint selection, traffic splits, the outbound hook.

Endpoint selection uses the shared balancers of :mod:`meshsim.policy` (DESIGN principle 1):
Envoy's ``LEAST_REQUEST`` (P2C over active requests, Istio's default since 1.14,
mesh-semantics §4) and linkerd2-proxy's P2C over Peak-EWMA (§5). A balancer's state is per
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
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from meshsim.policy import (
    LeastRequest,
    LoadBalancer,
    PeakEwma,
    RandomBalancer,
    RoundRobin,
    WeightedSplit,
)
from meshsim.sim.app import CONNECT_FAILURE
from meshsim.sim.dataplanes.proxy import Proxy, Worker

if TYPE_CHECKING:
    from meshsim.scenario.model import Scenario
    from meshsim.sim.app import Pod, Request, ServiceRuntime

BALANCERS: dict[str, Callable[[], LoadBalancer]] = {
    "least_request": LeastRequest,
    "peak_ewma": PeakEwma,
    "round_robin": RoundRobin,
    "random": RandomBalancer,
}
"""Balancers by scenario name; ring_hash and maglev fall back to the mesh default for now."""


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


class L7Proxy(Proxy):
    """A proxy that routes HTTP: picks a version and an endpoint for every request."""

    __slots__ = ("_balancers", "_subsets", "rng", "routes")

    def __init__(self, *args: Any, routes: Routes, rng: np.random.Generator, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.routes = routes
        self.rng = rng
        self._balancers: dict[str, LoadBalancer] = {}
        self._subsets: dict[str, tuple[int, dict[str, list[Pod]]]] = {}

    def endpoints(self, service: ServiceRuntime) -> list[Pod]:
        """The ready endpoints this request may go to (after the traffic split, if any)."""
        split = self.routes.split_of.get(service.name)
        if split is None:
            return service.endpoints
        cached = self._subsets.get(service.name)
        if cached is None or cached[0] != service.generation:
            by_version: dict[str, list[Pod]] = {name: [] for name in service.versions}
            for pod in service.endpoints:
                by_version[pod.version.name].append(pod)
            cached = self._subsets[service.name] = (service.generation, by_version)
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
    ) -> Generator[simpy.Event, Any, int]:
        """THE HOOK for the outbound policy chain; today: one attempt, no timeout or retry.

        Route timeouts, retries (Envoy's or Linkerd's with budgets), circuit breakers,
        outlier detection and fault injection from :mod:`meshsim.policy` go here, around
        ``attempt``: re-pick an endpoint per try (``previous_hosts``), wait the back-off,
        and give up on the deadline. Everything below ``attempt`` (connections, CPU, the
        peer proxy, the app) is policy-free.
        """
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
