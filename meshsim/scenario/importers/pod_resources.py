"""A workload's CPU and memory requests and limits -> a service's ``resources`` and
``proxy_resources``.

- The app: the pod template's containers' ``resources`` (CPU and memory; other resources
  such as ``ephemeral-storage`` or GPUs are not modelled). The scenario has one app container
  per pod, so several containers are added up: their requests, and their limits where every
  container sets one (a container without a limit leaves the pod's use unbounded, so no limit
  is kept for that resource).
- The sidecar: Istio's ``sidecar.istio.io/proxyCPU``, ``proxyCPULimit``, ``proxyMemory`` and
  ``proxyMemoryLimit`` on the pod template, and Linkerd's ``config.linkerd.io/
  proxy-cpu-request``, ``proxy-cpu-limit``, ``proxy-memory-request`` and
  ``proxy-memory-limit``. Istio's injection template writes the annotated values *instead of*
  global.proxy.resources as soon as one of the four is set (a pod that sets only
  ``proxyCPU`` gets no limits); Linkerd's injector takes each annotation over its own field
  of the chart's proxy.resources (none by default), which the scenario does too
  (:meth:`~meshsim.scenario.options.MeshOptions.sidecar_resources`).

Quantities the scenario loader would refuse (a request above its limit, an unreadable
quantity) are left out with a warning naming the manifest line.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError

from meshsim.scenario.importers.documents import Resource
from meshsim.scenario.importers.draft import Draft
from meshsim.scenario.importers.writer import Noted
from meshsim.scenario.loader import explain_error
from meshsim.scenario.resources import Resources, megabytes, millicores

PROXY_ANNOTATIONS: Final = {
    "istio": {
        "sidecar.istio.io/proxyCPU": ("requests", "cpu"),
        "sidecar.istio.io/proxyCPULimit": ("limits", "cpu"),
        "sidecar.istio.io/proxyMemory": ("requests", "memory"),
        "sidecar.istio.io/proxyMemoryLimit": ("limits", "memory"),
    },
    "linkerd": {
        "config.linkerd.io/proxy-cpu-request": ("requests", "cpu"),
        "config.linkerd.io/proxy-cpu-limit": ("limits", "cpu"),
        "config.linkerd.io/proxy-memory-request": ("requests", "memory"),
        "config.linkerd.io/proxy-memory-limit": ("limits", "memory"),
    },
}
"""Each mesh's per-pod annotations for its sidecar's resources (docs/mesh-semantics.md §10.4)."""
INJECTED: Final = frozenset({"istio-proxy", "linkerd-proxy", "istio-init", "linkerd-init"})
"""Containers an injector adds (in manifests read back from a cluster): not the app."""
_KINDS: Final = ("requests", "limits")
_RESOURCES: Final = ("cpu", "memory")
_CONTAINERS: Final = ("spec", "template", "spec", "containers")
_ANNOTATIONS: Final = ("spec", "template", "metadata", "annotations")


def _checked(draft: Draft, tree: dict[str, dict[str, Any]], where: str) -> dict[str, Any] | None:
    """``tree`` if the scenario loader takes it as ``resources``, else None and a warning."""
    try:
        Resources.model_validate(tree)
    except ValidationError as exc:
        reason = "; ".join(explain_error(e) for e in exc.errors())
        draft.warn(f"{where}: {reason}; left out of the scenario")
        return None
    return tree


def _quantities(value: Any) -> dict[str, Any]:
    """The CPU and memory of a ``requests`` or ``limits`` mapping."""
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in _RESOURCES if value.get(k) is not None}


def _added(values: list[Any], resource: str) -> str:
    """Several containers' quantities of one resource as one (ValueError: one is unreadable)."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError(f"{v!r} is not a {resource} quantity")
    if resource == "cpu":
        return f"{round(sum(millicores(v) for v in values))}m"
    return str(round(sum(megabytes(v) for v in values) * 1e6))


def app_resources(draft: Draft, workload: Resource) -> Noted | None:
    """The app containers' requests and limits as a service's ``resources`` (None: none set)."""
    containers = workload.get(*_CONTAINERS, default=[])
    apps = [
        (i, c)
        for i, c in enumerate(containers if isinstance(containers, list) else [])
        if isinstance(c, dict) and not (isinstance(c.get("name"), str) and c["name"] in INJECTED)
    ]
    per: list[dict[str, dict[str, Any]]] = []
    for _, c in apps:
        res = c.get("resources")
        res = res if isinstance(res, dict) else {}
        per.append({kind: _quantities(res.get(kind)) for kind in _KINDS})
    if not any(q for p in per for q in p.values()):
        return None
    where = workload.origin(*_CONTAINERS, apps[0][0], "resources")
    if len(apps) == 1:
        only = {kind: q for kind, q in per[0].items() if q}
        checked = _checked(draft, only, where)
        return None if checked is None else Noted(checked, where)
    tree: dict[str, dict[str, Any]] = {}
    for kind in _KINDS:
        out: dict[str, str] = {}
        for resource in _RESOURCES:
            given = [p[kind][resource] for p in per if resource in p[kind]]
            # A limit binds the pod only if every container has one.
            if not given or (kind == "limits" and len(given) < len(per)):
                continue
            try:
                out[resource] = _added(given, resource)
            except ValueError as exc:
                draft.warn(f"{where}: {exc}; {kind}.{resource} left out of the scenario")
        if out:
            tree[kind] = out
    note = f"{where}: the {len(apps)} app containers' added up"
    checked = _checked(draft, tree, where)
    return None if checked is None else Noted(checked, note)


def proxy_resources(draft: Draft, workload: Resource, annotations: dict[str, str]) -> Noted | None:
    """The sidecar's requests and limits from its mesh's pod annotations (None: none set)."""
    found: list[tuple[str, dict[str, dict[str, str]], str]] = []
    for mesh, keys in PROXY_ANNOTATIONS.items():
        tree: dict[str, dict[str, str]] = {}
        for key, (kind, resource) in keys.items():
            if key in annotations:
                tree.setdefault(kind, {})[resource] = annotations[key]
        if tree:
            names = ", ".join(k for k in keys if k in annotations)
            found.append((mesh, tree, f"{workload.origin(*_ANNOTATIONS)} {names}"))
    if not found:
        return None
    mesh, tree, where = found[0]
    if len(found) > 1 and found[1][1] != tree:
        draft.warn(
            f"{workload.origin(*_ANNOTATIONS)}: Istio's and Linkerd's proxy resource "
            "annotations differ; the scenario has one proxy_resources per service (kept "
            "Istio's)"
        )
    checked = _checked(draft, tree, where)
    return None if checked is None else Noted(checked, f"{where} ({mesh}'s injector)")
