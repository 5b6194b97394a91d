"""Timeouts: Envoy route and per-try timeouts, Linkerd request timeouts and fail-fast.

All durations are in seconds; ``None`` means "no timeout". Deadlines are absolute times on
the caller's clock (simulated or monotonic), so a caller arms one timer per deadline.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = [
    "ENVOY_CONNECT_TIMEOUT_S",
    "LINKERD_CONNECT_TIMEOUT_S",
    "FailFast",
    "FailFastVerdict",
    "LinkerdTimeouts",
    "RouteTimeout",
    "per_try_deadline",
]

ENVOY_CONNECT_TIMEOUT_S = 5.0
"""Envoy's cluster ``connect_timeout`` when the cluster sets none (§2.1, §12.2): raw Envoy,
and Cilium's node Envoy (its operator writes the same 5 s into an lb-l7 CiliumEnvoyConfig).
Istio sets its own, ``meshConfig.connectTimeout`` (10 s by default)."""
LINKERD_CONNECT_TIMEOUT_S = 1.0
"""``LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT``'s default (§12.3, §14.4)."""


@dataclass(frozen=True, slots=True)
class RouteTimeout:
    """Envoy ``RouteAction.timeout`` (docs/mesh-semantics.md §1.1, §7.1).

    It covers all attempts *and* back-offs; when it fires the request ends with 504 (UT)
    and is not retried. Raw Envoy defaults to 15 s; Istio sets 0 (disabled) unless the
    VirtualService sets ``http[].timeout``. A value of 0 disables it, as in Envoy.
    """

    timeout_s: float | None

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0 or None (not {self.timeout_s})")

    @classmethod
    def envoy_default(cls) -> RouteTimeout:
        """Raw Envoy: 15 s."""
        return cls(15.0)

    @classmethod
    def istio_default(cls) -> RouteTimeout:
        """Istio: disabled (``timeout: 0s``) unless the VirtualService sets one (§7.1)."""
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.timeout_s is not None and self.timeout_s > 0

    def deadline(self, started_at: float) -> float:
        """Absolute deadline for a request that reached the router at ``started_at``.

        ``math.inf`` when disabled.
        """
        if not self.enabled:
            return math.inf
        assert self.timeout_s is not None
        return started_at + self.timeout_s


def per_try_deadline(
    per_try_timeout_s: float | None, try_started_at: float, route_deadline: float = math.inf
) -> float:
    """The deadline of one try (§1.1): ``min(route deadline, start + per_try_timeout)``.

    ``try_started_at`` must be when the request is fully at the router *and* a pooled
    connection has been obtained: Envoy excludes connection-pool queueing from the per-try
    timer. The timer applies only until response headers start; it then no longer fires.
    Without a per-try timeout, a try is bounded by the route deadline alone.
    """
    if per_try_timeout_s is None:
        return route_deadline
    return min(route_deadline, try_started_at + per_try_timeout_s)


@dataclass(frozen=True, slots=True)
class LinkerdTimeouts:
    """``timeout.linkerd.io/{request,response,idle}`` (docs/mesh-semantics.md §6.3).

    All default to none.

    ``request_s`` bounds the whole request/response stream; ``response_s`` the backend
    response in flight; ``idle_s`` inactivity. These are *not* retried (use
    ``retry.linkerd.io/timeout`` in :class:`meshsim.policy.linkerd_retry.LinkerdRetryPolicy`
    for a retryable per-try timeout). Gateway API ``HTTPRoute.timeouts.request`` maps to
    ``request_s``; the annotation wins.
    """

    request_s: float | None = None
    response_s: float | None = None
    idle_s: float | None = None

    def request_deadline(self, started_at: float) -> float:
        """Absolute deadline for the whole request (``math.inf`` if none)."""
        return math.inf if self.request_s is None else started_at + self.request_s

    def response_deadline(self, sent_at: float) -> float:
        """Absolute deadline for the backend response (``math.inf`` if none)."""
        return math.inf if self.response_s is None else sent_at + self.response_s


class FailFastVerdict(enum.Enum):
    """What the balancer queue does with a new request."""

    ENQUEUE = "enqueue"
    """Queue it (or dispatch at once if an endpoint is ready)."""
    FAILFAST = "failfast"
    """The queue is in fail-fast and its gate is shut: it takes no request, and the route's
    LoadShed sheds this one (503, never retried, ``Outcome.load_shed()``)."""
    QUEUE_FULL = "queue_full"
    """The queue is at capacity: backpressure, the request is shed."""


class FailFast:
    """linkerd2-proxy's balancer queue fail-fast gate (docs/mesh-semantics.md §5.1).

    When requests wait for a ready endpoint and none becomes ready within ``timeout_s``
    (3 s outbound, 1 s inbound), the queue enters fail-fast: the queued requests fail with a
    FailFastError (503, which route retries may retry on another backend) and the queue's
    gate shuts, so that every new request is shed in front of it (LoadShedError, 503, never
    retried) until an endpoint becomes ready again.

    Drive it with :meth:`set_ready` whenever the number of ready endpoints goes to or from
    zero, :meth:`admit` for each new request, and :meth:`poll` at :attr:`trips_at` (the
    simulator schedules an event there; the proxy arms a timer). The timer starts when a
    request first has to wait with no ready endpoint.
    """

    OUTBOUND_TIMEOUT_S = 3.0
    INBOUND_TIMEOUT_S = 1.0
    QUEUE_CAPACITY = 10_000

    def __init__(
        self,
        timeout_s: float = OUTBOUND_TIMEOUT_S,
        queue_capacity: int = QUEUE_CAPACITY,
        *,
        ready: bool = True,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 (not {timeout_s})")
        self.timeout_s = timeout_s
        self.queue_capacity = queue_capacity
        self.ready = ready
        self.in_failfast = False
        self._waiting_since: float | None = None

    @classmethod
    def outbound(cls) -> FailFast:
        """Outbound HTTP: 3 s, queue 10 000."""
        return cls(cls.OUTBOUND_TIMEOUT_S)

    @classmethod
    def inbound(cls) -> FailFast:
        """Inbound HTTP: 1 s, queue 10 000."""
        return cls(cls.INBOUND_TIMEOUT_S)

    @property
    def trips_at(self) -> float | None:
        """When fail-fast will begin if nothing changes (``None`` if no timer runs)."""
        if self._waiting_since is None or self.in_failfast:
            return None
        return self._waiting_since + self.timeout_s

    def set_ready(self, ready: bool, now: float, *, queued: int = 0) -> None:
        """Tell the gate whether any endpoint is ready; ``queued`` requests are waiting."""
        self.ready = ready
        if ready:
            # An endpoint is ready: leave fail-fast and stop the timer.
            self.in_failfast = False
            self._waiting_since = None
        elif queued > 0 and self._waiting_since is None and not self.in_failfast:
            self._waiting_since = now

    def poll(self, now: float) -> bool:
        """Advance the timer to ``now``; True if fail-fast is (now) in force.

        On the transition the caller must fail every queued request with 503.
        """
        trips = self.trips_at
        if trips is not None and now >= trips and not self.ready:
            self.in_failfast = True
            self._waiting_since = None
        return self.in_failfast

    def admit(self, now: float, queued: int) -> FailFastVerdict:
        """Verdict for a new request, given ``queued`` requests already waiting."""
        if self.poll(now):
            return FailFastVerdict.FAILFAST
        if queued >= self.queue_capacity:
            return FailFastVerdict.QUEUE_FULL
        if not self.ready and self._waiting_since is None:
            self._waiting_since = now
        return FailFastVerdict.ENQUEUE
