"""The library's front door: run a scenario for its meshes and replications.

The CLI and notebooks both call :func:`run_scenario`; the CLI only parses options
and renders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshsim import __version__
from meshsim.errors import MeshsimError
from meshsim.results.run import MeshResult, Replication, RunResult
from meshsim.rng import replication_seeds
from meshsim.scenario.loader import scenario_sha256
from meshsim.scenario.model import MESH_NAMES, Scenario
from meshsim.sim.engine import Simulation

Progress = Callable[[str, int, float], None]
"""Called with (mesh, replication index, simulated seconds) as runs advance."""


def with_overrides(
    scenario: Scenario, *, duration_s: float | None = None, seed: int | None = None
) -> Scenario:
    """The scenario with command-line overrides applied and re-checked."""
    update: dict[str, object] = {}
    if duration_s is not None:
        if duration_s <= scenario.warmup_s:
            raise MeshsimError(
                f"--duration-s {duration_s:g} must be longer than the scenario's warm-up "
                f"(warmup_s: {scenario.warmup_s:g})"
            )
        # A shorter run keeps the events that fall inside it (see `events_cut_by`).
        update["events"] = [e for e in scenario.events if e.at_s < duration_s]
        update["duration_s"] = duration_s
    if seed is not None:
        if seed < 0:
            raise MeshsimError("--seed must be 0 or more")
        update["seed"] = seed
    return scenario.model_copy(update=update) if update else scenario


def events_cut_by(scenario: Scenario, duration_s: float | None) -> list[str]:
    """The scenario's events that a run of ``duration_s`` would not reach, described."""
    if duration_s is None:
        return []
    return [
        f"{e.action} {e.target} at {e.at_s:g} s"
        for e in scenario.events
        if e.at_s >= duration_s
    ]


def run_scenario(
    scenario: Scenario,
    *,
    meshes: Sequence[str] | None = None,
    progress: Progress | None = None,
    keep_records: bool = False,
) -> RunResult:
    """Simulate ``scenario`` once per mesh and replication.

    Replication ``i`` of every mesh gets the same seed sequence, so meshes are
    compared under the same arrivals and service times (common random numbers).
    """
    chosen = list(meshes) if meshes is not None else list(scenario.meshes)
    for mesh in chosen:
        if mesh not in MESH_NAMES:
            raise MeshsimError(f"unknown mesh '{mesh}' (known: {', '.join(MESH_NAMES)})")
    seeds = replication_seeds(scenario.seed, scenario.replications)
    results: dict[str, MeshResult] = {}
    for mesh in chosen:
        mr = MeshResult(mesh)
        for index, seed in enumerate(seeds):
            sim = Simulation(scenario, mesh, seed, keep_records=keep_records)
            callback = None
            if progress is not None:
                callback = _bind(progress, mesh, index)
            sim.run(callback)
            mr.replications.append(Replication.of(sim, index))
        results[mesh] = mr
    return RunResult(
        scenario_name=scenario.name,
        scenario_sha256=scenario_sha256(scenario),
        seed=scenario.seed,
        meshes=results,
        meshsim_version=__version__,
    )


def _bind(progress: Progress, mesh: str, index: int) -> Callable[[float], None]:
    def report(t: float) -> None:
        progress(mesh, index, t)

    return report
