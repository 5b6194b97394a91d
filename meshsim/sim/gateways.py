"""Ingress gateways: the workloads' clients enter the mesh through them (``workloads[].via``).

An Istio ingress gateway is an Envoy Deployment of its own (``istio-ingressgateway``, or a
Gateway API ``Gateway`` that istiod deploys): ``replicas`` pods, each one Envoy with its
workers on a node's cores, programmed by istiod like any proxy and applying the
destination's traffic policies (it is the client side of the mesh for what it forwards, with
mTLS to the destination's sidecar). Its cost model is ``models/istio-ingressgateway.yaml``.

A request: client -> (network from outside) -> a replica, picked round-robin per workload
(a cloud load balancer in front) -> TLS termination: a full server-side handshake on every
``requests_per_connection``-th request of the workload's connections to that replica (the
client population's connection churn) -> the request path on the connection's worker -> the
mesh's outbound chain and the attempt to the destination's sidecar -> the response path ->
the network back to the client.

Linkerd has no gateway of its own: its documentation puts an ingress controller (NGINX,
Traefik, a Gateway API implementation) in front, meshed by a Linkerd sidecar. That pair is
not modelled yet: a Linkerd (or ambient, or Cilium, or ``none``) run sends ``via`` traffic
straight to the destination as before, and its warnings say so.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.sim.cluster import place
from meshsim.sim.dataplanes.mesh import cost_model
from meshsim.sim.dataplanes.routing import L7Proxy

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.scenario.edges import Gateway
    from meshsim.sim.app import Client, Request, ServiceRuntime
    from meshsim.sim.dataplanes.proxy import Worker
    from meshsim.sim.dataplanes.sidecar import SidecarDataPlane
    from meshsim.sim.engine import Simulation

GATEWAY_MODEL = "istio-ingressgateway"


class GatewayRuntime:
    """One gateway's replicas and counters."""

    def __init__(self, spec: Gateway, proxies: list[L7Proxy], handshake_s: float) -> None:
        self.spec = spec
        self.proxies = proxies
        self.handshake_s = handshake_s
        self.per_connection = spec.tls.requests_per_connection if spec.tls else 0
        self._next: dict[str, int] = {}
        self._served: dict[tuple[str, int], int] = {}
        self._conns: dict[tuple[str, int], list[Worker]] = {}
        self.requests = 0
        self.handshakes = 0

    def replica(self, workload: str) -> int:
        i = self._next.get(workload, 0)
        self._next[workload] = (i + 1) % len(self.proxies)
        return i


