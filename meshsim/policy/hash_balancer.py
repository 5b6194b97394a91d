"""Consistent-hash balancers: Envoy RING_HASH (Ketama) and MAGLEV (docs/mesh-semantics.md §4).

Both hash a request property (``hash_key``: a header, cookie or source IP) to a 64-bit
value and look it up in a table built from the endpoints; with no key, Envoy uses a random
hash, and so do these. Istio maps DestinationRule ``consistentHash`` to RING_HASH by default,
or MAGLEV; its default retry policy then omits ``previous_hosts`` (§1.3).

Hashes here are BLAKE2b (64-bit) of ``str(endpoint)`` and of the key, not Envoy's xxHash:
the key -> host mapping differs from a real Envoy's, but every property that matters for
simulation (determinism, balance, minimal disruption when hosts change) is the same.
Endpoints must therefore have a stable ``str()`` (strings, ints, tuples of them).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from abc import abstractmethod
from collections.abc import Hashable, Sequence

import numpy as np

from meshsim.policy.balancer import HashKey, Weights, _Balancer

__all__ = ["Maglev", "RingHash", "hash64"]

_MASK64 = 2**64 - 1


def hash64(data: HashKey, *, salt: bytes = b"") -> int:
    """A stable 64-bit hash (BLAKE2b) of ``data``; ints are taken modulo 2^64 as they are."""
    if isinstance(data, int) and not salt:
        return data & _MASK64
    raw = data if isinstance(data, bytes) else str(data).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8, salt=salt).digest(), "big")


def _request_hash(hash_key: HashKey | None, rng: np.random.Generator) -> int:
    if hash_key is None:
        return int(rng.integers(0, 2**63)) << 1 | int(rng.integers(0, 2))
    return hash64(hash_key)


def _normalized(endpoints: Sequence[Hashable], weights: Weights | None) -> list[float]:
    raw = [float(weights.get(e, 1.0)) if weights else 1.0 for e in endpoints]
    if any(w <= 0 for w in raw):
        raise ValueError("load-balancing weights must be > 0")
    total = sum(raw)
    return [w / total for w in raw]


class _HashTable(_Balancer):
    """A balancer whose lookup structure is rebuilt only when the endpoints or weights change."""

    _key: tuple[tuple[Hashable, ...], tuple[float, ...]] | None = None

    @abstractmethod
    def _build(self, endpoints: Sequence[Hashable], ws: list[float]) -> None: ...

    def _rebuild_if_changed(self, endpoints: Sequence[Hashable], weights: Weights | None) -> None:
        ws = _normalized(endpoints, weights)
        key = (tuple(endpoints), tuple(ws))
        if key != self._key:
            self._build(endpoints, ws)
            self._key = key


class RingHash(_HashTable):
    """Envoy RING_HASH: a Ketama ring (``RingHashLbConfig``, min 1024, max 8M entries).

    Ring size: ``scale = min(ceil(min_w·min_ring_size)/min_w, max_ring_size)`` for the
    smallest normalised weight ``min_w``; each host gets ``scale·w`` entries (running total,
    as Envoy), hashing ``"<host>_<i>"``. A key maps to the first entry whose hash is
    ``>= hash(key)``, wrapping to the start. A re-pick for a retry host predicate moves
    ``attempt`` entries along the ring, as Envoy does.
    """

    def __init__(self, min_ring_size: int = 1024, max_ring_size: int = 8 * 1024 * 1024) -> None:
        super().__init__()
        if not 0 < min_ring_size <= max_ring_size:
            raise ValueError("need 0 < min_ring_size <= max_ring_size")
        self.min_ring_size = min_ring_size
        self.max_ring_size = max_ring_size
        self._hashes: list[int] = []
        self._hosts: list[Hashable] = []

    def ring_size(self) -> int:
        """Entries in the ring built last (0 before the first pick)."""
        return len(self._hashes)

    def _build(self, endpoints: Sequence[Hashable], ws: list[float]) -> None:
        min_w = min(ws)
        scale = min(math.ceil(min_w * self.min_ring_size) / min_w, float(self.max_ring_size))
        entries: list[tuple[int, Hashable]] = []
        current, target = 0.0, 0.0
        for host, w in zip(endpoints, ws, strict=True):
            target += scale * w
            i = 0
            while current < target:
                entries.append((hash64(f"{host}_{i}"), host))
                i += 1
                current += 1
        entries.sort(key=lambda entry: entry[0])
        self._hashes = [h for h, _ in entries]
        self._hosts = [host for _, host in entries]

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        self._rebuild_if_changed(endpoints, weights)
        h = _request_hash(hash_key, rng)
        index = bisect.bisect_left(self._hashes, h)
        if index == len(self._hashes):
            index = 0
        return self._hosts[(index + attempt) % len(self._hosts)]


class Maglev(_HashTable):
    """Envoy MAGLEV: a lookup table of prime size (default 65537), built by Maglev's
    permutation fill, weighted as Envoy does (a host of weight ``w`` takes a turn in
    iteration ``i`` when ``i·w >= target``, then ``target += max_w``).

    Each host's permutation is ``(offset + skip·j) mod M`` with ``offset = h0(host) mod M``,
    ``skip = h1(host) mod (M-1) + 1``. A key maps to ``table[hash mod M]``; a re-pick for a
    retry host predicate flips the hash with ``2^64 - attempt`` (Envoy's
    ``OriginalMaglevTable::chooseHost``).
    """

    def __init__(self, table_size: int = 65537) -> None:
        super().__init__()
        if table_size < 2 or any(table_size % p == 0 for p in range(2, math.isqrt(table_size) + 1)):
            raise ValueError(f"table_size must be prime (not {table_size})")
        self.table_size = table_size
        self.table: list[Hashable] = []

    def _build(self, endpoints: Sequence[Hashable], ws: list[float]) -> None:
        m = self.table_size
        offsets = [hash64(str(e), salt=b"offset") % m for e in endpoints]
        skips = [hash64(str(e), salt=b"skip") % (m - 1) + 1 for e in endpoints]
        nexts = [0] * len(endpoints)
        targets = [0.0] * len(endpoints)
        max_w = max(ws)
        table: list[int] = [-1] * m
        filled = 0
        iteration = 1
        while filled < m:
            for i in range(len(endpoints)):
                if iteration * ws[i] < targets[i]:
                    continue
                targets[i] += max_w
                c = (offsets[i] + skips[i] * nexts[i]) % m
                while table[c] >= 0:
                    nexts[i] += 1
                    c = (offsets[i] + skips[i] * nexts[i]) % m
                table[c] = i
                nexts[i] += 1
                filled += 1
                if filled == m:
                    break
            iteration += 1
        self.table = [endpoints[i] for i in table]

    def _pick_once(
        self,
        endpoints: Sequence[Hashable],
        now: float,
        rng: np.random.Generator,
        weights: Weights | None,
        hash_key: HashKey | None,
        attempt: int,
    ) -> Hashable:
        self._rebuild_if_changed(endpoints, weights)
        h = _request_hash(hash_key, rng)
        if attempt > 0:
            h ^= (_MASK64 - attempt + 1) & _MASK64
        return self.table[h % self.table_size]
