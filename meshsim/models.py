"""Cost models of the proxies: loading and checking ``models/*.yaml``.

A model file gives every number the simulator needs to build a proxy's latency, CPU and memory
from mechanisms (parse, route, telemetry, TLS, socket I/O, configuration held), each number with
the source it came from (DESIGN.md principle 2). This module is the only reader of those files:

- :func:`parse_model` / :func:`load_model` check a file and return a frozen
  :class:`ProxyCostModel`, or raise :class:`meshsim.errors.ModelError` naming the file, the line,
  the field and what was expected (principle 7). Nothing is defaulted silently: a parameter without
  a source, an unknown parameter or a missing one is an error.
- :class:`ProxyCostModel` turns the parameters into the quantities the simulator charges:
  per-request CPU by phase, handshake CPU, per-connection CPU and memory.

The set of required parameters depends on the proxy *kind* (an L4 ztunnel has no HTTP parser, a
sidecar has no HBONE framing), so calibrated files (``models/calibrated/``) go through the same
checks as the published ones. ``models/README.md`` explains every parameter and the arithmetic
that reproduces the published anchors.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshsim.errors import ModelError, Problem

__all__ = [
    "CONTROL_PLANE_KINDS",
    "DEFAULT_MODEL_NAMES",
    "KINDS",
    "PARAMETER_SPECS",
    "PROXY_KINDS",
    "Anchor",
    "ControlPlaneKind",
    "Kind",
    "Parameter",
    "ParameterSpec",
    "ProxyCostModel",
    "ProxyKind",
    "default_model",
    "load_model",
    "model_names",
    "models_dir",
    "parse_model",
    "required_parameters",
]

ProxyKind = Literal["envoy-sidecar", "linkerd-proxy", "ztunnel", "waypoint"]
ControlPlaneKind = Literal["istiod", "linkerd-control-plane"]
Kind = Literal[
    "envoy-sidecar", "linkerd-proxy", "ztunnel", "waypoint", "istiod", "linkerd-control-plane"
]
PROXY_KINDS: Final[tuple[ProxyKind, ...]] = (
    "envoy-sidecar", "linkerd-proxy", "ztunnel", "waypoint"
)
CONTROL_PLANE_KINDS: Final[tuple[ControlPlaneKind, ...]] = ("istiod", "linkerd-control-plane")
KINDS: Final[tuple[Kind, ...]] = (*PROXY_KINDS, *CONTROL_PLANE_KINDS)

#: The shipped model file (``models/<name>.yaml``) that :func:`default_model` returns per kind.
DEFAULT_MODEL_NAMES: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "envoy-sidecar": "istio-sidecar",
        "linkerd-proxy": "linkerd-proxy",
        "ztunnel": "ztunnel",
        "waypoint": "waypoint",
        "istiod": "istiod",
        "linkerd-control-plane": "linkerd-control-plane",
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


_ALL: Final = frozenset(PROXY_KINDS)  # every proxy kind (not the control planes)
_L7: Final = frozenset({"envoy-sidecar", "linkerd-proxy", "waypoint"})
_ENVOY: Final = frozenset({"envoy-sidecar", "waypoint"})
_HBONE: Final = frozenset({"ztunnel", "waypoint"})
_ZTUNNEL: Final = frozenset({"ztunnel"})
_ISTIOD: Final = frozenset({"istiod"})
_LINKERD_CP: Final = frozenset({"linkerd-control-plane"})
_CP: Final = frozenset(CONTROL_PLANE_KINDS)


def _spec(
    name: str, unit: str, meaning: str, kinds: frozenset[Any], *, integer: bool = False,
    minimum: float = 0.0,
) -> ParameterSpec:
    return ParameterSpec(name, unit, meaning, frozenset(kinds), integer, minimum)


_SPECS: Final[tuple[ParameterSpec, ...]] = (
    # Threads: connections (Envoy) or tasks (tokio) are served by this many workers.
    _spec("worker_threads", "count", "worker threads serving requests", _ALL,
          integer=True, minimum=1),
    # Per-request CPU, by phase and component (microseconds of CPU time).
    _spec("socket_io_us", "us", "kernel socket I/O per request/response exchange: reads, writes, "
          "epoll wake-ups; half charged on the request path, half on the response path", _ALL),
    _spec("payload_cpu_us_per_kib", "us/KiB", "copying (and for L7, body handling) per KiB of "
          "request or response body", _ALL),
    _spec("http_parse_request_us", "us", "HTTP codec work on the request path (parse the "
          "request, encode it upstream)", _L7),
    _spec("http_parse_response_us", "us", "HTTP codec work on the response path", _L7),
    _spec("routing_us", "us", "route match, cluster choice and load-balancer pick per request",
          _L7),
    _spec("telemetry_us", "us", "stats/telemetry per request, done AFTER the response is sent: "
          "it occupies the worker and delays the next request, not this one", _L7),
    _spec("rbac_us", "us", "authorization policy evaluation per request, only when policies "
          "exist", _L7),
    _spec("l7_filter_us", "us", "each additional native L7 filter beyond the default chain "
          "(half request path, half response path)", _L7),
    _spec("wasm_filter_us", "us", "each Wasm filter (half request path, half response path)",
          _ENVOY),
    _spec("hbone_frame_us", "us", "HBONE (HTTP/2 CONNECT) framing per request/response "
          "exchange, all HBONE legs of this proxy together; half on each path", _HBONE),
    _spec("hbone_stream_open_us", "us", "opening the HBONE CONNECT stream for one new "
          "application TCP connection (per connection, not per request)", _ZTUNNEL),
    _spec("l4_rbac_us", "us", "L4 authorization per new connection, when policies exist",
          _ZTUNNEL),
    # Non-CPU latency.
    _spec("hop_latency_us", "us", "fixed non-CPU latency per direction through the proxy "
          "(loopback/veth IPC, wake-ups); added to the request and to the response", _ALL),
    # TLS: record layer and handshakes.
    _spec("tls_legs", "count", "TLS connections a proxied byte crosses inside this proxy "
          "(decrypt and/or encrypt once per leg)", _ALL, integer=True),
    _spec("tls_record_cpu_us_per_kib", "us/KiB", "record-layer encryption or decryption per "
          "KiB per TLS leg", _ALL),
    _spec("tls_key_exchange_cpu_us", "us", "ephemeral key exchange per handshake side "
          "(keygen + shared secret)", _ALL),
    _spec("tls_sign_cpu_us", "us", "signing CertificateVerify with the workload key", _ALL),
    _spec("tls_cert_verify_cpu_us", "us", "verifying the peer's CertificateVerify signature "
          "(peer workload key)", _ALL),
    _spec("tls_chain_verify_cpu_us", "us", "verifying one signature of the peer's certificate "
          "chain (issuer key)", _ALL),
    _spec("tls_chain_verifications", "count", "signatures verified in the peer's chain", _ALL,
          integer=True),
    _spec("tls_handshake_overhead_cpu_us", "us", "non-crypto handshake work per side "
          "(transcript hashing, HKDF, certificate parsing, allocation)", _ALL),
    _spec("tls_resumption_cpu_us", "us", "CPU per side of a resumed (PSK + ECDHE) handshake",
          _ALL),
    # Memory.
    _spec("base_memory_mb", "MB", "resident memory with no connections and no configuration "
          "items counted below", _ALL | _CP),
    _spec("connection_kb", "KB", "memory per open connection (or tunnelled stream)", _ALL),
    _spec("tls_connection_kb", "KB", "extra memory per connection that carries TLS", _ALL),
    _spec("cluster_kb", "KB", "memory per cluster/service held in configuration", _ALL),
    _spec("endpoint_kb", "KB", "memory per endpoint/workload held in configuration", _ALL),
    # Control planes (kinds istiod and linkerd-control-plane): see models/istiod.yaml and
    # models/linkerd-control-plane.yaml; the simulator's use is in meshsim/sim/controlplane/.
    _spec("kube_event_delay_ms", "ms", "from a pod change in the API server to the control "
          "plane's informer callback (EndpointSlice controller + watch)", _CP),
    _spec("send_latency_ms", "ms", "non-CPU time from sending an update to the proxy having "
          "applied it (network, proxy-side apply)", _CP),
    _spec("csr_sign_us", "us", "CPU to verify a CSR and sign one workload certificate", _CP),
    _spec("cert_lifetime_s", "s", "lifetime of a workload certificate", _CP, minimum=1.0),
    _spec("cert_renew_fraction", "ratio", "fraction of the lifetime after which the proxy "
          "asks for a new certificate", _CP),
    _spec("csr_retry_s", "s", "wait before a proxy retries a CSR that got no answer", _CP,
          minimum=0.001),
    _spec("debounce_after_ms", "ms", "PILOT_DEBOUNCE_AFTER: quiet period before a push",
          _ISTIOD),
    _spec("debounce_max_ms", "ms", "PILOT_DEBOUNCE_MAX: longest a push may be delayed",
          _ISTIOD),
    _spec("push_throttle_base", "count", "PILOT_PUSH_THROTTLE auto: the 15 of "
          "min(15 + 5 x cores, 100)", _ISTIOD, integer=True),
    _spec("push_throttle_per_core", "count", "PILOT_PUSH_THROTTLE auto: the 5 of "
          "min(15 + 5 x cores, 100)", _ISTIOD, integer=True),
    _spec("push_throttle_max", "count", "PILOT_PUSH_THROTTLE auto: the 100 of "
          "min(15 + 5 x cores, 100)", _ISTIOD, integer=True, minimum=1),
    _spec("push_context_base_us", "us", "building a PushContext, fixed part", _ISTIOD),
    _spec("push_context_service_us", "us", "building a full PushContext, per service in "
          "the registry (endpoint-only pushes skip it)", _ISTIOD),
    _spec("full_push_base_us", "us", "per proxy, fixed CPU of a full (CDS/LDS/RDS/EDS) push",
          _ISTIOD),
    _spec("full_push_cluster_us", "us", "per proxy, CPU of a full push per cluster (service) "
          "in the proxy's view", _ISTIOD),
    _spec("eds_push_base_us", "us", "per proxy, fixed CPU of an endpoint-only (EDS) push",
          _ISTIOD),
    _spec("push_endpoint_us", "us", "per proxy, CPU per endpoint pushed (full: every "
          "endpoint in view; EDS: endpoints of the changed clusters)", _ISTIOD),
    _spec("connected_proxy_cpu_us_per_s", "us/s", "CPU per connected proxy per second when "
          "nothing changes (xDS stream upkeep, keepalives, status)", _ISTIOD),
    _spec("proxy_cluster_kb", "KB", "istiod memory per connected proxy per cluster in its "
          "view (watched resources, generated config)", _ISTIOD),
    _spec("proxy_endpoint_kb", "KB", "istiod memory per connected proxy per endpoint in its "
          "view", _ISTIOD),
    _spec("service_kb", "KB", "control-plane memory per service in the registry", _CP),
    _spec("registry_endpoint_kb", "KB", "control-plane memory per endpoint in the registry",
          _CP),
    _spec("stream_queue_capacity", "count", "updates a destination stream may hold unsent; "
          "one more resets the stream", _LINKERD_CP, integer=True, minimum=1),
    _spec("update_cpu_us", "us", "destination controller CPU per update sent on one stream",
          _LINKERD_CP),
    _spec("update_endpoint_us", "us", "destination controller CPU per endpoint added or "
          "removed in one update on one stream", _LINKERD_CP),
    _spec("snapshot_endpoint_us", "us", "destination controller CPU per endpoint sent when a "
          "stream (re)subscribes", _LINKERD_CP),
    _spec("reresolve_delay_ms", "ms", "after a stream reset, until the proxy re-resolves",
          _LINKERD_CP),
    _spec("watch_cpu_us_per_s", "us/s", "destination controller CPU per open watch per "
          "second when nothing changes", _LINKERD_CP),
    _spec("watch_kb", "KB", "destination controller memory per open watch (stream, "
          "translator, queue)", _LINKERD_CP),
    _spec("proxy_kb", "KB", "control-plane memory per connected proxy (istiod: xDS "
          "connection and proxy state; Linkerd: identity, policy and inbound watches)", _CP),
)

#: Every known parameter, by name.
PARAMETER_SPECS: Final[Mapping[str, ParameterSpec]] = MappingProxyType(
    {s.name: s for s in _SPECS}
)


def required_parameters(kind: Kind) -> tuple[str, ...]:
    """The parameter names a file of this kind must define: no more, no fewer."""
    return tuple(s.name for s in _SPECS if kind in s.kinds)


# --------------------------------------------------------------------------- file schema


class Parameter(BaseModel):
    """One parameter as written in a model file."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    value: float
    unit: str
    source: str
    note: str | None = None


