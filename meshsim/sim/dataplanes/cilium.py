"""Cilium: an eBPF datapath in the kernel, and a per-node Envoy for L7 only (issue 16).

Paths:

- L4 (every service without an L7 rule): app -> the source node's eBPF programs (socket-LB
  picks the endpoint, conntrack, identity policy) -> the network, encrypted between nodes by
  WireGuard or IPsec in the kernel -> the destination node's eBPF programs -> app. There is no
  user-space proxy on this path: no HTTP parsing, no proxy hop, no TLS handshake between pods.
  The eBPF work is charged per packet (``ebpf_packet_cpu_us`` at each end); encryption per byte
  and per packet at each end (``models/cilium-encryption.yaml``), only between nodes
  (Cilium does not encrypt pod-to-pod traffic on one node).
- L7 load balancing (services with a rule in the traffic block, which Cilium programs through a
  CiliumEnvoyConfig, and those in ``mesh_options.cilium.lb_l7_services``, whose
  ``service.cilium.io/lb-l7`` annotation has the operator write one): the source node's eBPF
  redirects the connection to that node's Envoy, which parses, routes, retries and balances per
  request (the shared resilience chain, as Istio's Envoy does) and sends each try through the
  kernel to the chosen pod. One Envoy per node, shared by all its pods (like a waypoint, but per
  node and on the client side). Clients outside the cluster reach the Envoy of the node with the
  fewest pods.
- L7 policy only (``mesh_options.cilium.l7_services``, CiliumNetworkPolicy HTTP rules, and
  neither a rule in the traffic block nor the ``lb-l7`` annotation): the connection is
  redirected to the node's Envoy too, which parses each request to enforce the policy, but it
  forwards to the connection's original destination (the policy listener's ``egress-cluster`` is
  an ``ORIGINAL_DST`` cluster, cilium/cilium ``pkg/envoy``): the pod socket-LB picked when the
  app connected. So these requests are balanced per connection, as on the L4 path, and no retry
  or breaker applies.

Simplifications: socket-LB translates a service address per connection; as for the ``none``
baseline (:mod:`meshsim.sim.dataplanes.l4_balancing`), an HTTP/1.1 app's endpoint is drawn per
call (its pooled keep-alive connections taken as spread evenly) and a gRPC or HTTP/2 app's calls
go where its one connection to the service is bound. Per-connection eBPF work
(``ebpf_connection_cpu_us``) is charged only with ``keep_alive: false``, where every call opens
a connection. Mutual authentication is modelled on the kernel path only; traffic from a node's
Envoy is taken as already authenticated.

Kernel CPU runs on the node's cores, competing with apps and proxies, but in no container's
account: it is reported apart as ``proxies.kernel_cpu_vcpu`` (see ``models/cilium-agent.yaml``).

Mutual authentication (``mesh_options.cilium.mutual_auth``): the first connection between two
identities across a node pair waits for the agents' handshake (its first packet is dropped and
TCP retransmits it, ``auth_handshake_latency_ms``); the agents' handshake CPU and SPIRE's work
are the control plane's (:mod:`meshsim.sim.controlplane.cilium`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.models.parameters import KIB
from meshsim.scenario.base import selected_services
from meshsim.sim.app import CONNECT_FAILURE, Client, Pod, source_name
from meshsim.sim.dataplanes.mesh import ProxiedDataPlane, cost_model
from meshsim.sim.dataplanes.resilience_state import Resilience
from meshsim.sim.dataplanes.routing import L7Proxy
from meshsim.sim.prefetched import prefetched

if TYPE_CHECKING:
    from meshsim.scenario.model import Call
    from meshsim.sim.app import Request, ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.dataplanes.proxy import Proxy, Worker
    from meshsim.sim.engine import Simulation

ENVOY_MODEL = "cilium-envoy"
"""The shipped per-node Envoy model (``models/cilium-envoy.yaml``, kind envoy-sidecar)."""


def _succeed(event: simpy.Event) -> None:
    event.succeed()


class KernelAccount:
    """CPU a node's kernel runs for the datapath (eBPF programs, WireGuard/IPsec)."""

    __slots__ = ("cpu_s", "name")

    kernel_thread = True
    """Under the fair scheduler, outside any pod: the datapath's softirq work deferred to
    ksoftirqd, a kernel thread of nice 0 on the node's run queue (meshsim.sim.cpu.cgroups)."""

    def __init__(self, node: Node) -> None:
        self.name = f"{node.name}/kernel"
        self.cpu_s = 0.0


