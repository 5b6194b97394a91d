"""The simulation of one scenario, for one mesh and one seed.

``Simulation`` builds the cluster (nodes, pods placed by spread), the services and
their versions, the mesh's data plane, the workloads and the timeline, then runs
simpy until the end of the measurement window and drains what is still in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import simpy

from meshsim.rng import Streams
from meshsim.scenario.model import Call, Scenario
from meshsim.sim.app import (
    RESET,
    Client,
    Pod,
    Request,
    ServiceRuntime,
    VersionRuntime,
    call_groups,
    is_success,
)
from meshsim.sim.cluster import (
    Node,
    allocation_warnings,
    cgroup_measures,
    make_nodes,
    one_run_queue_warnings,
    place,
    scheduler_warnings,
)
from meshsim.sim.controlplane import control_plane_for
from meshsim.sim.cpu import host_speed, wakeup_latency
from meshsim.sim.cpu.kubepods import best_effort_warnings, unrequested_sidecar_warnings
from meshsim.sim.cpu.oom import watch_memory
from meshsim.sim.dataplanes import data_plane_for
from meshsim.sim.egress import egress_for
from meshsim.sim.gateways import gateways_for
from meshsim.sim.loop import Environment, run_until
from meshsim.sim.measure import (
    AppMeasure,
    ControlPlaneMeasure,
    HandshakeMeasure,
    Measurement,
    NodeMeasure,
    PodMeasure,
    ProxyMeasure,
    ResilienceMeasure,
    SeriesMeasure,
    SubjectMeasure,
    WorkerMeasure,
    WorkloadMeasure,
)
from meshsim.sim.multicluster import multicluster_for
from meshsim.sim.observability import instrument, observe
from meshsim.sim.recorder import Recorder, Stats
from meshsim.sim.sampling import Sampler, Uniforms, make_sampler
from meshsim.sim.timeline import Timeline
from meshsim.sim.topology import Topology, network_for
from meshsim.sim.uncontended import give, take
from meshsim.sim.workload import WorkloadDriver
from meshsim.sim.zones import ZoneState, edges_summary

ProgressCallback = Callable[[float], None]
"""Called with the simulated time (seconds) as the run advances."""

DRAIN_LIMIT_S = 30.0
"""How long after the window the run may go on to finish requests still in flight."""


class Simulation:
    """One run: a scenario, a mesh and a seed sequence."""

    def __init__(
        self,
        scenario: Scenario,
        mesh: str,
        seed: int | np.random.SeedSequence,
        *,
        keep_records: bool = False,
        model_values: Mapping[str, float] | None = None,
    ) -> None:
        self.scenario = scenario
        self.mesh = mesh
        self.model_values = model_values
        """One drawn cost-model parameter set (``<model>.<parameter>`` -> value), or None for
        every model's central values (:mod:`meshsim.models.samples`)."""
        self.env = Environment()  # simpy's, with a leaner timeout() (meshsim.sim.loop)
        self.streams = Streams(seed)
        self.warmup_s = scenario.warmup_s
        self.end_s = scenario.duration_s
        self.topology = Topology(scenario)
        self.network = network_for(scenario, self.topology)
        self.zones = ZoneState(self, self.topology)
        self.recorder = Recorder(self.warmup_s, self.end_s, keep_records)
        self.nodes = make_nodes(self.env, scenario, mesh)
        for node in self.nodes:
            host = scenario.cluster.node_host_speed(node.index)
            if host is not None:
                host_speed.start(self.env, node, host, self.streams(f"host_speed/{node.name}"))
            waking = scenario.cluster.node_wakeup_latency(node.index)
            if waking is not None:
                node.wakeup_latency = wakeup_latency.sampler(
                    waking, self.streams(f"wakeup_latency/{node.name}")
                )
            idle = scenario.cluster.node_idle_wakeup_latency(node.index)
            if idle is not None:
                node.idle_wakeup_latency = wakeup_latency.sampler(
                    idle, self.streams(f"idle_wakeup_latency/{node.name}")
                )
        self._coin = Uniforms(self.streams("calls"))
        self._faults = Uniforms(self.streams("faults"))
        self._request_ids = 0
        self.deaths = 0
        """Pods that died so far (killed, or in a failed zone): until one has, no balancer
        needs to look for endpoints whose connection is down."""
        self.services: dict[str, ServiceRuntime] = {}
        self._build_services()
        self.data_plane = data_plane_for(mesh, self)
        self.observability = instrument(self.data_plane, self)
        self.data_plane.install()
        self.gateways = gateways_for(self)
        self.egress = egress_for(self)
        self.control_plane = control_plane_for(self)
        for proxy in self.data_plane.proxies:
            self.control_plane.attach(proxy)
        self.multicluster = multicluster_for(self)
        # Containers' resources apply under either scheduler (requests weigh only under
        # cfs; limits throttle and OOM-kill under both).
        self.data_plane.warnings.extend(
            allocation_warnings(self.nodes, scenario, mesh, self.data_plane.proxies)
        )
        self.data_plane.warnings.extend(scheduler_warnings(scenario))
        for node in self.nodes:
            if node.tree is not None:
                # The gateways' proxies are in the list now: pod mates find each other.
                node.tree.proxies = self.data_plane.proxies
        if scenario.cluster.scheduler == "cfs":
            # Requests weigh only under the fair scheduler (the QoS classes only in its tree).
            proxies = self.data_plane.proxies
            if scenario.cluster.cgroup_hierarchy == "kubernetes":
                self.data_plane.warnings.extend(
                    best_effort_warnings(self.nodes, proxies, scenario, mesh)
                )
            self.data_plane.warnings.extend(unrequested_sidecar_warnings(proxies, scenario, mesh))
        watch_memory(self)
        self.workloads = [
            WorkloadDriver(self, w, self.services[w.target]) for w in scenario.workloads
        ]
        self.timeline = Timeline(self)
        self.snapshots: dict[str, _Counters] = {}
        """The cumulative counters at the warm-up ("warmup") and at the end ("end")."""

    # ----------------------------------------------------------------- building

    def _build_services(self) -> None:
        for svc in self.scenario.services:
            versions: dict[str, VersionRuntime] = {}
            for version in svc.subsets():
                calls = version.calls if version.calls is not None else svc.calls
                versions[version.name] = VersionRuntime(version.name, version, call_groups(calls))
            self.services[svc.name] = ServiceRuntime(svc.name, svc, versions)
        # Place pods service by service, version by version, replica by replica: the
        # order of the file decides placement, so placement is deterministic.
        for runtime in self.services.values():
            for subset in runtime.versions.values():
                for _ in range(subset.spec.replicas):
                    self._new_pod(runtime, subset)
            runtime.refresh_endpoints()

    def _cpu_sampler(self, runtime: ServiceRuntime, version: VersionRuntime) -> Sampler:
        dist = version.spec.cpu_ms or runtime.spec.cpu_ms
        # One stream per version: adding a service never shifts another's draws.
        rng = self.streams(f"service_times/{runtime.name}/{version.name}")
        return make_sampler(dist, rng, 1e-3)

    def _new_pod(
        self, runtime: ServiceRuntime, version: VersionRuntime, node: Node | None = None
    ) -> Pod:
        if node is None:
            node = place(self.topology.nodes_for(self.nodes, runtime.spec.zones))
        if version.sampler is None:
            version.sampler = self._cpu_sampler(runtime, version)
        pod = Pod(self.env, runtime, version, len(version.pods), node, version.sampler)
        version.pods.append(pod)
        node.pods.append(pod)
        if node.tree is not None:
            node.tree.pod_started(pod)
        return pod

    # ----------------------------------------------------------------- cluster changes

    def start_pod(self, version: VersionRuntime, node: Node | None = None) -> Pod:
        """A new pod (on ``node``, else placed); with a mesh it is ready once its proxy has a
        certificate and config."""
        runtime = next(s for s in self.services.values() if version in s.versions.values())
        pod = self._new_pod(runtime, version, node)
        self.data_plane.on_pod_started(pod)
        cp = self.control_plane
        cp.attach_pod(pod)
        if cp.on_pod_started(pod):
            runtime.refresh_endpoints()
            cp.on_endpoints(runtime)
        return pod

    def mark_ready(self, pod: Pod) -> None:
        """A started pod passes its readiness check: it joins the endpoints."""
        if pod.alive and not pod.ready:
            pod.ready = True
            pod.service.refresh_endpoints()
            self.control_plane.on_endpoints(pod.service)

    def kill(self, pod: Pod) -> None:
        """The pod dies at once; requests it holds fail with a reset."""
        was_ready = pod.ready
        pod.alive = False
        pod.ready = False
        self.deaths += 1
        if pod.node.tree is not None:
            pod.node.tree.pod_killed(pod)
        pod.service.refresh_endpoints()
        if was_ready:
            self.control_plane.on_endpoints(pod.service)
        self.control_plane.on_pod_died(pod)

    def retire(self, pod: Pod) -> None:
        """The pod stops receiving new requests and finishes those it holds."""
        was_ready = pod.ready
        pod.ready = False
        pod.service.refresh_endpoints()
        if was_ready:
            self.control_plane.on_endpoints(pod.service)

    def terminate(self, pod: Pod, prestop_s: float) -> None:
        """A graceful deletion: out of the endpoints now, serving until ``prestop_s``, then
        killed (what it still holds then is reset, as after the grace period)."""
        self.retire(pod)
        ev = self.env.timeout(prestop_s)
        assert ev.callbacks is not None
        ev.callbacks.append(lambda _e: self.kill(pod) if pod.alive else None)

    # ----------------------------------------------------------------- requests

    def next_request_id(self) -> int:
        self._request_ids += 1
        return self._request_ids

    def call(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        """A call through the mesh, recorded on its edge as the caller sees it."""
        # env._now is env.now without a property call (several per hop, in serve too).
        started = self.env._now if call is not None else req.sent_at
        status: int = yield from self.route(src, service, req, call)
        self.record_edge(src, service, req, started, status)
        return status

    def route(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, call: Call | None
    ) -> Generator[simpy.Event, Any, int]:
        """The path of a call (egress, a gateway, or the mesh's data plane), unrecorded.

        Not a generator itself: it hands over the path's, so that a caller that records
        the edge itself (:meth:`record_edge`, as :meth:`call` does) saves a frame under
        every event of the call: the workload's first call and a replica's only call.
        """
        if service.spec.external is not None and self.egress is not None:
            return self.egress.call(src, service, req, call)
        if call is None and self.gateways is not None and isinstance(src, Client):
            return self.gateways.call(src, service, req)
        return self.data_plane.call(src, service, req, call)

    def record_edge(
        self, src: Pod | Client, service: ServiceRuntime, req: Request, started: float, status: int
    ) -> None:
        """A call that started at ``started`` ended now with ``status``, as its caller saw it."""
        caller = src.service.name if isinstance(src, Pod) else src.name
        self.recorder.edge(
            caller, service.name, req.id, req.workload, started, self.env._now, status
        )

    def serve(self, pod: Pod, req: Request) -> Generator[simpy.Event, Any, int]:
        """The application's handling of one request on ``pod``.

        It waits for a worker slot (FIFO), runs its CPU on the node's cores, answers
        with an injected error if the timeline says so, otherwise makes its calls,
        and holds the slot until it answers. A pod killed meanwhile answers nothing:
        the caller sees a reset when the pod's current step ends.
        """
        env = self.env
        arrived = env._now
        pod.served += 1
        slots = pod.slots
        slot: object | None = take(slots)
        if slot is None:
            slot = slots.request()
            yield slot
        began = env._now
        status = RESET
        if pod.alive:
            # A leaf answers as soon as its CPU ends, so the next request queued for its
            # one slot is ready then: its thread goes on with it (Node.execute's ready).
            yield from pod.node.execute(
                pod.cpu_time() * pod.slow_factor, pod, None if pod.call_plan else slots
            )
            if not pod.alive:
                status = RESET
            elif pod.error_rate and self._faults() < pod.error_rate:
                status = pod.error_status
            elif pod.call_plan:
                plan = pod.call_plan
                if len(plan) == 1 and len(plan[0]) == 1 and plan[0][0].probability >= 1.0:
                    # One call, made as _make_calls makes it: from here, so that its events
                    # do not pass through one more frame each.
                    call = plan[0][0]
                    target = self.services[call.service]
                    started = env._now
                    result = yield from self.route(pod, target, req, call)  # self.call, inline
                    self.record_edge(pod, target, req, started, result)
                    status = pod.failed_status if call.required and not is_success(result) else 200
                else:
                    status = yield from self._make_calls(pod, req)
                if not pod.alive:
                    status = RESET
            else:
                status = 200  # a leaf: no calls to make (and no generator to make them)
        give(slots, slot)
        now = env._now
        pod.slot_busy_s += now - began
        self.recorder.service(pod.service.name, req.id, req.workload, arrived, now, status)
        if status == RESET:
            hang_s = self.zones.hang_s(pod)  # a black-holed pod's reply never comes
            if hang_s > 0.0:
                yield env.timeout(hang_s)
        return status

    def _make_calls(self, pod: Pod, req: Request) -> Generator[simpy.Event, Any, int]:
        status = 200
        services = self.services
        coin = self._coin
        for group in pod.call_plan:
            if len(group) == 1:
                call = group[0]
                if call.probability < 1.0 and coin() >= call.probability:
                    continue
                result = yield from self.call(pod, services[call.service], req, call)
                if call.required and not is_success(result):
                    return pod.failed_status
                continue
            made = [c for c in group if c.probability >= 1.0 or coin() < c.probability]
            procs = [self.env.process(self.call(pod, services[c.service], req, c)) for c in made]
            if procs:
                yield self.env.all_of(procs)
            for call, proc in zip(made, procs, strict=True):
                if call.required and not is_success(cast(int, proc.value)):
                    return pod.failed_status
        return status

    # ----------------------------------------------------------------- running

    def _snapshot(self, name: str) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.warmup_s if name == "warmup" else self.end_s)
        self.snapshots[name] = _Counters.of(self)

    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workloads)

    def run(self, progress: ProgressCallback | None = None) -> None:
        """Run the window, then drain in-flight requests for up to ``DRAIN_LIMIT_S``."""
        for w in self.workloads:
            w.start()
        self.timeline.start()
        self.env.process(self._snapshot("warmup"))
        self.env.process(self._snapshot("end"))
        env = self.env
        step = max(self.end_s / 200.0, 0.05)
        t = 0.0
        while t < self.end_s:
            t = min(t + step, self.end_s)
            run_until(env, t)  # env.run(until=t), event for event
            if progress is not None:
                progress(t)
        # Let the end snapshot (scheduled at end_s) fire before draining.
        run_until(env, self.end_s + 1e-9)
        limit = self.end_s + DRAIN_LIMIT_S
        while self.in_flight() > 0 and env.now < limit and env.peek() < math.inf:
            run_until(env, min(env.now + 0.5, limit))

    # ----------------------------------------------------------------- measuring

    def measure(self) -> Measurement:
        """What the run measured, once :meth:`run` has returned (see :mod:`meshsim.sim.measure`).

        Counters the engine snapshots (CPU, busy time) are taken over the window; a
        snapshot that never fired (the run was not run to its end) counts as zero.
        """
        empty = _Counters()
        warm = self.snapshots.get("warmup", empty)
        end = self.snapshots.get("end", empty)
        rec = self.recorder
        cores = self.scenario.cluster.cores_per_node
        nodes = tuple(
            NodeMeasure(n.name, cores, end.nodes.get(n.name, 0.0) - warm.nodes.get(n.name, 0.0))
            for n in self.nodes
        )
        apps = tuple(
            AppMeasure(svc.name, tuple(
                PodMeasure(
                    p.name,
                    svc.name,
                    end.pod_cpu.get(p.name, 0.0) - warm.pod_cpu.get(p.name, 0.0),
                    end.pod_slots.get(p.name, 0.0) - warm.pod_slots.get(p.name, 0.0),
                    svc.spec.concurrency,
                    p.version.name,
                    end.pod_served.get(p.name, 0) - warm.pod_served.get(p.name, 0),
                    p.name in warm.serving and p.name in end.serving,
                )
                for p in svc.pods
            ))
            for svc in self.services.values()
        )  # fmt: skip
        chain = getattr(self.data_plane, "resilience", None)
        resilience: dict[str, ResilienceMeasure] = {}
        if chain is not None:
            for service, block in chain.summary().items():
                by_endpoint = block.pop("by_endpoint", {})
                resilience[service] = ResilienceMeasure(block, by_endpoint)
        return Measurement(
            mesh=self.mesh,
            warmup_s=self.warmup_s,
            end_s=self.end_s,
            drained_s=self.env.now - self.end_s,
            workloads={k: _subject(v) for k, v in rec.workloads.items()},
            services={k: _subject(v) for k, v in rec.services.items()},
            edges={k: _subject(v) for k, v in rec.edges.items()},
            clients=tuple(
                WorkloadMeasure(
                    w.spec.name, w.requested_rps(), w.sent_in_window, w.releases_in_window
                )
                for w in self.workloads
            ),
            nodes=nodes,
            apps=apps,
            proxies=self._proxies(warm, end),
            handshakes=self._handshakes(),
            resilience=resilience,
            control_plane=ControlPlaneMeasure.of(
                self.control_plane.summary(self.warmup_s, self.end_s)
            ),
            cost_models=(*self.data_plane.cost_models(), *self.control_plane.cost_models()),
            in_flight=self.in_flight(),
            timeline=tuple(self.timeline.log),
            warnings=(
                *self.data_plane.warnings,
                *(
                    one_run_queue_warnings(nodes, self.end_s - self.warmup_s)
                    if self.scenario.cluster.run_queues == "node"
                    or self.scenario.cluster.scheduler == "fcfs"
                    else ()
                ),
            ),
            records=rec.records,
            cgroups=cgroup_measures(self.nodes),
            observability=observe(self, self.observability),
            kernel_cpu_s=getattr(self.data_plane, "kernel_cpu_window_s", float)(),
            topology=edges_summary(self),
        )

    def _proxies(self, warm: _Counters, end: _Counters) -> tuple[ProxyMeasure, ...]:
        from meshsim.sim.dataplanes.mesh import ProxiedDataPlane

        dp = self.data_plane
        if not isinstance(dp, ProxiedDataPlane):
            return ()
        out: list[ProxyMeasure] = []
        for p in dp.proxies:
            live = p.alive and (p.pod is None or p.pod.alive)
            workers = tuple(
                WorkerMeasure(
                    f"{p.name}/worker-{w.index}",
                    int(w.res.capacity),
                    end.worker_busy.get((p.name, w.index), 0.0)
                    - warm.worker_busy.get((p.name, w.index), 0.0),
                    w.requests,
                    w.wakeups,
                    w.wake_cpu_s,
                    w.preemptions,
                    w.preempt_cpu_s,
                )
                for w in p.workers
            )
            out.append(ProxyMeasure(
                name=p.name,
                kind=p.kind,
                live=live,
                cpu_s=end.proxy_cpu.get(p.name, 0.0) - warm.proxy_cpu.get(p.name, 0.0),
                cpu_s_run=p.cpu_s,
                memory_mb=p.memory_mb(*dp.config_in_view(p)) if live else None,
                connections=p.connections,
                workers=workers,
            ))  # fmt: skip
        return tuple(out)

    def _handshakes(self) -> HandshakeMeasure | None:
        pools = getattr(self.data_plane, "pools", None)
        if pools is None:
            return None
        c = pools.counter
        return HandshakeMeasure(c.total, c.full, c.resumed, c.connections_opened)


