"""The scenario: a typed model of format version 1, its loader and its checks."""

from meshsim.scenario.cluster import Cluster
from meshsim.scenario.loader import from_dict, load_scenario, loads, scenario_sha256
from meshsim.scenario.model import (
    MESH_NAMES,
    Call,
    Distribution,
    Scenario,
    Service,
    Slo,
    Version,
    Workload,
)
from meshsim.scenario.traffic import TrafficRule

__all__ = [
    "MESH_NAMES",
    "Call",
    "Cluster",
    "Distribution",
    "Scenario",
    "Service",
    "Slo",
    "TrafficRule",
    "Version",
    "Workload",
    "from_dict",
    "load_scenario",
    "loads",
    "scenario_sha256",
]
