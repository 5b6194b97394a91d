"""Regression gates: run a suite with replications, compare with a stored baseline.

:mod:`~meshsim.bench.suite` reads suites, :mod:`~meshsim.bench.measure` runs them,
:mod:`~meshsim.bench.noise` decides when a change is outside the noise, and
:mod:`~meshsim.bench.gate` stores baselines and compares with them.
"""

from meshsim.bench.gate import Gate, Row, gate, read_baseline, write_baseline
from meshsim.bench.measure import Measured, measure_suite
from meshsim.bench.noise import Sample, Verdict, compare
from meshsim.bench.suite import Suite, load_suite

__all__ = [
    "Gate",
    "Measured",
    "Row",
    "Sample",
    "Suite",
    "Verdict",
    "compare",
    "gate",
    "load_suite",
    "measure_suite",
    "read_baseline",
    "write_baseline",
]
