"""Kubernetes' CPU cgroup tree on a node, as kubelet builds it, for the fair scheduler.

A container's cgroup is not a sibling of every other container on the node: kubelet nests it
in its pod's cgroup, and the pod's in its QoS class's (``pkg/kubelet/cm``, cgroup v1 and v2
alike)::

    kubepods               shares: the node's allocatable CPU
    ├── pod                a Guaranteed pod: shares, the sum of its containers' requests
    │   └── container      shares: its own request
    ├── burstable          shares: the sum of its Burstable pods' CPU requests
    │   └── pod ── container ...
    └── besteffort         shares: 2
        └── pod ── container ...

(``qos_container_manager_linux.go`` sizes ``burstable`` and ``besteffort``;
``ResourceConfigForPod`` sizes a pod from its containers' requests.) Under the fair scheduler
each level shares what its parent gets by these weights, so a container with no CPU request
(shares 2) is light only beside the other containers of its own pod: a linkerd-proxy with no
request, in a pod whose app asks for 500m, runs with its pod's weight against the other
pods, not with the smallest weight on the node.

A pod's QoS class is kubelet's ``GetPodQOS``: BestEffort when none of its containers has a
CPU or memory request or limit, Guaranteed when every container has CPU and memory limits and
requests equal to them (a request left out defaults to its limit), else Burstable. The pod's
containers are its app and, in a sidecar mesh, its sidecar; an ingress controller's pod holds
NGINX and its linkerd-proxy (proxies that share a ``pod_name``); a meshed client's pod holds
its load generator (no resources, like the benchmarks' fortio client) and, in a sidecar mesh,
its sidecar; a ztunnel, a waypoint, a gateway replica or Cilium's node Envoy is a pod of one
container. Cilium's per-node kernel work runs outside the pods, on the node's run queue
beside ``kubepods``, as a kernel thread does.

kubelet sizes ``burstable`` again whenever a pod is created or killed (``UpdateQOSCgroups``
from ``syncPod`` and ``killPod``, and once a minute): a pod counts from its start (not from
its containers' first CPU) until it is killed, whether by a scale-down, a rollout, churn or
an OOM kill (which the simulator models as the pod's replacement by a new one after the
back-off, where kubelet restarts the container in the same pod: its request is out of
``burstable`` for the back-off).

Left out: the pod-level CPU quota kubelet sets when every container has a limit (the sum of
their limits: as each container is held to its own, the pod's sum never binds first); the
system and kube-reserved slices beside ``kubepods`` (no process of theirs runs in the
model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from meshsim.scenario.model import Scenario
from meshsim.scenario.resources import NO_RESOURCES, Resources
from meshsim.sim.cpu.cgroups import cpu_shares, cpu_weight, resources_of, weight_of_m
from meshsim.sim.cpu.cores import NodeCores

QosClass = Literal["Guaranteed", "Burstable", "BestEffort"]


def _memory_request_mb(res: Resources) -> float | None:
    return res.requests.memory_mb if res.requests.memory is not None else res.limits.memory_mb


def qos_class(containers: Sequence[Resources]) -> QosClass:
    """A pod's QoS class from its containers' resources, as kubelet's ``GetPodQOS``."""
    guaranteed = True
    any_set = False
    for res in containers:
        cpu_req, mem_req = res.cpu_request_m, _memory_request_mb(res)
        cpu_lim, mem_lim = res.limits.cpu_m, res.limits.memory_mb
        if any(v is not None for v in (cpu_req, mem_req, cpu_lim, mem_lim)):
            any_set = True
        if cpu_lim is None or mem_lim is None or cpu_req != cpu_lim or mem_req != mem_lim:
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _has_sidecars(mesh: str) -> bool:
    from meshsim.sim.dataplanes import DATA_PLANES
    from meshsim.sim.dataplanes.sidecar import SidecarDataPlane

    factory = DATA_PLANES.get(mesh)
    return isinstance(factory, type) and issubclass(factory, SidecarDataPlane)


