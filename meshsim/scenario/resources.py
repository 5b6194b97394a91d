"""Pod resources as Kubernetes states them: CPU and memory requests and limits.

``resources: {requests: {cpu, memory}, limits: {cpu, memory}}`` on a service (its app
container), under ``mesh_options.<mesh>.proxy_resources`` (its sidecars) and under
``mesh_options.istio-ambient.ztunnel_resources`` / ``waypoint_resources``, with quantities
in Kubernetes' notation: CPU as cores (``2``, ``0.5``) or millicores (``"100m"``), memory as
bytes with a suffix (``"128Mi"``, ``"1Gi"``, ``"500M"``). How the simulator runs them (CPU
weights from requests, CFS bandwidth control from CPU limits, OOM kills from memory limits)
is :mod:`meshsim.sim.cpu`; the mesh defaults are in docs/mesh-semantics.md §10.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from meshsim.scenario.base import Spec

MAX_MILLICORES = 1_024_000
"""1,024 cores: the largest node the format allows (MAX_CORES_PER_NODE)."""
MAX_MEMORY_MB = 1e9

_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1.0,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


def millicores(value: str | int | float) -> float:
    """A Kubernetes CPU quantity in millicores: ``"100m"`` -> 100, ``2`` -> 2000."""
    if isinstance(value, bool):
        raise ValueError("a CPU quantity is a number of cores or a string like '100m'")
    if isinstance(value, int | float):
        m = float(value) * 1000.0
    else:
        match = _CPU.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a CPU quantity (cores like 2 or 0.5, or '100m')")
        m = float(match.group(1)) * (1.0 if match.group(2) else 1000.0)
    if not 0.0 < m <= MAX_MILLICORES:
        raise ValueError(f"{value!r}: a CPU quantity must be above 0 and at most 1024 cores")
    return m


def megabytes(value: str | int | float) -> float:
    """A Kubernetes memory quantity in MB (10^6 bytes): ``"128Mi"`` -> 134.2."""
    if isinstance(value, bool):
        raise ValueError("a memory quantity is bytes or a string like '128Mi'")
    if isinstance(value, int | float):
        nbytes = float(value)
    else:
        match = _MEMORY.match(value.strip())
        if match is None:
            raise ValueError(
                f"{value!r} is not a memory quantity (bytes, or '128Mi', '1Gi', '500M')"
            )
        nbytes = float(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    mb = nbytes / 1e6
    if not 0.0 < mb <= MAX_MEMORY_MB:
        raise ValueError(f"{value!r}: a memory quantity must be above 0 and at most 1 PB")
    return mb


Quantity = Annotated[str | int | float, Field(union_mode="left_to_right")]


class Quantities(Spec):
    """CPU and memory, each optional."""

    cpu: Quantity | None = Field(None, description="Cores (2, 0.5) or millicores ('100m').")
    memory: Quantity | None = Field(None, description="Bytes, or '128Mi', '1Gi', '500M'.")

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str | int | float | None) -> str | int | float | None:
        if v is not None:
            millicores(v)
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | float | None) -> str | int | float | None:
        if v is not None:
            megabytes(v)
        return v

    @property
    def cpu_m(self) -> float | None:
        return None if self.cpu is None else millicores(self.cpu)

    @property
    def memory_mb(self) -> float | None:
        return None if self.memory is None else megabytes(self.memory)


class Resources(Spec):
    """A container's ``resources:`` as in a Kubernetes pod spec."""

    requests: Quantities = Field(
        default_factory=Quantities,
        description="CPU request sets the container's CPU weight (cpu.weight) on its node.",
    )
    limits: Quantities = Field(
        default_factory=Quantities,
        description="CPU limit = CFS bandwidth quota per cluster.cfs_period_ms; a proxy "
        "whose modelled memory passes the memory limit is OOM-killed and restarted.",
    )

    @model_validator(mode="after")
    def _request_within_limit(self) -> Resources:
        # The API server refuses such a pod ("must be less than or equal to cpu limit").
        for name, request, limit in (
            ("cpu", self.requests.cpu_m, self.limits.cpu_m),
            ("memory", self.requests.memory_mb, self.limits.memory_mb),
        ):
            if request is not None and limit is not None and request > limit:
                raise ValueError(
                    f"requests.{name} {getattr(self.requests, name)!r} is above "
                    f"limits.{name} {getattr(self.limits, name)!r}: Kubernetes refuses a "
                    "request above its limit"
                )
        return self

    @property
    def cpu_request_m(self) -> float | None:
        """The CPU request; Kubernetes sets it to the limit when only a limit is given."""
        return self.requests.cpu_m if self.requests.cpu is not None else self.limits.cpu_m


