"""Named random streams spawned from one seed (DESIGN principle 4).

Each consumer asks for its stream by name (``"arrivals"``, ``"service_times"``,
``"network"``, ``"faults"``, ``"balancers"``...). A stream's seed depends only on the
run's seed and the stream's name, so adding a stream never shifts another, and the
same scenario and seed give the same numbers on any machine.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_key(name: str) -> int:
    """A stable 32-bit key for a stream name (crc32 is the same on every platform)."""
    return zlib.crc32(name.encode("utf-8"))


class Streams:
    """A family of independent ``numpy.random.Generator`` streams for one run."""

    def __init__(self, seed: int | np.random.SeedSequence) -> None:
        self.root = (
            seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        )
        self._streams: dict[str, np.random.Generator] = {}

    def __call__(self, name: str) -> np.random.Generator:
        gen = self._streams.get(name)
        if gen is None:
            seq = np.random.SeedSequence(
                entropy=self.root.entropy,
                spawn_key=(*self.root.spawn_key, stream_key(name)),
            )
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[name] = gen
        return gen


def replication_seeds(seed: int, replications: int) -> list[np.random.SeedSequence]:
    """Independent seed sequences, one per replication, spawned from the run's seed."""
    return np.random.SeedSequence(seed).spawn(replications)
