"""A scenario's cluster: its nodes, their cores and how the kernel shares them, the network
between its pods, and the hosts' speed and wake-ups (the ``cluster`` key; docs/DESIGN.md,
"Scenario format")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from meshsim.scenario.base import MAX_QUANTITY, NonNegativeFloat, PositiveFloat, Spec
from meshsim.scenario.edges import Zone
from meshsim.scenario.host import HostSpeed, WakeupLatency
from meshsim.scenario.resources import Allocatable

MAX_NODES = 5_000
"""Kubernetes' tested limit of nodes per cluster."""
MAX_CORES_PER_NODE = 1_024
"""Above the largest servers sold (two 192-core CPUs with two threads per core is 768)."""
MIN_BANDWIDTH_GBPS = 1e-6
"""1 kbit/s: below it a message's transfer time (bytes x 8 / bandwidth) runs into hours per
kilobyte, and a bandwidth near 0 would make it infinite."""


class Network(Spec):
    """One-way network latency between pods, by placement, plus a per-byte cost."""

    same_node_us: NonNegativeFloat = Field(25.0, description="One-way latency within a node (µs).")
    cross_node_us: NonNegativeFloat = Field(150.0, description="One-way latency across nodes (µs).")
    client_us: NonNegativeFloat | None = Field(
        None,
        description="One-way latency from a workload's clients to the cluster (µs); "
        "defaults to cross_node_us.",
    )
    bandwidth_gbps: Annotated[float, Field(ge=MIN_BANDWIDTH_GBPS, le=MAX_QUANTITY)] = Field(
        10.0, description="Link bandwidth; each message also takes bytes x 8 / bandwidth."
    )
    cross_zone_us: NonNegativeFloat = Field(
        500.0, description="One-way latency between nodes of two zones (µs; cluster.zones)."
    )
    cross_cluster_us: NonNegativeFloat | None = Field(
        None, description="One-way latency between clusters (µs); defaults to cross_zone_us."
    )
    cross_zone_bandwidth_gbps: (
        Annotated[float, Field(ge=MIN_BANDWIDTH_GBPS, le=MAX_QUANTITY)] | None
    ) = Field(None, description="Bandwidth between zones and clusters; default bandwidth_gbps.")


