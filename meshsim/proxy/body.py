"""A request body streamed from the downstream connection to the upstream one.

The parser pushes pieces in from its callback; the forwarding coroutine pulls them out. The
first :data:`RETAIN_BYTES` are kept so that a retry can send the body again (Envoy likewise
retries only requests whose body fits its buffer). Past :data:`HIGH_WATER` unread bytes the
downstream socket stops being read, so a fast client cannot fill the proxy's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

RETAIN_BYTES = 64 * 1024
HIGH_WATER = 256 * 1024


class Body:
    __slots__ = (
        "_pause",
        "_resume",
        "_waiter",
        "buffered",
        "chunked",
        "eof",
        "expected",
        "paused",
        "pieces",
        "retained",
        "total",
    )

    def __init__(
        self,
        *,
        chunked: bool,
        expected: int | None,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self.chunked = chunked
        self.expected = expected  # Content-Length, when the request had one
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.total = 0
        self.eof = not chunked and not expected
        self.retained: list[bytes] | None = [] if not self.eof else None
        self.paused = False
        self._pause = pause
        self._resume = resume
        self._waiter: asyncio.Future[None] | None = None

    @property
    def empty(self) -> bool:
        """The request has no body at all."""
        return not self.chunked and not self.expected

    @property
    def replayable(self) -> bool:
        return self.empty or (self.eof and self.retained is not None)

    def feed(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.buffered += len(piece)
        self.total += len(piece)
        if self.retained is not None:
            if self.total <= RETAIN_BYTES:
                self.retained.append(piece)
            else:
                self.retained = None
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_piece(self) -> bytes | None:
        """The next unread piece, or None at the end of the body."""
        while not self.pieces:
            if self.eof:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        piece = self.pieces.popleft()
        self.buffered -= len(piece)
        if self.paused and self.buffered < HIGH_WATER // 2:
            self.paused = False
            self._resume()
        return piece

    def frame(self, piece: bytes) -> bytes:
        """``piece`` as sent upstream: chunked bodies are re-chunked (framing is hop-by-hop)."""
        if not self.chunked:
            return piece
        return b"%x\r\n%b\r\n" % (len(piece), piece)

    def replay(self) -> bytes:
        """The whole retained body, framed, for a retry."""
        data = b"".join(self.retained or ())
        if not self.chunked:
            return data
        return (self.frame(data) if data else b"") + b"0\r\n\r\n"


def _never() -> None:  # flow control of a body that is never fed
    return None


NO_BODY = Body(chunked=False, expected=None, pause=_never, resume=_never)
"""The body of every request that has none (no Content-Length, no chunks): one shared
object, since the parser feeds it nothing and ``finish`` leaves it as it is. Most requests
through a mesh are bodyless GETs; this saves building a body and its queue for each."""
