"""Running a sweep: plan its points, skip the finished ones, run the rest, write each.

Finished points are written one by one as they arrive, so an interrupted sweep
(an error, Ctrl-C, a killed machine) loses at most the points that were running.
Running it again with the same output directory resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshsim.errors import MeshsimError, Problem
from meshsim.files import OutputError, prepare_output_dir, write_error
from meshsim.sweep import dataset
from meshsim.sweep.documents import SweepError
from meshsim.sweep.executors import Executor, LocalExecutor
from meshsim.sweep.points import Point, plan
from meshsim.sweep.rows import PointTask, axis_types, run_point
from meshsim.sweep.spec import Sweep

PointProgress = Callable[[int, int], None]
"""Called with (points done, points in the sweep), including skipped ones."""


class PointFailedError(MeshsimError):
    """A point raised; the points finished before it are saved."""


@dataclass
class SweepOutcome:
    out: Path
    total: int
    skipped: int
    ran: list[str] = field(default_factory=list)
    """Ids of the points run (and written) by this call, in finishing order."""
    set_aside: list[str] = field(default_factory=list)
    """Ids of points whose files were incomplete (renamed ``.<id>.parquet.corrupt``);
    those still in the sweep ran again."""


def check_meshes(sweep: Sweep, points: list[Point]) -> None:
    """Refuse, before running anything, meshes that have no data-plane model yet."""
    from meshsim.sim.dataplanes import DATA_PLANES

    wanted = sorted({m for p in points for m in p.scenario.get("meshes", ["none"])})
    missing = [m for m in wanted if m not in DATA_PLANES]
    if missing:
        line = sweep.line("grid", "meshes")
        raise SweepError(
            [Problem("meshes", f"no data-plane model yet for {', '.join(missing)} "
                     f"(available: {', '.join(sorted(DATA_PLANES))})", line=line)],
            str(sweep.path),
        )  # fmt: skip


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    executor: Executor | None = None,
    progress: PointProgress | None = None,
    point_function: Callable[[PointTask], Any] = run_point,
) -> SweepOutcome:
    """Run every point of ``sweep`` not yet in ``out``; see :mod:`meshsim.sweep.dataset`.

    ``out`` is created and checked writable before any point runs.

    Raises:
        OutputError: ``out`` cannot be written, before the sweep or when a point's file
            fails (a full disk); the points written before stay and a rerun resumes.
        PointFailedError: a point raised.
    """
    points = plan(sweep)
    check_meshes(sweep, points)
    types = axis_types(sweep)
    prepare_output_dir(out)
    set_aside: list[str] = []
    try:
        done = dataset.prepare(out, sweep, types, points, set_aside=set_aside)
    except OSError as exc:
        raise write_error(out, exc) from None
    todo = [PointTask(p, types) for p in points if p.id not in done]
    outcome = SweepOutcome(
        out=out, total=len(points), skipped=len(points) - len(todo), set_aside=set_aside
    )
    if progress is not None:
        progress(outcome.skipped, outcome.total)
    runner = executor if executor is not None else LocalExecutor()
    results = runner.run(point_function, todo)
    try:
        for task, table, error in results:
            if error is not None:
                saved = outcome.skipped + len(outcome.ran)
                raise PointFailedError(
                    f"point {task.point.id} {task.point.params} failed: "
                    f"{type(error).__name__}: {error}\n{saved} of {outcome.total} points are "
                    f"saved in {out}; run the sweep again to resume"
                ) from error
            try:
                dataset.write_point(out, task.point.id, table)
            except OSError as exc:
                saved = outcome.skipped + len(outcome.ran)
                raise OutputError(
                    f"cannot write point {task.point.id} in {out} ({exc.strerror or exc}); "
                    f"{saved} of {outcome.total} points are saved; run the sweep again to "
                    "resume"
                ) from None
            outcome.ran.append(task.point.id)
            if progress is not None:
                progress(outcome.skipped + len(outcome.ran), outcome.total)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return outcome
