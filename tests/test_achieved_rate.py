"""``achieved_rps`` is what completed in the window, as a load generator counts it; ``rps``
counts the requests sent in it (all drained), which stays at the offered rate when the system
cannot keep up."""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict


def run(rate_rps: float) -> dict[str, Any]:
    doc = {
        "meshsim": 1,
        "name": "overload",
        "seed": 2,
        "duration_s": 6.0,
        "warmup_s": 1.0,
        "meshes": ["none"],
        "cluster": {"nodes": 1, "cores_per_node": 1},
        # one worker of 1 ms: a capacity of exactly 1000 requests per second
        "services": [
            {
                "name": "server",
                "replicas": 1,
                "concurrency": 1,
                "cpu_ms": {"dist": "constant", "mean": 1.0},
            }
        ],
        "workloads": [
            {"name": "load", "target": "server", "arrival": "constant", "rate_rps": rate_rps}
        ],
    }
    out: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["none"]
    return out


def test_an_overloaded_server_achieves_its_capacity_not_the_offered_rate() -> None:
    out = run(2000.0)
    w = out["workloads"]["load"]
    assert w["rps"] == pytest.approx(2000.0, rel=0.01)  # sent in the window, then drained
    assert w["achieved_rps"] == pytest.approx(1000.0, rel=0.01)
    assert any("achieved" in warning for warning in out["warnings"])


def test_below_capacity_achieved_equals_sent() -> None:
    w = run(500.0)["workloads"]["load"]
    assert w["achieved_rps"] == pytest.approx(w["rps"], rel=0.005)
    assert w["achieved_rps"] == pytest.approx(500.0, rel=0.005)