def _client_pod(name: str, scenario: Scenario, mesh: str) -> tuple[object, str, list[Resources]]:
    """A meshed client's pod: its load generator (no resources) and, in a sidecar mesh, its
    sidecar with the mesh's defaults. Known before either runs, whichever runs first."""
    containers = [NO_RESOURCES]
    if _has_sidecars(mesh):
        containers.append(scenario.mesh_options.sidecar_resources(mesh, None))
    return ("pod", name), name, containers


def pod_of(
    account: Any, scenario: Scenario, mesh: str, proxies: Sequence[Any] = ()
) -> tuple[object, str, list[Resources]] | None:
    """The pod ``account`` is a container of: a key, its name and its containers' resources
    (None: it runs outside the pods). ``proxies``: the run's proxies, among which a pod-less
    proxy's pod mates are found by their ``pod_name``."""
    from meshsim.sim.app import Client, Pod, client_pod_name
    from meshsim.sim.dataplanes.proxy import Proxy

    pod: Pod | None = None
    if isinstance(account, Pod):
        pod = account
    elif isinstance(account, Client):
        # A client has CPU on a node only as a meshed client's load generator.
        return _client_pod(account.pod_name, scenario, mesh)
    elif isinstance(account, Proxy):
        if account.pod is None:
            if account.pod_name is None:
                # A pod of its own: a ztunnel, a waypoint, a gateway replica, Cilium's node
                # Envoy.
                return account, account.name, [resources_of(account, scenario, mesh)[1]]
            if any(account.pod_name == client_pod_name(w.name) for w in scenario.workloads):
                return _client_pod(account.pod_name, scenario, mesh)
            mates = [p for p in proxies if p.pod_name == account.pod_name] or [account]
            containers = [resources_of(p, scenario, mesh)[1] for p in mates]
            return ("pod", account.pod_name), account.pod_name, containers
        pod = account.pod
    if pod is None:
        return None
    containers = [pod.service.spec.resources]
    if _has_sidecars(mesh):
        containers.append(
            scenario.mesh_options.sidecar_resources(mesh, pod.service.spec.proxy_resources)
        )
    return pod, pod.name, containers


def best_effort_warnings(
    nodes: Sequence[Any], proxies: Sequence[Any], scenario: Scenario, mesh: str
) -> list[str]:
    """BestEffort pods that share their node's cores with pods that ask for CPU: under the
    fair scheduler the whole besteffort class weighs as one container with no request, so
    those pods run on what the others leave, as on a Kubernetes node (a result, not a fault,
    but one that reads as the mesh's when, say, ambient's ztunnel asks for CPU and the apps
    do not). One warning for the run, naming the nodes (a hundred nodes, one line)."""
    best_effort: list[str] = []
    nodes_named: list[str] = []
    for node in nodes:
        accounts = [*node.pods, *(p for p in proxies if p.node is node and p.pod is None)]
        pods: dict[object, tuple[str, QosClass]] = {}
        for account in accounts:
            member = pod_of(account, scenario, mesh, proxies)
            if member is not None:
                pods[member[0]] = (member[1], qos_class(member[2]))
        here = [name for name, qos in pods.values() if qos == "BestEffort"]
        if here and len(pods) > len(here):
            best_effort += here
            nodes_named.append(node.name)
    if not best_effort:
        return []
    where = (
        nodes_named[0]
        if len(nodes_named) == 1
        else f"{len(nodes_named)} nodes ({_first_three(nodes_named)})"
    )
    return [
        f"{len(best_effort)} BestEffort pod(s) ({_first_three(best_effort)}: no CPU or memory "
        f"request) share {where} with pods that ask for CPU; under cluster.scheduler cfs the "
        "besteffort "
        "class weighs as one container with no request (give them CPU requests, the "
        "services' resources or the mesh's for its own pods, to compare the meshes on equal "
        "footing)"
    ]


