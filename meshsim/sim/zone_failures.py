"""Zone failures and recoveries at run time: black-holed and refused connections, restarts.

A ``fail-zone`` event stops the zone's pods (or, with ``services``, those services' pods in
it) at once. What a proxy that still sends to them meets depends on the event's ``mode``
(docs/mesh-semantics.md §14.4):

``refuse``
    The pods' processes died but their addresses answer: a try fails as a refused
    connection after one round trip, and requests the pods held end with a reset.
``blackhole`` (the default: a power or network outage)
    The addresses answer nothing. A try that goes out on a connection the proxy held at
    the failure, and every request the pods held then, hangs until a timeout fires or the
    connection is found dead: Linkerd sets ``TCP_USER_TIMEOUT`` 30 s on its connections;
    Istio sets no keep-alive or user timeout, so Linux gives up after its retransmissions
    (``tcp_retries2`` 15, about 924.6 s), far past any run without a timeout. With HTTP/2
    (Linkerd between proxies) every request multiplexes onto the held connection; with
    HTTP/1.1 (Istio's default) each idle connection of the pool takes one request. After
    that, Envoy opens new connections: each try waits for the connect timeout (Istio's
    ``mesh_options.istio.connect_timeout_ms``, meshConfig.connectTimeout, 10 s; Cilium's
    node Envoy, Envoy's own 5 s: :func:`meshsim.policy.mapping.connect_timeout_s`) and
    fails as a connect failure (``UF``), which outlier detection counts as a 5xx and a
    gateway error. Linkerd's balancer instead holds the endpoint as pending while it
    reconnects (each attempt failing after its 1 s connect timeout, then a back-off) and
    sends only to ready endpoints (or queues and fails fast, 3 s).

Either way the pods leave the endpoints after the node controller's grace period
(``endpoints_removed_after_s``). A ``recover-zone`` event (or the failure's ``duration_s``)
brings the zone back: pods still in the endpoints (a partition that healed) answer again at
once (a Linkerd balancer takes one back at its next reconnect attempt,
:mod:`meshsim.policy.reconnect`); pods that had left them start again on the same nodes
after ``restart_after_s`` and become ready as any new pod does (certificate, configuration,
the endpoint change propagated by the control plane), and the locality mechanism moves the
traffic back.

Each failure's figures go into ``topology.zone_failures`` (:meth:`ZoneFailure.as_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.sim.app import CONNECT_FAILURE, RESET

if TYPE_CHECKING:
    from meshsim.scenario.edges import FailZoneEvent, RecoverZoneEvent
    from meshsim.sim.app import Pod, ServiceRuntime
    from meshsim.sim.engine import Simulation
    from meshsim.sim.zones import ZoneState

ENVOY_DEAD_CONNECTION_S = 924.6
"""Istio: no TCP keep-alive (meshConfig.tcpKeepalive unset) and no TCP_USER_TIMEOUT, so a
connection whose peer answers nothing is dropped when Linux's retransmissions give up:
tcp_retries2 15, "a hypothetical timeout of 924.6 seconds" (kernel ip-sysctl docs). Range:
the same, or the keep-alive a DestinationRule sets."""
LINKERD_DEAD_CONNECTION_S = 30.0
"""Linkerd: LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT 30 s (TCP_USER_TIMEOUT) in the
proxy injector's template (docs/mesh-semantics.md §14.4). Range: 30 s (set by the chart)."""
RECOVERY_TOLERANCE = 0.05
"""How close (absolute) a second's cross-zone share must be to its pre-failure value for
the traffic to count as back."""


