"""Confidence intervals over replications (DESIGN principle 3: honest statistics)."""

from __future__ import annotations

import math

import pytest

from meshsim.api import run_scenario
from meshsim.results.histogram import GROWTH
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict


def constant_service(replications: int) -> dict[str, object]:
    return {
        "meshsim": 1, "name": "ci", "duration_s": 20.0, "warmup_s": 1.0,
        "replications": replications,
        "cluster": {"nodes": 1, "cores_per_node": 4},
        "services": [{"name": "s", "replicas": 1, "cpu_ms": 2.0, "concurrency": 64}],
        "workloads": [{"name": "w", "target": "s", "rate_rps": 20.0, "arrival": "constant"}],
    }  # fmt: skip


def test_quantile_intervals_are_never_narrower_than_the_histogram_resolution() -> None:
    """Constant service and arrivals: every replication has the same p50, so the t interval
    alone would have zero width; it is widened by the histogram's relative resolution."""
    summary = build_summary(run_scenario(from_dict(constant_service(3))))
    signals = summary["runs"]["none"]["workloads"]["w"]
    p50 = signals["latency_ms"]["p50"]
    lo, hi = signals["latency_ci95_ms"]["p50"]
    resolution = math.sqrt(GROWTH) - 1
    assert lo == pytest.approx(p50 / (1 + resolution), rel=1e-9)
    assert hi == pytest.approx(p50 * (1 + resolution), rel=1e-9)


def test_one_replication_gives_no_interval() -> None:
    summary = build_summary(run_scenario(from_dict(constant_service(1))))
    assert summary["runs"]["none"]["workloads"]["w"]["latency_ci95_ms"] is None
