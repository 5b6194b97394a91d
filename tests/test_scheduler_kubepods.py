"""Kubernetes' cgroup tree under the fair scheduler (meshsim.sim.cpu.kubepods): QoS classes as
kubelet decides them, pods' and classes' weights, and CPU shared level by level.

The sharing cases are hogs on one core, whose shares are the weights' products at each level
(exact up to the slices' rounding, 0.2 % of the run here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import simpy

from meshsim.scenario import from_dict
from meshsim.scenario.resources import Resources
from meshsim.sim.cpu.cgroups import cpu_shares, cpu_weight, load_weight, weight_of_m
from meshsim.sim.cpu.fair import CGroup, FairScheduler, GroupEntity
from meshsim.sim.cpu.kubepods import qos_class
from meshsim.sim.engine import Simulation

W500 = load_weight(cpu_weight(cpu_shares(500.0)))  # 205: cpu.weight 20
W_NONE = load_weight(cpu_weight(cpu_shares(None)))  # 10: cpu.weight 1, shares 2


def _res(**kw: Any) -> Resources:
    return Resources.model_validate(kw)


def test_qos_classes_are_kubelets() -> None:
    none = _res()
    assert qos_class([none, none]) == "BestEffort"
    assert qos_class([_res(requests={"cpu": "100m"}), none]) == "Burstable"
    exact = _res(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"})
    assert qos_class([exact, exact]) == "Guaranteed"
    # A request left out defaults to its limit.
    assert qos_class([_res(limits={"cpu": "500m", "memory": "256Mi"})]) == "Guaranteed"
    # One container short of a memory limit, or with a request below its limit: Burstable.
    assert qos_class([exact, _res(limits={"cpu": "1"})]) == "Burstable"
    below = _res(requests={"cpu": "200m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"})
    assert qos_class([exact, below]) == "Burstable"
    # A meshed pod whose app has no resources: the sidecar's decide (Istio's: Burstable).
    assert qos_class([none, _res(requests={"cpu": "100m", "memory": "128Mi"})]) == "Burstable"


def _hogs(*leaves: CGroup, cpu: FairScheduler, env: simpy.Environment) -> list[float]:
    for g in leaves:
        cpu.submit(10.0, g, lambda: None)
    env.run(until=3.0)
    cpu._update()
    return [g.cpu_s / 3.0 for g in leaves]


def _two_pods() -> tuple[simpy.Environment, FairScheduler, CGroup, CGroup, CGroup]:
    """One core. Pod a: an app asking 500m and a proxy asking nothing (weight 205 as a pod:
    500m); pod b: an app asking 500m. (env, scheduler, a's proxy, a's app, b's app)."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.001)
    pod_a = cpu.parent_group("pod a", weight_of_m(500.0))
    pod_b = cpu.parent_group("pod b", weight_of_m(500.0))
    proxy = cpu.group("a/proxy", W_NONE, parent=pod_a)
    app_a = cpu.group("a/app", W500, parent=pod_a)
    return env, cpu, proxy, app_a, cpu.group("b/app", W500, parent=pod_b)


def test_a_container_without_a_request_runs_with_its_pods_weight_against_other_pods() -> None:
    # The proxy alone in pod a gets half the core, where under the node directly it would
    # get 10 / (10 + 205).
    env, cpu, proxy, _app_a, app_b = _two_pods()
    assert _hogs(proxy, app_b, cpu=cpu, env=env) == pytest.approx([0.5, 0.5], abs=0.002)

    env = simpy.Environment()
    flat = FairScheduler(env, 1, base_slice_s=0.001)
    proxy, app_b = flat.group("a/proxy", W_NONE), flat.group("b/app", W500)
    assert _hogs(proxy, app_b, cpu=flat, env=env) == pytest.approx(
        [W_NONE / (W_NONE + W500), W500 / (W_NONE + W500)], abs=0.002
    )


def test_each_level_shares_what_its_parent_gets() -> None:
    # Both of pod a's containers and pod b's app hog the core: the pods split it by their
    # weights (205 : 205), and pod a's half goes 10 : 205 between its proxy and its app.
    env, cpu, proxy, app_a, app_b = _two_pods()
    inner = W_NONE + W500
    assert _hogs(proxy, app_a, app_b, cpu=cpu, env=env) == pytest.approx(
        [0.5 * W_NONE / inner, 0.5 * W500 / inner, 0.5], abs=0.003
    )


def test_a_class_reweighted_keeps_sharing_by_its_new_weight() -> None:
    # A group at weight 10 hogging against one at 1024 gets 10/1034 until it is reweighted
    # to 1024 at 1 s, then half: 1 s x 10/1034 + 2 s x 1/2 of the core.
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.001)
    light = cpu.parent_group("burstable", 10.0)
    other = cpu.parent_group("pod g", 1024.0)
    a = cpu.group("a", 1024.0, parent=light)
    b = cpu.group("b", 1024.0, parent=other)
    cpu.submit(10.0, a, lambda: None)
    cpu.submit(10.0, b, lambda: None)
    env.run(until=1.0)
    cpu.reweight(light, 1024.0)
    env.run(until=3.0)
    cpu._update()
    assert a.cpu_s == pytest.approx(10 / 1034 + 1.0, abs=0.005)
    assert b.cpu_s == pytest.approx(1024 / 1034 + 1.0, abs=0.005)


