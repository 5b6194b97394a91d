"""The application side: requests, pods (replicas) and services with their versions.

Status codes are HTTP statuses, plus three transport outcomes below 100 that have
no response: a refused connection, a reset (the peer died mid-request) and a local
timeout, and the gRPC statuses other than OK, which a gRPC server answers in a 200
(:data:`GRPC_STATUS` plus the code). Policies (retry_on conditions) need to tell these
apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from meshsim.policy.outcome import GrpcStatus
from meshsim.scenario.model import Call, Service, Version
from meshsim.sim.sampling import Sampler

if TYPE_CHECKING:
    from meshsim.sim.cluster import Node

CONNECT_FAILURE = 1
"""No connection could be made (no endpoint, refused): Envoy's connect-failure."""
RESET = 2
"""The connection was reset before a response (the pod died mid-request)."""
TIMEOUT = 3
"""The caller gave up waiting."""
OK = 200
GRPC_STATUS = 1000
"""``GRPC_STATUS + code``: a gRPC status other than OK in a 200 whose headers end the
stream (a Trailers-Only response, the form a server's error takes when it sends no
message); a plain 200 is OK. Above every HTTP status, so :func:`is_success` says error."""


def grpc_status(code: int) -> int:
    """The status code of a gRPC server's answer with status ``code`` (0 is OK, a 200)."""
    return GRPC_STATUS + code if code else OK


def status_key(status: int) -> str:
    """How a status code is written in results: ``"503"``, or ``"grpc-14"`` for a gRPC
    status."""
    return f"grpc-{status - GRPC_STATUS}" if status >= GRPC_STATUS else str(status)


def is_success(status: int) -> bool:
    """Success as meshes count it: a response below 500 (4xx are the caller's fault); a
    gRPC status other than OK is an error, as a gRPC client counts it."""
    return 100 <= status < 500


class Request:
    """One logical request as it travels the call graph."""

    __slots__ = ("headers", "id", "path", "request_bytes", "sent_at", "workload")

    def __init__(
        self,
        rid: int,
        workload: str,
        sent_at: float,
        request_bytes: int,
        path: str = "/",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.id = rid
        self.workload = workload
        self.sent_at = sent_at
        """Intended send time at the client (seconds): latency is measured from here."""
        self.request_bytes = request_bytes
        self.path = path
        self.headers = headers or {}


class Pod:
    """One replica of one version of a service, placed on a node."""

    __slots__ = (
        "alive",
        "call_plan",
        "cpu_s",
        "cpu_time",
        "error_rate",
        "error_status",
        "failed_status",
        "index",
        "name",
        "node",
        "ready",
        "response_bytes",
        "served",
        "service",
        "slot_busy_s",
        "slots",
        "slow_factor",
        "started_at",
        "version",
    )

    def __init__(
        self,
        env: simpy.Environment,
        service: ServiceRuntime,
        version: VersionRuntime,
        index: int,
        node: Node,
        cpu_time: Sampler,
    ) -> None:
        self.service = service
        self.version = version
        self.index = index
        self.name = f"{service.name}-{version.name}-{index}"
        self.node = node
        self.slots = simpy.Resource(env, capacity=service.spec.concurrency)
        self.cpu_time = cpu_time
        self.alive = True
        self.ready = True
        self.slow_factor = 1.0
        self.error_rate = 0.0
        self.error_status = 500
        grpc = service.spec.protocol == "grpc"
        self.failed_status = grpc_status(GrpcStatus.INTERNAL) if grpc else 500
        """The answer when a required call fails: a gRPC handler returns the error as
        INTERNAL (Online Boutique's checkoutservice: ``status.Errorf(codes.Internal, ...)``)."""
        self.cpu_s = 0.0
        """App CPU executed (core-seconds)."""
        self.slot_busy_s = 0.0
        """Worker-slot-seconds held (for the app's own utilisation)."""
        self.served = 0
        """Requests that reached it (for how its service's balancers spread them)."""
        self.started_at = env.now
        self.response_bytes = (
            version.spec.response_bytes
            if version.spec.response_bytes is not None
            else service.spec.response_bytes
        )
        self.call_plan = version.call_plan

    def __str__(self) -> str:
        # What a consistent-hash ring hashes for a host (meshsim.policy.hash_balancer): its
        # name, unique in a run, where the default would be the object's memory address.
        return self.name


def call_groups(calls: list[Call]) -> list[list[Call]]:
    """Calls in execution order: a run of consecutive ``parallel`` calls forms one group."""
    groups: list[list[Call]] = []
    for call in calls:
        if call.parallel and groups and groups[-1][0].parallel:
            groups[-1].append(call)
        else:
            groups.append([call])
    return groups


@dataclass(eq=False)
class VersionRuntime:
    """A version (subset) of a service and its pods.

    Compared by identity: two services' versions of the same name and spec, with no pods
    yet, are equal as values, and a new pod must go to the one it was started for."""

    name: str
    spec: Version
    call_plan: list[list[Call]]
    pods: list[Pod] = field(default_factory=list)
    sampler: Sampler | None = None
    """App CPU per request (seconds), shared by the version's pods."""


@dataclass
class ServiceRuntime:
    """A service: its versions, and the endpoints (ready pods) that callers may use."""

    name: str
    spec: Service
    versions: dict[str, VersionRuntime]
    endpoints: list[Pod] = field(default_factory=list)
    """Ready pods as the cluster sees them now (kube endpoints), in creation order."""
    generation: int = 0
    """Bumped on every endpoint change, so that proxies can tell when they are stale."""

    def refresh_endpoints(self) -> None:
        self.endpoints = [p for v in self.versions.values() for p in v.pods if p.alive and p.ready]
        self.generation += 1

    @property
    def pods(self) -> list[Pod]:
        return [p for v in self.versions.values() for p in v.pods]


def client_pod_name(workload: str) -> str:
    """The pod of a workload's meshed client: its load generator and, in a sidecar mesh, its
    sidecar."""
    return f"client/{workload}"


@dataclass
class Client:
    """The sending side of a workload: outside the cluster; CPU of its own only with the
    workload's ``client_cpu_ms`` (charged on the node of its meshed pod)."""

    name: str
    node: Node | None = None
    service: ServiceRuntime | None = None
    cpu_s: float = 0.0

    @property
    def pod_name(self) -> str:
        return client_pod_name(self.name)


def source_name(src: Pod | Client) -> str:
    """Where a connection from ``src`` comes from, as its peer sees its source address: the
    pod (a workload's client: its pod)."""
    return src.name if isinstance(src, Pod) else src.pod_name
