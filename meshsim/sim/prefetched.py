"""A numpy ``Generator`` whose scalar ``integers()`` are read from prefetched blocks, bit for bit.

The balancers (:mod:`meshsim.policy.balancer`) draw one or two endpoint indices per pick
with ``rng.integers(n)``; numpy's scalar call costs microseconds of argument handling for
nanoseconds of arithmetic, and with two draws per least-request pick it was a large share
of a proxied hop. :class:`PrefetchedGenerator` gives the *same numbers*: numpy draws a
bounded integer below 2^32 with Lemire's method on the bit generator's 32-bit outputs
(``buffered_bounded_lemire_uint32`` in numpy's ``distributions.c``), and PCG64 makes two
32-bit outputs of each 64-bit one, low half first, keeping the high half for the next call.
Here the 64-bit outputs are fetched 2048 at a time (``random_raw``, which leaves that
half-word buffer alone), cut into halves in the same order, and Lemire's method (the
multiply, the rejection threshold ``2^32 mod n``) runs in Python. So a stream read through
this class yields what plain ``Generator.integers`` would have, and a run's results do not
change (tests/test_prefetched.py checks the sequences against numpy's).

Any other draw (another method, a bound of 2^32 or more, a size, a dtype) first puts the
bit generator back where plain calls would have left it (the state before the block,
advanced by the 64-bit outputs used, with the pending half-word), drops the block, and is
numpy's own. Only ``bit_generator`` read directly sees the prefetched state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PrefetchedGenerator", "prefetched"]

_BLOCK = 2048
"""64-bit outputs fetched at a time (4096 32-bit draws)."""
_TWO32 = 1 << 32


class PrefetchedGenerator(np.random.Generator):
    """``Generator`` with ``integers(n)`` / ``integers(low, high)`` (scalar, high - low <=
    2^32) served from a prefetched block; identical draws, see the module docstring."""

    def __init__(self, bit_generator: np.random.BitGenerator) -> None:
        super().__init__(bit_generator)
        self._words: list[int] = []
        """32-bit outputs still to use, the next one last (``pop()``)."""
        self._origin: dict[str, Any] | None = None
        """The bit generator's state before the block was fetched (None: no block)."""
        self._pairs = 0
        """64-bit outputs in the block."""

    def _refill(self) -> None:
        bg = self.bit_generator
        self._sync()
        state = dict(bg.state)
        self._origin = state
        raw = bg.random_raw(_BLOCK)
        halves = np.asarray(raw, dtype="<u8").view("<u4").tolist()
        if state["has_uint32"]:
            halves.insert(0, int(state["uinteger"]))  # the half kept from before the block
        halves.reverse()
        self._words = halves
        self._pairs = _BLOCK

    def _sync(self) -> None:
        """Leave the bit generator where plain calls would have, and drop the block."""
        origin = self._origin
        if origin is None:
            return
        words = self._words
        pending = len(words) % 2 == 1  # an odd count left: a high half is still unused
        state = dict(origin)
        state["has_uint32"] = 0
        state["uinteger"] = 0
        bg = self.bit_generator
        bg.state = state
        bg.advance(self._pairs - len(words) // 2)  # type: ignore[attr-defined]
        state = bg.state
        state["has_uint32"] = 1 if pending else 0
        state["uinteger"] = words[-1] if pending else 0
        bg.state = state
        self._words = []
        self._origin = None

    def integers(
        self,
        low: Any,
        high: Any = None,
        size: Any = None,
        dtype: Any = np.int64,
        endpoint: bool = False,
    ) -> Any:
        if size is None and dtype is np.int64 and not endpoint and type(low) is int:
            if high is None:
                n, off = low, 0
            elif type(high) is int:
                n, off = high - low, low
            else:
                n = 0
            if 0 < n <= _TWO32:
                if n == 1:
                    return off  # numpy draws nothing for a range of one value
                words = self._words
                if not words:
                    self._refill()
                    words = self._words
                m = words.pop() * n
                left = m & 0xFFFFFFFF
                if left < n:
                    threshold = (_TWO32 - n) % n
                    while left < threshold:
                        if not words:
                            self._refill()
                            words = self._words
                        m = words.pop() * n
                        left = m & 0xFFFFFFFF
                return off + (m >> 32)
        self._sync()
        return super().integers(low, high, size, dtype, endpoint)


def _synced(name: str) -> Callable[..., Any]:
    plain = getattr(np.random.Generator, name)

    def method(self: PrefetchedGenerator, *args: Any, **kwargs: Any) -> Any:
        self._sync()
        return plain(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = plain.__doc__
    return method


for _name in dir(np.random.Generator):
    _plain = getattr(np.random.Generator, _name)
    if not _name.startswith("_") and _name != "integers" and callable(_plain):
        setattr(PrefetchedGenerator, _name, _synced(_name))


def prefetched(rng: np.random.Generator) -> PrefetchedGenerator:
    """A :class:`PrefetchedGenerator` that takes over ``rng``'s bit generator: draw from it
    only from now on (``rng`` and it would share, and shift, one stream)."""
    return PrefetchedGenerator(rng.bit_generator)
