"""The library's front door: run a scenario for its meshes and replications.

The CLI and notebooks both call :func:`run_and_save` (run, summarise, check the
scenario's objectives, save) or :func:`run_scenario` (run only); the CLI only parses
options, shows progress and renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshsim import __version__
from meshsim.errors import MeshsimError
from meshsim.files import prepare_output_dir
from meshsim.models.ranges import RangedParameter, drawn_parameters
from meshsim.models.samples import draw_parameter_sets, unique_parameters
from meshsim.results.run import MeshResult, ModelSampling, Replication, RunResult
from meshsim.results.schema import Summary
from meshsim.results.slo import Breach, check_slos
from meshsim.results.summary import build_summary
from meshsim.rng import replication_seeds
from meshsim.scenario.loader import scenario_sha256
from meshsim.scenario.model import MESH_NAMES, Scenario
from meshsim.sim.engine import Simulation

if TYPE_CHECKING:
    import numpy as np

    from meshsim.sweep.executors import Executor

Progress = Callable[[str, int, float], None]
"""Called with (mesh, replication index, simulated seconds) as runs advance."""


def events_cut_by(scenario: Scenario, duration_s: float | None) -> list[str]:
    """The scenario's events that a run of ``duration_s`` would not reach, described."""
    if duration_s is None:
        return []
    return [
        f"{e.action} {e.target} at {e.at_s:g} s" for e in scenario.events if e.at_s >= duration_s
    ]


@dataclass(frozen=True)
class SimulationTask:
    """One independent simulation: a mesh, a seed, and optionally a drawn parameter set."""

    scenario: Scenario
    mesh: str
    seed: np.random.SeedSequence
    index: int
    """The replication's index; for a parameter set, ``replications + k``."""
    keep_records: bool = False
    model_values: dict[str, float] | None = None


TaskOutcome = tuple[Replication, tuple[RangedParameter, ...]]
"""A simulation's replication and the ranged parameters of the models it used."""


def simulate(
    task: SimulationTask,
    progress: Callable[[float], None] | None = None,
    observe: Callable[[Simulation], object] | None = None,
) -> TaskOutcome:
    """Run one :class:`SimulationTask` (in this process or a pool's worker); ``observe``
    is called with the simulation once built, before it runs."""
    sim = Simulation(
        task.scenario, task.mesh, task.seed,
        keep_records=task.keep_records, model_values=task.model_values,
    )  # fmt: skip
    if observe is not None:
        observe(sim)
    sim.run(progress)
    measured = sim.measure()
    ranged = tuple(p for model in measured.cost_models for p in drawn_parameters(model))
    return Replication.of(measured, 0 if task.model_values else task.index), ranged


def run_scenario(
    scenario: Scenario,
    *,
    meshes: Sequence[str] | None = None,
    progress: Progress | None = None,
    keep_records: bool = False,
    model_samples: int | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
    observe: Callable[[Simulation], object] | None = None,
) -> RunResult:
    """Simulate ``scenario`` once per mesh and replication.

    Replication ``i`` of every mesh gets the same seed sequence, so meshes are
    compared under the same arrivals and service times (common random numbers).
    ``model_samples`` (default: the scenario's) draws that many cost-model parameter sets
    over the models' ranges and reruns every mesh under each, for the model bands.

    The simulations are independent, so they run on ``executor`` when one is given
    (:class:`meshsim.sweep.executors.LocalExecutor` or ``DaskExecutor``), else in a local
    process pool of ``jobs`` processes (None: one per core; 1: in this process). Each is
    deterministic in its seed, so the results are bit-identical whatever runs them; only
    the progress differs: in this process it advances with simulated time, from a pool as
    each simulation finishes.

    ``observe`` is called with each simulation once it is built, before it runs (to attach
    a probe: :class:`meshsim.calibrate.cpu_drift.SimulatedPeriods`); the simulations then
    run in this process, one after the other.
    """
    chosen = _chosen(scenario, meshes)
    seeds = replication_seeds(scenario.seed, scenario.replications)
    tasks = [
        SimulationTask(scenario, mesh, seed, index, keep_records)
        for mesh in chosen
        for index, seed in enumerate(seeds)
    ]
    done = _run_tasks(tasks, progress, jobs, executor, observe)
    results = {mesh: MeshResult(mesh) for mesh in chosen}
    ranged: list[RangedParameter] = []
    for task, (replication, params) in zip(tasks, done, strict=True):
        results[task.mesh].replications.append(replication)
        ranged.extend(params)
    n = scenario.model_samples if model_samples is None else model_samples
    sampling = None
    if n:
        sets = draw_parameter_sets(ranged, n, scenario.seed)
        # One replication per set, with the first replication's seed: the sets then differ
        # from each other and from the central run only through the parameters (common
        # random numbers), and a set costs one run per mesh rather than one per replication.
        set_tasks = [
            SimulationTask(scenario, mesh, seeds[0], scenario.replications + k,
                           model_values=drawn.values)
            for k, drawn in enumerate(sets)
            for mesh in chosen
        ]  # fmt: skip
        set_done = _run_tasks(set_tasks, progress, jobs, executor)
        runs: list[dict[str, MeshResult]] = [{} for _ in sets]
        for task, (replication, _) in zip(set_tasks, set_done, strict=True):
            runs[task.index - scenario.replications][task.mesh] = MeshResult(
                task.mesh, [replication]
            )
        sampling = ModelSampling(unique_parameters(ranged), sets, runs)
    return RunResult(
        scenario_name=scenario.name,
        scenario_sha256=scenario_sha256(scenario),
        seed=scenario.seed,
        meshes=results,
        meshsim_version=__version__,
        model_sampling=sampling,
    )


