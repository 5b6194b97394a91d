"""What each proxy knows: endpoints as of the last update it applied.

The control plane snapshots a service's endpoints whenever it sends a change
(:class:`EndpointHistory`, one per service, versioned by a counter shared by all services).
A proxy's :class:`ProxyView` holds the version it has applied; updates still travelling
to it are pending ``[applied_at, version]`` entries (mutable, so that a queued push that
is merged with a later one carries the later version). Looking up a service gives the
newest snapshot not newer than the proxy's version: so a proxy routes to pods that have
died until its update arrives, and sends nothing to new pods before that.

Istio's proxies hold one version for all their configuration (a push carries a whole
PushContext); Linkerd's hold one per destination stream (:class:`StreamView`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import simpy

    from meshsim.sim.app import Pod, ServiceRuntime


class EndpointHistory:
    __slots__ = ("endpoints", "versions")

    def __init__(self, endpoints: list[Pod]) -> None:
        self.versions: list[int] = [0]
        self.endpoints: list[list[Pod]] = [list(endpoints)]

    def record(self, version: int, endpoints: list[Pod]) -> None:
        if self.versions[-1] == version:
            self.endpoints[-1] = list(endpoints)
        else:
            self.versions.append(version)
            self.endpoints.append(list(endpoints))

    def at(self, version: int) -> tuple[int, list[Pod]]:
        """(snapshot version, endpoints) as of ``version``."""
        i = bisect_right(self.versions, version) - 1
        i = max(i, 0)
        return self.versions[i], self.endpoints[i]

    @property
    def latest(self) -> list[Pod]:
        return self.endpoints[-1]


class Pending:
    """An update on its way: applied at ``at`` with ``version`` (merged updates raise it)."""

    __slots__ = ("at", "start", "version")

    def __init__(self, start: float, at: float, version: int) -> None:
        self.start = start
        self.at = at
        self.version = version


def _advance(queue: deque[Pending], version: int, now: float) -> int:
    while queue and queue[0].at <= now:
        v = queue.popleft().version
        version = max(version, v)
    return version


class ProxyView:
    """One version for all of a proxy's configuration (istiod)."""

    __slots__ = ("env", "history", "pending", "version")

    def __init__(
        self, env: simpy.Environment, history: dict[str, EndpointHistory], version: int = 0
    ) -> None:
        self.env = env
        self.history = history
        self.version = version
        self.pending: deque[Pending] = deque()

    def current(self) -> int:
        if self.pending:
            self.version = _advance(self.pending, self.version, self.env.now)
        return self.version

    def lookup(self, service: ServiceRuntime) -> tuple[int, list[Pod]]:
        return self.history[service.name].at(self.current())

    def last(self) -> Pending | None:
        return self.pending[-1] if self.pending else None


class StreamView:
    """One version per destination stream (Linkerd): ``pending`` and ``version`` by service."""

    __slots__ = ("base", "env", "history", "pending", "version")

    def __init__(
        self, env: simpy.Environment, history: dict[str, EndpointHistory], version: int = 0
    ) -> None:
        self.env = env
        self.history = history
        self.base = version
        """The version of a stream with no update yet (when the proxy started)."""
        self.version: dict[str, int] = {}
        self.pending: dict[str, deque[Pending]] = {}

    def lookup(self, service: ServiceRuntime) -> tuple[int, list[Pod]]:
        name = service.name
        queue = self.pending.get(name)
        version = self.version.get(name, self.base)
        if queue:
            version = self.version[name] = _advance(queue, version, self.env.now)
        return self.history[name].at(version)
