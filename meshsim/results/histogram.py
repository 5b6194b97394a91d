"""Log-bucketed latency histograms (HDR-style) with vectorised recording.

Values are positive durations in seconds. Bucket ``i`` covers
``[LOW * GROWTH**i, LOW * GROWTH**(i+1))`` and reports its geometric midpoint, so
every reported quantile is within ``(sqrt(GROWTH) - 1) < 1 %`` of a value that was
recorded (the HdrHistogram guarantee at two significant digits). Histograms with the
same layout merge by adding counts, which is how replications and workers combine.

Why not ``hdrh`` here: the simulator records several values per simulated request,
and hdrh's per-value Python call would cost more than the event it measures.
Values are buffered in a list and binned with numpy in batches; memory stays bounded
by the bucket count (about 1,500 int64s) plus one batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LOW_S = 1e-7
"""Smallest distinguishable value (100 ns); anything below is counted in bucket 0."""
HIGH_S = 1e5
"""Largest bucketed value (about 28 h); anything above is counted in the last bucket."""
GROWTH = 1.02
"""Bucket width ratio: midpoints are within 0.995 % of any value in the bucket."""
_LOG_GROWTH = math.log(GROWTH)
NBUCKETS = math.ceil(math.log(HIGH_S / LOW_S) / _LOG_GROWTH) + 1
_BATCH = 8192


class LogHistogram:
    """A mergeable log-bucketed histogram of durations in seconds."""

    __slots__ = ("_buffer", "_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts = np.zeros(NBUCKETS, dtype=np.int64)
        self._buffer: list[float] = []
        self._sum = 0.0
        self._min = math.inf
        self._max = 0.0

    def record(self, value_s: float) -> None:
        """Record one duration (seconds)."""
        buf = self._buffer
        buf.append(value_s)
        if len(buf) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        values = np.asarray(self._buffer, dtype=np.float64)
        self._buffer = []
        self._sum += float(values.sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))
        idx = np.floor(np.log(np.maximum(values, LOW_S) / LOW_S) / _LOG_GROWTH).astype(np.int64)
        np.clip(idx, 0, NBUCKETS - 1, out=idx)
        self._counts += np.bincount(idx, minlength=NBUCKETS)

    @property
    def counts(self) -> np.ndarray:
        """Counts per bucket (a copy)."""
        self._flush()
        return self._counts.copy()

    @property
    def count(self) -> int:
        return int(self._counts.sum()) + len(self._buffer)

    @property
    def mean(self) -> float:
        self._flush()
        n = int(self._counts.sum())
        return self._sum / n if n else math.nan

    @property
    def min(self) -> float:
        self._flush()
        return self._min if self.count else math.nan

    @property
    def max(self) -> float:
        self._flush()
        return self._max if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The value at quantile ``q`` in [0, 1] (bucket midpoint), NaN when empty.

        Uses the same rank convention as HdrHistogram: the smallest bucket whose
        cumulative count reaches ``ceil(q * n)``.
        """
        self._flush()
        n = int(self._counts.sum())
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q * n))
        cumulative = np.cumsum(self._counts)
        i = int(np.searchsorted(cumulative, rank))
        mid = LOW_S * GROWTH ** (i + 0.5)
        # Clamp to what was seen: a single value must come back as itself within 1 %.
        return float(min(max(mid, self._min), self._max))

    def quantiles(self, qs: list[float]) -> list[float]:
        return [self.quantile(q) for q in qs]

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add ``other``'s counts into this histogram and return it."""
        other._flush()
        self._flush()
        self._counts += other._counts
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    def copy(self) -> LogHistogram:
        return LogHistogram().merge(self)

    def to_dict(self) -> dict[str, Any]:
        """A compact serialisable form: the non-empty buckets only."""
        self._flush()
        nz = np.nonzero(self._counts)[0]
        return {
            "layout": {"low_s": LOW_S, "growth": GROWTH, "buckets": NBUCKETS},
            "index": nz.tolist(),
            "count": self._counts[nz].tolist(),
            "sum_s": self._sum,
            "min_s": self._min if self.count else None,
            "max_s": self._max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogHistogram:
        layout = data["layout"]
        if (layout["low_s"], layout["growth"], layout["buckets"]) != (LOW_S, GROWTH, NBUCKETS):
            raise ValueError("histogram saved with another bucket layout")
        h = cls()
        h._counts[np.asarray(data["index"], dtype=np.int64)] = np.asarray(
            data["count"], dtype=np.int64
        )
        h._sum = float(data["sum_s"])
        h._min = math.inf if data["min_s"] is None else float(data["min_s"])
        h._max = 0.0 if data["max_s"] is None else float(data["max_s"])
        return h
