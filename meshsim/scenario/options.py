"""The ``mesh_options:`` block: mesh-specific knobs, one section per mesh."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from meshsim.scenario.base import MAX_COUNT, PositiveFloat, ServiceSelection, Spec
from meshsim.scenario.cilium import CiliumOptions
from meshsim.scenario.observability import ObservabilityOptions
from meshsim.scenario.resources import (
    ISTIO_PROXY_RESOURCES,
    NO_RESOURCES,
    WAYPOINT_RESOURCES,
    ZTUNNEL_RESOURCES,
    Quantities,
    Resources,
)


class IstioOptions(Spec):
    workers: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None,
        description="Envoy worker threads of every sidecar (ProxyConfig concurrency). Unset, "
        "as Istio leaves it: each sidecar's CPU limit rounded up to whole cores (2 for the "
        "default 2000m, 1 for 500m), or its node's allocatable cores when it has no limit.",
    )
    mtls: Literal["STRICT", "PERMISSIVE", "DISABLE"] = Field(
        "PERMISSIVE",
        description="The mesh-wide PeerAuthentication mode. PERMISSIVE, Istio's default (an "
        "unset mode inherits it): a sidecar accepts mTLS and plaintext, and sidecars talk mTLS "
        "to each other (auto mTLS), so meshed traffic costs what it does under STRICT. "
        "STRICT: a sidecar refuses plaintext, so a workload outside the mesh (no "
        "meshed_clients, no gateway) that reaches a pod directly fails as a reset, which the "
        "run's warnings name. DISABLE: plaintext between sidecars.",
    )
    sidecar_scoping: bool = Field(
        False, description="A Sidecar resource limits each proxy's config to what it calls."
    )
    telemetry: bool = Field(True, description="Telemetry v2 stats filter.")
    wasm_filters: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    h2_upgrade: bool = Field(
        False,
        description="Upgrade HTTP/1.1 to HTTP/2 between sidecars (Istio's default is "
        "DO_NOT_UPGRADE; http2/grpc services use HTTP/2 regardless).",
    )
    model: str | None = Field(None, description="Cost-model file (default models/istio-sidecar).")
    istiod_replicas: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1, description="istiod replicas; they share the proxies (each connects to one)."
    )
    istiod_cores: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Cores per istiod replica (GOMAXPROCS); default cores_per_node."
    )
    istiod_model: str | None = Field(None, description="Cost-model file (default models/istiod).")
    eds_debounce: bool = Field(
        True, description="PILOT_ENABLE_EDS_DEBOUNCE: endpoint-only changes are debounced too."
    )
    connect_timeout_ms: PositiveFloat = Field(
        10_000.0,
        description="Envoy's cluster connect_timeout (meshConfig.connectTimeout, default 10 s; "
        "a DestinationRule's connectionPool.tcp.connectTimeout per service): how long a "
        "connection to an address that answers nothing is tried (docs/mesh-semantics.md "
        "§14.4), by Istio's sidecars, waypoints and Istio proxy listeners; Cilium's node "
        "Envoy keeps Envoy's own 5 s.",
    )
    proxy_resources: Resources = Field(
        ISTIO_PROXY_RESOURCES,
        description="Sidecar requests and limits (global.proxy.resources: requests 100m / "
        "128Mi, limits 2000m / 1024Mi); used with cluster.scheduler cfs.",
    )


class LinkerdOptions(Spec):
    workers: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1, description="Proxy runtime workers."
    )
    protocol_upgrade: bool = Field(True, description="Upgrade HTTP/1 to HTTP/2 between proxies.")
    retry_budget: bool = Field(
        False, description="Use ServiceProfile retries under the retry budget."
    )
    # Linkerd's budget takes a ratio of at most 1,000 and fewer than 2^31-1 retries a second
    # (meshsim.policy.budget checks the same when the run is built).
    retry_ratio: Annotated[float, Field(ge=0, le=1000)] = 0.2
    min_retries_per_second: Annotated[float, Field(ge=0, le=2**31 - 2)] = 10.0
    retry_ttl_s: PositiveFloat = 10.0
    failure_accrual: Literal["consecutive", "unified"] | None = Field(
        None,
        description="balancer.linkerd.io/failure-accrual on every service (default: none; a "
        "traffic rule's outlier_detection also turns on consecutive accrual for its service).",
    )
    unsupported: Literal["error", "emulate"] = Field(
        "error",
        description="Traffic rules Linkerd cannot express (fault injection, mirroring): "
        "'error' refuses the run; 'emulate' applies them in the client proxy as Istio would, "
        "and says so in the run's warnings.",
    )
    model: str | None = Field(None, description="Cost-model file (default models/linkerd-proxy).")
    destination_cores: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1, description="Cores of the destination controller (one replica)."
    )
    control_plane_model: str | None = Field(
        None, description="Cost-model file (default models/linkerd-control-plane)."
    )
    proxy_resources: Resources = Field(
        NO_RESOURCES,
        description="Proxy requests and limits (config.linkerd.io/proxy-cpu-request, "
        "-cpu-limit, -memory-request, -memory-limit; none by default); used with "
        "cluster.scheduler cfs.",
    )


class AmbientOptions(Spec):
    waypoints: ServiceSelection = Field(
        "none", description="Services behind a waypoint (L7); 'all' or 'none'."
    )
    ztunnel_workers: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        2,
        description="ztunnel's worker threads (DEFAULT_WORKER_THREADS, or "
        "ZTUNNEL_WORKER_THREADS). meshsim takes the count given here, whatever "
        "ztunnel_resources says (docs/mesh-semantics.md §10.3).",
    )
    waypoint_workers: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None,
        description="Envoy worker threads of each waypoint. Unset, as Istio leaves it: "
        "pilot-agent's count from waypoint_resources' CPU limit, rounded up (2 for the "
        "default 2000m), or the node's allocatable cores without a limit.",
    )
    ztunnel_model: str | None = None
    waypoint_model: str | None = None
    ztunnel_resources: Resources = Field(
        ZTUNNEL_RESOURCES,
        description="Requests and limits of each node's ztunnel, one container per node "
        "(default the ztunnel chart's resources: requests 200m / 512Mi, no limits; given, they "
        "replace them whole). A memory limit below its modelled memory OOM-kills it: every "
        "pod on its node loses its data path until it restarts.",
    )
    waypoint_resources: Resources = Field(
        WAYPOINT_RESOURCES,
        description="Requests and limits of each waypoint (default Istio's "
        "global.waypoint.resources: requests 100m / 128Mi, limits 2000m / 1024Mi, the "
        "sidecars' values but not mesh_options.istio.proxy_resources: changing those leaves "
        "the waypoints'; given, they replace them whole).",
    )


class MeshOptions(Spec):
    istio: IstioOptions = Field(default_factory=IstioOptions)
    linkerd: LinkerdOptions = Field(default_factory=LinkerdOptions)
    istio_ambient: AmbientOptions = Field(
        default_factory=AmbientOptions,
        alias="istio-ambient",
    )
    cilium: CiliumOptions = Field(default_factory=CiliumOptions)
    observability: ObservabilityOptions | None = Field(
        None,
        description="Metrics, tracing and access-log costs in every mesh (issue 16; absent: "
        "only the proxy models' per-request stats are charged).",
    )

    keep_alive: bool = Field(
        True,
        description="Proxies (and apps) keep connections open and reuse them; false opens a "
        "new connection, with its (m)TLS handshake, for every request, in every mesh.",
    )
    meshed_clients: bool = Field(
        False,
        description="Workload clients run in meshed pods (a sidecar, or their node's ztunnel), "
        "like the load generator of Istio's benchmark; otherwise they enter the mesh at the "
        "target's proxy. Under `none` they run in the same pods without a proxy, so their "
        "client_cpu_ms is spent on a node under every mesh.",
    )

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    def sidecar_resources(self, mesh: str, pod_override: Resources | None) -> Resources:
        """A sidecar's requests and limits: its pod's (a service's ``proxy_resources``, the
        injector's per-pod annotations) over the mesh's default for its sidecars, as each
        injector combines them. Istio's injection template writes the annotated values
        instead of global.proxy.resources as soon as one is set; Linkerd's injector takes
        each annotation over its own field of the chart's proxy.resources
        (docs/mesh-semantics.md §10.4)."""
        if mesh != "linkerd":
            return pod_override if pod_override is not None else self.istio.proxy_resources
        base = self.linkerd.proxy_resources
        if pod_override is None:
            return base
        return Resources(
            requests=Quantities(
                cpu=pod_override.requests.cpu or base.requests.cpu,
                memory=pod_override.requests.memory or base.requests.memory,
            ),
            limits=Quantities(
                cpu=pod_override.limits.cpu or base.limits.cpu,
                memory=pod_override.limits.memory or base.limits.memory,
            ),
        )


class ControlPlaneOptions(Spec):
    """How the control plane is connected to the data plane."""

    enabled: bool = Field(
        True,
        description="false: proxies read the cluster's endpoints at once and pods need no "
        "certificate (the data-plane-only model of earlier versions).",
    )
