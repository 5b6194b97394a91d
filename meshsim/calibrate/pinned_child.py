"""A small Python process pinned to a lab core and connected back over loopback TCP: how the
lab's host probes (:mod:`meshsim.calibrate.wake_latency`, :mod:`meshsim.calibrate.cache_cooling`)
put a sleeping process where a sidecar sleeps."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator

TIMEOUT_S = 30.0
"""How long the child may take to connect, answer or end."""


@contextlib.contextmanager
def pinned_child(code: str, core: int, *args: str) -> Iterator[socket.socket]:
    """Run ``code`` in a child Python as ``code CORE PORT *args`` (it pins itself to ``core``
    and connects to ``PORT``) and yield the accepted connection. On leaving, the connection
    is closed and the child given :data:`TIMEOUT_S` to end, then killed. Raises OSError
    (``socket.timeout`` included) when it does not connect in time."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(core), str(listener.getsockname()[1]), *args]
        )
        try:
            listener.settimeout(TIMEOUT_S)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                yield conn
            child.wait(timeout=TIMEOUT_S)
        finally:
            if child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5.0)