class Anchor(BaseModel):
    """The configuration at which a file claims to reproduce published totals.

    Optional in a file; when present the test-suite checks the identity
    ``sum(request_cpu_us) * rps = vcpu_per_1000rps`` and the memory sum.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    source: str
    rps: float = Field(gt=0)
    request_bytes: int = Field(ge=0)
    response_bytes: int = Field(ge=0)
    mtls: bool
    connections: int = Field(ge=0)
    tls_connections: int = Field(ge=0)
    clusters: int = Field(ge=0)
    endpoints: int = Field(ge=0)
    vcpu_per_1000rps: float = Field(gt=0)
    memory_mb: float = Field(gt=0)
    note: str | None = None


_TOP_LEVEL: Final = ("kind", "describes", "measured_on", "anchor", "parameters")
_REQUIRED_TOP: Final = ("kind", "describes", "parameters")


# --------------------------------------------------------------------------- the accessor


@dataclass(frozen=True)
class ProxyCostModel:
    """A checked cost model, in explicit units: microseconds of CPU, KiB and MiB.

    Parameters a kind does not have (HTTP parsing for an L4 ztunnel, HBONE for a sidecar) are 0.0
    here because the mechanism does not exist in that proxy; the file may not define them.
    """

    kind: Kind
    describes: str
    measured_on: str | None
    path: str | None
    parameters: Mapping[str, Parameter] = field(repr=False)
    anchor: Anchor | None = field(default=None, repr=False)
    # -- raw values (read from ``parameters`` so they cannot drift apart)

    def value(self, name: str) -> float:
        """The value of a parameter; 0.0 for one that this kind of proxy does not have."""
        if name not in PARAMETER_SPECS:
            raise KeyError(f"unknown cost-model parameter {name!r}")
        p = self.parameters.get(name)
        return 0.0 if p is None else p.value

    def source(self, name: str) -> str:
        """Where a parameter's value came from (a citation or a measurement)."""
        p = self.parameters.get(name)
        if p is None:
            raise KeyError(f"{self.kind} model has no parameter {name!r}")
        return p.source

    @property
    def layer(self) -> Literal["L4", "L7"]:
        return "L4" if self.kind == "ztunnel" else "L7"

    @property
    def worker_threads(self) -> int:
        return int(self.value("worker_threads"))

    @property
    def hop_latency_us(self) -> float:
        """Non-CPU latency added per direction (once to the request, once to the response)."""
        return self.value("hop_latency_us")

    # -- CPU per request

    def request_cpu_us(
        self,
        request_bytes: int,
        response_bytes: int,
        *,
        mtls: bool,
        l7_filters: int = 0,
        wasm_filters: int = 0,
        rbac: bool = False,
    ) -> tuple[float, float, float]:
        """CPU for one proxied request: (request path, response path, after the response).

        The first two are on the request's critical path; the third (telemetry) runs on the same
        worker after the response has been written, so it delays the next request on that worker
        but not this one. Handshakes are not included (see :meth:`handshake_cpu_us`).

        ``l7_filters`` counts native filters beyond the default chain and ``wasm_filters`` Wasm
        filters; each is charged half on each path. ``rbac`` means authorization policies apply
        to this request (for ztunnel they are evaluated per connection instead, see
        :meth:`connection_open_cpu_us`).
        """
        if request_bytes < 0 or response_bytes < 0:
            raise ValueError("request_bytes and response_bytes must be >= 0")
        if l7_filters < 0 or wasm_filters < 0:
            raise ValueError("l7_filters and wasm_filters must be >= 0")
        if self.layer == "L4" and (l7_filters or wasm_filters):
            raise ValueError(f"{self.kind} is an L4 proxy: L7 and Wasm filters need a waypoint")
        if wasm_filters and "wasm_filter_us" not in self.parameters:
            raise ValueError(f"{self.kind} does not run Wasm filters")
        v = self.value
        per_kib = v("payload_cpu_us_per_kib")
        if mtls:
            per_kib += v("tls_legs") * v("tls_record_cpu_us_per_kib")
        # Work that is symmetric per exchange (socket I/O, HBONE framing, extra filters) is split
        # evenly: each direction does one read, one write and one frame.
        shared = (
            v("socket_io_us")
            + v("hbone_frame_us")
            + l7_filters * v("l7_filter_us")
            + wasm_filters * v("wasm_filter_us")
        ) / 2.0
        policy = v("rbac_us") if (rbac and self.layer == "L7") else 0.0
        req = shared + v("http_parse_request_us") + v("routing_us") + policy
        req += per_kib * request_bytes / KIB
        resp = shared + v("http_parse_response_us") + per_kib * response_bytes / KIB
        after = v("telemetry_us")
        return (req, resp, after)

    def vcpu_per_1000rps(
        self, request_bytes: int, response_bytes: int, *, mtls: bool, **options: Any
    ) -> float:
        """Steady-state vCPU at 1000 rps with pooled connections (handshakes amortised to ~0).

        1000 requests/s x total microseconds per request / 1e6 microseconds per CPU-second.
        """
        total = sum(self.request_cpu_us(request_bytes, response_bytes, mtls=mtls, **options))
        return 1000.0 * total / 1e6

    # -- CPU per connection

    def handshake_cpu_us(
        self,
        role: Literal["client", "server"],
        resumed: bool = False,
        *,
        mutual: bool = True,
    ) -> float:
        """CPU on one side of a TLS 1.3 handshake.

        Full handshake: key exchange + overhead, plus signing CertificateVerify if this side
        presents a certificate, plus verifying the peer's chain and CertificateVerify if the peer
        presents one. In mutual TLS (the meshes' case) both sides do both. A resumed handshake
        (PSK with ECDHE) costs ``tls_resumption_cpu_us`` on either side.
        """
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        v = self.value
        if resumed:
            return v("tls_resumption_cpu_us")
        total = v("tls_key_exchange_cpu_us") + v("tls_handshake_overhead_cpu_us")
        signs = mutual or role == "server"  # a server always authenticates itself
        verifies = mutual or role == "client"  # a client always checks the server
        if signs:
            total += v("tls_sign_cpu_us")
        if verifies:
            total += v("tls_cert_verify_cpu_us")
            total += v("tls_chain_verifications") * v("tls_chain_verify_cpu_us")
        return total

    def connection_open_cpu_us(self, *, rbac: bool = False) -> float:
        """Non-TLS CPU to open one proxied connection.

        ztunnel opens an HBONE CONNECT stream and, when policies exist, evaluates L4
        authorization. The L7 proxies' per-connection work beyond the TLS handshake is not
        separately modelled (no source), so it is 0.0 for them.
        """
        if self.kind != "ztunnel":
            return 0.0
        cost = self.value("hbone_stream_open_us")
        if rbac:
            cost += self.value("l4_rbac_us")
        return cost

    # -- memory

    def memory_mb(
        self,
        connections: int,
        clusters: int = 0,
        endpoints: int = 0,
        *,
        tls_connections: int = 0,
    ) -> float:
        """Resident memory in MiB for a proxy holding this state.

        ``connections`` counts every open connection (downstream, upstream, HBONE tunnels and
        tunnelled streams); ``tls_connections`` how many of them carry TLS; ``clusters`` and
        ``endpoints`` the configuration items in view (all of the mesh for an unscoped Envoy).
        """
        for name, n in (("connections", connections), ("clusters", clusters),
                        ("endpoints", endpoints), ("tls_connections", tls_connections)):
            if n < 0:
                raise ValueError(f"{name} must be >= 0")
        if tls_connections > connections:
            raise ValueError("tls_connections cannot exceed connections")
        v = self.value
        kb = (
            connections * v("connection_kb")
            + tls_connections * v("tls_connection_kb")
            + clusters * v("cluster_kb")
            + endpoints * v("endpoint_kb")
        )
        return v("base_memory_mb") + kb / KB_PER_MB


