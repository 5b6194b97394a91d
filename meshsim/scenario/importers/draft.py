"""What the importers build before it becomes a scenario: services, calls, rules, notes.

Each importer (manifests, traces, metrics) adds to one :class:`Draft`; the scenario is
assembled from it at the end (:mod:`meshsim.scenario.importers.assemble`). Values are kept
as :class:`~meshsim.scenario.importers.writer.Noted` so the written file says where each came
from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from meshsim.scenario.importers.documents import Resource
from meshsim.scenario.importers.writer import Noted

_NAME_BAD = re.compile(r"[^a-z0-9-]+")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def scenario_name(text: str) -> str:
    """``text`` as a scenario name (an RFC 1123 label): lower case, digits and '-'."""
    name = _NAME_BAD.sub("-", text.lower()).strip("-")[:63].strip("-")
    return name or "imported"


def duration_ms(text: Any) -> float | None:
    """A Go/protobuf duration (``"1.5s"``, ``"300ms"``, ``"1m30s"``) in ms; None if not one."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_MS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0 or not math.isfinite(total):
        return None
    return total


@dataclass
class DraftVersion:
    name: str
    replicas: Noted
    workload: Resource
    labels: dict[str, str]
    resources: Noted | None = None
    """The app containers' requests and limits (a service's ``resources``)."""
    proxy_resources: Noted | None = None
    """The sidecar's, from its mesh's pod annotations (a service's ``proxy_resources``)."""


@dataclass
class DraftService:
    name: str
    namespace: str
    resource: Resource
    selector: dict[str, str]
    versions: list[DraftVersion] = field(default_factory=list)
    protocol: Noted | None = None

    @property
    def versioned(self) -> bool:
        return len(self.versions) > 1

    def version_for_labels(self, labels: dict[str, str]) -> DraftVersion | None:
        """The version whose pods carry all ``labels`` (a subset's or a Service's selector)."""
        found = [
            v for v in self.versions if all(v.labels.get(k) == val for k, val in labels.items())
        ]
        return found[0] if len(found) == 1 else None


@dataclass
class Draft:
    """Everything imported so far."""

    services: dict[str, DraftService] = field(default_factory=dict)
    clients: dict[str, Resource] = field(default_factory=dict)
    """Deployments that no Service selects: callers from inside the cluster (a load generator)."""
    meshes: set[str] = field(default_factory=set)
    mesh_notes: list[str] = field(default_factory=list)
    mesh_options: dict[str, dict[str, Noted]] = field(default_factory=dict)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    istio_policies: list[Any] = field(default_factory=list)
    linkerd_security: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    """Services that traffic enters the mesh at (an ingress route's backends), with the note."""
    calls: dict[tuple[str, str | None], list[Any]] = field(default_factory=dict)
    """(service, version or None for all) -> its calls (Noted call mappings)."""
    cpu_ms: dict[tuple[str, str | None], Noted] = field(default_factory=dict)
    response_bytes: dict[tuple[str, str | None], Noted] = field(default_factory=dict)
    cluster: dict[str, Noted] = field(default_factory=dict)
    """nodes, cores_per_node, memory_gb_per_node from Node objects, when given."""
    workloads: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def option(self, mesh: str, key: str, value: Any, note: str) -> None:
        self.mesh_options.setdefault(mesh, {})[key] = Noted(value, note)

    def resolve_host(self, host: Any, namespace: str | None) -> str | None:
        """The service a mesh host names (``reviews``, ``reviews.ns.svc.cluster.local``).

        A short name is looked up in ``namespace`` (the referring resource's), a qualified one
        in its own; a name found in one namespace only is taken from there.
        """
        if not isinstance(host, str) or not host or "*" in host:
            return None
        labels = host.split(".")
        ns = labels[1] if len(labels) > 1 else namespace
        same_name = [n for n, svc in self.services.items() if svc.resource.name == labels[0]]
        for name in same_name:
            if (self.services[name].resource.namespace or "default") == (ns or "default"):
                return name
        return same_name[0] if len(same_name) == 1 else None

    def service_for_labels(self, labels: dict[str, str], namespace: str | None) -> str | None:
        """The service whose pods carry all ``labels`` (a policy's workload selector)."""
        for name, svc in self.services.items():
            if namespace is not None and svc.namespace != namespace:
                continue
            if any(all(v.labels.get(k) == x for k, x in labels.items()) for v in svc.versions):
                return name
        return None


SHAPE_ERRORS = (TypeError, AttributeError, ValueError, KeyError, IndexError)
"""What reading a field of an unexpected type raises (a list where a mapping belongs, ...)."""


def shape_warning(draft: Draft, res: Resource, exc: Exception) -> None:
    """A resource with a field of an unexpected type is skipped and said so, never a traceback."""
    draft.warn(
        f"{res.origin()}: {res.ref} has a field of an unexpected type or value "
        f"({type(exc).__name__}: {str(exc)[:120]}); skipped"
    )
