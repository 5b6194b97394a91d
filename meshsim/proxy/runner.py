"""Running a server coroutine from the command line: fast loop, clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshsim.proxy.httpcore import install_fast_loop

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on uvloop when available."""
    install_fast_loop()

    async def wrapper() -> T:
        return await main()

    return asyncio.run(wrapper())


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM (servers then drain and close)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available outside the main thread (tests run servers in threads).
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