ISTIO_PROXY_RESOURCES = Resources(
    requests=Quantities(cpu="100m", memory="128Mi"),
    limits=Quantities(cpu="2000m", memory="1024Mi"),
)
"""Istio's global.proxy.resources (docs/mesh-semantics.md §10.1), the sidecars'."""
WAYPOINT_RESOURCES = Resources(
    requests=Quantities(cpu="100m", memory="128Mi"),
    limits=Quantities(cpu="2000m", memory="1024Mi"),
)
"""Istio's global.waypoint.resources, a waypoint deployment's (docs/mesh-semantics.md §10.4):
the sidecars' values, but set apart from them, so changing one leaves the other."""
ZTUNNEL_RESOURCES = Resources(requests=Quantities(cpu="200m", memory="512Mi"))
"""The ztunnel chart's resources: requests 200m / 512Mi, no limits
(manifests/charts/ztunnel/values.yaml; docs/mesh-semantics.md §10.4)."""
ISTIO_GATEWAY_RESOURCES = Resources(
    requests=Quantities(cpu="100m", memory="128Mi"),
    limits=Quantities(cpu="2000m", memory="1024Mi"),
)
"""Istio's gateway chart's resources (manifests/charts/gateway/values.yaml): an ingress
gateway's Envoy container (docs/mesh-semantics.md §10.4)."""
INGRESS_NGINX_RESOURCES = Resources(requests=Quantities(cpu="100m", memory="90Mi"))
"""The ingress-nginx chart's controller resources (controller.resources: requests 100m /
90Mi, no limits): the ingress controller in front of Linkerd."""
NO_RESOURCES = Resources()
"""Linkerd's proxy has none unless config.linkerd.io/proxy-cpu-request etc. are set."""
CILIUM_ENVOY_RESOURCES = Resources()
"""The Cilium chart's ``envoy.resources``: none (``{}``), the cilium-envoy DaemonSet's
container on each node (docs/mesh-semantics.md §10.4)."""


def envoy_concurrency(resources: Resources, allocatable_cpu_m: float) -> int:
    """The worker threads pilot-agent gives the Envoy of an Istio sidecar or waypoint whose
    ProxyConfig leaves ``concurrency`` unset: ``ISTIO_CPU_LIMIT``, the container's
    ``limits.cpu`` through the downward API (divisor 1: whole cores, rounded up), so 2 for
    Istio's default 2000m, 1 for 500m, 3 for 2500m. Without a CPU limit the downward API
    falls back to the node's allocatable CPU, and Envoy runs a worker per allocatable core
    (docs/mesh-semantics.md §10.1)."""
    limit = resources.limits.cpu_m
    # Kubernetes keeps CPU quantities to the millicore; rounding first keeps 2.0 cores, read
    # as 2000.0000000000002 m, at 2.
    millis = round(limit if limit is not None else allocatable_cpu_m)
    return max(1, -(-millis // 1000))


class Allocatable(Quantities):
    """What a node offers pods (Kubernetes' node allocatable); default: all of it. The same
    quantities, checked the same way, as a container's requests and limits."""

    cpu: Quantity | None = Field(None, description="Default: cores_per_node.")
    memory: Quantity | None = Field(None, description="Default: memory_gb_per_node.")
