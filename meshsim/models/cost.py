"""The accessor the simulator uses: parameters turned into CPU, latency and memory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meshsim.models.parameters import KB_PER_MB, KIB, PARAMETER_SPECS, Kind

# --------------------------------------------------------------------------- file schema


class ParameterRange(BaseModel):
    """The interval a parameter's value is uncertain over, and where its bounds come from.

    Written in a file as ``range: [low, high]`` with ``range_source`` beside it; the source names
    a citation for each bound, or says "derived bracket" and gives the derivation. A later step
    draws parameter sets over these intervals (:func:`meshsim.models.ranged_parameters`).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    low: float
    high: float
    source: str

    @property
    def width(self) -> float:
        return self.high - self.low

    def __contains__(self, x: object) -> bool:
        return isinstance(x, int | float) and self.low <= x <= self.high


class Parameter(BaseModel):
    """One parameter as written in a model file."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    value: float
    unit: str
    source: str
    note: str | None = None
    range: ParameterRange | None = None
    """Where the value may lie (None: the file gives no range; calibrated files may omit it)."""


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
    wakeups_per_request: float = Field(default=0.0, ge=0)
    """Idle-worker wake-ups per request at this configuration, as the simulator counts them
    (a file with ``wakeup_cpu_us`` splits the published total into per-request work and
    wake-ups; 0 for a file without)."""
    vcpu_range: list[float] | None = None
    """``[low, high]``: where the evidence puts the CPU total at this configuration (vCPU per
    1000 rps). The parameters' ranges say how the total may split; this says how large it may
    be, and a parameter-set draw holds each set's total inside it
    (:mod:`meshsim.models.samples`). The loader checks that it holds ``vcpu_per_1000rps`` and
    has a source."""
    vcpu_range_source: str | None = None
    """A citation for each bound of ``vcpu_range``, or "derived bracket" and the derivation."""
    note: str | None = None


# --------------------------------------------------------------------------- the accessor


MemoryTerms = tuple[float, float, float, float, float]
"""(fixed MiB, KB per connection, per TLS connection, per cluster, per endpoint)."""


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
    base: ProxyCostModel | None = field(default=None, repr=False, compare=False)
    """The model this one was made from by a run's own additions to its work (observability's
    access logs and spans, :func:`meshsim.sim.observability.with_after_work`), None for a
    file's model. Parameter sets are drawn over the file's model and its anchor
    (:func:`meshsim.models.drawn_parameters`), and the additions come on top of each set."""
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
    def request_cpu_cv(self) -> float:
        """Coefficient of variation of a request's CPU (0.0: fixed, the parameter is optional)."""
        return self.value("request_cpu_cv")

    @property
    def cpu_drift(self) -> tuple[float, float] | None:
        """The CPU cost's drift as (cv, time constant in seconds); None when the model has
        none (both parameters are optional, and either at 0 turns it off)."""
        cv, ms = self.value("cpu_drift_cv"), self.value("cpu_drift_ms")
        return (cv, ms * 1e-3) if cv > 0.0 and ms > 0.0 else None

    @property
    def wakeup_cpu_us(self) -> float:
        """CPU per wake-up of an idle worker (0.0: not modelled, the parameter is optional)."""
        return self.value("wakeup_cpu_us")

    @property
    def wakeup_cache_decay_ms(self) -> float:
        """Time constant of a sleeping worker's caches cooling (0.0: wake-ups cost the same
        however long the sleep; the parameter is optional)."""
        return self.value("wakeup_cache_decay_ms")

    @property
    def wakeup_cpu_after_share(self) -> float:
        """The share of a wake-up's CPU spent after the woken work, off the request's path
        (0.0: all before it; the parameter is optional)."""
        return self.value("wakeup_cpu_after_share")

    @property
    def preemption_cpu_us(self) -> float:
        """CPU of a worker resuming after a preemption (0.0: not modelled)."""
        return self.value("preemption_cpu_us")

    @property
    def wakeup_latency_us(self) -> float:
        """Latency to run a worker a message woke (0.0: in ``hop_latency_us``, if anywhere)."""
        return self.value("wakeup_latency_us")

    @property
    def tcp_connection_cpu_us(self) -> float:
        """CPU per TCP connection end, charged at open (0.0: not modelled)."""
        return self.value("tcp_connection_cpu_us")

    @property
    def tls_session_tickets(self) -> int:
        """TLS session tickets the client side keeps per upstream cluster (0: it never
        resumes; the parameter is optional)."""
        return int(self.value("tls_session_tickets"))

    @property
    def tls_server_resumption(self) -> bool:
        """Whether the server side resumes a session from a ticket it issued (False: every
        handshake it serves is full; the parameter is optional)."""
        return self.value("tls_server_resumption") >= 1.0

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
        tls_fixed = 0.0
        if mtls:
            per_kib += v("tls_legs") * v("tls_record_cpu_us_per_kib")
            tls_fixed = v("tls_legs") * v("tls_request_cpu_us")
        # Work that is symmetric per exchange (socket I/O, HBONE framing, extra filters) is split
        # evenly: each direction does one read, one write and one frame.
        shared = (
            v("socket_io_us")
            + v("hbone_frame_us")
            + l7_filters * v("l7_filter_us")
            + wasm_filters * v("wasm_filter_us")
            + tls_fixed
        ) / 2.0
        buffered = v("buffered_request_max_kib")
        if buffered > 0.0 and request_bytes > buffered * KIB:
            # A body too large to hold whole takes the proxy's streaming path: its extra
            # trips through the event loop are per exchange, like the socket I/O above.
            shared += v("streamed_request_cpu_us") / 2.0
        policy = v("rbac_us") if (rbac and self.layer == "L7") else 0.0
        req = shared + v("http_parse_request_us") + v("routing_us") + policy
        req += per_kib * request_bytes / KIB
        resp = shared + v("http_parse_response_us") + per_kib * response_bytes / KIB
        after = v("telemetry_us")
        return (req, resp, after)

    def vcpu_per_1000rps(
        self,
        request_bytes: int,
        response_bytes: int,
        *,
        mtls: bool,
        wakeups_per_request: float = 0.0,
        **options: Any,
    ) -> float:
        """Steady-state vCPU at 1000 rps with pooled connections (handshakes amortised to ~0).

        1000 requests/s x total microseconds per request / 1e6 microseconds per CPU-second.
        ``wakeups_per_request`` is how many idle-worker wake-ups a request costs on average at
        the load in question (the simulator finds it; it falls as load rises, which is what
        makes Envoy's CPU sub-linear in rate); each costs ``wakeup_cpu_us``.
        """
        if wakeups_per_request < 0:
            raise ValueError("wakeups_per_request must be >= 0")
        total = sum(self.request_cpu_us(request_bytes, response_bytes, mtls=mtls, **options))
        total += wakeups_per_request * self.wakeup_cpu_us
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
        """ztunnel's CPU per proxied application connection beyond TCP and TLS.

        ztunnel opens an HBONE CONNECT stream and, when policies exist, evaluates L4
        authorization. The TCP connect/accept itself is :attr:`tcp_connection_cpu_us`, charged
        by the simulator on every connection end; L7 proxies have nothing beyond it, so this
        is 0.0 for them.
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
        if min(connections, clusters, endpoints, tls_connections) < 0:
            # One comparison on the common path (the OOM watch calls this for every sidecar
            # every simulated second); the name only when something is wrong.
            for name, n in (
                ("connections", connections),
                ("clusters", clusters),
                ("endpoints", endpoints),
                ("tls_connections", tls_connections),
            ):
                if n < 0:
                    raise ValueError(f"{name} must be >= 0")
        if tls_connections > connections:
            raise ValueError("tls_connections cannot exceed connections")
        fixed, connection_kb, tls_kb, cluster_kb, endpoint_kb = self.memory_terms
        kb = (
            connections * connection_kb
            + tls_connections * tls_kb
            + clusters * cluster_kb
            + endpoints * endpoint_kb
        )
        return fixed + kb / KB_PER_MB

    @cached_property
    def memory_terms(self) -> MemoryTerms:
        """The parameters :meth:`memory_mb` combines, read once per model: (fixed MiB, KB per
        connection, per TLS connection, per cluster, per endpoint). The OOM watch evaluates
        memory_mb for every sidecar every simulated second."""
        v = self.value
        return (
            v("base_memory_mb") + v("agent_memory_mb"),
            v("connection_kb"),
            v("tls_connection_kb"),
            v("cluster_kb"),
            v("endpoint_kb"),
        )

    # -- parameter sets

    def with_values(self, values: Mapping[str, float]) -> ProxyCostModel:
        """This model with some parameter values replaced (a drawn parameter set).

        ``values`` maps bare parameter names to new values; each must be a parameter of this
        file and lie inside its range when it has one. The sources and ranges are kept, so the
        result still says where each bound came from.
        """
        params = dict(self.parameters)
        for name, x in values.items():
            p = params.get(name)
            if p is None:
                raise KeyError(f"{self.kind} model has no parameter {name!r}")
            if not math.isfinite(x):
                raise ValueError(f"{name}: value must be finite, not {x!r}")
            if p.range is not None and x not in p.range:
                raise ValueError(
                    f"{name}: {x:g} is outside its range [{p.range.low:g}, {p.range.high:g}]"
                )
            if PARAMETER_SPECS[name].integer and x != int(x):
                raise ValueError(f"{name}: expected a whole number, not {x!r}")
            params[name] = p.model_copy(update={"value": float(x)})
        return replace(self, parameters=MappingProxyType(params))
