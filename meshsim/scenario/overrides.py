"""Command-line overrides of a scenario (``--duration-s``, ``--seed``, ...), validated with
exactly the rules of the file: the same bounds, the same cross-checks, the same cost
limits. ``--duration-s inf`` or ``nan`` is refused before anything runs, as
``duration_s: .inf`` in the file would be."""

from __future__ import annotations

import math
from typing import Any

from meshsim.errors import MeshsimError, ScenarioError
from meshsim.scenario.loader import from_dict
from meshsim.scenario.model import Scenario

OPTIONS: dict[str, str] = {
    "duration_s": "--duration-s",
    "seed": "--seed",
    "replications": "--replications",
    "model_samples": "--model-samples",
}
"""Scenario keys that a command may override, with the option that sets each."""


def apply_overrides(scenario: Scenario, **overrides: Any) -> Scenario:
    """``scenario`` with the given keys replaced (``None``: not given), re-validated.

    A shorter ``duration_s`` drops the events that fall after the new end (the command
    says which, with :func:`meshsim.api.events_cut_by`). Raises :class:`MeshsimError`
    naming the option, the value and what was expected.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise TypeError(f"not an overridable scenario key: {', '.join(unknown)}")
    if not given:
        return scenario
    duration = given.get("duration_s")
    finite = isinstance(duration, float | int) and math.isfinite(duration)
    if finite and duration is not None and duration <= scenario.warmup_s:
        raise MeshsimError(
            f"--duration-s {duration:g} must be longer than the scenario's warm-up "
            f"(warmup_s: {scenario.warmup_s:g})"
        )
    seed = given.get("seed")
    if isinstance(seed, int) and seed < 0:
        raise MeshsimError("--seed must be 0 or more")
    data = scenario.to_dict()
    data.update(given)
    if duration is not None:
        data["events"] = [e for e in data.get("events", []) if e["at_s"] < duration]
    try:
        return from_dict(data)
    except ScenarioError as exc:
        raise MeshsimError(_explain(exc, given)) from None


def _explain(exc: ScenarioError, given: dict[str, Any]) -> str:
    lines: list[str] = []
    context = ", ".join(f"{OPTIONS[k]} {_shown(v)}" for k, v in given.items())
    for problem in exc.problems:
        if problem.field in given:
            lines.append(f"{OPTIONS[problem.field]} {_shown(given[problem.field])}: "
                         f"{problem.message}")  # fmt: skip
        else:
            where = f"{problem.field}: " if problem.field else ""
            lines.append(f"with {context}, the scenario is invalid: {where}{problem.message}")
    count = len(lines)
    return f"invalid command-line override{'s' if count != 1 else ''}:\n  " + "\n  ".join(lines)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