def test_a_woken_task_is_compared_with_the_running_one_where_their_pods_meet() -> None:
    # A hog in pod a runs from 0; at 10 ms a 0.1 ms burst of pod b's light container (weight
    # 10) wakes. Compared as containers, the light one's deadline (10 ms + 3 ms x 102.4) is
    # later than the hog's (12 ms): it waits for the end of the hog's slice, then is owed
    # the core. Compared as pods of weight 10240 against 1024 (deadline 10.3 ms) it preempts
    # at once (RUN_TO_PARITY off, as in tests/test_scheduler.py's heavier wakee).
    ends: dict[str, float] = {}
    for name in ("flat", "pods"):
        env = simpy.Environment()
        cpu = FairScheduler(env, 1, base_slice_s=0.003, run_to_parity=False)
        if name == "pods":
            pod_a, pod_b = cpu.parent_group("pod a", 1024.0), cpu.parent_group("pod b", 10240.0)
        else:
            pod_a = pod_b = None
        hog = cpu.group("a/app", 1024.0, parent=pod_a)
        light = cpu.group("b/proxy", 10.0, parent=pod_b)
        cpu.submit(0.1, hog, lambda: None)

        def wake(env: simpy.Environment = env, cpu: FairScheduler = cpu, g: CGroup = light,
                 name: str = name) -> Any:  # fmt: skip
            yield env.timeout(0.010)
            t0 = env.now
            yield cpu.run(0.0001, g)
            ends[name] = env.now - t0

        env.process(wake())
        env.run()
    assert ends["pods"] == pytest.approx(0.0001)
    assert ends["flat"] == pytest.approx(0.0021)


ONE_NODE = {
    "meshsim": 1, "name": "tree", "duration_s": 1, "warmup_s": 0.5,
    "cluster": {"nodes": 1, "cores_per_node": 2, "scheduler": "cfs"},
    "services": [
        {"name": "web", "resources": {"requests": {"cpu": "500m"}}},
        {"name": "db", "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"}},
         "proxy_resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                             "limits": {"cpu": "100m", "memory": "64Mi"}}},
        {"name": "batch"},
    ],
    "workloads": [{"name": "w", "target": "web", "rate_rps": 10}],
}  # fmt: skip


def _tree(mesh: str, **cluster: Any) -> dict[str, tuple[str, float]]:
    """Every app's and sidecar's cgroup: the names of the groups above it, and its weight."""
    doc = {**ONE_NODE, "meshes": [mesh], "cluster": {**ONE_NODE["cluster"], **cluster}}
    sim = Simulation(from_dict(doc), mesh, 1)
    node = sim.nodes[0]
    accounts: list[Any] = [*node.pods, *(p for p in sim.data_plane.proxies if p.node is node)]
    out: dict[str, tuple[str, float]] = {}
    for account in accounts:
        g = node.cgroup(account)
        path = []
        e: GroupEntity | None = g.parent
        while e is not None:
            path.append(f"{e.name}:{e.weight:g}")
            e = e.parent
        out[g.name] = (" < ".join(path), g.weight)
    return out


