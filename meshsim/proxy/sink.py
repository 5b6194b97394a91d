"""One try's response on its way back downstream (the general path of :mod:`meshsim.proxy.forward`).

An :class:`~meshsim.proxy.upstream.UpstreamConn` hands its response events to the exchange's
:class:`Sink`, which holds the head and body until the forwarding coroutine decides whether
this try's answer goes downstream (a retry drops it), then streams it, re-chunked where the
downstream connection needs it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from meshsim.proxy.httpcore import Headers

if TYPE_CHECKING:
    from meshsim.proxy.downstream import DownstreamProtocol


class Sink:
    """Receives one try's response events from an :class:`UpstreamConn` (general path).

    Output is gathered during one upstream read and written once at its end (``flush``):
    a head and a small body leave in one ``write`` call.
    """

    __slots__ = (
        "chunked_down",
        "done_wait",
        "down",
        "forwarding",
        "head",
        "head_sent",
        "head_wait",
        "keep_alive",
        "lost",
        "out",
        "pending",
        "pending_headers",
        "request_sent",
        "status",
    )

    def __init__(self, down: DownstreamProtocol) -> None:
        loop = asyncio.get_running_loop()
        self.down = down
        self.head_wait: asyncio.Future[None] = loop.create_future()
        self.done_wait: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.keep_alive = False
        self.head = b""
        self.pending: list[bytes] | None = []
        """Body held before the decision to forward; None while a refused answer is read
        and dropped (it may be large, and nobody will read it)."""
        self.out: list[bytes] = []
        self.pending_headers: Headers = []
        self.forwarding = False
        self.head_sent = False
        self.chunked_down = False
        self.lost = False
        self.request_sent = False
        """The whole request (head and body) went upstream: the connection is between
        exchanges once the response ends, so it may be pooled."""

    def on_head(self, status: int, headers: Headers, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.pending_headers = headers
        if not self.head_wait.done():
            self.head_wait.set_result(None)

    def on_body(self, chunk: bytes) -> None:
        if not self.forwarding:
            if self.pending is not None:
                self.pending.append(chunk)  # held until the coroutine decides (retry or not)
            return
        self._send_head()
        self._send(chunk)

    def on_done(self) -> None:
        if self.forwarding:
            self._send_head()
            if self.chunked_down:
                self.out.append(b"0\r\n\r\n")
            self.flush()
        if not self.head_wait.done():
            self.head_wait.set_result(None)
        if not self.done_wait.done():
            self.done_wait.set_result(None)

    def on_lost(self) -> None:
        self.lost = True
        for fut in (self.head_wait, self.done_wait):
            if not fut.done():
                fut.set_result(None)

    def flush(self) -> None:
        out = self.out
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- forwarding --------------------------------------------------------------------
    def start_forwarding(self, head: bytes, chunked: bool, done: bool) -> None:
        self.head = head
        self.chunked_down = chunked
        self.forwarding = True
        if self.pending or done:
            self._send_head()
            for chunk in self.pending or ():
                self._send(chunk)
            self.pending = []
            if done and self.chunked_down:
                self.out.append(b"0\r\n\r\n")
            self.flush()

    def _send_head(self) -> None:
        if not self.head_sent:
            self.head_sent = True
            self.out.append(self.head)

    def _send(self, chunk: bytes) -> None:
        if self.chunked_down:
            self.out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.out.append(chunk)