def _run_tasks(
    tasks: Sequence[SimulationTask],
    progress: Progress | None,
    jobs: int | None,
    executor: Executor | None,
    observe: Callable[[Simulation], object] | None = None,
) -> list[TaskOutcome]:
    """Each task's outcome, in the tasks' order, however they ran (in this process with
    ``observe``: a probe holds on to the simulation it watches)."""
    if jobs is not None and jobs < 1:
        raise MeshsimError(f"--jobs must be 1 or more, not {jobs}")
    if observe is not None and executor is not None:
        raise MeshsimError("observe needs the simulations in this process: no executor")
    if observe is not None or (executor is None and (jobs == 1 or len(tasks) <= 1)):
        return [
            simulate(t, None if progress is None else _bind(progress, t.mesh, t.index), observe)
            for t in tasks
        ]
    if executor is None:
        from meshsim.sweep.executors import LocalExecutor

        executor = LocalExecutor(jobs)
    # (mesh, index) names a task uniquely, and survives the copy that Dask hands back.
    out: dict[tuple[str, int], TaskOutcome] = {}
    for task, result, error in executor.run(simulate, tasks):
        if error is not None:
            raise error
        out[(task.mesh, task.index)] = result
        if progress is not None:
            progress(task.mesh, task.index, task.scenario.duration_s)
    return [out[(t.mesh, t.index)] for t in tasks]


@dataclass(frozen=True)
class Outcome:
    """A simulated scenario: its results, its summary.json and the objectives it missed."""

    result: RunResult
    summary: Summary
    """``summary.json`` as saved, ``slo_breaches`` included."""
    breaches: list[Breach]
    out: Path | None = None
    """The run directory, when saved."""


def run_and_summarise(
    scenario: Scenario,
    *,
    meshes: Sequence[str] | None = None,
    progress: Progress | None = None,
    keep_records: bool = False,
    model_samples: int | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
) -> Outcome:
    """:func:`run_scenario`, then the summary with the scenario's SLOs checked."""
    result = run_scenario(
        scenario,
        meshes=meshes,
        progress=progress,
        keep_records=keep_records,
        model_samples=model_samples,
        jobs=jobs,
        executor=executor,
    )
    summary = build_summary(result)
    breaches = check_slos(scenario.slo, summary)
    summary["slo_breaches"] = [str(b) for b in breaches]
    return Outcome(result, summary, breaches)


def run_and_save(
    scenario: Scenario,
    out: str | Path,
    *,
    meshes: Sequence[str] | None = None,
    progress: Progress | None = None,
    keep_records: bool = False,
    argv: list[str] | None = None,
    model_samples: int | None = None,
    jobs: int | None = 1,
    executor: Executor | None = None,
) -> Outcome:
    """Simulate ``scenario`` and save the run directory ``out`` (what ``meshsim run`` does).

    ``out`` is created and checked writable before simulating, so a bad location costs
    no simulation. ``keep_records`` also saves per-request records (records.parquet);
    ``argv`` is noted in meta.json.

    Raises:
        OutputError: ``out`` cannot be written (before the run, or when a file fails).
        MeshsimError: a bad mesh name.
    """
    _chosen(scenario, meshes)
    out_dir = prepare_output_dir(out)
    outcome = run_and_summarise(
        scenario,
        meshes=meshes,
        progress=progress,
        keep_records=keep_records,
        model_samples=model_samples,
        jobs=jobs,
        executor=executor,
    )
    from meshsim.results.store import save_run

    save_run(outcome.result, outcome.summary, scenario.to_dict(), out_dir, argv=argv)
    return Outcome(outcome.result, outcome.summary, outcome.breaches, out_dir)


def parse_meshes(values: Iterable[str], option: str = "--mesh") -> list[str] | None:
    """Mesh names from command-line values (each may be comma-separated), in order, once
    each; None when none were given."""
    meshes: list[str] = []
    for item in values:
        for name in item.split(","):
            name = name.strip()
            if name not in MESH_NAMES:
                raise MeshsimError(
                    f"{option}: unknown mesh '{name}' (known: {', '.join(MESH_NAMES)})"
                )
            if name not in meshes:
                meshes.append(name)
    return meshes or None


def _chosen(scenario: Scenario, meshes: Sequence[str] | None) -> list[str]:
    chosen: list[str] = list(meshes) if meshes is not None else list(scenario.meshes)
    for mesh in chosen:
        if mesh not in MESH_NAMES:
            raise MeshsimError(f"unknown mesh '{mesh}' (known: {', '.join(MESH_NAMES)})")
    return chosen


def _bind(progress: Progress, mesh: str, index: int) -> Callable[[float], None]:
    def report(t: float) -> None:
        progress(mesh, index, t)

    return report