def test_linkerd_pods_nest_as_kubelet_nests_them() -> None:
    tree = _tree("linkerd")
    # web: its app asks 500m, its linkerd-proxy nothing (Linkerd's default): a Burstable pod
    # of 500m. db: every container's limits equal its requests: Guaranteed, straight under
    # kubepods, 1100m. batch: nothing asked, a BestEffort pod (shares 2) under besteffort.
    # burstable's shares are its pods' requests (web's 500m); kubepods' the node's
    # allocatable CPU (its 2 cores: 2000m).
    kubepods = f"kubepods:{weight_of_m(2000.0):g}"
    burstable = f"burstable:{weight_of_m(500.0):g}"
    assert tree["web-v1-0/app"] == (f"pod web-v1-0:{W500:g} < {burstable} < {kubepods}", W500)
    assert tree["web-v1-0/sidecar"] == (
        f"pod web-v1-0:{W500:g} < {burstable} < {kubepods}",
        W_NONE,
    )
    db_pod = f"pod db-v1-0:{weight_of_m(1100.0):g} < {kubepods}"
    assert tree["db-v1-0/app"] == (db_pod, weight_of_m(1000.0))
    assert tree["db-v1-0/sidecar"] == (db_pod, weight_of_m(100.0))
    be = f"pod batch-v1-0:{W_NONE:g} < besteffort:{W_NONE:g} < {kubepods}"
    assert tree["batch-v1-0/app"] == (be, W_NONE)


def test_istios_default_sidecar_makes_a_bare_pod_burstable() -> None:
    # Istio's global.proxy.resources ask 100m / 128Mi: batch's pod is Burstable with them,
    # and burstable's shares count web's 600m and batch's 100m.
    tree = _tree("istio")
    burstable = f"burstable:{weight_of_m(700.0):g}"
    assert tree["batch-v1-0/app"][0].startswith(f"pod batch-v1-0:{weight_of_m(100.0):g} < ")
    assert burstable in tree["batch-v1-0/app"][0]
    assert tree["web-v1-0/sidecar"][0].startswith(f"pod web-v1-0:{weight_of_m(600.0):g} < ")


def test_a_flat_hierarchy_puts_every_container_under_the_node() -> None:
    tree = _tree("linkerd", cgroup_hierarchy="flat")
    assert {path for path, _w in tree.values()} == {""}
    assert tree["web-v1-0/sidecar"] == ("", W_NONE)