# --------------------------------------------------------------------------- locating files


def models_dir() -> Path:
    """The project's ``models/`` folder: ``$MESHSIM_MODELS_DIR`` or ``<repo>/models``."""
    env = os.environ.get("MESHSIM_MODELS_DIR")
    if env:
        return Path(env)
    # meshsim/models.py -> <repo>/models: the files ship next to the package in the repository.
    return Path(__file__).resolve().parent.parent / "models"


def model_names() -> list[str]:
    """Names accepted by :func:`load_model` (the ``models/*.yaml`` stems)."""
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    text = os.fspath(path_or_name)
    looks_like_path = (
        isinstance(path_or_name, Path)
        or os.sep in text
        or "/" in text
        or text.endswith((".yaml", ".yml"))
    )
    if looks_like_path:
        return Path(text)
    candidate = models_dir() / f"{text}.yaml"
    if not candidate.is_file():
        names = model_names()
        hint = _suggest(text, names)
        raise ModelError(
            [Problem(field="", message=f"no model named {text!r} in {models_dir()}; "
                     f"available: {', '.join(names) or 'none'}{hint}")],
            path=text,
        )
    return candidate


def load_model(path_or_name: str | os.PathLike[str]) -> ProxyCostModel:
    """Load and check a model: a bare name means ``models/<name>.yaml``, else a file path."""
    path = _resolve(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(
            [Problem(field="", message=f"cannot read model file: {exc}")], path=str(path)
        ) from None
    return parse_model(text, path=str(path))


@cache
def _cached(path: str, mtime_ns: int) -> ProxyCostModel:
    del mtime_ns  # part of the cache key only: an edited file is read again
    return load_model(Path(path))


def default_model(kind: Kind) -> ProxyCostModel:
    """The shipped model for a kind of proxy (see :data:`DEFAULT_MODEL_NAMES`)."""
    if kind not in DEFAULT_MODEL_NAMES:
        raise ValueError(f"unknown proxy kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = models_dir() / f"{DEFAULT_MODEL_NAMES[kind]}.yaml"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1
    model = _cached(str(path), mtime)
    if model.kind != kind:
        raise ModelError(
            [Problem(field="kind", message=f"expected {kind!r} for the default {kind} model, "
                     f"found {model.kind!r}", line=None)],
            path=str(path),
        )
    return model


# --------------------------------------------------------------------------- parsing


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class _Lines:
    """1-based lines of keys and values, by path, from PyYAML's node marks."""

    key: dict[tuple[str, ...], int] = field(default_factory=dict)
    value: dict[tuple[str, ...], int] = field(default_factory=dict)

    def of(self, path: tuple[str, ...], *, value: bool = False) -> int | None:
        # Walk up to the nearest known ancestor so every problem gets some line.
        while path:
            table = self.value if value else self.key
            if path in table:
                return table[path]
            if path in self.key:
                return self.key[path]
            path = path[:-1]
        return self.value.get((), None)


def _index(node: yaml.Node, path: tuple[str, ...], lines: _Lines,
           problems: list[Problem], seen_nodes: set[int] | None = None) -> None:
    # An alias reuses its anchor's node, so a self-referencing alias would recurse forever:
    # index each node once (its first path is where it was written).
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    lines.value.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            name = str(k.value)
            child = (*path, name)
            if name in seen:
                problems.append(Problem(field=".".join(child), line=k.start_mark.line + 1,
                                        message="duplicate key; each key may appear once"))
            seen.add(name)
            lines.key.setdefault(child, k.start_mark.line + 1)
            _index(v, child, lines, problems, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, str(i)), lines, problems, seen_nodes)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def _type_name(x: object) -> str:
    if x is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(x), type(x).__name__)