class Gateways:
    """The scenario's gateways for one run (Istio sidecar mode only)."""

    def __init__(self, sim: Simulation, dp: SidecarDataPlane) -> None:
        self.sim = sim
        self.dp = dp
        self.env = sim.env
        self.by_name: dict[str, GatewayRuntime] = {}
        self.routes: dict[str, GatewayRuntime] = {}
        for spec in sim.scenario.gateways:
            model = cost_model(spec.model or GATEWAY_MODEL, "envoy-sidecar", sim.model_values)
            nodes = sim.topology.nodes_for(
                sim.nodes, [spec.zone] if spec.zone is not None else None
            )
            proxies: list[L7Proxy] = []
            replicas = spec.replicas if spec.autoscale is None else hpa_replicas(sim, spec, model)
            for i in range(replicas):
                node = place(nodes)
                proxy = L7Proxy(
                    self.env, f"gateway/{spec.name}-{i}", "gateway", model, node,
                    model.worker_threads, stealing=False, pick=dp._accept, pod=None,
                    telemetry=dp.telemetry, rng=dp._lb_rng, resilience=dp.resilience,
                    cpu_factor=dp.cpu_factor(model),
                )  # fmt: skip
                dp.proxies.append(proxy)
                proxies.append(proxy)
            handshake_s = model.handshake_cpu_us("server", mutual=False) * 1e-6
            self.by_name[spec.name] = GatewayRuntime(spec, proxies, handshake_s)
        for wl in sim.scenario.workloads:
            if wl.via is not None:
                self.routes[wl.name] = self.by_name[wl.via]

    def call(
        self, client: Client, service: ServiceRuntime, req: Request
    ) -> Generator[simpy.Event, Any, int]:
        """One request of a workload through its gateway (or straight in, without one)."""
        gw = self.routes.get(client.name)
        if gw is None:
            status: int = yield from self.dp.call(client, service, req, None)
            return status
        env = self.env
        net = self.sim.network
        i = gw.replica(client.name)
        proxy = gw.proxies[i]
        nbytes = req.request_bytes
        yield env.timeout(net.delay(None, proxy.node, nbytes))
        worker, open_s = self._connection(gw, i, client.name, proxy)
        # Counted by send time, as the recorder counts the workload's requests.
        counting = self.sim.warmup_s <= req.sent_at < self.sim.end_s
        if counting:
            gw.requests += 1
            if open_s > 0 and gw.per_connection > 0:
                gw.handshakes += 1
        yield from proxy.work(worker, proxy.costs(nbytes, 0, self.dp.mtls)[0] + open_s)
        worker.requests += 1
        status = yield from proxy.outbound(self.dp._attempt_fn, service, req, worker, nbytes)
        self._release(gw, i, client.name, worker)
        yield env.timeout(net.delay(proxy.node, None, service.spec.response_bytes))
        return status

    def _connection(
        self, gw: GatewayRuntime, i: int, workload: str, proxy: L7Proxy
    ) -> tuple[Worker, float]:
        """The worker of a client connection to replica ``i``, and the CPU to open it: TCP
        accept, plus a full TLS handshake when the gateway terminates TLS. A connection
        carries ``requests_per_connection`` requests, then the client opens a new one."""
        key = (workload, i)
        idle = gw._conns.setdefault(key, [])
        served = gw._served.get(key, 0)
        gw._served[key] = served + 1
        if idle and (gw.per_connection == 0 or served % gw.per_connection):
            return idle.pop(), 0.0
        if idle:
            idle.pop()  # the client closed it after its last request
            proxy.closed(gw.per_connection > 0)
        proxy.opened(gw.per_connection > 0)
        if gw.per_connection:
            proxy.handshakes += 1
        return proxy.accept(), proxy.tcp_open_s + (gw.handshake_s if gw.per_connection else 0.0)

    def _release(self, gw: GatewayRuntime, i: int, workload: str, worker: Worker) -> None:
        gw._conns[(workload, i)].append(worker)

    def summary(self) -> dict[str, Any]:
        window = self.sim.end_s - self.sim.warmup_s
        out: dict[str, Any] = {}
        for name, gw in self.by_name.items():
            out[name] = {
                "replicas": len(gw.proxies),
                "autoscaled": gw.spec.autoscale is not None,
                "requests": gw.requests,
                "rps": gw.requests / window,
                "tls_handshakes": gw.handshakes,
                "handshakes_per_s": gw.handshakes / window,
            }
        return out


def hpa_replicas(sim: Simulation, spec: Gateway, model: ProxyCostModel) -> int:
    """The replica count an HPA on CPU settles at for the peak rate of the workloads that
    enter by ``spec``: ceil(CPU needed / (target x request)), within its bounds. The CPU per
    request is the model's, with its anchor's wake-ups per request."""
    hpa = spec.autoscale
    assert hpa is not None
    cores = 0.0
    for wl in sim.scenario.workloads:
        if wl.via != spec.name:
            continue
        peak = max([wl.rate_rps or 0.0, *(p.rate_rps for p in wl.phases or [])])
        target = sim.scenario.service(wl.target)
        wakeups = model.anchor.wakeups_per_request if model.anchor is not None else 0.0
        per_1000 = model.vcpu_per_1000rps(
            wl.request_bytes, target.response_bytes, mtls=True, wakeups_per_request=wakeups
        )
        cores += peak * per_1000 / 1000.0
    per_replica = hpa.target_cpu_percent / 100.0 * hpa.cpu_request_m / 1000.0
    wanted = math.ceil(cores / per_replica - 1e-9) if cores > 0 else 0
    return min(hpa.max_replicas, max(hpa.min_replicas, wanted))


def gateways_for(sim: Simulation) -> Gateways | None:
    """The run's gateways, or None (no gateways, or a mesh whose ingress is not modelled)."""
    if not sim.scenario.gateways:
        return None
    from meshsim.sim.dataplanes.sidecar import IstioSidecars

    dp = sim.data_plane
    if not isinstance(dp, IstioSidecars):
        note = (
            f"gateways: the {sim.mesh} ingress is not modelled yet (Linkerd: an ingress "
            "controller meshed by a Linkerd sidecar); 'via' traffic enters at the destination"
        )
        if note not in dp.warnings:
            dp.warnings.append(note)
        return None
    return Gateways(sim, dp)
