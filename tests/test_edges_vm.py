"""Virtual machines joined to the mesh (issue 15, step 5): VM zones, their own network link,
and services placed on them (Istio WorkloadEntry with a sidecar on the VM; Linkerd's mesh
expansion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsim.errors import ScenarioError
from meshsim.scenario import load_scenario
from meshsim.scenario.loader import loads
from meshsim.sim.engine import Simulation

BASE = """\
meshsim: 1
name: vms
seed: 4
duration_s: 11
warmup_s: 1
meshes: [none, istio, linkerd]
cluster:
  cores_per_node: 4
  zones:
    - {name: zone-a, nodes: 2}
    - {name: datacenter, nodes: 1, vm: true, network_us: 3000}
services:
  - name: front
    replicas: 3
    cpu_ms: {dist: constant, mean: 0.2}
    calls: [{service: legacy}]
  - name: legacy
    replicas: 2
    zones: [datacenter]
    cpu_ms: {dist: constant, mean: 0.2}
workloads:
  - {name: users, target: front, arrival: constant, rate_rps: 20, connections: 4}
"""


def run(mesh: str) -> Simulation:
    scenario = loads(BASE)
    sim = Simulation(scenario, mesh, scenario.seed)
    sim.run()
    return sim


def test_vm_services_run_on_the_vms_and_nothing_else_does() -> None:
    sim = run("none")
    zone = {p.name: sim.zones.zone_of(p.node) for s in sim.services.values() for p in s.pods}
    assert zone == {
        "front-v1-0": "zone-a", "front-v1-1": "zone-a", "front-v1-2": "zone-a",
        "legacy-v1-0": "datacenter", "legacy-v1-1": "datacenter",
    }  # fmt: skip


def test_calls_to_a_vm_take_its_link_each_way() -> None:
    sim = run("none")
    m = sim.measure()
    edge = m.edges[("front", "legacy")]
    # No queueing at 20 rps: 3 ms each way, the call's 512 bytes out and 1 KiB back at
    # 10 Gbit/s, 0.2 ms of app CPU.
    expected_s = 2 * 3000e-6 + (512 + 1024) * 8 / 10e9 + 0.2e-3
    assert edge.histogram.mean == pytest.approx(expected_s, rel=1e-6)
    assert m.topology is not None
    assert m.topology["zones"]["datacenter"]["vm"] is True


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_the_vms_workloads_have_sidecars(mesh: str) -> None:
    sim = run(mesh)
    m = sim.measure()
    names = {p.name for p in m.proxies}
    assert {"legacy-v1-0/sidecar", "legacy-v1-1/sidecar"} <= names
    # Through two sidecars the VM's 6 ms round trip is still the bulk of the call.
    assert m.edges[("front", "legacy")].histogram.mean > 6.2e-3
    assert m.workloads["users"].errors == 0


def test_vm_zones_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "vms.yaml"
    path.write_text(
        BASE.replace("{name: zone-a, nodes: 2}", "{name: zone-a, nodes: 2, network_us: 5}").replace(
            "zones: [datacenter]", "zones: [datacentre]"
        ),
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    problems = {p.field: p for p in info.value.problems}
    assert "network_us is for VM zones" in problems["cluster.zones[0].network_us"].message
    assert problems["cluster.zones[0].network_us"].line == 10
    assert "no zone in cluster.zones named 'datacentre'" in problems["services[1].zones[0]"].message
    assert problems["services[1].zones[0]"].line == 19