def parse_model(text: str, *, path: str | None = None) -> ProxyCostModel:
    """Check the text of a model file and return the model, or raise :class:`ModelError`.

    Every problem found is reported at once, each with its line and dotted field path.
    """
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ModelError([Problem(field="", message=f"not valid YAML: {reason}", line=line)],
                         path=path) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors can raise plain Python errors on odd scalars (e.g. huge ints).
        raise ModelError([Problem(field="", message=f"not valid YAML: {exc}")],
                         path=path) from None

    lines = _Lines()
    if root is not None:
        _index(root, (), lines, problems)
    if not isinstance(data, dict):
        raise ModelError(
            [Problem(field="", line=lines.of((), value=True),
                     message=f"expected a mapping with keys {', '.join(_REQUIRED_TOP)}, "
                     f"found {_type_name(data)}")],
            path=path,
        )

    def add(fpath: tuple[str, ...], message: str, *, value: bool = False) -> None:
        problems.append(Problem(field=_dotted(fpath), message=message,
                                line=lines.of(fpath, value=value)))

    for key in data:
        if str(key) not in _TOP_LEVEL:
            add((str(key),), f"unknown key; expected one of {', '.join(_TOP_LEVEL)}"
                f"{_suggest(str(key), _TOP_LEVEL)}")
    problems.extend(
        Problem(field=key, line=1,
                message=f"missing; every model file needs {', '.join(_REQUIRED_TOP)}")
        for key in _REQUIRED_TOP
        if key not in data
    )

    kind = data.get("kind")
    if "kind" in data and kind not in KINDS:
        add(("kind",), f"expected one of {', '.join(KINDS)}, found {kind!r}"
            f"{_suggest(str(kind), KINDS)}", value=True)
    for key in ("describes", "measured_on"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            add((key,), f"expected a non-empty string (product, version and setup), found "
                f"{_type_name(data[key])}", value=True)

    anchor: Anchor | None = None
    if "anchor" in data:
        if not isinstance(data["anchor"], dict):
            add(("anchor",), f"expected a mapping, found {_type_name(data['anchor'])}",
                value=True)
        else:
            anchor = _validate(Anchor, data["anchor"], ("anchor",), add)
            if anchor is not None and anchor.tls_connections > anchor.connections:
                add(("anchor", "tls_connections"), "cannot exceed anchor.connections",
                    value=True)
                anchor = None

    params: dict[str, Parameter] = {}
    raw_params = data.get("parameters")
    if "parameters" in data and not isinstance(raw_params, dict):
        add(("parameters",), f"expected a mapping of parameter names to "
            f"{{value, unit, source}}, found {_type_name(raw_params)}", value=True)
    elif isinstance(raw_params, dict):
        expected = required_parameters(kind) if kind in KINDS else tuple(PARAMETER_SPECS)
        for name, entry in raw_params.items():
            ppath = ("parameters", str(name))
            if str(name) not in expected:
                where = f"for kind {kind!r}" if kind in KINDS else "at all"
                known = str(name) in PARAMETER_SPECS
                msg = (f"not a parameter of a {kind} model" if known and kind in KINDS
                       else f"unknown parameter {where}")
                add(ppath, msg + _suggest(str(name), expected))
                continue
            param = _check_parameter(PARAMETER_SPECS[str(name)], entry, ppath, add)
            if param is not None:
                params[str(name)] = param
        if kind in KINDS:
            for name in expected:
                if name not in raw_params:
                    spec = PARAMETER_SPECS[name]
                    add(("parameters", name), f"missing; a {kind} model needs {name} "
                        f"({spec.meaning}, in {spec.unit})")

    if problems:
        problems.sort(key=lambda p: (p.line if p.line is not None else 0, p.field))
        raise ModelError(problems, path=path)
    assert kind in KINDS  # narrowed by the checks above
    return ProxyCostModel(
        kind=kind,
        describes=data["describes"],
        measured_on=data.get("measured_on"),
        path=path,
        parameters=MappingProxyType(params),
        anchor=anchor,
    )


def _validate(model: type[Any], raw: dict[Any, Any], base: tuple[str, ...],
              add: Any, skip: frozenset[str] = frozenset()) -> Any:
    """Validate with pydantic, turning each error into a Problem at the right line.

    ``skip`` names fields already reported by a clearer custom check.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            if loc and loc[0] in skip:
                continue
            fpath = (*base, *loc)
            if err["type"] == "missing":
                add(fpath, "missing")
            elif err["type"] == "extra_forbidden":
                fields = list(model.model_fields)
                add(fpath, f"unknown key; expected one of {', '.join(fields)}"
                    f"{_suggest(loc[-1] if loc else '', fields)}")
            else:
                got = err.get("input")
                add(fpath, f"{err['msg']}, found {_type_name(got)} {got!r}"[:300], value=True)
        return None


def _check_parameter(spec: ParameterSpec, entry: object, ppath: tuple[str, ...],
                     add: Any) -> Parameter | None:
    if not isinstance(entry, dict):
        add(ppath, f"expected a mapping {{value, unit, source, note?}}, found "
            f"{_type_name(entry)}", value=True)
        return None
    ok = True
    # Source first: principle 2 is the reason these files exist.
    src = entry.get("source")
    if "source" not in entry or not isinstance(src, str) or not src.strip():
        add((*ppath, "source"), "every parameter needs a non-empty source (a citation from "
            "reference/published-figures.md or a measurement)", value="source" in entry)
        ok = False
    param = _validate(Parameter, entry, ppath, add,
                      skip=frozenset() if ok else frozenset({"source"}))
    if param is None or not ok:
        return None
    if param.unit != spec.unit:
        add((*ppath, "unit"), f"expected unit {spec.unit!r} for {spec.name}, found "
            f"{param.unit!r}", value=True)
        ok = False
    value = param.value
    if not math.isfinite(value) or value < spec.minimum:
        add((*ppath, "value"), f"expected a number >= {spec.minimum:g} ({spec.unit}), found "
            f"{value!r}", value=True)
        ok = False
    if spec.integer and value != int(value):
        add((*ppath, "value"), f"expected a whole number of {spec.unit}, found {value!r}",
            value=True)
        ok = False
    return param if ok else None
