"""Load balancers: Envoy's round robin, least request and random (docs/mesh-semantics.md §4), and
linkerd2-proxy's P2C over Peak-EWMA (§5). Ring hash and Maglev live in
:mod:`meshsim.policy.hash_balancer`.

Every balancer follows :class:`LoadBalancer`::

    host = lb.pick(endpoints, now, rng)           # None only if `endpoints` is empty
    lb.on_start(host, now)                        # request sent
    ...
    lb.on_complete(host, latency_s, now)          # response done (Linkerd: first body frame)

Endpoints are opaque hashable ids; pass only the endpoints that may be used (healthy,
not ejected, ready). ``weights`` maps endpoints to their load-balancing weights (default
1). For Envoy retries, ``previous_hosts`` and ``reselect_attempts`` come from
:class:`meshsim.policy.retry.RetryState`: a picked host in ``previous_hosts`` is re-picked
up to ``reselect_attempts`` times, after which the last pick stands (§1.1).
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "HashKey",
    "LeastRequest",
    "LoadBalancer",
    "PeakEwma",
    "RandomBalancer",
    "RoundRobin",
    "Weights",
]

Weights = Mapping[Any, float]
"""Endpoint -> load-balancing weight (keys typed ``Any``: ``Mapping`` is invariant in its key,
so a ``dict[str, float]`` must be accepted for endpoints of any hashable type)."""

HashKey = str | bytes | int
"""A request property hashed by ring hash and Maglev (header value, cookie, source IP)."""


@runtime_checkable
class LoadBalancer(Protocol):
    """The common protocol of every balancer in this package."""

    def pick(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        *,
        weights: Weights | None = None,
        hash_key: HashKey | None = None,
        previous_hosts: Collection[Hashable] = (),
        reselect_attempts: int = 0,
    ) -> Hashable | None:
        """Choose an endpoint for one attempt; ``None`` iff ``endpoints`` is empty."""
        ...

    def on_start(self, endpoint: Hashable, now: float) -> None:
        """A request to ``endpoint`` started (it is now active / pending)."""
        ...

    def on_complete(self, endpoint: Hashable, latency_s: float, now: float) -> None:
        """A request to ``endpoint`` that started ``latency_s`` ago completed at ``now``."""
        ...


class _Balancer(ABC):
    """Shared plumbing: active-request counts and the re-pick loop for previous hosts."""

    def __init__(self) -> None:
        self.active: dict[Hashable, int] = {}
        """Requests in flight per endpoint (Envoy ``rq_active``; Linkerd ``pending``)."""

    def pick(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        *,
        weights: Weights | None = None,
        hash_key: HashKey | None = None,
        previous_hosts: Collection[Hashable] = (),
        reselect_attempts: int = 0,
    ) -> Hashable | None:
        if not endpoints:
            return None
        host = self._pick_once(endpoints, now, rng, weights, hash_key, 0)
        # Envoy's chooseHost: up to reselect_attempts more picks while the predicate rejects.
        for attempt in range(1, reselect_attempts + 1):
            if host not in previous_hosts:
                break
            host = self._pick_once(endpoints, now, rng, weights, hash_key, attempt)
        return host

    @abstractmethod
    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable: ...

    def on_start(self, endpoint: Hashable, now: float) -> None:
        self.active[endpoint] = self.active.get(endpoint, 0) + 1

    def on_complete(self, endpoint: Hashable, latency_s: float, now: float) -> None:
        count = self.active.get(endpoint, 0)
        if count <= 0:
            raise RuntimeError(f"on_complete for {endpoint!r} with no request in flight")
        self.active[endpoint] = count - 1


def _weights_of(endpoints: Sequence[Hashable], weights: Weights | None) -> tuple[float, ...] | None:
    """The endpoints' weights, or ``None`` when they are all equal (the unweighted path)."""
    if weights is None:
        return None
    values = tuple(float(weights.get(e, 1.0)) for e in endpoints)
    if any(w <= 0 for w in values):
        raise ValueError("load-balancing weights must be > 0")
    return None if len(set(values)) <= 1 else values