def _poisson_run(nested: bool, seed: int, quota_s: float | None) -> list[np.ndarray]:
    """Four cgroups of different weights, each fed 1000 Poisson bursts on two cores (about
    70 % busy); ``nested``: each under a chain of two groups of its own (a QoS class of three
    times its weight and a pod of its weight, one child each). Each cgroup's latencies."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    cpu = FairScheduler(env, 2, base_slice_s=0.001)
    leaves = []
    for i, w in enumerate((1024.0, 205.0, 10.0, 410.0)):
        parent = None
        if nested:
            parent = cpu.parent_group(f"pod {i}", w, cpu.parent_group(f"class {i}", 3 * w))
        quota = quota_s if i == 0 else None
        leaves.append(cpu.group(f"c{i}", w, quota_s=quota, period_s=0.1, parent=parent))
    out: list[list[float]] = [[] for _ in leaves]

    def job(k: int, x: float) -> Any:
        t0 = env.now
        yield cpu.run(x, leaves[k])
        out[k].append(env.now - t0)

    def source(k: int) -> Any:
        for _ in range(1000):
            yield env.timeout(float(rng.exponential(0.004)))
            env.process(job(k, float(rng.exponential(0.002))))

    for k in range(len(leaves)):
        env.process(source(k))
    env.run()
    return [np.array(x) for x in out]


@pytest.mark.parametrize("quota_s", [None, 0.02])
def test_groups_with_one_child_each_run_as_the_cgroup_alone(quota_s: float | None) -> None:
    # The levels above a cgroup that have no siblings move nothing: the same bursts take
    # the same time on the cores up to the float rounding of virtual times kept at other
    # scales, which reorders a few ties (each cgroup's mean within 0.5 %, its p99 within
    # 1 %; a version that let any level's deadline cut the running slice was 2-8 % off in
    # the means).
    for seed in (0, 1):
        flat = _poisson_run(False, seed, quota_s)
        nested = _poisson_run(True, seed, quota_s)
        for a, b in zip(flat, nested, strict=True):
            assert len(a) == len(b) == 1000
            assert b.mean() == pytest.approx(a.mean(), rel=0.005)
            assert np.percentile(b, 99) == pytest.approx(np.percentile(a, 99), rel=0.01)


def test_best_effort_pods_beside_pods_that_ask_for_cpu_are_warned_of() -> None:
    # Apps without resources: Linkerd's pods are all BestEffort (nothing to warn of), Istio's
    # sidecars make theirs Burstable (nor here); ambient's ztunnel asks for 200m while its
    # apps ask for nothing, so under cfs they run on what it leaves: said, per node.
    doc = {
        "meshsim": 1, "name": "bare", "duration_s": 1, "warmup_s": 0.5,
        "cluster": {"nodes": 1, "cores_per_node": 2, "scheduler": "cfs"},
        "services": [{"name": "a"}, {"name": "b"}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip
    warned = {}
    for mesh in ("linkerd", "istio", "istio-ambient"):
        sim = Simulation(from_dict({**doc, "meshes": [mesh]}), mesh, 1)
        warned[mesh] = [w for w in sim.data_plane.warnings if "BestEffort" in w]
    assert warned["linkerd"] == warned["istio"] == []
    assert len(warned["istio-ambient"]) == 1
    assert warned["istio-ambient"][0].startswith(
        "2 BestEffort pod(s) (a-v1-0, b-v1-0: no CPU or memory request) share node-0 with"
    )
    # On many nodes, one warning that names them.
    wide = {**doc, "meshes": ["istio-ambient"], "cluster": {**doc["cluster"], "nodes": 5},
            "services": [{"name": n} for n in "abcdefghij"]}  # fmt: skip
    sim = Simulation(from_dict(wide), "istio-ambient", 1)
    (line,) = [w for w in sim.data_plane.warnings if "BestEffort" in w]
    assert line.startswith("10 BestEffort pod(s) (a-v1-0, f-v1-0, b-v1-0, ...: no CPU")  # by node
    assert "share 5 nodes (node-0, node-1, node-2, ...) with pods" in line
    flat = {**doc, "meshes": ["istio-ambient"],
            "cluster": {**doc["cluster"], "cgroup_hierarchy": "flat"}}  # fmt: skip
    sim = Simulation(from_dict(flat), "istio-ambient", 1)
    assert not [w for w in sim.data_plane.warnings if "BestEffort" in w]


@pytest.mark.parametrize("run_queues", ["node", "per_cpu"])
def test_the_summary_names_each_cgroups_pod_and_qos_class(run_queues: str) -> None:
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary

    # Containers that run get a cgroup: every service here gets a workload.
    loads = [{"name": s, "target": s, "rate_rps": 10} for s in ("web", "db", "batch")]
    doc = {**ONE_NODE, "meshes": ["linkerd"], "workloads": loads,
           "cluster": {**ONE_NODE["cluster"], "run_queues": run_queues}}  # fmt: skip
    cgroups = build_summary(run_scenario(from_dict(doc)))["runs"]["linkerd"]["cgroups"]
    labels = {name: (g["pod"], g["qos_class"]) for name, g in cgroups.items()}
    assert labels["web-v1-0/app"] == labels["web-v1-0/sidecar"] == ("web-v1-0", "Burstable")
    assert labels["db-v1-0/sidecar"] == ("db-v1-0", "Guaranteed")
    assert labels["batch-v1-0/app"] == ("batch-v1-0", "BestEffort")
    flat = {**doc, "cluster": {**doc["cluster"], "cgroup_hierarchy": "flat"}}
    cgroups = build_summary(run_scenario(from_dict(flat)))["runs"]["linkerd"]["cgroups"]
    assert {(g["pod"], g["qos_class"]) for g in cgroups.values()} == {(None, None)}


def test_an_ingress_controller_and_its_linkerd_proxy_are_one_pod() -> None:
    # Linkerd's ingress: NGINX (100m) and a linkerd-proxy (no request) are containers of one
    # pod, Burstable at 100m; the proxy is not a BestEffort pod of its own.
    doc = {
        "meshsim": 1, "name": "ingress", "duration_s": 1, "warmup_s": 0.5,
        "meshes": ["linkerd"], "cluster": {"nodes": 1, "cores_per_node": 2, "scheduler": "cfs"},
        "gateways": [{"name": "public", "routes": [{"path_prefix": "/", "service": "web"}]}],
        "services": [{"name": "web", "resources": {"requests": {"cpu": "500m"}}}],
        "workloads": [{"name": "w", "target": "web", "via": "public", "rate_rps": 20}],
    }  # fmt: skip
    sim = Simulation(from_dict(doc), "linkerd", 1)
    node = sim.nodes[0]
    parts = [p for p in sim.data_plane.proxies if p.name.startswith("ingress/public-0/")]
    assert sorted(p.name for p in parts) == [
        "ingress/public-0/controller",
        "ingress/public-0/linkerd-proxy",
    ]
    groups = {node.cgroup(p).parent for p in parts}
    assert len(groups) == 1
    (pod,) = groups
    assert pod is not None
    assert node.tree is not None
    assert node.tree.placed[pod] == ("ingress/public-0", "Burstable")
    assert pod.weight == weight_of_m(100.0)
    assert not [w for w in sim.data_plane.warnings if "BestEffort" in w]


def _gps(tree: dict[str, Any], share: float, out: dict[str, float]) -> None:
    """Generalised processor sharing down a tree of busy leaves: each level splits what it
    gets by its children's weights."""
    total = sum(child["w"] for child in tree["children"])
    for child in tree["children"]:
        part = share * child["w"] / total
        if child.get("children"):
            _gps(child, part, out)
        else:
            out[child["name"]] = part


