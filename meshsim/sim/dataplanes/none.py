"""The `none` baseline: pods talk directly, balanced by kube-proxy.

kube-proxy's iptables mode picks an endpoint at random per connection
(:mod:`meshsim.sim.dataplanes.l4_balancing`): an HTTP/1.1 app's calls are drawn per call (its
pooled connections taken as spread evenly), a gRPC or HTTP/2 app's go where its one
connection to the service is bound.
Traffic rules (splits, retries, breakers) are mesh features and do not apply.
With ``mesh_options.meshed_clients`` a workload's clients run in the same pods as under a
mesh (``DataPlane.client_host``), without a proxy: their own CPU (``client_cpu_ms``) is then
spent on that node under every mesh alike.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.sim.app import CONNECT_FAILURE, Client, Pod, Request, ServiceRuntime
from meshsim.sim.dataplanes.base import DataPlane
from meshsim.sim.dataplanes.l4_balancing import ConnectionBalancer
from meshsim.sim.sampling import Uniforms

if TYPE_CHECKING:
    from meshsim.scenario.model import Call
    from meshsim.sim.engine import Simulation


class NoMesh(DataPlane):
    name = "none"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.l4_balancer = ConnectionBalancer(
            Uniforms(sim.streams("balancers")),
            sim.streams,
            sim.scenario.mesh_options.keep_alive,
            lambda: self.env.now,
        )
        self._delay = sim.network.delay
        if sim.scenario.traffic:
            self.warnings.append(
                "mesh 'none' applies no traffic rules (splits, retries, timeouts, breakers): "
                "kube-proxy spreads calls over all ready pods of a service"
            )

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        pod = self.l4_balancer.pick(src, service, service.endpoints)
        if pod is None:
            return CONNECT_FAILURE
        nbytes = call.request_bytes if call is not None else req.request_bytes
        yield self.env.timeout(self._delay(src.node, pod.node, nbytes))
        status: int = yield from self.sim.serve(pod, req)
        yield self.env.timeout(self._delay(pod.node, src.node, pod.response_bytes))
        return status