class ZoneFailure:
    """One ``fail-zone`` event, its recovery, and what they cost."""

    __slots__ = ("at_s", "connect_timeout_s", "connect_timeouts", "dead_connection_s",
                 "endpoints_removed_s", "failed_tries", "first_recovered_try_s", "held_h1",
                 "held_h2", "hung_tries", "last_failed_try_s", "mode", "pods",
                 "recovered_at_s", "services", "victims", "zone")  # fmt: skip

    def __init__(self, zone: str, at_s: float, victims: list[Pod], mode: str) -> None:
        self.zone = zone
        self.at_s = at_s
        self.victims = victims
        self.pods = len(victims)
        self.services = {p.service.name for p in victims}
        self.mode = mode
        self.endpoints_removed_s: float | None = None
        self.failed_tries = 0
        self.last_failed_try_s: float | None = None
        self.connect_timeouts = 0
        """Tries that waited for the connect timeout (blackhole)."""
        self.hung_tries = 0
        """Tries sent on a connection held at the failure (blackhole)."""
        self.connect_timeout_s = 0.0
        self.dead_connection_s = 0.0
        self.held_h1: dict[tuple[Hashable, str], int] = {}
        """(proxy, pod) -> idle HTTP/1.1 connections the proxy held at the failure."""
        self.held_h2: set[tuple[Hashable, str]] = set()
        """(proxy, pod) pairs with an HTTP/2 connection at the failure."""
        self.recovered_at_s: float | None = None
        self.first_recovered_try_s: float | None = None

    @property
    def dead_at_s(self) -> float:
        """When connections held at the failure are found dead."""
        return self.at_s + self.dead_connection_s

    def as_dict(self, state: ZoneState) -> dict[str, Any]:
        """The failure's figures. The callers' errors come from the recorder's per-second
        series of the edges into the failed services, from the failure's second on: during
        the failover (until the recovery's second) and during the recovery (after it)."""
        last = self.last_failed_try_s
        first = int(self.at_s)
        back = None if self.recovered_at_s is None else int(self.recovered_at_s)
        errors = failover_errors = 0
        errors_end: float | None = None
        worst = 0.0
        for (_caller, callee), stats in state.sim.recorder.edges.items():
            if callee not in self.services:
                continue
            series = stats.series.errors
            errors += sum(series[first:])
            failover_errors += sum(series[first:back])
            worst = max([worst, *stats.series.latency_max_s[first:]])
            seconds = [i for i in range(first, len(series)) if series[i]]
            if seconds:
                errors_end = max(errors_end or 0.0, float(seconds[-1] + 1))
        out: dict[str, Any] = {
            "zone": self.zone,
            "mode": self.mode,
            "at_s": self.at_s,
            "pods": self.pods,
            "failed_tries": self.failed_tries,
            "last_failed_try_s": last,
            "failover_s": None if last is None else last - self.at_s,
            "endpoints_removed_s": self.endpoints_removed_s,
            "caller_errors": errors,
            "caller_errors_until_s": errors_end,
            "caller_max_latency_s": worst,
            "connect_timeouts": self.connect_timeouts,
            "hung_tries": self.hung_tries,
            "connect_timeout_s": self.connect_timeout_s if self.mode == "blackhole" else None,
            "dead_connection_s": self.dead_connection_s if self.mode == "blackhole" else None,
            "caller_errors_failover": failover_errors,
            "caller_errors_recovery": errors - failover_errors,
            "recovered_at_s": self.recovered_at_s,
            "first_recovered_try_s": (
                None
                if self.first_recovered_try_s is None or self.recovered_at_s is None
                else self.first_recovered_try_s - self.recovered_at_s
            ),
        }
        out.update(self._shares(state))
        return out

    def _shares(self, state: ZoneState) -> dict[str, Any]:
        """The cross-zone share of the tries to the failed services before the failure (from
        the warm-up) and once the traffic is back, and ``recovery_s``: from the recovery to
        the end of the last whole second after it whose share was further than
        RECOVERY_TOLERANCE from the pre-failure share (0.0 if none was; None if it was still
        off in the run's last second, or no try came after the recovery). Whole seconds:
        1-s resolution."""
        tries, cross = state.per_second(self.services)
        start = int(state.sim.warmup_s)
        before_t = sum(tries[start : int(self.at_s)])
        pre = sum(cross[start : int(self.at_s)]) / before_t if before_t else None
        out: dict[str, Any] = {"pre_failure_cross_zone_share": pre}
        if self.recovered_at_s is None or pre is None:
            return out | {"recovery_s": None, "post_recovery_cross_zone_share": None}
        full = int(state.sim.end_s)
        first = int(self.recovered_at_s) + 1  # the whole seconds after the recovery
        off = [
            k
            for k in range(first, full)
            if tries[k] and abs(cross[k] / tries[k] - pre) > RECOVERY_TOLERANCE
        ]
        if (off and off[-1] == full - 1) or not any(tries[first:full]):
            return out | {"recovery_s": None, "post_recovery_cross_zone_share": None}
        back = off[-1] + 1 if off else first
        after = sum(tries[back:full])
        return out | {
            "recovery_s": float(back) - self.recovered_at_s if off else 0.0,
            "post_recovery_cross_zone_share": sum(cross[back:full]) / after if after else None,
        }

    # ----------------------------------------------------------------- blackhole

    def hold(self, sim: Simulation) -> None:
        """Note the connections every proxy held to the failed pods (their pools' keys end
        with the pod's name; the first part is the proxy's)."""
        pools = getattr(sim.data_plane, "pools", None)
        if pools is None:
            return
        names = {p.name for p in self.victims}
        for key, idle, h2 in pools.held():
            if not isinstance(key, tuple) or len(key) < 2 or key[-1] not in names:
                continue
            pair = (key[0], key[-1])
            if h2:
                self.held_h2.add(pair)
            elif idle:
                self.held_h1[pair] = self.held_h1.get(pair, 0) + idle

    def connected(self, proxy_name: str, pod: Pod, now: float) -> bool:
        """Whether ``proxy_name`` still has a connection to ``pod`` that it believes up: an
        HTTP/2 one, or an unused idle HTTP/1.1 one, held at the failure and not yet found
        dead."""
        if now >= self.dead_at_s:
            return False
        pair = (proxy_name, pod.name)
        return pair in self.held_h2 or self.held_h1.get(pair, 0) > 0

    def blackholed_try(
        self,
        env: simpy.Environment,
        proxy_name: str,
        pod: Pod,
        connected: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, int]:
        """One try to a failed pod whose address answers nothing. On a held connection the
        try has its connection at once (``connected``: Envoy's per-try timer starts); a
        new one never connects."""
        now = env.now
        if self.connected(proxy_name, pod, now):
            pair = (proxy_name, pod.name)
            if pair not in self.held_h2:
                self.held_h1[pair] -= 1  # this idle connection now carries the try
            self.hung_tries += 1
            if connected is not None:
                connected()
            yield env.timeout(self.dead_at_s - now)
            return RESET
        self.connect_timeouts += 1
        yield env.timeout(self.connect_timeout_s)
        return CONNECT_FAILURE


