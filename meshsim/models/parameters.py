"""Parameter specifications of cost-model files: names, units, meanings, kinds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from meshsim.models.component_specs import COMPONENT_SPECS

ProxyKind = Literal["envoy-sidecar", "linkerd-proxy", "ztunnel", "waypoint", "ingress-nginx"]
ControlPlaneKind = Literal["istiod", "linkerd-control-plane"]
ComponentKind = Literal[
    "observability", "cilium-agent", "cilium-operator", "cilium-encryption", "spire"
]
Kind = Literal[
    "envoy-sidecar",
    "linkerd-proxy",
    "ztunnel",
    "waypoint",
    "ingress-nginx",
    "istiod",
    "linkerd-control-plane",
    "observability",
    "cilium-agent",
    "cilium-operator",
    "cilium-encryption",
    "spire",
]
PROXY_KINDS: Final[tuple[ProxyKind, ...]] = (
    "envoy-sidecar",
    "linkerd-proxy",
    "ztunnel",
    "waypoint",
    "ingress-nginx",  # Linkerd's ingress controller (meshsim/sim/ingress_controller.py)
)
CONTROL_PLANE_KINDS: Final[tuple[ControlPlaneKind, ...]] = ("istiod", "linkerd-control-plane")
COMPONENT_KINDS: Final[tuple[ComponentKind, ...]] = (
    "observability",
    "cilium-agent",
    "cilium-operator",
    "cilium-encryption",
    "spire",
)  # meshsim/models/component_specs.py (issue 16)
KINDS: Final[tuple[Kind, ...]] = (*PROXY_KINDS, *CONTROL_PLANE_KINDS, *COMPONENT_KINDS)

#: The shipped model file (``models/<name>.yaml``) that :func:`default_model` returns per kind.
DEFAULT_MODEL_NAMES: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "envoy-sidecar": "istio-sidecar",
        "linkerd-proxy": "linkerd-proxy",
        "ztunnel": "ztunnel",
        "waypoint": "waypoint",
        "ingress-nginx": "ingress-nginx",
        "istiod": "istiod",
        "linkerd-control-plane": "linkerd-control-plane",
        **{kind: kind for kind in COMPONENT_KINDS},
    }
)

KIB: Final = 1024.0  # bytes per KiB; payload costs are per KiB
KB_PER_MB: Final = 1024.0  # memory parameters use KiB and MiB throughout (see models/README.md)


# --------------------------------------------------------------------------- parameter specs


@dataclass(frozen=True)
class ParameterSpec:
    """What one parameter means, its unit, and which kinds of proxy must have it."""

    name: str
    unit: str
    meaning: str
    kinds: frozenset[Kind]
    integer: bool = False
    minimum: float = 0.0
    optional: bool = False
    """A file may leave it out; absent means the value 0.0 (the mechanism is off)."""
    maximum: float = math.inf


_ALL: Final = frozenset(PROXY_KINDS)  # every proxy kind (not the control planes)
_L7: Final = frozenset({"envoy-sidecar", "linkerd-proxy", "waypoint"})
_HTTP: Final = _L7 | {"ingress-nginx"}
"""Proxies that parse and route HTTP; the ingress controller evaluates no mesh policy (no
RBAC, no extra filters: its own annotations are not modelled)."""
_ENVOY: Final = frozenset({"envoy-sidecar", "waypoint"})
_HBONE: Final = frozenset({"ztunnel", "waypoint"})
_ZTUNNEL: Final = frozenset({"ztunnel"})
_ISTIOD: Final = frozenset({"istiod"})
_LINKERD_CP: Final = frozenset({"linkerd-control-plane"})
_CP: Final = frozenset(CONTROL_PLANE_KINDS)


def _spec(
    name: str,
    unit: str,
    meaning: str,
    kinds: frozenset[Any],
    *,
    integer: bool = False,
    minimum: float = 0.0,
    maximum: float = math.inf,
    optional: bool = False,
) -> ParameterSpec:
    return ParameterSpec(name, unit, meaning, frozenset(kinds), integer, minimum, optional, maximum)


_SPECS: tuple[ParameterSpec, ...] = (
    # Threads: connections (Envoy) or tasks (tokio) are served by this many workers.
    _spec(
        "worker_threads", "count", "worker threads serving requests", _ALL, integer=True, minimum=1
    ),
    # Per-request CPU, by phase and component (microseconds of CPU time).
    _spec(
        "socket_io_us",
        "us",
        "kernel socket I/O per request/response exchange: reads, writes, "
        "epoll wake-ups; half charged on the request path, half on the response path",
        _ALL,
    ),
    _spec(
        "payload_cpu_us_per_kib",
        "us/KiB",
        "copying (and for L7, body handling) per KiB of request or response body",
        _ALL,
    ),
    _spec(
        "buffered_request_max_kib",
        "KiB",
        "request bodies up to this size are held whole and forwarded with their head in one "
        "write; a larger one is streamed, at streamed_request_cpu_us more (absent or 0: "
        "every body is charged alike, by its KiB)",
        _HTTP,
        optional=True,
    ),
    _spec(
        "streamed_request_cpu_us",
        "us",
        "CPU a request pays, beyond its KiB, when its body is larger than "
        "buffered_request_max_kib and is streamed through the proxy (the streaming path's "
        "extra trips through the event loop); half on the request path, half on the response "
        "path",
        _HTTP,
        optional=True,
    ),
    _spec(
        "http_parse_request_us",
        "us",
        "HTTP codec work on the request path (parse the request, encode it upstream)",
        _HTTP,
    ),
    _spec("http_parse_response_us", "us", "HTTP codec work on the response path", _HTTP),
    _spec(
        "routing_us", "us", "route match, cluster choice and load-balancer pick per request", _HTTP
    ),
    _spec(
        "telemetry_us",
        "us",
        "stats/telemetry per request, done AFTER the response is sent: "
        "it occupies the worker and delays the next request, not this one",
        _HTTP,
    ),
    _spec(
        "rbac_us",
        "us",
        "authorization policy evaluation per request, only when policies exist",
        _L7,
    ),
    _spec(
        "l7_filter_us",
        "us",
        "each additional native L7 filter beyond the default chain "
        "(half request path, half response path)",
        _L7,
    ),
    _spec(
        "wasm_filter_us", "us", "each Wasm filter (half request path, half response path)", _ENVOY
    ),
    _spec(
        "hbone_frame_us",
        "us",
        "HBONE (HTTP/2 CONNECT) framing per request/response "
        "exchange, all HBONE legs of this proxy together; half on each path",
        _HBONE,
    ),
    _spec(
        "hbone_stream_open_us",
        "us",
        "opening the HBONE CONNECT stream for one new "
        "application TCP connection (per connection, not per request)",
        _ZTUNNEL,
    ),
    _spec("l4_rbac_us", "us", "L4 authorization per new connection, when policies exist", _ZTUNNEL),
    # Variability of the per-request CPU above (optional: absent or 0 charges the mean).
    _spec(
        "request_cpu_cv",
        "ratio",
        "coefficient of variation of one request's CPU through the proxy: each request's "
        "costs are scaled by a gamma draw of mean 1 and this cv (absent or 0: every request "
        "costs exactly the mean)",
        _ALL,
        optional=True,
    ),
    _spec(
        "cpu_drift_cv",
        "ratio",
        "coefficient of variation of a slow drift of the proxy process's whole CPU cost "
        "(a multiplier of mean 1, lognormal, its own per proxy, wandering with the time "
        "constant cpu_drift_ms): what makes the CPU of one 100 ms CFS period differ from the "
        "next by more than the requests in it do, so what decides how often a CPU limit near "
        "the average is reached (absent or 0: no drift)",
        _ALL,
        optional=True,
    ),
    _spec(
        "cpu_drift_ms",
        "ms",
        "time constant of the CPU cost's drift (cpu_drift_cv): the multiplier's "
        "autocorrelation after t is exp(-t / this)",
        _ALL,
        optional=True,
    ),
    # Costs that do not scale with requests (optional: absent or 0 turns the mechanism off).
    _spec(
        "wakeup_cpu_us",
        "us",
        "CPU a worker thread spends each time it is woken from idle (scheduler switch-in, the "
        "event loop's poll returning, caches refilled): charged on a burst of work that finds "
        "its worker idle, so the CPU per request falls as load lets one wake-up serve several "
        "requests; the per-request parameters above are then the cost with no wake-up",
        _ALL,
        optional=True,
    ),
    _spec(
        "wakeup_cache_decay_ms",
        "ms",
        "how fast a sleeping worker's caches cool on the host: a wake-up after sleeping t "
        "costs wakeup_cpu_us x (1 - exp(-t / this)), so wakeup_cpu_us is then a fully cold "
        "wake-up's CPU (absent: every wake-up costs wakeup_cpu_us however long the sleep)",
        _ALL,
        optional=True,
    ),
    _spec(
        "wakeup_cpu_after_share",
        "ratio",
        "the share of a wake-up's CPU (wakeup_cpu_us) spent after the work ready at the "
        "wake-up rather than before it: the event loop's return to its poll and the switch "
        "out, once no burst is ready for the worker, which hold the worker and its core but "
        "not the requests that woke it (absent or 0: all of it before the work, on the "
        "request's path)",
        _ALL,
        maximum=1.0,
        optional=True,
    ),
    _spec(
        "preemption_cpu_us",
        "us",
        "CPU a worker thread spends when it resumes after being preempted with work still to "
        "do (a thread it woke on its core ran first: the switch back, caches refilled): "
        "charged on the burst it resumes with (absent or 0: preemption costs nothing)",
        _ALL,
        optional=True,
    ),
    _spec(
        "wakeup_latency_us",
        "us",
        "latency, not CPU, before a worker thread a message woke from idle runs (the core's "
        "interrupt and idle-state exit, the switch-in; on a VM the vCPU's scheduling): paid "
        "by a burst that finds its worker asleep, so it leaves the path as load keeps the "
        "worker busy; hop_latency_us is then the rest of the hop. The typical value on the "
        "host where the model was measured: cluster.wakeup_latency gives a host's own",
        _ALL,
        optional=True,
    ),
    _spec(
        "tcp_connection_cpu_us",
        "us",
        "CPU per TCP connection end held by this proxy: the connect() or accept() and the "
        "close, charged when the connection is opened (keep-alive off pays it per request)",
        _ALL,
        optional=True,
    ),
    # Non-CPU latency.
    _spec(
        "hop_latency_us",
        "us",
        "fixed non-CPU latency per direction through the proxy "
        "(loopback/veth IPC, wake-ups); added to the request and to the response",
        _ALL,
    ),
    # TLS: record layer and handshakes.
    _spec(
        "tls_legs",
        "count",
        "TLS connections a proxied byte crosses inside this proxy "
        "(decrypt and/or encrypt once per leg)",
        _ALL,
        integer=True,
    ),
    _spec(
        "tls_record_cpu_us_per_kib",
        "us/KiB",
        "record-layer encryption or decryption per KiB per TLS leg",
        _ALL,
    ),
    _spec(
        "tls_request_cpu_us",
        "us",
        "record-layer CPU per request per TLS leg that does not depend on its size (the TLS "
        "read and write calls themselves); half on the request path, half on the response path",
        _ALL,
        optional=True,
    ),
    _spec(
        "tls_key_exchange_cpu_us",
        "us",
        "ephemeral key exchange per handshake side (keygen + shared secret)",
        _ALL,
    ),
    _spec("tls_sign_cpu_us", "us", "signing CertificateVerify with the workload key", _ALL),
    _spec(
        "tls_cert_verify_cpu_us",
        "us",
        "verifying the peer's CertificateVerify signature (peer workload key)",
        _ALL,
    ),
    _spec(
        "tls_chain_verify_cpu_us",
        "us",
        "verifying one signature of the peer's certificate chain (issuer key)",
        _ALL,
    ),
    _spec(
        "tls_chain_verifications",
        "count",
        "signatures verified in the peer's chain",
        _ALL,
        integer=True,
    ),
    _spec(
        "tls_handshake_overhead_cpu_us",
        "us",
        "non-crypto handshake work per side "
        "(transcript hashing, HKDF, certificate parsing, allocation)",
        _ALL,
    ),
    _spec("tls_resumption_cpu_us", "us", "CPU per side of a resumed (PSK + ECDHE) handshake", _ALL),
    # Whether handshakes resume at all: the client's ticket store and the server's acceptance
    # (optional: absent or 0, that side never resumes).
    _spec(
        "tls_session_tickets",
        "count",
        "TLS session tickets the proxy's client side keeps per upstream cluster, newest first, "
        "each used once (TLS 1.3): a new connection takes the newest and resumes if the "
        "server it reaches issued it and resumes sessions (tls_server_resumption); each "
        "completed handshake stores the tickets the server sends, the oldest going first "
        "(Envoy's max_session_keys; absent or 0: the client never resumes)",
        _ALL,
        integer=True,
        optional=True,
    ),
    _spec(
        "tls_server_resumption",
        "count",
        "1: the proxy's server side resumes a session from a ticket it issued on an earlier "
        "connection (until it restarts); absent or 0: it never does, every handshake it "
        "serves is a full one",
        _ALL,
        integer=True,
        maximum=1.0,
        optional=True,
    ),
    # Memory.
    _spec(
        "base_memory_mb",
        "MB",
        "resident memory with no connections and no configuration items counted below",
        _ALL | _CP,
    ),
    _spec(
        "agent_memory_mb",
        "MB",
        "resident memory of an agent process in the proxy's container beside the proxy itself "
        "(Istio's pilot-agent: SDS, DNS proxy, health checks), counted in the proxy's memory "
        "(absent or 0: the proxy has no agent)",
        _ALL,
        optional=True,
    ),
    _spec("connection_kb", "KB", "memory per open connection (or tunnelled stream)", _ALL),
    _spec("tls_connection_kb", "KB", "extra memory per connection that carries TLS", _ALL),
    _spec("cluster_kb", "KB", "memory per cluster/service held in configuration", _ALL),
    _spec("endpoint_kb", "KB", "memory per endpoint/workload held in configuration", _ALL),
    # Control planes (kinds istiod and linkerd-control-plane): see models/istiod.yaml and
    # models/linkerd-control-plane.yaml; the simulator's use is in meshsim/sim/controlplane/.
    _spec(
        "kube_event_delay_ms",
        "ms",
        "from a pod change in the API server to the control "
        "plane's informer callback (EndpointSlice controller + watch)",
        _CP,
    ),
    _spec(
        "send_latency_ms",
        "ms",
        "non-CPU time from sending an update to the proxy having "
        "applied it (network, proxy-side apply)",
        _CP,
    ),
    _spec("csr_sign_us", "us", "CPU to verify a CSR and sign one workload certificate", _CP),
    _spec("cert_lifetime_s", "s", "lifetime of a workload certificate", _CP, minimum=1.0),
    _spec(
        "cert_renew_fraction",
        "ratio",
        "fraction of the lifetime after which the proxy asks for a new certificate",
        _CP,
    ),
    _spec(
        "cert_min_refresh_s",
        "s",
        "the proxy never waits less than this before renewing its certificate "
        "(linkerd2-proxy's LINKERD2_PROXY_IDENTITY_MIN_REFRESH; absent or 0: no floor)",
        _LINKERD_CP,
        optional=True,
    ),
    _spec(
        "cert_max_refresh_s",
        "s",
        "the proxy never waits more than this before renewing its certificate "
        "(linkerd2-proxy's LINKERD2_PROXY_IDENTITY_MAX_REFRESH; absent or 0: no ceiling)",
        _LINKERD_CP,
        optional=True,
    ),
    _spec(
        "csr_retry_s",
        "s",
        "wait before a proxy retries a CSR that got no answer (absent: the renewal's "
        "wait, as linkerd2-proxy's identity loop sleeps refresh_in after a failure too)",
        _CP,
        minimum=0.001,
        optional=True,
    ),
    _spec("debounce_after_ms", "ms", "PILOT_DEBOUNCE_AFTER: quiet period before a push", _ISTIOD),
    _spec("debounce_max_ms", "ms", "PILOT_DEBOUNCE_MAX: longest a push may be delayed", _ISTIOD),
    _spec(
        "push_throttle_base",
        "count",
        "PILOT_PUSH_THROTTLE auto: the 15 of min(15 + 5 x cores, 100)",
        _ISTIOD,
        integer=True,
    ),
    _spec(
        "push_throttle_per_core",
        "count",
        "PILOT_PUSH_THROTTLE auto: the 5 of min(15 + 5 x cores, 100)",
        _ISTIOD,
        integer=True,
    ),
    _spec(
        "push_throttle_max",
        "count",
        "PILOT_PUSH_THROTTLE auto: the 100 of min(15 + 5 x cores, 100)",
        _ISTIOD,
        integer=True,
        minimum=1,
    ),
    _spec("push_context_base_us", "us", "building a PushContext, fixed part", _ISTIOD),
    _spec(
        "push_context_service_us",
        "us",
        "building a full PushContext, per service in the registry (endpoint-only pushes skip it)",
        _ISTIOD,
    ),
    _spec(
        "full_push_base_us", "us", "per proxy, fixed CPU of a full (CDS/LDS/RDS/EDS) push", _ISTIOD
    ),
    _spec(
        "full_push_cluster_us",
        "us",
        "per proxy, CPU of a full push per cluster (service) in the proxy's view",
        _ISTIOD,
    ),
    _spec("eds_push_base_us", "us", "per proxy, fixed CPU of an endpoint-only (EDS) push", _ISTIOD),
    _spec(
        "push_endpoint_us",
        "us",
        "per proxy, CPU per endpoint pushed (full: every "
        "endpoint in view; EDS: endpoints of the changed clusters)",
        _ISTIOD,
    ),
    _spec(
        "connected_proxy_cpu_us_per_s",
        "us/s",
        "CPU per connected proxy per second when "
        "nothing changes (xDS stream upkeep, keepalives, status)",
        _ISTIOD,
    ),
    _spec(
        "proxy_cluster_kb",
        "KB",
        "istiod memory per connected proxy per cluster in its "
        "view (watched resources, generated config)",
        _ISTIOD,
    ),
    _spec(
        "proxy_endpoint_kb",
        "KB",
        "istiod memory per connected proxy per endpoint in its view",
        _ISTIOD,
    ),
    _spec("service_kb", "KB", "control-plane memory per service in the registry", _CP),
    _spec("registry_endpoint_kb", "KB", "control-plane memory per endpoint in the registry", _CP),
    _spec(
        "stream_queue_capacity",
        "count",
        "updates a destination stream may hold unsent; one more resets the stream",
        _LINKERD_CP,
        integer=True,
        minimum=1,
    ),
    _spec(
        "update_cpu_us",
        "us",
        "destination controller CPU per update sent on one stream",
        _LINKERD_CP,
    ),
    _spec(
        "update_endpoint_us",
        "us",
        "destination controller CPU per endpoint added or removed in one update on one stream",
        _LINKERD_CP,
    ),
    _spec(
        "snapshot_endpoint_us",
        "us",
        "destination controller CPU per endpoint sent when a stream (re)subscribes",
        _LINKERD_CP,
    ),
    _spec(
        "reresolve_delay_ms", "ms", "after a stream reset, until the proxy re-resolves", _LINKERD_CP
    ),
    _spec(
        "watch_cpu_us_per_s",
        "us/s",
        "destination controller CPU per open watch per second when nothing changes",
        _LINKERD_CP,
    ),
    _spec(
        "watch_kb",
        "KB",
        "destination controller memory per open watch (stream, translator, queue)",
        _LINKERD_CP,
    ),
    _spec(
        "proxy_kb",
        "KB",
        "control-plane memory per connected proxy (istiod: xDS "
        "connection and proxy state; Linkerd: identity, policy and inbound watches)",
        _CP,
    ),
)

_SPECS += tuple(
    _spec(name, unit, meaning, kinds, integer=integer, minimum=minimum)
    for name, unit, meaning, kinds, integer, minimum in COMPONENT_SPECS
)

#: Every known parameter, by name.
PARAMETER_SPECS: Final[Mapping[str, ParameterSpec]] = MappingProxyType({s.name: s for s in _SPECS})


def required_parameters(kind: Kind) -> tuple[str, ...]:
    """The parameter names a file of this kind must define (it may add only optional ones)."""
    return tuple(s.name for s in _SPECS if kind in s.kinds and not s.optional)


def optional_parameters(kind: Kind) -> tuple[str, ...]:
    """The parameter names a file of this kind may define or leave out (absent = 0.0)."""
    return tuple(s.name for s in _SPECS if kind in s.kinds and s.optional)