def _first_three(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def unrequested_sidecar_warnings(
    proxies: Sequence[Any], scenario: Scenario, mesh: str
) -> list[str]:
    """Sidecars that ask for no CPU beside apps that do (Linkerd's default): under the fair
    scheduler such a sidecar's cgroup weighs 1 (``cpu.shares`` 2) beside its app's, which
    gets that many times its share whenever the two contend for a core. A mesh's default, and
    so a fair part of the comparison, but one a user should see before reading a tail as the
    proxy's."""
    apps: list[int] = []
    for proxy in proxies:
        if proxy.kind != "sidecar" or proxy.pod is None:
            continue
        if resources_of(proxy, scenario, mesh)[1].cpu_request_m is not None:
            continue
        app_m = resources_of(proxy.pod, scenario, mesh)[1].cpu_request_m
        if app_m is not None:
            apps.append(cpu_weight(cpu_shares(app_m)))
    if not apps:
        return []
    lo, hi = min(apps), max(apps)
    weights = str(lo) if lo == hi else f"{lo}-{hi}"
    return [
        f"{len(apps)} sidecar(s) ask for no CPU (the mesh's default; a service's "
        f"proxy_resources or mesh_options.{mesh}.proxy_resources sets it): under "
        f"cluster.scheduler cfs each weighs 1 (cpu.weight) beside its app's {weights}, so when "
        f"the two contend for a core the app gets {weights} times the proxy's share"
    ]


class PodTree:
    """One node's ``kubepods`` tree in its fair scheduler, grown as containers first run."""

    def __init__(self, cpu: NodeCores, scenario: Scenario, mesh: str) -> None:
        self.cpu = cpu
        self.scenario = scenario
        self.mesh = mesh
        self.kubepods = cpu.parent_group(
            "kubepods", weight_of_m(scenario.cluster.allocatable_cpu_m)
        )
        # The groups are the scheduler's own (an entity, or one on each CPU).
        self._classes: dict[QosClass, Any] = {}
        self._pods: dict[object, Any] = {}
        self._burstable: dict[object, float] = {}
        """The live Burstable pods' CPU requests (millicores), which size ``burstable``."""
        self.proxies: Sequence[Any] = ()
        """The run's proxies (set once they exist), where pod-less proxies find their pod
        mates."""
        self.placed: dict[object, tuple[str, QosClass]] = {}
        """Each pod group's pod name and QoS class (what the results label a cgroup with)."""

    def parent_of(self, account: Any) -> Any:
        """The pod group ``account``'s cgroup nests in (None: the node's run queue)."""
        member = pod_of(account, self.scenario, self.mesh, self.proxies)
        if member is None:
            return None
        key, name, containers = member
        group = self._pods.get(key)
        if group is not None:
            return group
        qos = qos_class(containers)
        request_m = sum(res.cpu_request_m or 0.0 for res in containers)
        parent = self.kubepods if qos == "Guaranteed" else self._class(qos)
        group = self._pods[key] = self.cpu.parent_group(
            f"pod {name}", weight_of_m(request_m), parent
        )
        self.placed[group] = (name, qos)
        if qos == "Burstable":
            self._burstable[key] = request_m
            self._size_burstable()
        return group

    def pod_started(self, pod: Any) -> None:
        """A pod is created: kubelet makes its cgroup and sizes its QoS class."""
        self.parent_of(pod)

    def pod_killed(self, pod: Any) -> None:
        """A pod is killed: it leaves ``burstable``'s sum (``killPod``'s
        ``UpdateQOSCgroups``). What it still runs keeps its own cgroups' weights."""
        if self._burstable.pop(pod, None) is not None:
            self._size_burstable()

    def _size_burstable(self) -> None:
        self.cpu.reweight(self._classes["Burstable"], weight_of_m(sum(self._burstable.values())))

    def _class(self, qos: QosClass) -> Any:
        group = self._classes.get(qos)
        if group is None:
            # besteffort keeps the smallest shares; burstable grows with its pods' requests.
            group = self._classes[qos] = self.cpu.parent_group(
                qos.lower(), weight_of_m(0.0), self.kubepods
            )
        return group