# --------------------------------------------------------------------------- timeline


def fail_zone(
    sim: Simulation, event: FailZoneEvent, note: Callable[[str], None]
) -> Generator[simpy.Event, Any, None]:
    """The timeline's ``fail-zone``: the zone's pods stop, then leave the endpoints."""
    state: ZoneState = sim.zones
    wanted = None if event.services is None else set(event.services)
    victims = [
        pod
        for svc in sim.services.values()
        if wanted is None or svc.name in wanted
        for pod in svc.pods
        if pod.alive and state.zone_of(pod.node) == event.target
    ]
    for pod in victims:
        pod.alive = False  # what it holds ends with a reset (Simulation.serve), or hangs
    sim.deaths += len(victims)
    failure = state.fail(event.target, victims, event.mode)
    what = "" if wanted is None else f" ({', '.join(sorted(wanted))})"
    how = "answer nothing" if event.mode == "blackhole" else "refuse connections"
    note(f"zone {event.target} fails{what}: {len(victims)} pods {how}")
    if event.duration_s is not None:
        sim.env.process(_recover_later(sim, event, note))
    yield sim.env.timeout(event.endpoints_removed_after_s)
    if failure.recovered_at_s is not None:
        return  # back before the grace period ran out: the pods never left the endpoints
    if wanted is None:
        state.down.add(event.target)  # its nodes are NotReady: no CPU for hints
        state.epoch += 1
    services: dict[str, ServiceRuntime] = {}
    for pod in victims:
        was_ready = pod.ready
        pod.ready = False
        services[pod.service.name] = pod.service
        if was_ready:
            sim.control_plane.on_pod_died(pod)
    for svc in services.values():
        svc.refresh_endpoints()
        sim.control_plane.on_endpoints(svc)
    failure.endpoints_removed_s = sim.env.now
    note(f"zone {event.target}: its pods leave the endpoints")


def _recover_later(
    sim: Simulation, event: FailZoneEvent, note: Callable[[str], None]
) -> Generator[simpy.Event, Any, None]:
    assert event.duration_s is not None
    yield sim.env.timeout(event.duration_s)
    yield from _recover(sim, event.target, event.restart_after_s, note)


def recover_zone(
    sim: Simulation, event: RecoverZoneEvent, note: Callable[[str], None]
) -> Generator[simpy.Event, Any, None]:
    """The timeline's ``recover-zone``."""
    yield from _recover(sim, event.target, event.restart_after_s, note)


def _recover(
    sim: Simulation, zone: str, restart_after_s: float, note: Callable[[str], None]
) -> Generator[simpy.Event, Any, None]:
    state: ZoneState = sim.zones
    now = sim.env.now
    failures = [f for f in state.failures if f.zone == zone and f.recovered_at_s is None]
    if zone in state.down:
        state.down.discard(zone)  # its nodes are Ready again
        state.epoch += 1
    restarts: list[tuple[ZoneFailure, Pod]] = []
    healed = 0
    for failure in failures:
        failure.recovered_at_s = now
        for pod in failure.victims:
            if failure.endpoints_removed_s is None:
                pod.alive = True  # a partition healed: the same pods, still in the endpoints
                state.rejoined[pod.name] = failure
                healed += 1
            else:
                restarts.append((failure, pod))
    note(f"zone {zone} recovers: {healed} pods answer again, {len(restarts)} restart")
    if not restarts:
        return
    yield sim.env.timeout(restart_after_s)
    for failure, pod in restarts:
        new = sim.start_pod(pod.version, node=pod.node)
        state.rejoined[new.name] = failure
    note(f"zone {zone}: {len(restarts)} pods started again")
