"""What a run would refuse when it is built, found without running: ``meshsim check``.

Some rules are mesh-specific and belong to the code that builds a run: a retry condition
Envoy does not know, fault injection that Linkerd cannot express, a cost-model file that
is missing or of the wrong kind. Rather than copy those rules here (they would drift),
:func:`build_problems` builds each of the scenario's meshes exactly as ``meshsim run``
does, runs nothing, and reports what the build refused, at the traffic rule that caused
it when there is one.
"""

from __future__ import annotations

from meshsim.errors import MeshsimError
from meshsim.scenario.model import Scenario
from meshsim.scenario.references import Loc


def build_problems(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Every mesh's build refusal, as (location, message); empty when every mesh builds."""
    # Imported here: the simulator depends on the scenario package, not the reverse.
    from meshsim.sim.engine import Simulation

    problems: list[tuple[Loc, str]] = []
    for mesh in scenario.meshes:
        try:
            Simulation(scenario, mesh, scenario.seed)
        except MeshsimError as exc:
            problems.append((_rule_at_fault(scenario, mesh), f"with mesh {mesh}: {exc}"))
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # A rule that the file's checks miss: still no traceback for the person, and a
            # message that says it is meshsim's to fix (the fuzz tests look for it).
            problems.append(((), f"with mesh {mesh}: {BUILD_DEFECT} ({type(exc).__name__}: {exc})"))
    return problems


BUILD_DEFECT = "the run cannot be built; meshsim should have refused this input earlier"


def _rule_at_fault(scenario: Scenario, mesh: str) -> Loc:
    """The first traffic rule that the mesh's traffic mapping refuses on its own, if any."""
    from meshsim.policy.mapping import map_traffic

    if mesh == "none":
        return ()
    for i, rule in enumerate(scenario.traffic):
        alone = scenario.model_copy(update={"traffic": [rule]})
        try:
            map_traffic(alone, mesh)
        except MeshsimError:
            return ("traffic", i)
    return ()