@pytest.mark.parametrize("seed", range(6))
def test_busy_leaves_of_any_tree_get_the_product_of_their_weight_shares(seed: int) -> None:
    # Random trees, two or three levels deep, every leaf busy on one core for 3 s: each
    # leaf's CPU is its share by generalised processor sharing (within 1.5 points of the
    # core: slices of 1 ms make the split a little lumpy; every leaf put straight on the
    # node's run queue instead fails all six).
    rng = np.random.default_rng(seed)
    weights = (10.0, 41.0, 205.0, 1024.0)

    def grow(name: str, depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"name": name, "w": float(rng.choice(weights))}
        if depth > 0 and (depth == 2 or rng.random() < 0.7):
            node["children"] = [grow(f"{name}.{i}", depth - 1) for i in range(rng.integers(1, 4))]
        return node

    root = {"name": "root", "w": 1.0, "children": [grow(f"t{i}", 2) for i in range(2)]}
    env = simpy.Environment()
    cpu = FairScheduler(env, 1, base_slice_s=0.001)
    leaves: dict[str, CGroup] = {}

    def build(node: dict[str, Any], parent: GroupEntity | None) -> None:
        if node.get("children"):
            group = cpu.parent_group(node["name"], node["w"], parent)
            for child in node["children"]:
                build(child, group)
        else:
            leaves[node["name"]] = cpu.group(node["name"], node["w"], parent=parent)

    for top in root["children"]:
        build(top, None)
    for g in leaves.values():
        cpu.submit(10.0, g, lambda: None)
    env.run(until=3.0)
    cpu._update()
    want: dict[str, float] = {}
    _gps(root, 1.0, want)
    got = {name: g.cpu_s / 3.0 for name, g in leaves.items()}
    assert got == pytest.approx(want, abs=0.015)


def _burstable(sim: Simulation) -> float:
    tree = sim.nodes[0].tree
    assert tree is not None
    (group,) = (g for g in tree.cpu.parents if g.name == "burstable")
    return group.weight


