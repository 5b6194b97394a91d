"""Where points run: a local process pool, or a Dask cluster.

Both run the same function on the same tasks and hand back each result as it
finishes; the caller writes it. Results travel back to the caller, so Dask workers
need no shared filesystem. Stopping early (an error, Ctrl-C, SIGTERM) cancels what has
not started; the local pool's workers are then killed rather than left to finish their
points, and on Linux they also die with the sweep if it is killed outright (SIGKILL, a
crash), so none lives on holding the caller's output pipe.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

Outcome = tuple[Any, Any, BaseException | None]
"""(task, result, error): exactly one of result and error is meaningful."""


class Executor(Protocol):
    """Runs ``function`` on each task, yielding outcomes in the order they finish."""

    def run(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Outcome]: ...


class LocalExecutor:
    """A process pool on this machine (``workers`` processes, default: the CPU count)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def run(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Outcome]:
        if not tasks:
            return
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(tasks)),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        finished = False
        try:
            pending: dict[Future[Any], Any] = {pool.submit(function, t): t for t in tasks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    error = future.exception()
                    yield task, (None if error else future.result()), error
            finished = True
        finally:
            if not finished:
                # Stopped early: points still running would only be thrown away.
                _kill_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def die_with_parent(parent: int) -> None:
    """Pool worker initializer: the kernel kills this worker when the sweep's process dies
    (Linux ``PR_SET_PDEATHSIG``), however it dies. SIGTERM gets its default action back,
    since a forked worker inherits the sweep's handler."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() != parent:  # the sweep died before prctl took effect
        os._exit(1)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop running work before Python 3.14.
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()


class DaskExecutor:
    """A ``dask.distributed`` cluster: the one at ``scheduler``, or a ``LocalCluster``.

    ``workers`` and ``processes`` size the LocalCluster (ignored with a scheduler).
    Workers must have meshsim installed, at the same version.
    """

    def __init__(
        self, scheduler: str | None = None, workers: int | None = None, processes: bool = True
    ) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self.processes = processes

    def run(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Outcome]:
        if not tasks:
            return
        try:
            distributed: Any = importlib.import_module("dask.distributed")
        except ImportError:
            from meshsim.errors import MeshsimError

            raise MeshsimError(
                "the dask executor needs dask.distributed: pip install 'meshsim[dask]'"
            ) from None
        cluster = None
        if self.scheduler is None:
            cluster = distributed.LocalCluster(
                n_workers=self.workers or min(os.cpu_count() or 1, len(tasks)),
                threads_per_worker=1,
                processes=self.processes,
                dashboard_address=None,
            )
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(self.scheduler)
        futures: dict[Any, Any] = {}
        try:
            futures = {
                client.submit(function, t, key=f"meshsim-point-{t.point.id}", pure=False): t
                for t in tasks
            }
            for future in distributed.as_completed(list(futures)):
                task = futures[future]
                if future.status == "error":
                    yield task, None, future.exception()
                else:
                    yield task, future.result(), None
        finally:
            if futures:
                client.cancel(list(futures))
            client.close()
            if cluster is not None:
                cluster.close()
