"""Egress: calls to hosts outside the mesh (``services[].external``).

Istio knows an external host through a ServiceEntry: the caller's sidecar routes the call as
it would any (its request and response path CPU), and with ``egress_gateway`` sends it over
mTLS to an egress gateway (an Envoy Deployment, modelled with the ingress gateway's file,
``models/istio-ingressgateway.yaml``: the same Envoy and two TLS legs) which sends it out.
Linkerd's sidecar forwards the call out (its request and response path CPU); it has no
egress gateway. Without a mesh the pod calls the host directly. The host answers after a
draw of its answer time (lognormal with the given mean and cv, stream
``external/<service>``) and fails with ``error_rate``.

Simplified: the mesh's traffic policies (retries, timeouts) are not applied to external
calls yet, and the egress gateway is one replica on the node with the fewest pods.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.sim.app import Client, Pod
from meshsim.sim.cluster import place
from meshsim.sim.dataplanes.mesh import cost_model
from meshsim.sim.dataplanes.routing import L7Proxy
from meshsim.sim.sampling import Uniforms

if TYPE_CHECKING:
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.engine import Simulation


class Egress:
    """The run's external hosts and, for Istio, its egress gateway."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self._rngs: dict[str, Any] = {}
        self._errors: dict[str, Uniforms] = {}
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        dp = sim.data_plane
        self.sidecars: dict[Pod, L7Proxy] | None = getattr(dp, "sidecars", None)
        self.gateway: L7Proxy | None = None
        needs_gateway = any(
            s.external is not None and s.external.egress_gateway for s in sim.scenario.services
        )
        from meshsim.sim.dataplanes.sidecar import IstioSidecars

        if needs_gateway and isinstance(dp, IstioSidecars):
            model = cost_model("istio-ingressgateway", "envoy-sidecar", sim.model_values)
            self.gateway = L7Proxy(
                self.env, "gateway/egress-0", "gateway", model,
                place(sim.topology.nodes_for(sim.nodes, None)),
                model.worker_threads, stealing=False, pick=dp._accept, pod=None,
                telemetry=dp.telemetry, rng=dp._lb_rng, resilience=dp.resilience,
                cpu_factor=dp.cpu_factor(model),
                drift=dp.cpu_drift(model),
            )  # fmt: skip
            dp.proxies.append(self.gateway)
        elif needs_gateway:
            dp.warnings.append(
                f"egress: {sim.mesh} has no egress gateway; external calls leave from the "
                "caller's proxy"
            )

    def _answer_s(self, service: ServiceRuntime) -> float:
        ext = service.spec.external
        assert ext is not None
        rng = self._rngs.get(service.name)
        if rng is None:
            rng = self._rngs[service.name] = self.sim.streams(f"external/{service.name}")
        mean = ext.latency_ms * 1e-3
        if ext.latency_cv == 0:
            return mean
        sigma2 = math.log1p(ext.latency_cv**2)
        return float(rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2)))

    def _status(self, service: ServiceRuntime) -> int:
        ext = service.spec.external
        assert ext is not None
        if ext.error_rate <= 0:
            return 200
        u = self._errors.get(service.name)
        if u is None:
            u = self._errors[service.name] = Uniforms(
                self.sim.streams(f"external/{service.name}/errors")
            )
        return ext.error_status if u() < ext.error_rate else 200

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        """A call from ``src`` to the external host ``service``."""
        env = self.env
        nbytes = call.request_bytes if call is not None else req.request_bytes
        resp = service.spec.response_bytes
        sidecars = self.sidecars
        proxy = sidecars.get(src) if sidecars is not None and isinstance(src, Pod) else None
        mtls = bool(getattr(self.sim.data_plane, "mtls", False))
        worker = None
        gw = self.gateway
        to_gateway_tls = mtls and gw is not None  # mTLS from the sidecar to the gateway
        if proxy is not None:
            worker = proxy.accept()
            yield from proxy.work(worker, proxy.costs(nbytes, 0, to_gateway_tls)[0])
            worker.requests += 1
        gw_worker = None
        net = self.sim.network
        if gw is not None:
            src_node = proxy.node if proxy is not None else None
            yield env.timeout(net.delay(src_node, gw.node, nbytes) + gw.hop_s)
            gw_worker = gw.accept()
            yield from gw.work(gw_worker, gw.costs(nbytes, 0, mtls)[0])
            gw_worker.requests += 1
        # Out of the cluster and back: the network to the outside, then the host's answer.
        yield env.timeout(2 * net.delay(None, None, 0) + self._answer_s(service))
        status = self._status(service)
        if self.sim.warmup_s <= req.sent_at < self.sim.end_s:
            self.calls[service.name] = self.calls.get(service.name, 0) + 1
            if status >= 500:
                self.errors[service.name] = self.errors.get(service.name, 0) + 1
        if gw is not None and gw_worker is not None:
            costs = gw.costs(nbytes, resp, mtls)
            yield from gw.work_then_linger(gw_worker, costs[1], costs[2])
            src_node = proxy.node if proxy is not None else None
            yield env.timeout(net.delay(gw.node, src_node, resp) + gw.hop_s)
        if proxy is not None and worker is not None:
            costs = proxy.costs(nbytes, resp, to_gateway_tls)
            yield from proxy.work_then_linger(worker, costs[1], costs[2])
        return status

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "calls": n,
                "errors": self.errors.get(name, 0),
                "egress_gateway": self.gateway is not None
                and bool(self.sim.services[name].spec.external.egress_gateway),  # type: ignore[union-attr]
            }
            for name, n in sorted(self.calls.items())
        }


def egress_for(sim: Simulation) -> Egress | None:
    """The run's egress, or None when no service is external."""
    if not any(s.external is not None for s in sim.scenario.services):
        return None
    return Egress(sim)
