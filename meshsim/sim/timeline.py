"""The scenario's timeline of failures and changes: kill, slow, errors, scale, rollout,
churn, config changes and control-plane outages.

Targets name a service (``ratings``) or one version (``reviews-v2``). Replicas are
chosen in creation order, so that the same scenario hits the same pods every run.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.policy.outcome import GrpcStatus
from meshsim.scenario.edges import FailZoneEvent, RecoverZoneEvent
from meshsim.scenario.events import (
    ANY_SERVICE,
    ChurnEvent,
    ConfigEvent,
    ControlPlaneDownEvent,
    ControlPlaneSlowEvent,
    ErrorsEvent,
    KillEvent,
    RolloutEvent,
    ScaleEvent,
    SlowEvent,
)
from meshsim.sim.app import grpc_status

if TYPE_CHECKING:
    from meshsim.sim.app import Pod, VersionRuntime
    from meshsim.sim.engine import Simulation

AnyEvent = (
    KillEvent
    | SlowEvent
    | ErrorsEvent
    | ScaleEvent
    | RolloutEvent
    | ChurnEvent
    | ConfigEvent
    | ControlPlaneDownEvent
    | ControlPlaneSlowEvent
    | FailZoneEvent
    | RecoverZoneEvent
)

READY_POLL_S = 0.05
"""How often a rollout checks whether its new pods are ready."""


def _error_status(event: ErrorsEvent, pod: Pod) -> int:
    """What a failing replica answers: the event's HTTP status, else for a gRPC service its
    gRPC status (UNAVAILABLE by default) in a Trailers-Only 200, else a 500."""
    if event.status is not None:
        return event.status
    if pod.service.spec.protocol != "grpc":
        return 500
    name = event.grpc_status or "unavailable"
    return grpc_status(GrpcStatus[name.upper()])


class Timeline:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self.log: list[tuple[float, str]] = []
        """What happened, when: shown in reports' resilience timelines."""

    def start(self) -> None:
        for event in self.sim.scenario.events:
            self.env.process(self._at(event))

    def _versions(self, target: str) -> list[VersionRuntime]:
        sim = self.sim
        if target in sim.services:
            return list(sim.services[target].versions.values())
        for svc in sim.services.values():
            for version in svc.versions.values():
                if f"{svc.name}-{version.name}" == target:
                    return [version]
        return []  # unreachable for a validated scenario

    def _live_pods(self, target: str) -> list[Pod]:
        return [p for v in self._versions(target) for p in v.pods if p.alive]

    def _at(self, event: AnyEvent) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(event.at_s)
        if isinstance(event, KillEvent):
            victims = [p for p in self._live_pods(event.target) if p.ready][: event.count]
            for pod in victims:
                if event.graceful:
                    self.sim.terminate(pod, event.prestop_s)
                else:
                    self.sim.kill(pod)
            how = f"gracefully ({event.prestop_s:g} s preStop) " if event.graceful else ""
            self._note(f"kill {len(victims)} of {event.target} {how}".rstrip())
        elif isinstance(event, ScaleEvent):
            self._scale(event)
        elif isinstance(event, RolloutEvent):
            yield from self._rollout(event)
        elif isinstance(event, ChurnEvent):
            yield from self._churn(event)
        elif isinstance(event, ConfigEvent):
            for i in range(event.count):
                if i:
                    yield self.env.timeout(event.interval_s)
                self.sim.control_plane.on_config(event.target)
            self._note(f"config change x{event.count} on {event.target}")
        elif isinstance(event, ControlPlaneDownEvent | ControlPlaneSlowEvent):
            yield from self._control_plane(event)
        elif isinstance(event, FailZoneEvent):
            from meshsim.sim.zone_failures import fail_zone

            yield from fail_zone(self.sim, event, self._note)
        elif isinstance(event, RecoverZoneEvent):
            from meshsim.sim.zone_failures import recover_zone

            yield from recover_zone(self.sim, event, self._note)
        else:
            pods = self._live_pods(event.target)
            pods = pods[: event.count] if event.count is not None else pods
            if isinstance(event, SlowEvent):
                for pod in pods:
                    pod.slow_factor = event.factor
                self._note(f"slow {len(pods)} of {event.target} x{event.factor:g}")
            else:
                for pod in pods:
                    pod.error_rate = event.rate
                    pod.error_status = _error_status(event, pod)
                self._note(f"errors {event.rate:.0%} on {len(pods)} of {event.target}")
            if event.duration_s is not None:
                yield self.env.timeout(event.duration_s)
                for pod in pods:
                    if isinstance(event, SlowEvent):
                        pod.slow_factor = 1.0
                    else:
                        pod.error_rate = 0.0
                self._note(f"{event.action} on {event.target} ends")

    def _scale(self, event: ScaleEvent) -> None:
        # A service with versions scales each of its versions to ``replicas``.
        for version in self._versions(event.target):
            live = [p for p in version.pods if p.alive]
            if len(live) < event.replicas:
                for _ in range(event.replicas - len(live)):
                    self.sim.start_pod(version)
            else:
                # Scale-down removes the newest pods first, as a ReplicaSet does by default
                # for pods of equal standing; they finish what they hold (graceful).
                for pod in reversed(live[event.replicas :]):
                    if event.prestop_s is None:
                        self.sim.retire(pod)
                    else:
                        self.sim.terminate(pod, event.prestop_s)
        self._note(f"scale {event.target} to {event.replicas}")

    def _remove(self, pod: Pod, graceful: bool, prestop_s: float) -> None:
        if graceful:
            self.sim.terminate(pod, prestop_s)
        else:
            self.sim.kill(pod)

    def _rollout(self, event: RolloutEvent) -> Generator[simpy.Event, Any, None]:
        """Replace every pod of the target, ``max_surge`` at a time (maxUnavailable 0)."""
        self._note(f"rollout of {event.target} starts")
        for version in self._versions(event.target):
            old = [p for p in version.pods if p.alive and p.ready]
            while old:
                batch, old = old[: event.max_surge], old[event.max_surge :]
                new = [self.sim.start_pod(version) for _ in batch]
                while not all(p.ready or not p.alive for p in new):
                    yield self.env.timeout(READY_POLL_S)
                for pod in batch:
                    if pod.alive:
                        self._remove(pod, event.graceful, event.prestop_s)
        self._note(f"rollout of {event.target} done")

    def _churn(self, event: ChurnEvent) -> Generator[simpy.Event, Any, None]:
        """Replace one random pod every 60 / pods_per_minute seconds."""
        rng = self.sim.streams("events/churn")
        versions = (
            [v for s in self.sim.services.values() for v in s.versions.values()]
            if event.target == ANY_SERVICE
            else self._versions(event.target)
        )
        gap = 60.0 / event.pods_per_minute
        end = self.sim.end_s if event.duration_s is None else event.at_s + event.duration_s
        replaced = 0
        while self.env.now + gap <= end:
            yield self.env.timeout(gap)
            version = versions[int(rng.integers(len(versions)))]
            live = [p for p in version.pods if p.alive and p.ready]
            if not live:
                continue
            victim = live[int(rng.integers(len(live)))]
            self._remove(victim, event.graceful, event.prestop_s)
            self.sim.start_pod(version)
            replaced += 1
        self._note(f"churn on {event.target}: {replaced} pods replaced")

    def _control_plane(
        self, event: ControlPlaneDownEvent | ControlPlaneSlowEvent
    ) -> Generator[simpy.Event, Any, None]:
        cp = self.sim.control_plane
        if isinstance(event, ControlPlaneDownEvent):
            cp.set_down(True)
            self._note("control plane down")
        else:
            cp.set_slow(event.factor)
            self._note(f"control plane slow x{event.factor:g}")
        if event.duration_s is not None:
            yield self.env.timeout(event.duration_s)
            if isinstance(event, ControlPlaneDownEvent):
                cp.set_down(False)
                self._note("control plane back")
            else:
                cp.set_slow(1.0)
                self._note("control plane at normal speed")

    def _note(self, what: str) -> None:
        self.log.append((self.env.now, what))