class CiliumDataPlane(ProxiedDataPlane):
    """Cilium 1.16 with kube-proxy replacement (mesh_options.cilium)."""

    name = "cilium"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        opts = sim.scenario.mesh_options.cilium
        values = sim.model_values
        self.agent = cost_model(None, "cilium-agent", values)
        self.crypt = cost_model(None, "cilium-encryption", values)
        self.envoy_model = cost_model(opts.envoy_model or ENVOY_MODEL, "envoy-sidecar", values)
        self.encryption = opts.encryption
        self.mutual_auth = opts.mutual_auth
        self.envoy_threads = opts.envoy_workers
        named = selected_services(opts.l7_services, sim.services)
        annotated = selected_services(opts.lb_l7_services, sim.services)
        self.lb_services = annotated | {r.service for r in sim.scenario.traffic}
        """Services whose node Envoy balances per request: a CiliumEnvoyConfig, written for
        a traffic rule or by the operator for the ``lb-l7`` annotation."""
        self.l7_services = named | self.lb_services
        self._lb_rng = prefetched(sim.streams("balancers/cilium-envoy"))
        self.resilience = Resilience(
            sim,
            self.name,
            self.warnings,
            h2=lambda s: s.spec.speaks_http2,
            mtls=False,
            l7_services=self.l7_services,
        )
        self.kernels: dict[Node, KernelAccount] = {n: KernelAccount(n) for n in sim.nodes}
        self.envoys: dict[Node, L7Proxy] = {}
        self._authenticated: dict[tuple[str, str, str, str], simpy.Event] = {}
        self.auth_handshakes = 0
        """Mutual-auth handshakes between agents (per identity pair and node pair)."""
        self._kernel_at: dict[str, float] = {}
        self._attempt_fn = self._attempt
        v = self.agent.value
        self.mss = v("mss_bytes")
        self.packet_s = v("ebpf_packet_cpu_us") * 1e-6
        self.connect_s = 0.0 if self.keep_alive else v("ebpf_connection_cpu_us") * 1e-6
        self.hop_s = v("ebpf_hop_latency_us") * 1e-6
        self.env.process(self._snapshot("warmup", sim.warmup_s))
        self.env.process(self._snapshot("end", sim.end_s))

    # ----------------------------------------------------------------- proxies

    def install(self) -> None:
        if not self.l7_services:
            return  # an L4-only mesh runs no user-space proxy on the request path
        for node in self.sim.nodes:
            envoy = L7Proxy(
                self.env,
                f"{node.name}/envoy",
                "node-envoy",
                self.envoy_model,
                node,
                self.envoy_threads,
                stealing=False,
                pick=self._accept,
                rng=self._lb_rng,
                resilience=self.resilience,
                cpu_factor=self.cpu_factor(self.envoy_model),
                drift=self.cpu_drift(self.envoy_model),
                resources=self.sim.scenario.mesh_options.cilium.envoy_resources,
            )
            self.envoys[node] = envoy
            self.proxies.append(envoy)

    def cost_models(self) -> list[Any]:
        return [*super().cost_models(), self.agent, self.crypt]

    # ----------------------------------------------------------------- kernel costs

    def packets(self, nbytes: int) -> int:
        """Packets of one message of ``nbytes`` (at least one: headers travel too)."""
        return max(1, math.ceil(nbytes / self.mss))

    def crypt_s(self, nbytes: int) -> float:
        """Kernel CPU at one end to encrypt (or decrypt) a message between nodes."""
        if self.encryption == "none":
            return 0.0
        v = self.crypt.value
        n = self.packets(nbytes)
        wire = nbytes + n * v(f"{self.encryption}_overhead_bytes")
        return (wire / KIB * v(f"{self.encryption}_cpu_us_per_kib")
                + n * v(f"{self.encryption}_packet_cpu_us")) * 1e-6  # fmt: skip

    def wire_bytes(self, nbytes: int, crossing: bool) -> int:
        """Bytes on the wire: encryption adds its header to every packet between nodes."""
        if not crossing or self.encryption == "none":
            return nbytes
        return nbytes + self.packets(nbytes) * int(
            self.crypt.value(f"{self.encryption}_overhead_bytes")
        )

    def kernel(self, node: Node | None, cpu_s: float) -> Generator[simpy.Event, Any, None]:
        """Run ``cpu_s`` of kernel work on ``node``'s cores (nothing outside the cluster)."""
        if node is None or cpu_s <= 0.0:
            return
        yield from node.execute(cpu_s, self.kernels[node])

    def _transfer(
        self, src: Node | None, dst: Node | None, nbytes: int
    ) -> Generator[simpy.Event, Any, None]:
        """One message from ``src`` to ``dst``: eBPF at both ends, encryption between nodes."""
        crossing = src is not None and dst is not None and src is not dst
        crypt = self.crypt_s(nbytes) if crossing else 0.0
        ebpf = self.packets(nbytes) * self.packet_s + self.connect_s
        yield from self.kernel(src, ebpf + crypt)
        yield self.env.timeout(
            self.net.delay(src, dst, self.wire_bytes(nbytes, crossing)) + 2.0 * self.hop_s
        )
        yield from self.kernel(dst, ebpf + crypt)

    def _snapshot(self, name: str, at_s: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(at_s)
        self._kernel_at[name] = sum(k.cpu_s for k in self.kernels.values())

    def kernel_cpu_window_s(self) -> float:
        """Kernel CPU seconds in the measurement window (0.0 if the run did not reach it)."""
        if "end" not in self._kernel_at:
            return 0.0
        return self._kernel_at["end"] - self._kernel_at.get("warmup", 0.0)

    # ----------------------------------------------------------------- mutual auth

    def _authenticate(self, src: Pod | None, dst: Pod) -> Generator[simpy.Event, Any, None]:
        """The first packet of a new identity pair across two nodes waits for the agents'
        handshake; later ones find the pair in the auth map."""
        if not self.mutual_auth or src is None:
            return
        key = (src.service.name, dst.service.name, src.node.name, dst.node.name)
        done = self._authenticated.get(key)
        if done is None:
            done = self._authenticated[key] = self.env.event()
            self.auth_handshakes += 1
            cp = self.sim.control_plane
            latency = getattr(cp, "auth_latency_s", 0.0)
            timer = self.env.timeout(latency)
            assert timer.callbacks is not None
            timer.callbacks.append(lambda _e: _succeed(done))
        if not done.triggered:
            yield done

    # ----------------------------------------------------------------- a call

    def _src_node(self, src: Pod | Client) -> Node | None:
        if isinstance(src, Pod):
            return src.node
        return self.client_node() if self.meshed_clients else None

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        nbytes = call.request_bytes if call is not None else req.request_bytes
        src_node = self._src_node(src)
        if service.name in self.l7_services:
            envoy = self.envoys[src_node if src_node is not None else self.client_node()]
            to: Pod | None = None
            if service.name not in self.lb_services:
                # Policy only: the Envoy forwards to where socket-LB sent the connection.
                to = self.l4_balancer.pick(src, service, service.endpoints)
                if to is None:
                    return CONNECT_FAILURE
            status: int = yield from self._through_envoy(src, src_node, envoy, service, req,
                                                         nbytes, call, to)  # fmt: skip
            return status
        pod = self.l4_balancer.pick(src, service, service.endpoints)
        if pod is None:
            return CONNECT_FAILURE
        src_pod = src if isinstance(src, Pod) else None
        refused = self.sim.control_plane.gate(src_pod, pod, False)
        if refused is not None:
            yield self.env.timeout(2.0 * self.net.delay(src_node, pod.node, 0))
            return refused
        yield from self._authenticate(src_pod, pod)
        yield from self._transfer(src_node, pod.node, nbytes)
        status = yield from self.sim.serve(pod, req)
        yield from self._transfer(pod.node, src_node, pod.response_bytes)
        return status

    def _through_envoy(
        self,
        src: Pod | Client,
        src_node: Node | None,
        envoy: L7Proxy,
        service: ServiceRuntime,
        req: Request,
        nbytes: int,
        call: Call | None,
        to: Pod | None,
    ) -> Generator[simpy.Event, Any, int]:
        """The connection is redirected to the node's Envoy, which applies the L7 rules: it
        balances each request through the resilience chain (a CiliumEnvoyConfig), or, for an
        L7 policy alone, sends it on to ``to``, the pod the connection was bound to (its
        original destination: one try, no balancing). The redirect is transparent: the
        Envoy's downstream connection keeps ``src``'s address."""
        yield from self._transfer(src_node, envoy.node, nbytes)
        worker, accept_s = self.app_conn(envoy, service.name)
        yield from envoy.work(worker, envoy.costs(nbytes, 0, False)[0] + accept_s)
        worker.requests += 1
        status: int
        if to is None:
            status = yield from envoy.outbound(self._attempt_fn, service, req, worker, nbytes,
                                               call, source_name(src))  # fmt: skip
        else:
            status = yield from self._attempt(envoy, worker, to, req, nbytes)
        self.app_conn_done(envoy, service.name, worker)
        resp = service.spec.response_bytes if to is None else to.response_bytes
        yield from self._transfer(envoy.node, src_node, resp)
        return status

    def _attempt(
        self,
        envoy: L7Proxy,
        worker: Worker,
        pod: Pod,
        req: Request,
        nbytes: int,
        connected: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """One try from a node's Envoy to ``pod`` through the kernel datapath (its upstream
        connections are not modelled: ``connected`` is called at once, see
        :class:`~meshsim.sim.dataplanes.routing.Attempt`)."""
        env = self.env
        refused = self.sim.control_plane.gate(None, pod, False)
        if refused is not None:
            yield env.timeout(2.0 * (envoy.hop_s + self.net.delay(envoy.node, pod.node, 0)))
            return refused
        if connected is not None:
            connected()
        yield env.timeout(envoy.hop_s)
        yield from self._transfer(envoy.node, pod.node, nbytes)
        status: int = yield from self.sim.serve(pod, req)
        resp = pod.response_bytes
        yield from self._transfer(pod.node, envoy.node, resp)
        yield env.timeout(envoy.hop_s)
        costs = envoy.costs(nbytes, resp, False)
        yield from envoy.work_then_linger(worker, costs[1], costs[2])
        return status

    # ----------------------------------------------------------------- configuration

    def config_in_view(self, proxy: Proxy) -> tuple[int, int]:
        """A node's Envoy holds a cluster for each service it balances (and its versions
        when split); an L7 policy's original destination needs none."""
        services = [self.sim.services[s] for s in sorted(self.lb_services)
                    if s in self.sim.services]  # fmt: skip
        clusters = sum(
            1 + (len(s.versions) if self.resilience.policies.has_subsets(s.name) else 0)
            for s in services
        )
        return clusters, sum(len(s.endpoints) for s in services)