class Cluster(Spec):
    nodes: Annotated[int, Field(ge=1, le=MAX_NODES)] = Field(1, description="Number of nodes.")
    cores_per_node: Annotated[int, Field(ge=1, le=MAX_CORES_PER_NODE)] = Field(
        4, description="Cores per node; apps and proxies on a node share them."
    )
    memory_gb_per_node: PositiveFloat = Field(16.0, description="Memory per node (GB).")
    network: Network = Field(default_factory=Network)
    scheduler: Literal["fcfs", "cfs"] = Field(
        "cfs",
        description="How a node's cores are shared: 'cfs' (the default: Linux's fair "
        "scheduler, EEVDF: weights from CPU requests, slices, wake-up preemption; the "
        "calibrated lab validates better under it, its tails included) or 'fcfs' (one FIFO "
        "queue, a burst holds a core to its end: about half the simulation time, its tails "
        "thinner). CPU limits are CFS bandwidth control under either.",
    )
    cgroup_hierarchy: Literal["kubernetes", "flat"] = Field(
        "kubernetes",
        description="Under cfs, how containers' cgroups nest: 'kubernetes' (each in its "
        "pod's cgroup, weighted by the sum of the pod's CPU requests, and each pod in its QoS "
        "class's under kubepods, as kubelet builds them) or 'flat' (every container's "
        "cgroup directly under the node, as the calibration lab runs its processes).",
    )
    run_queues: Literal["node", "per_cpu"] = Field(
        "node",
        description="Under cfs, how a node of several cores queues its runnable tasks: "
        "'node' (one run queue served by all its cores: a task waits only while every core "
        "is busy) or 'per_cpu' (a run queue per CPU, as Linux keeps them: a woken task "
        "goes to its last CPU if idle, else an idle one, else waits on its last; the "
        "kernel's balancing at its ticks moves waiting tasks to idle CPUs). Measured "
        "against the kernel on two CPUs, 'per_cpu' gives its waits for a core and 'node' "
        "about two thirds of them from 30 % busy. A node of one core is the same under "
        "either.",
    )
    cfs_period_ms: Annotated[float, Field(ge=1, le=1000)] = Field(
        100.0, description="CFS bandwidth period (cpu.cfs_period_us; cpu.max's period)."
    )
    sched_base_slice_ms: Annotated[float, Field(gt=0, le=1000)] | None = Field(
        None,
        description="EEVDF base slice (sched/base_slice_ns); default 0.70 ms x "
        "(1 + log2(min(cores, 8))), as Linux 6.15 and later scale it (6.6 to 6.14: 0.75 ms "
        "x the same). Under fcfs, how long a thread with work ready keeps its core while "
        "others wait.",
    )
    wakeup_preemption: bool = Field(
        False,
        description="Under fcfs: a woken thread that has used less CPU than the running one "
        "takes the core when the running one's burst ends, before its next ready burst (the "
        "kernel's wake-up preemption, as the calibration lab's scheduler trace shows it; the "
        "calibrated lab model validates with it on). false (the default, as only the lab "
        "has checked it and it moves every scenario's figures): a thread with work ready "
        "keeps its core for up to a slice.",
    )
    run_to_parity: bool = Field(
        True,
        description="EEVDF's RUN_TO_PARITY: a running task keeps its core for its slice "
        "before a woken one may preempt it (the kernel's default since 6.6).",
    )
    delay_dequeue: bool = Field(
        True,
        description="EEVDF's DELAY_DEQUEUE with DELAY_ZERO (the kernel's default since "
        "6.12): a cgroup that sleeps ahead of its share stays on its run queue until the "
        "pick reaches it, so the others keep what they are owed. false: it leaves with its "
        "debt (Linux 6.6-6.11).",
    )
    allocatable: Allocatable = Field(
        default_factory=Allocatable,
        description="Node allocatable; requests beyond it are reported as a warning.",
    )
    host_speed: HostSpeed | list[HostSpeed] | None = Field(
        None,
        description="The hosts' speed over time (fast and slow phases): one for every node, "
        "or a list with one per node; none: every core runs at one speed.",
    )
    wakeup_latency: WakeupLatency | list[WakeupLatency] | None = Field(
        None,
        description="How long the hosts take to run a proxy thread a message woke: one for "
        "every node, or a list with one per node; none: the proxy model's wakeup_latency_us.",
    )
    idle_wakeup_latency: WakeupLatency | list[WakeupLatency] | None = Field(
        None,
        description="How long the hosts take to run a thread whose own timer expires while "
        "its core is idle (on a VM the hypervisor must first wake the halted vCPU): an "
        "event-loop load generator (release_timer: event_loop) that slept until its timer "
        "pays one draw before it sends. One for every node, or a list with one per node; "
        "none: not charged.",
    )
    zones: list[Zone] | None = Field(
        None,
        min_length=1,
        description="Zones (and the clusters they belong to) with their nodes; 'nodes' is "
        "then their total (meshsim.scenario.edges).",
    )

    @property
    def allocatable_cpu_m(self) -> float:
        """A node's allocatable CPU in millicores (``allocatable.cpu``, else all its cores)."""
        cpu = self.allocatable.cpu_m
        return cpu if cpu is not None else self.cores_per_node * 1000.0

    @property
    def allocatable_memory_mb(self) -> float:
        """A node's allocatable memory in MB (``allocatable.memory``, else all of it)."""
        mb = self.allocatable.memory_mb
        return mb if mb is not None else self.memory_gb_per_node * 1000.0

    @model_validator(mode="after")
    def _nodes_are_the_zones(self) -> Cluster:
        if self.zones is None:
            self._check_host_speed()
            return self
        total = sum(z.nodes for z in self.zones)
        if "nodes" in self.model_fields_set and self.nodes != total:
            raise ValueError(
                f"'nodes' is {self.nodes} but the zones hold {total} nodes: give one or the other"
            )
        if total > MAX_NODES:
            raise ValueError(f"the zones hold {total} nodes; at most {MAX_NODES} are supported")
        object.__setattr__(self, "nodes", total)
        self._check_host_speed()
        return self

    def _check_host_speed(self) -> None:
        for name in ("host_speed", "wakeup_latency", "idle_wakeup_latency"):
            given = getattr(self, name)
            if isinstance(given, list) and len(given) != self.nodes:
                raise ValueError(
                    f"{name} lists {len(given)} nodes but the cluster has "
                    f"{self.nodes}: give one for every node, or a single one for all"
                )

    def node_host_speed(self, index: int) -> HostSpeed | None:
        """Node ``index``'s host speed (None: constant)."""
        hs = self.host_speed
        return hs[index] if isinstance(hs, list) else hs

    def node_wakeup_latency(self, index: int) -> WakeupLatency | None:
        """Node ``index``'s wake-up latency (None: the proxy models' own)."""
        wl = self.wakeup_latency
        return wl[index] if isinstance(wl, list) else wl

    def node_idle_wakeup_latency(self, index: int) -> WakeupLatency | None:
        """Node ``index``'s latency to run a timer's thread on an idle core (None: none)."""
        wl = self.idle_wakeup_latency
        return wl[index] if isinstance(wl, list) else wl


__all__ = ["MAX_CORES_PER_NODE", "MAX_NODES", "Cluster", "Network"]