def test_burstable_counts_its_pods_from_their_start_until_they_are_killed() -> None:
    # kubelet sizes burstable at every pod's creation and kill (UpdateQOSCgroups from syncPod
    # and killPod): three web replicas of 500m count before any container has run, and a
    # scale-down to one, graceful, takes two out when they are killed, not when they leave
    # the endpoints (an earlier tree only ever grew).
    web = {**ONE_NODE["services"][0], "replicas": 3}
    doc = {
        **ONE_NODE, "meshes": ["linkerd"], "services": [web, *ONE_NODE["services"][1:]],
        "duration_s": 2,
        "events": [{"at_s": 0.5, "action": "scale", "target": "web", "replicas": 1,
                    "prestop_s": 0.5}],
    }  # fmt: skip
    sim = Simulation(from_dict(doc), "linkerd", 1)
    assert _burstable(sim) == weight_of_m(1500.0)
    for w in sim.workloads:
        w.start()
    sim.timeline.start()
    sim.env.run(until=0.75)  # retired, still serving: still counted
    assert _burstable(sim) == weight_of_m(1500.0)
    sim.env.run(until=1.25)
    assert [p.alive for p in sim.services["web"].pods] == [True, False, False]
    assert _burstable(sim) == weight_of_m(500.0)
    # A new pod counts at once; killing a pod twice takes it out once.
    pod = sim.start_pod(sim.services["web"].versions["v1"])
    assert _burstable(sim) == weight_of_m(1000.0)
    sim.kill(pod)
    sim.kill(pod)
    assert _burstable(sim) == weight_of_m(500.0)


def _client_cgroups(mesh: str) -> dict[str, tuple[str | None, str | None]]:
    """A meshed client with CPU of its own (the lab's shape) on a one-node cluster: each
    client-side cgroup's pod and QoS class."""
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary

    doc = {
        "meshsim": 1, "name": "client", "duration_s": 1, "warmup_s": 0.5, "meshes": [mesh],
        "cluster": {"nodes": 1, "cores_per_node": 2, "scheduler": "cfs"},
        "mesh_options": {"meshed_clients": True},
        "services": [{"name": "web", "resources": {"requests": {"cpu": "500m"}}}],
        "workloads": [{"name": "w", "target": "web", "rate_rps": 200,
                       "client_cpu_ms": {"dist": "constant", "mean": 0.05}}],
    }  # fmt: skip
    cgroups = build_summary(run_scenario(from_dict(doc)))["runs"][mesh]["cgroups"]
    return {n: (g["pod"], g["qos_class"]) for n, g in cgroups.items() if n.startswith("client/")}


def test_a_meshed_clients_load_generator_is_a_container_of_its_pod() -> None:
    # The load generator and its sidecar are one pod, as the benchmarks' fortio client is:
    # Istio's sidecar asks 100m (Burstable), Linkerd's nothing (BestEffort), and ambient's
    # client pod is the load generator alone. Before, the load generator ran beside kubepods
    # and its sidecar was a pod of its own.
    assert _client_cgroups("istio") == {
        "client/w": ("client/w", "Burstable"),
        "client/w/sidecar": ("client/w", "Burstable"),
    }
    assert _client_cgroups("linkerd") == {
        "client/w": ("client/w", "BestEffort"),
        "client/w/sidecar": ("client/w", "BestEffort"),
    }
    assert _client_cgroups("istio-ambient") == {"client/w": ("client/w", "BestEffort")}


def test_a_sidecar_without_a_cpu_request_beside_an_app_with_one_is_warned_of() -> None:
    # Linkerd's default proxy asks for nothing: cpu.shares 2, cpu.weight 1, beside an app
    # asking 250m (shares 256, weight 1 + 254 x 9999 // 262142 = 10). Istio's asks 100m.
    doc = {
        "meshsim": 1, "name": "weights", "duration_s": 1, "warmup_s": 0.5,
        "cluster": {"nodes": 1, "cores_per_node": 2},
        "services": [{"name": "a", "resources": {"requests": {"cpu": "250m"}}},
                     {"name": "b", "resources": {"requests": {"cpu": "1"}}}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip

    def warned(mesh: str, data: dict[str, Any]) -> list[str]:
        sim = Simulation(from_dict({**data, "meshes": [mesh]}), mesh, 1)
        return [w for w in sim.data_plane.warnings if "ask for no CPU" in w]

    (line,) = warned("linkerd", doc)
    assert line.startswith("2 sidecar(s) ask for no CPU")
    assert "beside its app's 10-39, so when the two contend for a core the app gets" in line
    assert warned("istio", doc) == []
    asked = {**doc, "mesh_options": {"linkerd": {"proxy_resources": {"requests": {"cpu": "50m"}}}}}
    assert warned("linkerd", asked) == []
    fcfs = {**doc, "cluster": {**doc["cluster"], "scheduler": "fcfs"}}
    assert warned("linkerd", fcfs) == []  # weights weigh only under cfs
