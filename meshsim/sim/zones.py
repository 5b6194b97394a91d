"""Zones at run time: locality-aware endpoint choice, cross-zone counts, zone failures.

:class:`ZoneState` (one per run, ``sim.zones``) knows which zones are down and counts, per
destination service, the tries sent from each zone to each zone inside the measurement
window, and what each zone failure cost. :class:`LocalityChoice` (one per data plane, built
by :func:`locality_for`) narrows a proxy's healthy endpoints to the ones its mesh's locality
mechanism allows (docs/mesh-semantics.md §14, :mod:`meshsim.policy.locality`):

==================  ====================================================================
Istio, ``distribute``  the source zone's weights over destination zones, each scaled by
                    the zone's availability; zones picked by Envoy's EDF scheduler
Istio, failover     priorities by shared locality (zone, region, failover region, rest),
                    loads from their health; only with ``outlier_detection`` (Istio's
                    rule: without it Envoy would never leave priority 0)
Linkerd             Kubernetes topology-aware routing: the endpoints hinted for the
                    client's zone (``locality_lb`` on the service), no hints when the
                    safeguards refuse them
==================  ====================================================================

Zone failures and recoveries (``fail-zone``, ``recover-zone``: black-holed or refused
connections, restarts, and their figures in ``topology.zone_failures``) are in
:mod:`meshsim.sim.zone_failures`; this state counts the tries they need, per second too.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.policy.locality import EdfScheduler, allocate_hints, availability, priority_loads
from meshsim.policy.mapping import connect_timeout_s
from meshsim.policy.reconnect import reconnected_at
from meshsim.sim.sampling import Uniforms
from meshsim.sim.topology import Topology
from meshsim.sim.zone_failures import (
    ENVOY_DEAD_CONNECTION_S,
    LINKERD_DEAD_CONNECTION_S,
    ZoneFailure,
)

if TYPE_CHECKING:
    from meshsim.scenario.edges import LocalityLb
    from meshsim.sim.app import Pod, ServiceRuntime
    from meshsim.sim.dataplanes.resilience_state import Resilience
    from meshsim.sim.engine import Simulation


class ZoneState:
    """A run's zones: which are down, the cross-zone counts, the zone failures."""

    def __init__(self, sim: Simulation, topology: Topology) -> None:
        self.sim = sim
        self.topology = topology
        self.down: set[str] = set()
        self.epoch = 0
        """Bumped when the set of zones that count for hints changes."""
        self.failures: list[ZoneFailure] = []
        self._failed: dict[str, ZoneFailure] = {}
        """Failed pods' names -> their zone's failure."""
        self.tries: dict[str, dict[tuple[str, str], int]] = {}
        """Per destination service: (source zone, destination zone) -> tries in the window."""
        self._seconds = int(sim.end_s) + 1
        self._per_second: dict[str, tuple[list[int], list[int]]] = {}
        """Per destination service: tries and cross-zone tries in each second of the run."""
        self.rejoined: dict[str, ZoneFailure] = {}
        """Pods back after a recovery (the same, or restarted) -> the failure."""
        self._reconnected: dict[tuple[str, str], float] = {}
        """(proxy, pod back from a healed partition) -> when the proxy's Linkerd balancer
        reconnects to it."""
        self._reconnect_rng: Any = None

    def zone_of(self, node: Any) -> str | None:
        loc = self.topology.of(node)
        return None if loc is None else loc.zone

    def count(self, src_node: Any, pod: Pod) -> None:
        """One try from a proxy on ``src_node`` to ``pod`` (the chain's pick)."""
        now = self.sim.env.now
        name = pod.name
        failure = self._failed.get(name)
        if failure is not None and not pod.alive:
            failure.failed_tries += 1
            failure.last_failed_try_s = now
        if self.rejoined:
            back = self.rejoined.get(name)
            if back is not None and back.first_recovered_try_s is None:
                back.first_recovered_try_s = now
        src = self.zone_of(src_node) or "outside"
        dst = self.zone_of(pod.node) or "outside"
        service = pod.service.name
        second = int(now)
        if second < self._seconds:
            series = self._per_second.get(service)
            if series is None:
                series = self._per_second[service] = ([0] * self._seconds, [0] * self._seconds)
            series[0][second] += 1
            if src != dst:
                series[1][second] += 1
        if not self.sim.warmup_s <= now < self.sim.end_s:
            return
        per = self.tries.setdefault(service, {})
        per[(src, dst)] = per.get((src, dst), 0) + 1

    def per_second(self, services: Iterable[str]) -> tuple[list[int], list[int]]:
        """Tries and cross-zone tries to ``services`` in each second of the run."""
        tries = [0] * self._seconds
        cross = [0] * self._seconds
        for service in services:
            found = self._per_second.get(service)
            if found is not None:
                tries = [a + b for a, b in zip(tries, found[0], strict=True)]
                cross = [a + b for a, b in zip(cross, found[1], strict=True)]
        return tries, cross

    def summary(self) -> dict[str, Any]:
        topo = self.topology
        zones: dict[str, dict[str, Any]] = {}
        for loc in topo.by_index:
            z = zones.setdefault(loc.zone, {
                "cluster": loc.cluster, "region": loc.region, "nodes": 0,
                "vm": loc.zone in topo.vm_zones,
            })  # fmt: skip
            z["nodes"] += 1
        tries: dict[str, Any] = {}
        for service, pairs in sorted(self.tries.items()):
            total = sum(pairs.values())
            cross = sum(n for (a, b), n in pairs.items() if a != b)
            tries[service] = {
                "by_zone": {f"{a}->{b}": n for (a, b), n in sorted(pairs.items())},
                "tries": total,
                "cross_zone_share": cross / total if total else 0.0,
            }
        return {
            "zones": zones,
            "tries": tries,
            "zone_failures": [f.as_dict(self) for f in self.failures],
        }

    # ----------------------------------------------------------------- failures

    def fail(self, zone: str, pods: list[Pod], mode: str) -> ZoneFailure:
        failure = ZoneFailure(zone, self.sim.env.now, pods, mode)
        if mode == "blackhole":
            linkerd = self.sim.mesh == "linkerd"
            # Cilium's node Envoy waits Envoy's own 5 s, Istio's proxies meshConfig's 10 s.
            # Linkerd's 1 s delays no request: an endpoint whose connection is down is
            # pending while the proxy reconnects, and its balancer picks only ready ones.
            failure.connect_timeout_s = connect_timeout_s(
                self.sim.mesh, self.sim.scenario.mesh_options
            )
            failure.dead_connection_s = (
                LINKERD_DEAD_CONNECTION_S if linkerd else ENVOY_DEAD_CONNECTION_S
            )
            failure.hold(self.sim)
        self.failures.append(failure)
        for pod in pods:
            self._failed[pod.name] = failure
        return failure

    def blackholed_try(
        self, proxy: Any, pod: Pod, connected: Callable[[], object] | None = None
    ) -> Generator[simpy.Event, Any, int] | None:
        """What a try from ``proxy`` to the dead ``pod`` meets: None when the connection is
        refused (the caller's stale-endpoint path), else the black hole's wait (which calls
        ``connected`` if it goes out on a connection held at the failure)."""
        failure = self._failed.get(pod.name)
        if failure is None or failure.mode != "blackhole" or failure.recovered_at_s is not None:
            return None
        return failure.blackholed_try(self.sim.env, proxy.name, pod, connected)

    def pending(self, proxy_name: str, pod: Pod) -> bool:
        """Whether Linkerd's balancer at ``proxy_name`` holds ``pod`` as pending
        (:mod:`meshsim.policy.reconnect`): its HTTP/2 connection is down. A pod killed, or
        in a zone that refuses, closed its connections as it died; a black-holed one is
        pending once no connection to it is believed up; either way every reconnect fails
        while it is dead. One back from a healed partition is pending until the proxy's
        next reconnect attempt."""
        now = self.sim.env.now
        if pod.alive:
            back = self.rejoined.get(pod.name)
            if back is None or back.endpoints_removed_s is not None:
                return False  # a restarted pod is a new endpoint: connected as it joins
            return now < self._reconnected_at(back, proxy_name, pod)
        failure = self._failed.get(pod.name)
        if failure is None or failure.mode != "blackhole" or failure.recovered_at_s is not None:
            return True
        return not failure.connected(proxy_name, pod, now)

    def _reconnected_at(self, failure: ZoneFailure, proxy_name: str, pod: Pod) -> float:
        """When ``proxy_name``'s reconnect to ``pod`` succeeds after ``failure`` healed: its
        connection was lost when the pod went (refused), or when the connection it held was
        found dead, or at once without one (black-holed); each attempt fails then at once,
        or at the connect timeout, until the first one after the heal (§5.1)."""
        key = (proxy_name, pod.name)
        at = self._reconnected.get(key)
        if at is None:
            healed = failure.recovered_at_s
            assert healed is not None
            lost, attempt_s = failure.at_s, 0.0
            if failure.mode == "blackhole":
                attempt_s = failure.connect_timeout_s
                if key in failure.held_h2:
                    lost = failure.dead_at_s  # (never, if the partition healed before)
            if lost >= healed:
                at = healed
            else:
                if self._reconnect_rng is None:
                    self._reconnect_rng = self.sim.streams("reconnects")
                at = reconnected_at(lost, healed, attempt_s, self._reconnect_rng)
            self._reconnected[key] = at
        return at

    def hang_s(self, pod: Pod) -> float:
        """How long the reply to a request the dead ``pod`` held is awaited before its
        connection is found dead (0.0 when the pod refused, or reset, it)."""
        failure = self._failed.get(pod.name)
        if failure is None or failure.mode != "blackhole" or failure.recovered_at_s is not None:
            return 0.0
        return max(0.0, failure.dead_at_s - self.sim.env.now)


