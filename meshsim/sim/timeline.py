"""The scenario's timeline of failures and changes: kill, slow, errors, scale.

Targets name a service (``ratings``) or one version (``reviews-v2``). Replicas are
chosen in creation order, so that the same scenario hits the same pods every run.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from meshsim.scenario.model import ErrorsEvent, KillEvent, ScaleEvent, SlowEvent

if TYPE_CHECKING:
    from meshsim.sim.app import Pod, VersionRuntime
    from meshsim.sim.engine import Simulation

AnyEvent = KillEvent | SlowEvent | ErrorsEvent | ScaleEvent


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
            victims = self._live_pods(event.target)[: event.count]
            for pod in victims:
                self.sim.kill(pod)
            self._note(f"kill {len(victims)} of {event.target}")
        elif isinstance(event, ScaleEvent):
            self._scale(event)
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
                    pod.error_status = event.status
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
                    self.sim.retire(pod)
        self._note(f"scale {event.target} to {event.replicas}")

    def _note(self, what: str) -> None:
        self.log.append((self.env.now, what))
