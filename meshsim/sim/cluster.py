"""Nodes, their cores, pod placement, and the network between them.

``cluster.scheduler`` says how a node's cores are shared by everything on it (apps and
proxies): ``cfs`` by default, as the calibrated lab validates better under it
(reports/validation/cpu-limits.md, "Which scheduler is the default"). ``fcfs``: one FCFS
multi-server queue, a CPU burst waits for a free core, then
holds it for its duration (the non-preemptive M/G/c view, exact for the closed-form checks
of tests/test_closed_forms.py), with CFS bandwidth control of the CPU limits that can bind
(:mod:`meshsim.sim.cpu.bandwidth`). ``cfs``: Linux's fair scheduler with each container in its
own cgroup (:mod:`meshsim.sim.cpu.fair`, weights and limits from
:mod:`meshsim.sim.cpu.cgroups`), nested in its pod's and its QoS class's as kubelet nests
them (:mod:`meshsim.sim.cpu.kubepods`; ``cluster.cgroup_hierarchy: flat`` leaves them all
under the node): weighted sharing, slices, wake-up preemption and CFS bandwidth control of
CPU limits.

Under ``fcfs`` the unit the cores serve is a thread, not a burst: a thread whose burst ends
with more work ready (a proxy worker with requests queued for it, a single-threaded app with
requests queued for its slot) goes on running it without giving its core up, as an event
loop runs every ready callback before it sleeps in ``epoll_wait``, until it has run one base
slice (``sched_base_slice``: then the kernel lets the others waiting run first).

What that leaves out is wake-up preemption, which the calibration lab's scheduler trace shows
plainly (2026-12-03, ``reports/validation/experiments/sched_trace.py``, 3 s at 5336 rps, each
process in a CPU cgroup of its own): the echo, woken by the server sidecar's write, took core
1 from the running sidecar 6186 times and waited for it to sleep 1912 times; the load
generator took core 0 from the client sidecar 6440 times (2214 after it slept); the sidecars,
which use about twice their core-mates' CPU, took a core from them 328 and 361 times. The
fair scheduler runs the entity it owes CPU, and the lighter one is owed. With
``cluster.wakeup_preemption`` a thread that has used less CPU than the running one and waits
for the core goes first when the running one's burst ends (not inside it: the sidecar's write
that wakes the echo ends its request-path burst; "lighter" is the threads' CPU so far, which
orders steady processes as their virtual runtimes do). The simulated lab runs with it on:
alone it made every checked p50 of run Z 15-22 % short, and it validates together with the
load generator's event-loop timer and the wake-up's CPU owed after the work, which pay what
the lab paid and the thread keeping its core had stood in for (run AB on,
reports/validation/cpu-limits.md). It stays off by default under ``fcfs``: turning it on
moves every such scenario's figures, and only the lab has checked it. Under ``cfs`` wake-up
preemption is the fair scheduler's own, and a thread with its next burst ready keeps its core
for it there too (:mod:`meshsim.sim.cpu.fair`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any, Protocol

import simpy

from meshsim.scenario.cluster import Network
from meshsim.scenario.model import Scenario
from meshsim.sim.cpu.bandwidth import Bandwidth
from meshsim.sim.cpu.cgroups import account_weight, bounded_threads, quota_s, resources_of
from meshsim.sim.cpu.cores import CGroupView, NodeCores
from meshsim.sim.cpu.fair import HANDED_CORE_CLAIM_S, CGroup, FairScheduler
from meshsim.sim.cpu.kubepods import PodTree
from meshsim.sim.cpu.percpu import PerCpuScheduler
from meshsim.sim.cpu.slices import default_base_slice_s
from meshsim.sim.measure import CGroupMeasure, NodeMeasure
from meshsim.sim.sampling import Sampler
from meshsim.sim.uncontended import give, take


def has_ready_work(queue: simpy.Resource) -> bool:
    """Whether the one thread behind ``queue`` (a proxy worker, a single-threaded app's slot)
    has a burst ready when its current one ends: a waiter, and one slot (a pool's threads
    each pick any task: none of them goes on with a given one)."""
    return bool(queue.put_queue) and queue._capacity == 1  # simpy's private, as uncontended's


class CpuAccount(Protocol):
    """Anything whose CPU time is accounted (a pod's app, a proxy)."""

    cpu_s: float


class Node:
    """A node with ``cores`` cores; all CPU work on it goes through :meth:`execute`."""

    __slots__ = (
        "_cgroups", "_held", "_period_s", "_resolve", "bandwidth", "busy_s", "cores", "cpu",
        "env", "idle_wakeup_latency", "index", "name", "oom_kills", "pods", "preempt",
        "run_on_s", "slow_phases", "speed", "tree", "wakeup_latency",
    )  # fmt: skip

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        cores: int,
        cpu: NodeCores | None = None,
        resolve: Callable[[Any], tuple[str, float, float | None]] | None = None,
        period_s: float = 0.1,
        run_on_s: float | None = None,
        preempt: bool = False,
    ) -> None:
        self.env = env
        self.index = index
        self.name = f"node-{index}"
        self.cores = simpy.Resource(env, capacity=cores)
        """The FCFS cores (used only when ``cpu`` is None)."""
        self.cpu = cpu
        """The fair scheduler of ``cluster.scheduler: cfs``; None for FCFS."""
        self.run_on_s = default_base_slice_s(cores) if run_on_s is None else run_on_s
        """FCFS: how long a thread with work ready keeps its core (:meth:`hand_on`)."""
        self.preempt = preempt
        """FCFS: a lighter thread waiting for a core goes before a running thread's next burst
        (:meth:`yields`)."""
        self._held: dict[int, tuple[object, float]] = {}
        """FCFS: cores handed on, by thread, with when the thread got its core."""
        self._resolve = resolve
        self._period_s = period_s
        self._cgroups: dict[int, CGroupView] = {}
        self.tree: PodTree | None = None
        """Under ``cfs`` with ``cluster.cgroup_hierarchy: kubernetes``: the pods' and QoS
        classes' cgroups the containers' nest in (None: every one under the node)."""
        self.busy_s = 0.0
        """Core-seconds of CPU executed so far (all accounts)."""
        self.pods: list[Any] = []
        self.oom_kills: dict[str, int] = {}
        """OOM kills in the window, by cgroup name."""
        self.speed = 1.0
        """The multiple of its CPU cost a burst starting now takes: 1 unless
        ``cluster.host_speed`` varies it (:mod:`meshsim.sim.cpu.host_speed`)."""
        self.slow_phases = 0
        """Slow phases of the host begun so far (``cluster.host_speed``)."""
        self.bandwidth: Bandwidth | None = None
        """CPU limits on the FCFS cores (None under the fair scheduler, which has its own)."""
        self.idle_wakeup_latency: Sampler | None = None
        """Draws of the latency to run a thread whose timer expired while the node's cores
        were idle (``cluster.idle_wakeup_latency``; None: not charged)."""
        self.wakeup_latency: Sampler | None = None
        """Draws of the seconds the host takes to run a proxy thread a message woke
        (``cluster.wakeup_latency``; None: each proxy model's own ``wakeup_latency_us``)."""

    def execute(
        self, cpu_s: float, account: CpuAccount, ready: simpy.Resource | None = None
    ) -> Generator[simpy.Event, Any, None]:
        """Run a CPU burst of ``cpu_s`` seconds on one of this node's cores (times the
        host's :attr:`speed` when it starts: the time it holds the core is what it is
        accounted, as a CPU counter on a slow host counts it). ``ready``: the one-slot
        resource whose waiters are ``account``'s thread's next work (FCFS: the core is handed
        on to it, :meth:`hand_on`)."""
        cpu = self.cpu
        if cpu is not None:
            cpu_s *= self.speed
            if ready is None:
                yield cpu.run(cpu_s, self.cgroup(account))
            else:
                yield cpu.run(cpu_s, self.cgroup(account), ready, partial(has_ready_work, ready))
            self.busy_s += cpu_s
            account.cpu_s += cpu_s
            return
        key = id(account)
        if (bw := self.bandwidth) is not None and (g := bw.limited(account)) is not None:
            req, cpu_s, since = yield from self.run_limited(key, cpu_s, g)
        else:
            req, since = yield from self.core_for(key, account)
            cpu_s *= self.speed
            yield self.env.timeout(cpu_s)
        # Accounted before the core's next holder is chosen: yields() compares CPU so far.
        self.busy_s += cpu_s
        account.cpu_s += cpu_s
        if ready is not None and has_ready_work(ready) and not self.yields(account):
            self.hand_on(key, req, since)
        else:
            give(self.cores, req)

    def all_idle(self) -> bool:
        """Whether no core of the node runs anything (on a VM: its vCPUs halted)."""
        if self.cpu is not None:
            return self.cpu.idle == self.cpu.cores
        return self.cores.count == 0

    def wake_thread(
        self,
        account: CpuAccount,
        woken: Callable[[], bool],
        ready: simpy.Resource | None = None,
    ) -> Generator[simpy.Event, Any, None]:
        """``account``'s thread, woken with no CPU to spend of its own (a timer's expiry),
        gets a core; ``woken`` then runs, queues the thread's work (a load generator's due
        requests) and says whether it did, and the core is handed on to that work (FCFS:
        :meth:`hand_on`; the fair scheduler: its bursts on ``ready``, the thread's slot), as
        the thread goes on to it without sleeping."""
        if self.cpu is not None and ready is not None:
            # The callbacks run as the empty burst ends; the thread goes on if they queued.
            yield self.cpu.run(0.0, self.cgroup(account), ready, woken)
            return
        if self.cpu is not None or (
            (bw := self.bandwidth) is not None and bw.limited(account) is not None
        ):
            yield from self.execute(0.0, account)
            woken()
            return
        key = id(account)
        req, since = yield from self.core_for(key, account)
        if woken() and not self.yields(account):
            self.hand_on(key, req, since)
        else:
            give(self.cores, req)

    def hand_on(self, thread: int, core: object, since: float) -> bool:
        """A thread's burst ends with more of its work ready: keep ``core`` for that work
        (:meth:`claim`, in this instant) unless the thread has run a slice since ``since``,
        when it got the core; else give it back. Whether it kept the core (if not, the
        thread was preempted with work to do, as the kernel's tick preempts it)."""
        if self.env.now - since >= self.run_on_s or thread in self._held:
            give(self.cores, core)
            return False
        self._held[thread] = (core, since)
        ev = self.env.timeout(HANDED_CORE_CLAIM_S)
        assert ev.callbacks is not None
        ev.callbacks.append(partial(self._unclaimed, thread, core))
        return True

    def core_for(
        self, thread: int, account: CpuAccount
    ) -> Generator[simpy.Event, Any, tuple[object, float]]:
        """A core for ``thread``'s burst (FCFS, no limit), and when the thread got it: the
        core its last burst handed on (unless a lighter thread has queued for one since:
        :meth:`yields`), else the next one free."""
        held = self.claim(thread)
        if held is not None:
            if not self.yields(account):
                return held
            give(self.cores, held[0])
        cores = self.cores
        req: Any = take(cores)
        if req is None:
            req = cores.request()
            req.account = account  # for yields()
            yield req
        return req, self.env.now

    def yields(self, account: CpuAccount) -> bool:
        """Whether ``account``'s thread gives its core up before its next ready burst: a
        thread that has used less CPU waits for one (wake-up preemption, see the module)."""
        if not self.preempt:
            return False
        queue = self.cores.put_queue
        if not queue:
            return False
        mine = account.cpu_s
        for waiting in queue:
            other = getattr(waiting, "account", None)
            if other is not None and other is not account and other.cpu_s < mine:
                return True
        return False

    def run_limited(
        self, thread: int, cpu_s: float, g: CGroup
    ) -> Generator[simpy.Event, Any, tuple[object, float, float]]:
        """``thread``'s burst under its cgroup ``g``'s CPU limit (FCFS cores, CFS bandwidth
        control): the core it ends on, the seconds it ran, and when the thread got the core
        (its last burst's, if that one handed it on)."""
        assert self.bandwidth is not None
        held = self.claim(thread)
        since = held[1] if held is not None else self.env.now
        core, ran = yield from self.bandwidth.run(
            cpu_s, g, self.current_speed, held=held[0] if held is not None else None
        )
        return core, ran, since

    def claim(self, thread: int) -> tuple[object, float] | None:
        """The core handed on to ``thread`` and when it got it, or None."""
        return self._held.pop(thread, None) if self._held else None

    def _unclaimed(self, thread: int, core: object, _ev: simpy.Event) -> None:
        held = self._held.get(thread)
        if held is not None and held[0] is core:
            del self._held[thread]
            give(self.cores, core)

    def current_speed(self) -> float:
        return self.speed

    def cgroup(self, account: Any) -> CGroupView:
        """The cgroup ``account`` (a pod's app, a proxy, a client) runs in on this node."""
        g = self._cgroups.get(id(account))
        if g is None:
            assert self.cpu is not None
            assert self._resolve is not None
            name, weight, quota = self._resolve(account)
            parent = None if self.tree is None else self.tree.parent_of(account)
            g = self._cgroups[id(account)] = self.cpu.group(
                name, weight, quota, self._period_s, parent
            )
            g.threads = bounded_threads(account)
        return g

    @property
    def cgroups(self) -> list[CGroupView]:
        """This node's cgroups, in the order they first ran (under FCFS, the ones whose CPU
        limit can bind)."""
        if self.cpu is not None:
            return list(self.cpu.groups)
        return [] if self.bandwidth is None else list(self.bandwidth.groups)


class _Resolver:
    """An account's cgroup name, load weight and quota, from the scenario's resources."""

    def __init__(self, scenario: Scenario, mesh: str) -> None:
        self.scenario = scenario
        self.mesh = mesh
        self.period_s = scenario.cluster.cfs_period_ms * 1e-3

    def __call__(self, account: Any) -> tuple[str, float, float | None]:
        name, res = resources_of(account, self.scenario, self.mesh)
        return name, account_weight(account, res), quota_s(res.limits.cpu_m, self.period_s)


def _pod_labels(node: Node, g: CGroupView) -> dict[str, str]:
    """The pod and QoS class ``g`` nests under in ``node``'s tree (none without one)."""
    if node.tree is None or g.parent is None or g.parent not in node.tree.placed:
        return {}
    pod, qos = node.tree.placed[g.parent]
    return {"pod": pod, "qos_class": qos}


def cgroup_measures(nodes: list[Node]) -> tuple[CGroupMeasure, ...]:
    """Every node's cgroups as the run measured them (under FCFS, the limited ones)."""
    out: list[CGroupMeasure] = []
    for node in nodes:
        for g in node.cgroups:
            out.append(CGroupMeasure(
                name=g.name,
                node=node.name,
                cpu_weight=max(1, round(g.weight * 100 / 1024)),
                cpu_limit_m=None if g.quota_s is None else round(g.quota_s / g.period_s * 1e3, 6),
                threads=g.threads,
                **_pod_labels(node, g),
                cpu_s=g.cpu_s,
                nr_periods=g.nr_periods,
                nr_throttled=g.nr_throttled,
                throttled_s=g.throttled_s,
                oom_kills=node.oom_kills.get(g.name, 0),
            ))  # fmt: skip
        # A container killed before it ever ran has no cgroup here; its kills still count.
        ran = {g.name for g in node.cgroups}
        for name, kills in node.oom_kills.items():
            if name not in ran:
                out.append(CGroupMeasure(name, node.name, 1, None, 0.0, 0, 0, 0.0, kills))
    return tuple(out)


def allocation_warnings(
    nodes: list[Node], scenario: Scenario, mesh: str, proxies: list[Any]
) -> list[str]:
    """Nodes whose pods request more CPU or memory than the node's allocatable: Kubernetes
    would leave some of them pending; the simulator places them anyway and says so."""
    cpu_m = scenario.cluster.allocatable_cpu_m
    mem_mb = scenario.cluster.allocatable_memory_mb
    warnings: list[str] = []
    for node in nodes:
        # A pod's sidecar, and the pods of ambient's data plane and of the gateways: each
        # node's ztunnel (a DaemonSet), the waypoints and the gateways' replicas (deployments)
        # ask the node for their requests too.
        accounts = [
            *node.pods,
            *(
                p
                for p in proxies
                if p.node is node
                and (
                    p.pod is not None
                    or p.kind in ("ztunnel", "waypoint")
                    or p.resources is not None
                )
            ),
        ]
        want_cpu = want_mem = 0.0
        for account in accounts:
            _, res = resources_of(account, scenario, mesh)
            want_cpu += res.cpu_request_m or 0.0
            want_mem += res.requests.memory_mb or res.limits.memory_mb or 0.0
        if want_cpu > cpu_m + 1e-9:
            warnings.append(
                f"{node.name}: its pods request {want_cpu:.0f}m of CPU, more than its "
                f"allocatable {cpu_m:.0f}m (Kubernetes would leave some pending; they run here)"
            )
        if want_mem > mem_mb + 1e-9:
            warnings.append(
                f"{node.name}: its pods request {want_mem:.0f} MB of memory, more than its "
                f"allocatable {mem_mb:.0f} MB (Kubernetes would leave some pending; they run here)"
            )
    return warnings


def scheduler_warnings(scenario: Scenario) -> list[str]:
    """Keys of ``cluster`` that the chosen scheduler ignores (a scenario written when
    ``fcfs`` was the default, before 2026-12-05, may set them without naming it)."""
    spec = scenario.cluster
    if spec.scheduler == "cfs" and spec.wakeup_preemption:
        return [
            "cluster.wakeup_preemption applies under scheduler: fcfs only; under cfs (the "
            "default) the fair scheduler's own wake-up preemption runs and the key is ignored "
            "(set scheduler: fcfs to keep it)"
        ]
    return []


ONE_QUEUE_BUSY = 0.3
"""The share of a node's cores busy from which its one run queue (either scheduler) is known to
wait too little: on a two-CPU node 30-70 % busy, Linux's per-CPU queues made its tasks wait
1.35-1.8x as long for a core on average (reports/validation/experiments/multicore_queue.py; at
5 % busy a few microseconds longer)."""


def one_run_queue_warnings(nodes: Sequence[NodeMeasure], window_s: float) -> list[str]:
    """A note when a node of several cores was busy enough for its one run queue to wait
    less than the kernel's per-CPU queues would (:data:`ONE_QUEUE_BUSY`). Worded alike for
    every node and replication, so that a run shows it once."""
    if window_s <= 0 or not any(
        n.cores > 1 and n.busy_s >= ONE_QUEUE_BUSY * n.cores * window_s for n in nodes
    ):
        return []
    return [
        f"a node of several cores was {ONE_QUEUE_BUSY:.0%} busy or more: this run shared "
        "each node's cores through one run queue, where Linux keeps one per CPU; on a "
        "two-CPU node 30-70 % busy the kernel's tasks waited 1.35-1.8x as long for a core on "
        'average (reports/validation/cpu-limits.md, "One run queue per node, measured"), so '
        "waits for a core on such nodes are likely short here, a single-threaded proxy's "
        "(Linkerd's) most; cluster.run_queues: per_cpu (with cluster.scheduler cfs) runs the "
        "kernel's per-CPU queues and balancing: compare the two before acting on a "
        "difference between meshes"
    ]


def make_nodes(env: simpy.Environment, scenario: Scenario, mesh: str) -> list[Node]:
    """The cluster's nodes, with the scheduler ``cluster.scheduler`` asks for."""
    spec = scenario.cluster
    resolve = _Resolver(scenario, mesh)
    slice_s = None if spec.sched_base_slice_ms is None else spec.sched_base_slice_ms * 1e-3
    if spec.scheduler == "fcfs":
        nodes = [
            Node(env, i, spec.cores_per_node, run_on_s=slice_s, preempt=spec.wakeup_preemption)
            for i in range(spec.nodes)
        ]
        for node in nodes:
            node.bandwidth = Bandwidth(
                env, node.cores, spec.cores_per_node, resolve, resolve.period_s,
                count_from_s=scenario.warmup_s, count_until_s=scenario.duration_s,
            )  # fmt: skip
        return nodes
    cores: type[FairScheduler | PerCpuScheduler] = (
        PerCpuScheduler if spec.run_queues == "per_cpu" and spec.cores_per_node > 1
        else FairScheduler
    )  # fmt: skip
    nodes = [
        Node(
            env, i, spec.cores_per_node,
            cores(
                env, spec.cores_per_node, base_slice_s=slice_s,
                run_to_parity=spec.run_to_parity, delay_dequeue=spec.delay_dequeue,
                count_from_s=scenario.warmup_s,
                count_until_s=scenario.duration_s,
            ),
            resolve, resolve.period_s,
        )
        for i in range(spec.nodes)
    ]  # fmt: skip
    if spec.cgroup_hierarchy == "kubernetes":
        for node in nodes:
            assert node.cpu is not None
            node.tree = PodTree(node.cpu, scenario, mesh)
    return nodes


def place(nodes: list[Node]) -> Node:
    """The node for a new pod: fewest pods first, then lowest index (deterministic spread)."""
    return min(nodes, key=lambda n: (len(n.pods), n.index))


class NetworkModel:
    """One-way message delay: placement latency plus serialisation at link bandwidth."""

    __slots__ = ("client_s", "cross_node_s", "same_node_s", "seconds_per_byte")

    def __init__(self, spec: Network) -> None:
        self.same_node_s = spec.same_node_us * 1e-6
        self.cross_node_s = spec.cross_node_us * 1e-6
        self.client_s = (
            spec.client_us if spec.client_us is not None else spec.cross_node_us
        ) * 1e-6
        self.seconds_per_byte = 8.0 / (spec.bandwidth_gbps * 1e9)

    def delay(self, src: Node | None, dst: Node | None, nbytes: int) -> float:
        """Seconds for ``nbytes`` to go from ``src`` to ``dst`` (None: outside the cluster)."""
        if src is None or dst is None:
            base = self.client_s
        elif src is dst:
            base = self.same_node_s
        else:
            base = self.cross_node_s
        return base + nbytes * self.seconds_per_byte