# --------------------------------------------------------------------------- choice


class LocalityChoice:
    """One data plane's locality mechanism per destination service."""

    def __init__(self, sim: Simulation, res: Resilience, warnings: list[str]) -> None:
        self.state: ZoneState = sim.zones
        self.topology = self.state.topology
        self.envoy = res.envoy
        self._uniform = Uniforms(sim.streams("locality"))
        self.modes: dict[str, tuple[str, LocalityLb | None]] = {}
        for rule in sim.scenario.traffic:
            if rule.service in self.modes:
                continue
            mode = self._mode(res, rule.service, rule.locality_lb, warnings)
            if mode is not None:
                self.modes[rule.service] = (mode, rule.locality_lb)
        self._edf: dict[tuple[str, str], tuple[tuple[tuple[str, float], ...], EdfScheduler[str]]]
        self._edf = {}
        self._hints: dict[tuple[str, str], tuple[tuple[int, int, int, int], list[Pod]]] = {}

    def _mode(
        self, res: Resilience, service: str, lb: LocalityLb | None, warnings: list[str]
    ) -> str | None:
        if lb is not None and not lb.enabled:
            return None
        if not self.envoy:
            if lb is None:
                return None
            if lb.distribute or lb.failover:
                _note(warnings, f"{service}: Linkerd has no locality weights or failover "
                      "regions; topology-aware routing (zone hints) used instead")  # fmt: skip
            return "hints"
        if lb is not None and lb.distribute:
            return "distribute"
        if res.policies.policy(service).cluster.outlier is not None:
            return "failover"  # Istio's default locality failover, with outlier detection
        if lb is not None:
            _note(warnings, f"{service}: locality failover needs outlier_detection (Istio "
                  "applies it only then); requests are spread over every zone")  # fmt: skip
        return None

    def select(
        self, proxy: Any, service: ServiceRuntime, view: list[Pod], healthy: list[Pod]
    ) -> list[Pod]:
        """The endpoints, of ``healthy``, that the locality mechanism lets ``proxy`` use."""
        found = self.modes.get(service.name)
        if found is None:
            return healthy
        mode, lb = found
        src = self.topology.of(proxy.node)
        if src is None or mode == "hints":
            return healthy
        if mode == "distribute":
            assert lb is not None
            assert lb.distribute is not None
            for d in lb.distribute:
                if d.from_ in ("*", src.zone):
                    return self._distributed(proxy.name, service, d.to, view, healthy)
            return healthy
        return self._failover(lb, src, view, healthy)

    def _distributed(
        self, proxy: str, service: ServiceRuntime, to: dict[str, int], view: list[Pod],
        healthy: list[Pod],
    ) -> list[Pod]:  # fmt: skip
        zone_of = self.state.zone_of
        total: dict[str, int] = {}
        up: dict[str, int] = {}
        for pod in view:
            z = zone_of(pod.node) or ""
            total[z] = total.get(z, 0) + 1
        for pod in healthy:
            z = zone_of(pod.node) or ""
            up[z] = up.get(z, 0) + 1
        weights = tuple((z, w * availability(up.get(z, 0), total.get(z, 0))) for z, w in to.items())
        key = (proxy, service.name)
        cached = self._edf.get(key)
        if cached is None or cached[0] != weights:
            cached = self._edf[key] = (weights, EdfScheduler(dict(weights)))
        zone = cached[1].pick()
        if zone is None:
            return []
        return [p for p in healthy if zone_of(p.node) == zone]

    def _failover(self, lb: LocalityLb | None, src: Any, view: list[Pod], healthy: list[Pod]
                  ) -> list[Pod]:  # fmt: skip
        targets = {f.to for f in (lb.failover if lb is not None and lb.failover else [])
                   if f.from_ == src.region}  # fmt: skip
        topo = self.topology

        def priority(pod: Pod) -> int:
            loc = topo.of(pod.node)
            assert loc is not None
            if loc.region == src.region:
                return 0 if loc.zone == src.zone else 1
            return 2 if loc.region in targets else 3

        total = [0, 0, 0, 0]
        up = [0, 0, 0, 0]
        for pod in view:
            total[priority(pod)] += 1
        by_priority: list[list[Pod]] = [[], [], [], []]
        for pod in healthy:
            p = priority(pod)
            up[p] += 1
            by_priority[p].append(pod)
        present = [p for p in range(4) if total[p]]
        if not present:
            return []  # every endpoint left the view: no healthy upstream (503 UH)
        loads = priority_loads([availability(up[p], total[p]) for p in present])
        if loads[0] >= 1.0:
            return by_priority[present[0]]
        draw = self._uniform()
        for p, load in zip(present, loads, strict=True):
            if draw < load:
                return by_priority[p]
            draw -= load
        return []

    def told(self, proxy: Any, service: ServiceRuntime, view: list[Pod]) -> list[Pod]:
        """What the control plane tells ``proxy`` of ``service``: with zone hints (Linkerd's
        destination controller), only the endpoints hinted for the proxy's zone. (Another
        cluster's endpoints are in the view as that cluster's discovery path delivered them:
        each cluster's control plane holds them, :mod:`meshsim.sim.controlplane.clusters`.)"""
        found = self.modes.get(service.name)
        if found is None or found[0] != "hints":
            return view
        src = self.topology.of(proxy.node)
        if src is None:
            return view
        key = (id(view), len(view), service.generation, self.state.epoch)
        cached = self._hints.get((proxy.name, service.name))
        if cached is None or cached[0] != key:
            zone_of = self.state.zone_of
            hints = allocate_hints(
                [(p.name, zone_of(p.node) or "") for p in view],
                self.topology.zone_cpu(self.state.down),
            )
            narrowed = view if hints is None else [p for p in view if hints[p.name] == src.zone]
            cached = self._hints[(proxy.name, service.name)] = (key, narrowed)
        return cached[1]


def _note(warnings: list[str], text: str) -> None:
    line = f"locality: {text}"
    if line not in warnings:
        warnings.append(line)


def locality_for(sim: Simulation, res: Resilience, warnings: list[str]) -> LocalityChoice | None:
    """The data plane's locality mechanism, or None when the cluster has no zones (then
    nothing in a run changes)."""
    state: ZoneState | None = getattr(sim, "zones", None)
    if state is None or not state.topology.zoned:
        return None
    return LocalityChoice(sim, res, warnings)


def edges_summary(sim: Simulation) -> dict[str, Any] | None:
    """The ``topology`` block of a run: zones and failures (with ``cluster.zones``) and
    gateways (with ``gateways``); None when the scenario has neither."""
    out: dict[str, Any] = {}
    if sim.topology.zoned:
        out.update(sim.zones.summary())
    if sim.gateways is not None:
        out["gateways"] = sim.gateways.summary()
    if sim.multicluster is not None:
        out["multicluster"] = sim.multicluster.summary()
    if sim.egress is not None:
        out["egress"] = sim.egress.summary()
    return out or None