@dataclass
class _Counters:
    """The engine's cumulative counters at one instant, by name: differences of two of
    them are what the run measured in between."""

    nodes: dict[str, float] = field(default_factory=dict)
    pod_cpu: dict[str, float] = field(default_factory=dict)
    pod_slots: dict[str, float] = field(default_factory=dict)
    pod_served: dict[str, int] = field(default_factory=dict)
    serving: set[str] = field(default_factory=set)
    """The pods alive and ready (in their service's endpoints)."""
    proxy_cpu: dict[str, float] = field(default_factory=dict)
    worker_busy: dict[tuple[str, int], float] = field(default_factory=dict)

    @classmethod
    def of(cls, sim: Simulation) -> _Counters:
        out = cls()
        for node in sim.nodes:
            out.nodes[node.name] = node.busy_s
        for svc in sim.services.values():
            for pod in svc.pods:
                out.pod_cpu[pod.name] = pod.cpu_s
                out.pod_slots[pod.name] = pod.slot_busy_s
                out.pod_served[pod.name] = pod.served
                if pod.alive and pod.ready:
                    out.serving.add(pod.name)
        for proxy in sim.data_plane.proxies:
            out.proxy_cpu[proxy.name] = proxy.cpu_s
            for w in proxy.workers:
                out.worker_busy[(proxy.name, w.index)] = w.busy_s
        return out


def _subject(stats: Stats) -> SubjectMeasure:
    s = stats.series
    return SubjectMeasure(
        histogram=stats.histogram,
        requests=stats.requests,
        errors=stats.errors,
        statuses=dict(stats.statuses),
        completed=stats.completed,
        series=SeriesMeasure(
            tuple(s.requests), tuple(s.errors), tuple(s.latency_sum_s), tuple(s.latency_max_s)
        ),
        batches=tuple(stats.batches or ()),
    )
