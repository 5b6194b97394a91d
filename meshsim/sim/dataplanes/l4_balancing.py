"""Balancing per connection: kube-proxy (``none``), ztunnel without a waypoint, Cilium's socket-LB.

An L4 balancer sees connections, not requests: it picks an endpoint when a connection opens
(uniformly among the ready pods, equal capacities), and every request on that connection
goes there. How an app's calls spread therefore depends on its connections:

- An HTTP/1.1 app (``protocol: http1``) sends one request at a time per connection and keeps
  a pool of them; meshsim draws the endpoint per call, as if its pooled connections were
  spread evenly (the modules of the three data planes say why no single one of them binds its
  few long-lived connections).
- A gRPC or HTTP/2 app (``protocol: grpc`` or ``http2``) multiplexes every call to a service
  over one long-lived connection (grpc-go's and grpc-java's default ``pick_first`` on the
  Service's one cluster address; the Kubernetes blog's "gRPC Load Balancing on Kubernetes
  without Tears", 2018). Under an L4 balancer every call of a caller pod to that service then
  goes to the one pod its connection reached, until that pod stops serving (it dies or
  becomes not ready: the connection breaks and the client reconnects, picking again). The
  pods of a service share its load only as the callers' connections happen to fall.

A proxy that parses HTTP and balances (Istio's sidecars and waypoints, linkerd2-proxy,
Cilium's Envoy for a service with a CiliumEnvoyConfig) picks per request, so it spreads a
multiplexed connection's calls; which is the usual reason to run one in front of gRPC
services. This module is the other side, shared by the data planes that have none on a
call's path (Cilium's Envoy for an L7 network policy alone forwards to the connection's
original destination, so it is this side too).

A connection's pick is drawn from a stream of its own, named by its caller pod and service
(common random numbers): ``none``, ambient and Cilium bind the same caller to the same pod,
so that a comparison between them is not one of luck. (Drawn from the stream the per-call
picks share, a binding would depend on how many calls each mesh happened to balance before
it: in Online Boutique the two frontends' connections to productcatalog reached one pod
under `none` and two under ambient.)

Clients outside the mesh (a workload's load generator) are drawn per call: a load
generator's several connections are not tracked one by one. A binding lasts as long as its
pod serves, unless the service's server caps a connection's age (``max_connection_age_s``,
gRPC's ``MaxConnectionAge``, the usual mitigation without a mesh): then it sends GOAWAY that
long after the connection opened, with grpc-go's +-10 % jitter, and the caller reconnects
and picks again. New pods get no bound callers until some caller reconnects, as in a real
scale-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from meshsim.sim.app import Pod

if TYPE_CHECKING:
    import numpy as np

    from meshsim.sim.app import Client, ServiceRuntime


class ConnectionBalancer:
    """The endpoint an L4 balancer sends a call to: drawn per call, or, for a multiplexed
    protocol, the one the caller pod's connection to the service is bound to."""

    def __init__(
        self,
        uniform: Callable[[], float],
        streams: Callable[[str], np.random.Generator],
        keep_alive: bool = True,
        clock: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._uniform = uniform
        self._streams = streams
        """The run's named streams (``Simulation.streams``): one per connection's caller and
        service, whose successive draws are its successive connections' picks (and, with a
        maximum connection age, each one's jitter)."""
        self._clock = clock
        self.reconnects = 0
        """Connections opened again after their pod stopped serving or their age ran out."""
        self._binds = keep_alive
        """Without keep-alive (``mesh_options.keep_alive: false``) every call opens a
        connection of its own, and so is balanced on its own."""
        self._bound: dict[tuple[str, str], tuple[Pod, float]] = {}
        """The pod each caller pod's connection to a multiplexed service reached, and when
        its server closes it (``inf``: never)."""

    @property
    def bindings(self) -> dict[tuple[str, str], str]:
        """Each caller pod's connection to a multiplexed service: the pod it reached last."""
        return {key: pod.name for key, (pod, _) in self._bound.items()}

    def pick(
        self, src: Pod | Client, service: ServiceRuntime, endpoints: Sequence[Pod]
    ) -> Pod | None:
        """The pod of ``endpoints`` (the pods the balancer knows) that a call from ``src``
        to ``service`` reaches; None when it knows none."""
        if not endpoints:
            return None
        if not self._binds or not isinstance(src, Pod) or not service.spec.speaks_http2:
            return endpoints[int(self._uniform() * len(endpoints))]
        key = (src.name, service.name)
        bound = self._bound.get(key)
        if bound is not None:
            pod, closes_at = bound
            if pod.alive and pod.ready and self._clock() < closes_at:
                return pod
            self.reconnects += 1
        # A first call, or the connection broke with its pod or was closed for its age: the
        # client connects (again), and the balancer picks.
        stream = self._streams(f"l4-connection/{src.name}->{service.name}")
        pod = endpoints[int(float(stream.random()) * len(endpoints))]
        age = service.spec.max_connection_age_s
        closes_at = math.inf
        if age is not None:
            closes_at = self._clock() + age * (0.9 + 0.2 * float(stream.random()))
        self._bound[key] = (pod, closes_at)
        return pod
