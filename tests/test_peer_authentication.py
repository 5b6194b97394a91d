"""Istio's PeerAuthentication mode (``mesh_options.istio.mtls``, docs/mesh-semantics.md §8.1):
PERMISSIVE by default; STRICT refuses plaintext from clients outside the mesh.

Every case is deterministic and asserts exact counts.
"""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.api import run_scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict


def _doc(mtls: str | None = None, **options: Any) -> dict[str, Any]:
    istio = {} if mtls is None else {"mtls": mtls}
    return {
        "meshsim": 1,
        "name": "peer-authentication",
        "seed": 1,
        "duration_s": 1.0,
        "warmup_s": 0.2,
        "meshes": ["istio"],
        "cluster": {"nodes": 2, "cores_per_node": 4},
        "services": [
            {"name": "web", "replicas": 2, "cpu_ms": {"dist": "constant", "mean": 0.1}},
        ],
        "workloads": [
            {"name": "users", "target": "web", "arrival": "poisson", "rate_rps": 100},
        ],
        "mesh_options": {"istio": istio, **options},
    }


def _istio(doc: dict[str, Any]) -> dict[str, Any]:
    run: dict[str, Any] = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
    return run


def test_the_default_mode_is_istios_permissive() -> None:
    assert from_dict(_doc()).mesh_options.istio.mtls == "PERMISSIVE"


@pytest.mark.parametrize("mtls", [None, "PERMISSIVE", "DISABLE"])
def test_a_client_outside_the_mesh_is_served_unless_strict(mtls: str | None) -> None:
    run = _istio(_doc(mtls))
    users = run["workloads"]["users"]
    assert users["requests"] > 50
    assert users["errors"] == 0
    assert not [w for w in run["warnings"] if "STRICT" in w]


def test_strict_refuses_a_client_outside_the_mesh_and_says_so() -> None:
    run = _istio(_doc("STRICT"))
    users = run["workloads"]["users"]
    assert users["requests"] > 50
    assert users["statuses"] == {"2": users["requests"]}  # every one a reset
    (warning,) = [w for w in run["warnings"] if "STRICT" in w]
    assert "users" in warning


@pytest.mark.parametrize("mesh_side", ["meshed_clients", "gateway"])
def test_strict_serves_meshed_clients_and_gateways(mesh_side: str) -> None:
    if mesh_side == "meshed_clients":
        doc = _doc("STRICT", meshed_clients=True)
    else:
        doc = _doc("STRICT")
        doc["workloads"][0]["via"] = "ingress"
        doc["gateways"] = [{"name": "ingress", "replicas": 1, "routes": [{"service": "web"}]}]
    run = _istio(doc)
    assert run["workloads"]["users"]["errors"] == 0
    assert not [w for w in run["warnings"] if "STRICT" in w]


def test_permissive_costs_what_strict_does_between_sidecars() -> None:
    """Auto mTLS: meshed callers talk mTLS to the sidecars under both modes."""
    strict = _istio(_doc("STRICT", meshed_clients=True))
    permissive = _istio(_doc("PERMISSIVE", meshed_clients=True))
    assert permissive["proxies"] == strict["proxies"]
    assert permissive["workloads"] == strict["workloads"]
