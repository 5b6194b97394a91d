"""The light core (DESIGN principle 6): the simulator and the policies import simpy and
numpy, nothing heavier (scipy serves calibration, results' intervals and bench, not the core).
Checked in a fresh interpreter, since this test process has long since imported everything."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "matplotlib", "click", "rich", "scipy")

PROBE = """
import importlib, json, pkgutil, sys
names = []
for package in {packages!r}:
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"imported": names, "heavy": heavy}}))
"""


def probe(*packages: str) -> dict[str, list[str]]:
    code = PROBE.format(packages=list(packages), heavy=list(HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def test_sim_and_policy_do_not_import_heavy_libraries() -> None:
    """Every module under meshsim.sim and meshsim.policy, imported: no pandas,
    matplotlib, click, rich or scipy in sys.modules."""
    result = probe("meshsim.sim", "meshsim.policy")
    assert "meshsim.sim.engine" in result["imported"]  # the probe really walked the package
    assert "meshsim.sim.dataplanes.none" in result["imported"]
    assert result["heavy"] == []


def test_running_a_scenario_through_the_api_stays_light() -> None:
    """The library's front door (scenario, api, results package) does not load pandas or
    the CLI stack either; pandas loads only when a DataFrame is asked for."""
    code = (
        "import sys\n"
        "import meshsim.scenario, meshsim.api, meshsim.results\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_simulating_does_not_load_scipy() -> None:
    """A scenario simulated and measured loads none of the heavy libraries: the intervals
    (scipy's t quantiles, in meshsim.results) come after the simulator's work."""
    code = (
        "import sys\n"
        "from meshsim.api import run_scenario\n"
        "from meshsim.scenario import from_dict\n"
        "doc = {'meshsim': 1, 'name': 'light', 'duration_s': 2.0, 'warmup_s': 0.5,\n"
        "       'replications': 2, 'cluster': {'nodes': 1, 'cores_per_node': 2},\n"
        "       'services': [{'name': 's', 'replicas': 1, 'cpu_ms': 1.0}],\n"
        "       'workloads': [{'name': 'w', 'target': 's', 'rate_rps': 50.0}]}\n"
        "result = run_scenario(from_dict(doc))\n"
        "assert result.meshes['none'].replications[0].workloads['w'].requests > 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in " + repr(HEAVY) + ")\n"
        "print(heavy, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
