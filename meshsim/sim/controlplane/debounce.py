"""istiod's debounce (docs/mesh-semantics.md §9.1, ``pilot/pkg/xds/discovery.go`` ``debounce``).

A pure state machine driven by the caller's clock:

- the first event arms a timer of ``after``; later events merge into the pending request
  and move ``last`` (the time of the latest event);
- when the timer fires and no push is in flight, the request is pushed if
  ``now - start >= max_delay`` or ``now - last >= after``; otherwise the timer is re-armed
  for ``after - (now - last)``;
- only one push runs at a time: a timer that fires during a push does nothing, and the end
  of the push (:meth:`Debouncer.push_done`) runs the same check.

Each method returns the request to push now, if any; :attr:`Debouncer.timer_at` is when the
caller must call :meth:`Debouncer.timer` next (None: no timer armed).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PushRequest:
    """What a push carries: merged over the debounced events."""

    full: bool = False
    services: set[str] = field(default_factory=set)
    """Services whose endpoints or configuration changed; '*' means all."""
    changes: list[float] = field(default_factory=list)
    """When each merged change happened (for convergence times)."""
    events: int = 0

    def merge(self, full: bool, services: set[str], changed_at: float) -> None:
        self.full = self.full or full
        self.services |= services
        self.changes.append(changed_at)
        self.events += 1


EPS = 1e-9
"""Timers are sums of floats: a check within a nanosecond of its boundary counts as on it."""


class Debouncer:
    def __init__(self, after_s: float, max_s: float) -> None:
        self.after = after_s
        self.max = max_s
        self.pending: PushRequest | None = None
        self.start = 0.0
        self.last = 0.0
        self.free = True
        self.timer_at: float | None = None

    def event(
        self, now: float, full: bool, services: set[str], changed_at: float | None = None
    ) -> None:
        """A config or endpoint event arrives at ``now`` (it happened at ``changed_at``)."""
        self.last = now
        if self.pending is None:
            self.pending = PushRequest()
            self.start = now
            self.timer_at = now + self.after
        self.pending.merge(full, services, now if changed_at is None else changed_at)

    def timer(self, now: float) -> PushRequest | None:
        """The armed timer fires at ``now``."""
        self.timer_at = None
        return self._try(now) if self.free else None

    def push_done(self, now: float) -> PushRequest | None:
        """The push in flight has finished (its PushContext is built and queued)."""
        self.free = True
        return self._try(now)

    def _try(self, now: float) -> PushRequest | None:
        req = self.pending
        if req is None:
            return None
        quiet = now - self.last
        # A tiny tolerance: float sums of the timer must not miss the boundary.
        if now - self.start >= self.max - EPS or quiet >= self.after - EPS:
            self.pending = None
            self.free = False
            self.timer_at = None
            return req
        self.timer_at = now + (self.after - quiet)
        return None
