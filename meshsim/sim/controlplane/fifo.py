"""A FIFO queue served by ``n`` identical servers, computed ahead instead of simulated.

The control planes' work items (istiod's per-proxy pushes under the push throttle, Linkerd's
per-stream updates, certificate signing) have service times known when they are queued, and
they are served first come, first served. So each item's start and end follow at once from
the servers' free times: the next item takes the server that frees first. Items queued
later never overtake earlier ones, so the schedule of an item never changes after it is
computed, and the simulator needs no process or event per item (a 10,000-proxy push would
otherwise cost 10,000 simpy processes).
"""

from __future__ import annotations

import heapq


class FifoServers:
    """``n`` servers, FIFO; :meth:`assign` returns (start, end) of an item."""

    __slots__ = ("_free", "busy_s", "n")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("a queue needs at least one server")
        self.n = n
        self._free = [0.0] * n
        self.busy_s = 0.0
        """Server-seconds assigned so far."""

    def assign(self, ready_at: float, service_s: float) -> tuple[float, float]:
        """Queue an item that can start at ``ready_at`` and takes ``service_s`` on a server.

        Calls must come in FIFO order (non-decreasing queueing times).
        """
        free = heapq.heappop(self._free)
        start = free if free > ready_at else ready_at
        end = start + service_s
        heapq.heappush(self._free, end)
        self.busy_s += service_s
        return start, end

    def idle_at(self) -> float:
        """When every item queued so far has finished."""
        return max(self._free)
