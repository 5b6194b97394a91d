"""linkerd2-proxy's endpoint connections: an endpoint whose connection is down is pending.

docs/mesh-semantics.md §5, §5.1. Each endpoint of a Linkerd balancer is a ``Reconnect``
service (``linkerd/reconnect``) around the endpoint's HTTP/2 client, connected as soon as the
endpoint joins the pool and ready only while its connection is up; P2C chooses among ready
endpoints only (``linkerd/pool/p2c``, ``p2c_ready_index``), and re-checks the chosen one's
readiness just before it dispatches (``check_ready_index``). So a connection that is lost, or
a connect that fails, never fails a request: the endpoint is pending while it reconnects.

When the connection is lost, ``Reconnect`` starts a fresh back-off and tries again when its
first delay has passed; each attempt that fails (refused at once, or after the connect
timeout when nothing answers) waits the next delay of the same back-off; a connect that
succeeds drops it. The back-off is linkerd2-proxy's exp-backoff (:class:`LinkerdBackOff`),
outbound 100 ms doubling to 60 s with jitter 0.1 (``DEFAULT_OUTBOUND_CONNECT_BACKOFF``).

Not for HTTP/1.1 endpoints: linkerd2-proxy's HTTP/1 client is always ready and connects per
request (``linkerd/proxy/http/src/client.rs``), so there a failed connect fails its request.

Times and durations are in seconds.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np

from meshsim.policy.backoff import LinkerdBackOff

__all__ = ["CONNECT_BACKOFF", "EndpointConnections", "Reconnect", "reconnected_at"]

CONNECT_BACKOFF = LinkerdBackOff(min_s=0.1, max_s=60.0, jitter=0.1)
"""``LINKERD2_PROXY_OUTBOUND_CONNECT_BACKOFF``'s default (linkerd2-proxy
``linkerd/app/src/env.rs``)."""

H = TypeVar("H", bound=Hashable)


class Reconnect:
    """One endpoint's connection, as linkerd2-proxy's ``Reconnect`` holds it."""

    __slots__ = ("backoff", "iteration", "next_attempt_s")

    def __init__(self, backoff: LinkerdBackOff = CONNECT_BACKOFF) -> None:
        self.backoff = backoff
        self.iteration = 0
        """Delays of the current back-off already waited (0 while connected)."""
        self.next_attempt_s: float | None = None
        """When the next connect attempt starts; ``None`` while connected."""

    @property
    def connected(self) -> bool:
        return self.next_attempt_s is None

    def failed(self, now: float, rng: np.random.Generator) -> float:
        """The connection was lost, or a connect attempt failed, at ``now``: the time of
        the next attempt. A loss starts the back-off afresh (``Connected`` to
        ``Disconnected`` with a new back-off); a failed attempt goes on with it (``Pending``
        keeps its back-off)."""
        self.next_attempt_s = now + self.backoff.delay_s(self.iteration, rng)
        self.iteration += 1
        return self.next_attempt_s

    def connect(self) -> None:
        """A connect attempt succeeded: the endpoint is ready and its back-off is dropped."""
        self.iteration = 0
        self.next_attempt_s = None


def reconnected_at(
    lost_at: float,
    answers_from: float,
    attempt_s: float,
    rng: np.random.Generator,
    backoff: LinkerdBackOff = CONNECT_BACKOFF,
) -> float:
    """When a connection lost at ``lost_at`` is up again, its peer answering again from
    ``answers_from`` (a partition that healed): at the first reconnect attempt that starts
    then or later, not at once. Each earlier attempt fails ``attempt_s`` after it starts (a
    refused connect at once, an unanswered one at the connect timeout: its SYN is not sent
    again before then), and the next one waits the back-off's next delay."""
    r = Reconnect(backoff)
    at = r.failed(lost_at, rng)
    while at < answers_from:
        at = r.failed(at + attempt_s, rng)
    return at


class EndpointConnections:
    """A balancer's endpoints' connections, for a driver that connects per request (the
    real proxy): an endpoint whose connect failed is pending until its next attempt is due,
    and the request that then goes to it is that attempt."""

    def __init__(self, backoff: LinkerdBackOff = CONNECT_BACKOFF) -> None:
        self.backoff = backoff
        self._down: dict[Hashable, Reconnect] = {}

    def ready(self, endpoints: list[H], now: float) -> list[H]:
        """The endpoints P2C may choose from now."""
        down = self._down
        if not down:
            return endpoints
        out: list[H] = []
        for e in endpoints:
            r = down.get(e)
            if r is None or r.next_attempt_s is None or now >= r.next_attempt_s:
                out.append(e)
        return out

    def failed(self, endpoint: Hashable, now: float, rng: np.random.Generator) -> None:
        """A connect to ``endpoint`` failed at ``now``."""
        r = self._down.get(endpoint)
        if r is None:
            r = self._down[endpoint] = Reconnect(self.backoff)
        r.failed(now, rng)

    def connected(self, endpoint: Hashable) -> None:
        """``endpoint`` answered: its connection is up."""
        self._down.pop(endpoint, None)
