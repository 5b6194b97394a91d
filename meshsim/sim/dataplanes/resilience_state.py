"""A data plane's resilience state: the mapped policies (:mod:`meshsim.policy.mapping`),
the random streams, the Linkerd retry budgets and the counters that feed
``runs.<mesh>.resilience``. Each proxy's per-cluster state is a
:class:`meshsim.policy.chain.ClusterRuntime`; the chain that drives them per request is in
:mod:`meshsim.sim.dataplanes.resilience`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshsim.policy import TpsBudget
from meshsim.policy.mapping import MeshPolicies, map_traffic

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshsim.sim.app import ServiceRuntime
    from meshsim.sim.engine import Simulation

__all__ = ["COUNTERS", "Counters", "Resilience"]


COUNTERS = (
    "requests", "attempts", "retries", "retry_overflows", "retries_exhausted",
    "budget_exhausted", "timeouts", "per_try_timeouts", "overflows", "ejections",
    "failfasts", "load_shed", "no_healthy", "connect_failures", "fault_delays", "fault_aborts",
    "mirrored",
)  # fmt: skip


class Counters:
    """Resilience events for one destination service, summed over a data plane's proxies."""

    __slots__ = (*COUNTERS, "by_endpoint")

    def __init__(self) -> None:
        self.requests = 0
        """Requests through the callers' proxies (before retries)."""
        self.attempts = 0
        """Tries sent to an endpoint (first tries and retries)."""
        self.retries = 0
        self.retry_overflows = 0
        """Retries refused by the max_retries breaker (Envoy ``upstream_rq_retry_overflow``)."""
        self.retries_exhausted = 0
        self.budget_exhausted = 0
        """Retries refused by Linkerd's retry budget."""
        self.timeouts = 0
        """Requests ended by the route (Istio) or request (Linkerd) timeout: 504."""
        self.per_try_timeouts = 0
        self.overflows = 0
        """Circuit-breaker overflows (max_requests, max_pending_requests): 503 UO."""
        self.ejections = 0
        """Outlier ejections (Envoy) or failure-accrual trips (Linkerd)."""
        self.failfasts = 0
        self.load_shed = 0
        """Linkerd: requests shed because a balancer queue was full (503, never retried)."""
        self.no_healthy = 0
        """Envoy 503 UH: no healthy endpoint to pick."""
        self.connect_failures = 0
        self.fault_delays = 0
        self.fault_aborts = 0
        self.mirrored = 0
        """Shadow requests sent to this service."""
        self.by_endpoint: dict[str, int] = {}
        """Attempts sent to each endpoint (pod name)."""

    def count(self, event: str) -> None:
        """One more of ``event`` (a name in :data:`COUNTERS`)."""
        setattr(self, event, getattr(self, event) + 1)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        out["by_endpoint"] = dict(sorted(self.by_endpoint.items()))
        return out


class Resilience:
    """A data plane's resilience: its mesh mapping, random streams and counters."""

    def __init__(
        self,
        sim: Simulation,
        mesh: str,
        warnings: list[str],
        *,
        h2: Callable[[ServiceRuntime], bool],
        mtls: bool,
        l7_services: set[str] | None = None,
    ) -> None:
        self.sim = sim
        self.env = sim.env
        self.policies: MeshPolicies = map_traffic(sim.scenario, mesh, l7_services=l7_services)
        for note in self.policies.notes:
            text = f"traffic mapping ({mesh}): {note}"
            if text not in warnings:
                warnings.append(text)
        self.envoy = self.policies.flavour == "envoy"
        self.h2 = h2
        self.mtls = mtls
        self.warm = sim.warmup_s
        self.end = sim.end_s
        self.rng_retries = sim.streams("retries")
        self.rng_faults = sim.streams("faults/injection")
        self.rng_mirror = sim.streams("mirror")
        self.rng_health = sim.streams("health")
        self.rng_split = sim.streams("splits")
        self.counters: dict[str, Counters] = {}
        self.budgets: dict[tuple[str, str], TpsBudget] = {}
        self._uncounted = Counters()
        """Where events outside the measurement window go (never read)."""
        from meshsim.sim.zones import locality_for

        self.locality = locality_for(sim, self, warnings)
        """Locality-aware endpoint choice (cluster.zones), None without zones."""

    def stats(self, service: str) -> Counters:
        c = self.counters.get(service)
        if c is None:
            c = self.counters[service] = Counters()
        return c

    def counting(self) -> bool:
        return self.warm <= self.env.now < self.end

    def tally(self, service: str, counting: bool) -> Counters:
        """The counters a request's events go to: the service's inside the measurement
        window (``counting``), a scratch set outside it, so that the chain counts
        unconditionally."""
        found = self.stats(service)
        return found if counting else self._uncounted

    def budget(self, proxy: str, service: str) -> TpsBudget:
        """Linkerd's ServiceProfile retry budget of one client proxy for one service."""
        key = (proxy, service)
        b = self.budgets.get(key)
        if b is None:
            assert self.policies.budget is not None
            ratio, min_per_s, ttl = self.policies.budget
            b = self.budgets[key] = TpsBudget(ttl, min_per_s, ratio, now=self.env.now)
        return b

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: c.as_dict() for name, c in sorted(self.counters.items())}