class _Edf:
    """Earliest-deadline-first scheduler, as Envoy's ``EdfScheduler``.

    Each entry's next deadline is ``current_time + 1/weight``, with the weight evaluated when
    the entry is (re)inserted; ties go to the earlier insertion.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._order = 0
        self.current_time = 0.0

    def add(self, index: int, weight: float) -> None:
        heapq.heappush(self._heap, (self.current_time + 1.0 / weight, self._order, index))
        self._order += 1

    def pop(self) -> int:
        deadline, _, index = heapq.heappop(self._heap)
        self.current_time = deadline
        return index


class RoundRobin(_Balancer):
    """Envoy ROUND_ROBIN (§4), raw Envoy's default LB.

    Equal weights: strict rotation, so over any run of picks every endpoint is chosen
    ``floor(k/N)`` or ``ceil(k/N)`` times. Unequal weights: an EDF schedule with static
    weights. The rotation starts at a random index (Envoy seeds its LB so that proxies do
    not all start on the same host); each Envoy worker has its own instance.
    """

    def __init__(self) -> None:
        super().__init__()
        self._index: int | None = None
        self._edf: _Edf | None = None
        self._edf_key: tuple[tuple[Hashable, ...], tuple[float, ...]] | None = None

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        ws = _weights_of(endpoints, weights)
        if ws is None:
            if self._index is None:
                self._index = int(rng.integers(len(endpoints)))
            host = endpoints[self._index % len(endpoints)]
            self._index += 1
            return host
        key = (tuple(endpoints), ws)
        if self._edf is None or self._edf_key != key:
            self._edf, self._edf_key = _Edf(), key
            for i, w in enumerate(ws):
                self._edf.add(i, w)
        index = self._edf.pop()
        self._edf.add(index, ws[index])
        return endpoints[index]


class LeastRequest(_Balancer):
    """Envoy LEAST_REQUEST (§4), Istio's default since 1.14.

    Equal weights: P2C: draw ``choice_count`` endpoints uniformly *with replacement* and
    keep the one with the fewest active requests, strict ``<`` so the earliest draw wins
    ties. Unequal weights: EDF with dynamic weight ``w / (active + 1)^active_request_bias``.
    """

    def __init__(self, choice_count: int = 2, active_request_bias: float = 1.0) -> None:
        super().__init__()
        if choice_count < 1:
            raise ValueError(f"choice_count must be >= 1 (not {choice_count})")
        self.choice_count = choice_count
        self.active_request_bias = active_request_bias
        self._edf: _Edf | None = None
        self._edf_key: tuple[tuple[Hashable, ...], tuple[float, ...]] | None = None

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        ws = _weights_of(endpoints, weights)
        if ws is None:
            candidate = endpoints[int(rng.integers(len(endpoints)))]
            for _ in range(self.choice_count - 1):
                sampled = endpoints[int(rng.integers(len(endpoints)))]
                if self.active.get(sampled, 0) < self.active.get(candidate, 0):
                    candidate = sampled
            return candidate
        key = (tuple(endpoints), ws)
        if self._edf is None or self._edf_key != key:
            self._edf, self._edf_key = _Edf(), key
            for i in range(len(endpoints)):
                self._edf.add(i, self._dynamic_weight(endpoints[i], ws[i]))
        index = self._edf.pop()
        self._edf.add(index, self._dynamic_weight(endpoints[index], ws[index]))
        return endpoints[index]

    def _dynamic_weight(self, endpoint: Hashable, weight: float) -> float:
        active = self.active.get(endpoint, 0)
        if self.active_request_bias == 0.0:
            return weight
        return weight / math.pow(active + 1, self.active_request_bias)


class RandomBalancer(_Balancer):
    """Envoy RANDOM (§4): uniform over the endpoints given."""

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        return endpoints[int(rng.integers(len(endpoints)))]


@dataclass(slots=True)
class _RttEstimate:
    rtt_s: float
    update_at: float


class PeakEwma(_Balancer):
    """linkerd2-proxy's P2C over Peak-EWMA load (§5; tower ``peak_ewma.rs``).

    ``cost = rtt_estimate x (pending + 1)``. A new endpoint starts at ``default_rtt_s``
    (30 ms, floored at 1 ms). A sample above the estimate replaces it (peak); otherwise
    ``estimate <- estimate·e^(-dt/tau) + rtt·(1 - e^(-dt/tau))`` with ``dt`` the time since
    the last update and ``tau = decay_s`` (10 s). Reading the load decays the estimate with
    a zero sample at ``now``, so an idle endpoint's cost falls toward 0.

    Picking: with one endpoint, it; otherwise two *distinct* indices uniformly at random,
    the lower load wins, ``a`` on a tie. ``weights`` and ``hash_key`` are ignored.
    """

    MIN_DEFAULT_RTT_S = 0.001

    def __init__(self, default_rtt_s: float = 0.030, decay_s: float = 10.0) -> None:
        super().__init__()
        if decay_s <= 0:
            raise ValueError(f"decay_s must be > 0 (not {decay_s})")
        self.default_rtt_s = max(default_rtt_s, self.MIN_DEFAULT_RTT_S)
        self.decay_s = decay_s
        self._rtt: dict[Hashable, _RttEstimate] = {}

    def _estimate(self, endpoint: Hashable, now: float) -> _RttEstimate:
        est = self._rtt.get(endpoint)
        if est is None:
            est = self._rtt[endpoint] = _RttEstimate(self.default_rtt_s, now)
        return est

    def _update(self, endpoint: Hashable, rtt_s: float, now: float) -> float:
        est = self._estimate(endpoint, now)
        if est.rtt_s < rtt_s:
            est.rtt_s = rtt_s
        else:
            elapsed = max(0.0, now - est.update_at)
            decay = math.exp(-elapsed / self.decay_s)
            est.rtt_s = est.rtt_s * decay + rtt_s * (1.0 - decay)
        est.update_at = max(est.update_at, now)
        return est.rtt_s

    def rtt_estimate_s(self, endpoint: Hashable) -> float | None:
        """The current estimate without decaying it (``None`` if never seen)."""
        est = self._rtt.get(endpoint)
        return None if est is None else est.rtt_s

    def load(self, endpoint: Hashable, now: float) -> float:
        """tower's ``Load::load``: decays the estimate to ``now``, times ``pending + 1``."""
        rtt = self._update(endpoint, 0.0, now)
        return rtt * (self.active.get(endpoint, 0) + 1)

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        # linkerd's gen_pair: two distinct indices.
        a = int(rng.integers(n))
        b = int(rng.integers(n - 1))
        if b >= a:
            b += 1
        a_load = self.load(endpoints[a], now)
        b_load = self.load(endpoints[b], now)
        return endpoints[a] if a_load <= b_load else endpoints[b]

    def on_start(self, endpoint: Hashable, now: float) -> None:
        self._estimate(endpoint, now)
        super().on_start(endpoint, now)

    def on_complete(self, endpoint: Hashable, latency_s: float, now: float) -> None:
        super().on_complete(endpoint, latency_s, now)
        self._update(endpoint, latency_s, now)
