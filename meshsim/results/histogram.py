"""Log-bucketed latency histograms (HDR-style) with vectorised recording.

Values are positive durations in seconds. Bucket ``i`` covers
``[LOW * GROWTH**i, LOW * GROWTH**(i+1))``, and keeps its count and the smallest and
largest value it holds. A quantile is read where its rank falls among the bucket's
values, taken as spread evenly in log between those two (the bucket's first value at its
smallest, its last at its largest): so it moves smoothly with the data instead of by
whole 2 % steps, a value that repeats (a fixed delay) or stands alone comes back exactly,
and every quantile is within the bucket's own spread, under 2 %, of the value at its
rank. The steps mattered where two quantiles are subtracted: a mesh's added p99 of about
1 ms on a 15 ms tail moved by 0.3 ms when either tail crossed a bucket's edge (on
lognormal tails of 100,000 values, the added p99's error against the exact one was
0.17 ms rms read at the buckets' midpoints, 0.02 ms interpolated). fortio and
Prometheus's ``histogram_quantile`` interpolate within a bucket too. Histograms with the
same layout merge by adding counts (and taking the extremes), which is how replications
and workers combine.

Why not ``hdrh`` here: the simulator records several values per simulated request,
and hdrh's per-value Python call would cost more than the event it measures.
Values are buffered in a list and binned with numpy in batches; memory stays bounded
by the bucket count (about 1,500 buckets of a count and two extremes) plus one batch.
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
"""Bucket width ratio: a bucket's values are within 2 % of each other."""
_LOG_GROWTH = math.log(GROWTH)
NBUCKETS = math.ceil(math.log(HIGH_S / LOW_S) / _LOG_GROWTH) + 1
_BATCH = 8192


class LogHistogram:
    """A mergeable log-bucketed histogram of durations in seconds."""

    __slots__ = ("_buffer", "_counts", "_high", "_low", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts = np.zeros(NBUCKETS, dtype=np.int64)
        self._low = np.full(NBUCKETS, math.inf)
        """Each bucket's smallest value (inf while empty)."""
        self._high = np.zeros(NBUCKETS)
        """Each bucket's largest value."""
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
        np.minimum.at(self._low, idx, values)
        np.maximum.at(self._high, idx, values)

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
        """The value at quantile ``q`` in [0, 1], NaN when empty.

        The rank is HdrHistogram's, ``ceil(q * n)``, found in the smallest bucket whose
        cumulative count reaches it; within that bucket the ``k``-th of its ``c`` values
        reads at ``(k - 1) / (c - 1)`` of the log span from its smallest value to its
        largest (see the module's docstring).
        """
        self._flush()
        n = int(self._counts.sum())
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q * n))
        cumulative = np.cumsum(self._counts)
        i = int(np.searchsorted(cumulative, rank))
        c = int(self._counts[i])
        low, high = float(self._low[i]), float(self._high[i])
        if c == 1 or high <= low:
            return low
        share = (rank - (int(cumulative[i]) - c) - 1) / (c - 1)
        if low <= 0.0:  # (bucket 0 also holds zero durations: no log span there)
            return low + (high - low) * share
        return float(low * (high / low) ** share)

    def quantiles(self, qs: list[float]) -> list[float]:
        return [self.quantile(q) for q in qs]

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add ``other``'s counts into this histogram and return it."""
        other._flush()
        self._flush()
        self._counts += other._counts
        np.minimum(self._low, other._low, out=self._low)
        np.maximum(self._high, other._high, out=self._high)
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
            "low_s": self._low[nz].tolist(),
            "high_s": self._high[nz].tolist(),
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
        index = np.asarray(data["index"], dtype=np.int64)
        h._counts[index] = np.asarray(data["count"], dtype=np.int64)
        h._sum = float(data["sum_s"])
        h._min = math.inf if data["min_s"] is None else float(data["min_s"])
        h._max = 0.0 if data["max_s"] is None else float(data["max_s"])
        if "low_s" in data:
            h._low[index] = np.asarray(data["low_s"], dtype=np.float64)
            h._high[index] = np.asarray(data["high_s"], dtype=np.float64)
        elif len(index):
            # Saved before the buckets kept their extremes: each reads as its midpoint, as
            # it did then (within what was seen).
            mid = np.clip(LOW_S * GROWTH ** (index + 0.5), h._min, h._max)
            h._low[index] = h._high[index] = mid
        return h
