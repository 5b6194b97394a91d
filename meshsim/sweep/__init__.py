"""Parameter sweeps: many points of one scenario, run locally or on Dask, saved as Parquet.

A sweep file (:mod:`meshsim.sweep.spec`) names a base scenario and axes over any of
its keys; each point (:mod:`meshsim.sweep.points`) is simulated by the same function
on any executor (:mod:`meshsim.sweep.executors`) and written atomically to one file
of a Parquet dataset (:mod:`meshsim.sweep.dataset`), so an interrupted sweep resumes.
"""

from meshsim.sweep.dataset import load as load_results
from meshsim.sweep.documents import SweepError
from meshsim.sweep.executors import DaskExecutor, Executor, LocalExecutor
from meshsim.sweep.points import Point, plan
from meshsim.sweep.rows import PointTask, run_point
from meshsim.sweep.run import PointFailedError, SweepOutcome, run_sweep
from meshsim.sweep.spec import Sweep, SweepSpec, load_sweep

__all__ = [
    "DaskExecutor",
    "Executor",
    "LocalExecutor",
    "Point",
    "PointFailedError",
    "PointTask",
    "Sweep",
    "SweepError",
    "SweepOutcome",
    "SweepSpec",
    "load_results",
    "load_sweep",
    "plan",
    "run_point",
    "run_sweep",
]
