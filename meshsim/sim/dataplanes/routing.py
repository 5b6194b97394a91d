"""L7 proxies (sidecars, waypoints): the proxies that route HTTP through the policy chain.

Every request an :class:`L7Proxy` sends goes through the mesh's outbound chain
(:func:`meshsim.sim.dataplanes.resilience.outbound`): route match, fault injection,
mirroring, traffic split, endpoint selection with the shared balancers of
:mod:`meshsim.policy` (Envoy's ``LEAST_REQUEST``, P2C over active requests, Istio's default
since 1.14, mesh-semantics §4; linkerd2-proxy's P2C over Peak-EWMA, §5), circuit breakers,
timeouts and retries. A balancer's state is per proxy and per destination cluster, as in
both proxies (Envoy's ``rq_active`` is a per-host counter shared by the proxy's workers).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import simpy

from meshsim.sim.dataplanes.proxy import Proxy, Worker
from meshsim.sim.dataplanes.resilience import outbound as resilient_outbound

if TYPE_CHECKING:
    from meshsim.policy.chain import ClusterRuntime
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Pod, Request, ServiceRuntime
    from meshsim.sim.dataplanes.resilience_state import Resilience


class Attempt(Protocol):
    """What a data plane does for one try of one request to one chosen endpoint:
    ``attempt(proxy, worker, pod, request, request_bytes, connected) -> status``.

    ``connected`` (None when nothing waits for it) is called once the try has its
    connection, pooled or just opened, before the request goes out: Envoy starts the
    per-try timer there (``onPoolReady``, docs/mesh-semantics.md §1.1). A try that fails
    before it has a connection (refused, a connect that times out) never calls it.
    """

    def __call__(
        self,
        proxy: L7Proxy,
        worker: Worker,
        pod: Pod,
        req: Request,
        nbytes: int,
        connected: Callable[[], object] | None = None,
        /,
    ) -> Generator[simpy.Event, Any, int]: ...


class EndpointView(Protocol):
    """A proxy's view of endpoints, kept by the control plane (meshsim.sim.controlplane)."""

    def lookup(self, service: ServiceRuntime) -> tuple[int, list[Pod]]: ...


class L7Proxy(Proxy):
    """A proxy that routes HTTP: picks a version and an endpoint for every request."""

    __slots__ = ("_clusters", "_groups", "endpoint_view", "resilience", "rng")

    def __init__(
        self,
        *args: Any,
        rng: np.random.Generator,
        resilience: Resilience,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.rng = rng
        """The balancers' random stream (first tries; retries use the retries' stream)."""
        self.resilience = resilience
        """The mesh's outbound policy chain: its mapping, random streams and counters."""
        self._clusters: dict[tuple[str, str | None], ClusterRuntime] = {}
        """Per destination cluster (service, subset): balancer, breakers, health."""
        self._groups: dict[str, tuple[tuple[int, int, int], dict[str, list[Pod]]]] = {}
        self.endpoint_view: EndpointView | None = None
        """Set by the control plane: endpoints as of this proxy's last update."""

    def restarted(self) -> None:
        """A fresh Envoy: its balancers, breakers and outlier detection start afresh."""
        super().restarted()
        self._clusters.clear()
        self._groups.clear()

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

    def outbound(
        self,
        attempt: Attempt,
        service: ServiceRuntime,
        req: Request,
        worker: Worker,
        nbytes: int,
        call: Call | None = None,
        source: str | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """One request to ``service`` through the mesh's outbound policy chain.

        Everything below ``attempt`` (connections, CPU, the peer proxy, the app) is
        policy-free. The chain's generator is returned as it is (no wrapping generator
        that every event of the request would pass through). ``source`` is where the
        request's connection to this proxy comes from (:func:`meshsim.sim.app.source_name`)
        when that is not the proxy's own pod: a shared proxy's caller.
        """
        return resilient_outbound(self, attempt, service, req, worker, nbytes, call, source)
