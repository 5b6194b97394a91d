"""The draft -> a scenario tree (with notes), checked by the scenario loader.

What the inputs do not say is filled with a stated assumption, noted on the value: the run's
length, the cluster's nodes, a workload's rate when no metrics or traces give one.
"""

from __future__ import annotations

import math
from typing import Any

from meshsim.scenario.importers.draft import Draft, DraftService
from meshsim.scenario.importers.writer import Noted
from meshsim.scenario.model import MESH_NAMES

ASSUMED_RATE_RPS = 100.0
PODS_PER_NODE = 10
"""Assumed packing when the manifests do not say how many nodes run them."""


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Noted) else value


def _meshes(draft: Draft, meshes: list[str] | None) -> Noted:
    if meshes:
        return Noted(
            ["none", *[m for m in meshes if m != "none"]],
            "--mesh (the baseline 'none' first, so every mesh is compared with no mesh)",
        )
    found = [m for m in MESH_NAMES if m in draft.meshes]
    if found:
        return Noted(["none", *found], "; ".join(dict.fromkeys(draft.mesh_notes)))
    return Noted(["none", "istio", "linkerd"], "assumed: no injection labels or annotations found")


def _service(svc: DraftService, draft: Draft) -> Noted:
    out: dict[str, Any] = {"name": Noted(svc.name, svc.resource.origin("metadata", "name"))}
    if svc.namespace != "default":
        out["namespace"] = svc.namespace
    version_calls = {v.name: draft.calls.get((svc.name, v.name)) for v in svc.versions}
    shared = draft.calls.get((svc.name, None))
    if svc.versioned:
        versions = []
        for v in svc.versions:
            entry: dict[str, Any] = {
                "name": Noted(v.name, v.workload.origin("spec", "template", "metadata", "labels"))
            }
            entry["replicas"] = v.replicas
            cpu = draft.cpu_ms.get((svc.name, v.name))
            if cpu is not None:
                entry["cpu_ms"] = cpu
            size = draft.response_bytes.get((svc.name, v.name))
            if size is not None:
                entry["response_bytes"] = size
            if version_calls[v.name] is not None and shared is None:
                entry["calls"] = version_calls[v.name] or []
            versions.append(entry)
        out["versions"] = versions
    else:
        only = svc.versions[0]
        out["replicas"] = only.replicas
        if shared is None:
            shared = version_calls[only.name]
    if svc.protocol is not None:
        out["protocol"] = svc.protocol
    cpu = draft.cpu_ms.get((svc.name, None))
    if cpu is None and not svc.versioned:
        cpu = draft.cpu_ms.get((svc.name, svc.versions[0].name))
    if cpu is not None:
        out["cpu_ms"] = cpu
    size = draft.response_bytes.get((svc.name, None))
    if size is not None:
        out["response_bytes"] = size
    if shared:
        out["calls"] = shared
    for key in ("resources", "proxy_resources"):
        chosen = _per_service(svc, key, draft)
        if chosen is not None:
            out[key] = chosen
    return Noted(
        out, f"{svc.resource.origin()} selects " + ", ".join(v.workload.ref for v in svc.versions)
    )


def _per_service(svc: DraftService, key: str, draft: Draft) -> Noted | None:
    """A service's ``resources`` or ``proxy_resources``: one per service in the scenario, so
    its first version's, with a warning where the versions' pods differ."""
    given: list[Noted | None] = [getattr(v, key) for v in svc.versions]
    first = next((i for i, g in enumerate(given) if g is not None), None)
    if first is None:
        return None
    chosen = given[first]
    assert chosen is not None
    if any(g is None or g.value != chosen.value for g in given):
        draft.warn(
            f"{svc.resource.origin()}: the versions of {svc.name} set different {key}; the "
            f"scenario has one per service (kept {svc.versions[first].workload.ref}'s)"
        )
    return chosen


def _callees(draft: Draft) -> set[str]:
    out = set()
    for calls in draft.calls.values():
        for c in calls:
            out.add(_plain(_plain(c)["service"]))
    return out


def _workloads(draft: Draft) -> list[Any]:
    if draft.workloads:
        return draft.workloads
    targets: dict[str, str] = dict(draft.entries)
    if not targets:
        called = _callees(draft)
        roots = [s for s in draft.services if s not in called]
        for s in roots or list(draft.services)[:1]:
            targets[s] = "assumed: no ingress route or trace root names an entry point; " + (
                "a service nothing calls" if draft.calls else "no call graph was imported"
            )
    draft.warn(
        "no metrics or traces give the clients' rates: each workload sends an assumed "
        f"{ASSUMED_RATE_RPS:g} rps (give --metrics or --traces, or edit rate_rps)"
    )
    out = []
    for target, note in targets.items():
        out.append(
            {
                "name": Noted(f"{target}-clients", note),
                "target": target,
                "rate_rps": Noted(ASSUMED_RATE_RPS, "assumed: no metrics or traces give a rate"),
            }
        )
    return out


def assemble(draft: Draft, *, name: str, meshes: list[str] | None = None) -> dict[str, Any]:
    """The scenario tree: plain data with :class:`Noted` values, ready for the writer."""
    if not draft.services:
        return {}
    mesh_list = _meshes(draft, meshes)
    pods = sum(_plain(v.replicas) for s in draft.services.values() for v in s.versions)
    tree: dict[str, Any] = {
        "meshsim": 1,
        "name": name,
        "description": "Imported by meshsim import; every generated value says where it came from.",
        "seed": 1,
        "duration_s": Noted(60, "assumed: long enough for stable p99 at tens of rps and more"),
        "warmup_s": Noted(5, "assumed"),
        "meshes": mesh_list,
        "cluster": draft.cluster
        or {
            "nodes": Noted(
                max(1, math.ceil(pods / PODS_PER_NODE)),
                f"assumed: {pods} pods at about {PODS_PER_NODE} per node (give the Node objects, "
                "kubectl get nodes -o yaml, for the real ones)",
            )
        },
        "services": [_service(s, draft) for s in draft.services.values()],
    }
    tree["workloads"] = _workloads(draft)
    if draft.traffic:
        tree["traffic"] = draft.traffic
        emulate = any("fault" in r or "mirror" in r for r in draft.traffic)
        if emulate and "linkerd" in _plain(mesh_list):
            draft.option(
                "linkerd",
                "unsupported",
                "emulate",
                "Linkerd has no fault injection or mirroring: the imported Istio rules "
                "are applied in Linkerd's client proxy and the run says EMULATED",
            )
    options: dict[str, Any] = {}
    for mesh, opts in draft.mesh_options.items():
        options[mesh] = dict(opts)
    if options:
        tree["mesh_options"] = options
    security: dict[str, Any] = {}
    if draft.istio_policies:
        security["istio"] = {"authorization_policies": draft.istio_policies}
    if draft.linkerd_security:
        security["linkerd"] = draft.linkerd_security
    if security:
        tree["security"] = security
    return tree
