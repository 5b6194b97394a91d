"""Kubernetes objects -> services, versions, replicas, protocols and which meshes are on.

- A Service becomes a scenario service; the Deployments and StatefulSets whose pod labels its
  selector matches become its versions (named by the pod label ``version``, Istio's sample
  convention) or, when there is one, its replicas. A workload no Service selects is a caller
  from inside the cluster (a load generator), kept for the call graph.
- ``spec.replicas`` (Kubernetes' default 1); a HorizontalPodAutoscaler's range is noted and its
  ``minReplicas`` used when the workload leaves replicas to it: the scenario format has no
  autoscaler.
- The protocol comes from the Service port's ``appProtocol`` or name prefix (Istio's explicit
  protocol selection: ``grpc``, ``http2``, ``http``).
- Meshes: Namespace labels ``istio-injection: enabled`` (Istio sidecars),
  ``istio.io/dataplane-mode: ambient`` (ambient), the ``linkerd.io/inject: enabled``
  annotation (Linkerd), and the same switches on pod templates. A Service (or its
  Namespace) labelled ``istio.io/use-waypoint`` is behind a waypoint under ambient
  (``mesh_options.istio-ambient.waypoints``); one annotated ``service.cilium.io/lb-l7:
  enabled`` is balanced by Cilium's node Envoy (``mesh_options.cilium.lb_l7_services``).
- Proxy workers: ``proxy.istio.io/config`` ``concurrency``. Linkerd's proxy keeps its
  runtime's one worker whatever ``config.linkerd.io/proxy-cpu-limit`` says (current Linkerd;
  older releases sized the runtime from it, which a warning spells out).
- Containers' requests and limits become the service's ``resources``, and the sidecar's from
  its mesh's pod annotations its ``proxy_resources``
  (:mod:`meshsim.scenario.importers.pod_resources`): requests weigh the pods on their node's
  cores under ``cluster.scheduler: cfs``, CPU limits throttle and memory limits OOM-kill. The
  simulator still charges the CPU each request uses, not what a pod requests (``meshsim size``
  compares the two).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from meshsim.scenario.importers.documents import Manifests, Resource
from meshsim.scenario.importers.draft import (
    SHAPE_ERRORS,
    Draft,
    DraftService,
    DraftVersion,
    scenario_name,
    shape_warning,
)
from meshsim.scenario.importers.pod_resources import app_resources, proxy_resources
from meshsim.scenario.importers.writer import Noted

KINDS = {
    "Namespace",
    "Service",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Node",
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def cpu_cores(text: Any) -> float | None:
    """A Kubernetes CPU quantity (``"500m"``, ``"2"``, ``1.5``) in cores; None if not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text) if math.isfinite(text) and text >= 0 else None
    if not isinstance(text, str):
        return None
    s = text.strip()
    try:
        value = float(s[:-1]) / 1000 if s.endswith("m") else float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _protocol(svc: Resource) -> Noted | None:
    ports = svc.get("spec", "ports", default=[])
    if not isinstance(ports, list):
        return None
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        for key in ("appProtocol", "name"):
            text = str(port.get(key, "")).lower()
            proto = None
            if text.startswith(("grpc",)) and not text.startswith("grpc-web"):
                proto = "grpc"
            elif text.startswith(("http2", "h2c", "kubernetes.io/h2c")):
                proto = "http2"
            elif text.startswith("http"):
                proto = "http1"
            if proto is not None:
                return Noted(proto, svc.origin("spec", "ports", i, key))
    return None


USE_WAYPOINT = "istio.io/use-waypoint"


def _listed(draft: Draft, mesh: str, key: str, name: str, where: str) -> None:
    """Add service ``name`` to the list option ``mesh_options.<mesh>.<key>``, its note the
    places each name came from."""
    held = draft.mesh_options.get(mesh, {}).get(key)
    if held is not None and name in held.value:
        return
    names = [*held.value, name] if held is not None else [name]
    draft.option(mesh, key, names, where if held is None else f"{held.note}; {where}")


def _service_options(
    draft: Draft, svc: Resource, name: str, namespace_waypoints: dict[str, str]
) -> None:
    """What a Service's own labels and annotations switch on: ambient's waypoint for it
    (``istio.io/use-waypoint`` on it or on its Namespace; ``none`` opts out) and Cilium's
    proxy load balancing (``service.cilium.io/lb-l7: enabled``)."""
    labels = _labels(svc.get("metadata", "labels"))
    waypoint = labels.get(USE_WAYPOINT)
    if waypoint is not None and waypoint != "none":
        _listed(draft, "istio-ambient", "waypoints", name,
                svc.origin("metadata", "labels", USE_WAYPOINT))  # fmt: skip
    elif waypoint is None and (svc.namespace or "default") in namespace_waypoints:
        _listed(draft, "istio-ambient", "waypoints", name,
                namespace_waypoints[svc.namespace or "default"])  # fmt: skip
    annotations = _labels(svc.get("metadata", "annotations"))
    if annotations.get("service.cilium.io/lb-l7") == "enabled":
        _listed(draft, "cilium", "lb_l7_services", name,
                svc.origin("metadata", "annotations", "service.cilium.io/lb-l7"))  # fmt: skip


def _hpa_for(manifests: Manifests, workload: Resource) -> Resource | None:
    if manifests.hpas is None:
        manifests.hpas = {}
        for hpa in manifests.of("HorizontalPodAutoscaler"):
            ref = hpa.get("spec", "scaleTargetRef", default={})
            if isinstance(ref, dict):
                key = (hpa.namespace or "default", str(ref.get("kind")), str(ref.get("name")))
                manifests.hpas.setdefault(key, hpa)
    return manifests.hpas.get((workload.namespace or "default", workload.kind, workload.name))


def _replicas(manifests: Manifests, workload: Resource, draft: Draft) -> Noted:
    hpa = _hpa_for(manifests, workload)
    given = workload.get("spec", "replicas")
    if hpa is not None:
        low = hpa.get("spec", "minReplicas", default=1)
        high = hpa.get("spec", "maxReplicas")
        draft.warn(
            f"{hpa.origin('spec')}: scales {workload.ref} between {low} and {high} replicas; the "
            "scenario format has no autoscaler, so replicas are fixed (add 'scale' events to "
            "study scaling)"
        )
        if not isinstance(given, int) and isinstance(low, int) and low >= 0:
            return Noted(low, f"{hpa.origin('spec', 'minReplicas')} (the HPA's floor)")
    if isinstance(given, int) and not isinstance(given, bool) and given >= 0:
        return Noted(given, workload.origin("spec", "replicas"))
    return Noted(1, f"{workload.origin('spec')} (no replicas: Kubernetes' default 1)")


def _version_name(workload: Resource, service: str, labels: dict[str, str]) -> str:
    if "version" in labels:
        return scenario_name(labels["version"])
    name = workload.name
    if name.startswith(service + "-") and len(name) > len(service) + 1:
        return scenario_name(name[len(service) + 1 :])
    return scenario_name(name)


def _mesh_switches(
    draft: Draft,
    res: Resource,
    labels: dict[str, str],
    annotations: dict[str, str],
    path: tuple[str, ...],
) -> None:
    """Meshes a Namespace or pod template turns on (labels and annotations)."""

    def note(key: str, where: str) -> str:
        return res.origin(*path, where, key)

    if (
        labels.get("istio-injection") == "enabled"
        or labels.get("sidecar.istio.io/inject") == "true"
    ):
        draft.meshes.add("istio")
        key = "istio-injection" if "istio-injection" in labels else "sidecar.istio.io/inject"
        draft.mesh_notes.append(f"istio: {note(key, 'labels')}")
    if labels.get("istio.io/dataplane-mode") == "ambient":
        draft.meshes.add("istio-ambient")
        draft.mesh_notes.append(f"istio-ambient: {note('istio.io/dataplane-mode', 'labels')}")
    if annotations.get("linkerd.io/inject") in ("enabled", "ingress"):
        draft.meshes.add("linkerd")
        draft.mesh_notes.append(f"linkerd: {note('linkerd.io/inject', 'annotations')}")
    opted_out = (
        annotations.get("sidecar.istio.io/inject") == "false"
        or labels.get("sidecar.istio.io/inject") == "false"
        or annotations.get("linkerd.io/inject") == "disabled"
    )
    if opted_out and res.kind in WORKLOAD_KINDS:
        draft.warn(
            f"{res.origin(*path)}: {res.ref} opts out of injection; the scenario meshes every "
            "service of a run alike (no per-service injection key)"
        )


def _proxy_workers(draft: Draft, res: Resource, annotations: dict[str, str]) -> None:
    base = ("spec", "template", "metadata", "annotations")
    limit = cpu_cores(annotations.get("config.linkerd.io/proxy-cpu-limit"))
    if limit is not None and limit > 0 and math.ceil(limit) > 1:
        # Linkerd's injector once set LINKERD2_PROXY_CORES from this annotation; since its
        # chart's proxy.runtime.workers (2025) the proxy's floor of cores is
        # LINKERD2_PROXY_CORES_MIN (workers.minimum, 1), which wins over it, and the limit
        # only throttles. So the scenario keeps the runtime's one worker and says how an
        # older cluster would differ, rather than guess the cluster's version.
        draft.warn(
            f"{res.origin(*base, 'config.linkerd.io/proxy-cpu-limit')}: current Linkerd runs "
            "its proxy's one runtime worker (the chart's proxy.runtime.workers.minimum) "
            "whatever this limit, which only throttles it; Linkerd before its 2025 runtime "
            f"settings sized the runtime from the limit ({math.ceil(limit)} workers here): "
            f"for such a cluster set mesh_options.linkerd.workers: {math.ceil(limit)}"
        )
    config = annotations.get("proxy.istio.io/config")
    if isinstance(config, str) and len(config) < 10_000:
        try:
            parsed = yaml.safe_load(config)
        except yaml.YAMLError:
            parsed = None
        concurrency = parsed.get("concurrency") if isinstance(parsed, dict) else None
        if isinstance(concurrency, int) and concurrency > 0:
            draft.option(
                "istio",
                "workers",
                concurrency,
                f"{res.origin(*base, 'proxy.istio.io/config')} concurrency",
            )


class _PodIndex:
    """Workloads by (namespace, pod label, value): a selector's candidates without a scan."""

    def __init__(self, workloads: list[Resource]) -> None:
        self.by_label: dict[tuple[str, str, str], list[Resource]] = {}
        for w in workloads:
            ns = w.namespace or "default"
            for k, v in _labels(w.get("spec", "template", "metadata", "labels")).items():
                self.by_label.setdefault((ns, k, v), []).append(w)

    def selected_by(self, svc: Resource) -> list[Resource]:
        """The workloads in the Service's namespace whose pod labels its selector matches."""
        selector = _labels(svc.get("spec", "selector"))
        if not selector:
            return []
        ns = svc.namespace or "default"
        shortest = min((self.by_label.get((ns, k, v), []) for k, v in selector.items()), key=len)
        return [
            w
            for w in shortest
            if all(
                _labels(w.get("spec", "template", "metadata", "labels")).get(k) == v
                for k, v in selector.items()
            )
        ]


MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6,
                "G": 1e9, "T": 1e12, "k": 1e3}  # fmt: skip


def memory_bytes(text: Any) -> float | None:
    """A Kubernetes memory quantity (``"16374184Ki"``, ``"64Gi"``, ``128974848``) in bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text) if math.isfinite(text) and text >= 0 else None
    if not isinstance(text, str):
        return None
    s = text.strip()
    for unit in sorted(MEMORY_UNITS, key=len, reverse=True):
        if s.endswith(unit):
            number, scale = s[: -len(unit)], MEMORY_UNITS[unit]
            break
    else:
        number, scale = s, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _nodes(manifests: Manifests, draft: Draft) -> None:
    """Nodes (``kubectl get nodes -o yaml``): their count and the commonest capacity."""
    nodes = manifests.of("Node")
    if not nodes:
        return
    shapes: dict[tuple[int, float], list[Resource]] = {}
    for node in nodes:
        cores = cpu_cores(node.get("status", "capacity", "cpu"))
        memory = memory_bytes(node.get("status", "capacity", "memory"))
        if cores is None or memory is None or cores < 1:
            draft.warn(f"{node.origin('status', 'capacity')}: {node.ref} has no readable CPU "
                       "and memory capacity; counted with the others' shape")  # fmt: skip
            continue
        shapes.setdefault((int(cores), memory / 1e9), []).append(node)
    draft.cluster["nodes"] = Noted(len(nodes), f"{len(nodes)} Node objects ({nodes[0].file})")
    if shapes:
        (cores, gb), same = max(shapes.items(), key=lambda kv: len(kv[1]))
        where = same[0].origin("status", "capacity")
        draft.cluster["cores_per_node"] = Noted(cores, f"{where} cpu ({len(same)} nodes)")
        draft.cluster["memory_gb_per_node"] = Noted(round(gb, 3), f"{where} memory")
        if len(shapes) > 1:
            draft.warn(f"nodes of {len(shapes)} shapes: the scenario's nodes are alike, all "
                       f"{cores} cores and {gb:.3g} GB (the commonest)")  # fmt: skip


def _namespace(draft: Draft, namespace: Resource) -> None:
    """A Namespace's mesh switches and Linkerd's default inbound policy."""
    annotations = _labels(namespace.get("metadata", "annotations"))
    _mesh_switches(
        draft, namespace, _labels(namespace.get("metadata", "labels")), annotations, ("metadata",)
    )
    policy = annotations.get("config.linkerd.io/default-inbound-policy")
    if policy is not None:
        draft.linkerd_security["default_policy"] = Noted(
            policy,
            namespace.origin("metadata", "annotations", "config.linkerd.io/default-inbound-policy"),
        )


def _versions(
    manifests: Manifests, draft: Draft, svc: Resource, matched: list[Resource], claimed: set[int]
) -> list[DraftVersion]:
    """A Service's versions: one per workload its selector matches, named by the pods'
    ``version`` label (else the workload), with its replicas and its pods' resources; each
    workload read is ``claimed`` (not a client)."""
    out: list[DraftVersion] = []
    seen: set[str] = set()
    for w in matched:
        claimed.add(id(w))
        labels = _labels(w.get("spec", "template", "metadata", "labels"))
        vname = _version_name(w, svc.name, labels)
        if vname in seen:
            vname = scenario_name(w.name)
        seen.add(vname)
        annotations = _labels(w.get("spec", "template", "metadata", "annotations"))
        out.append(
            DraftVersion(
                vname,
                _replicas(manifests, w, draft),
                w,
                labels,
                resources=app_resources(draft, w),
                proxy_resources=proxy_resources(draft, w, annotations),
            )
        )
    return out


def import_kubernetes(manifests: Manifests, draft: Draft) -> None:
    """Add the services, versions and mesh switches that the Kubernetes objects describe."""
    _nodes(manifests, draft)
    namespace_waypoints: dict[str, str] = {}
    """Namespaces whose services use a waypoint (``istio.io/use-waypoint``), and where."""
    for namespace in manifests.of("Namespace"):
        try:
            _namespace(draft, namespace)
            waypoint = _labels(namespace.get("metadata", "labels")).get(USE_WAYPOINT)
            if waypoint not in (None, "none"):
                namespace_waypoints[namespace.name] = namespace.origin(
                    "metadata", "labels", USE_WAYPOINT
                )
        except SHAPE_ERRORS as exc:
            shape_warning(draft, namespace, exc)

    workloads = [w for kind in WORKLOAD_KINDS for w in manifests.of(kind)]
    claimed: set[int] = set()
    pods = _PodIndex(workloads)
    matches = {id(svc): pods.selected_by(svc) for svc in manifests.of("Service")}
    owners: dict[int, list[Resource]] = {}
    for svc in manifests.of("Service"):
        try:
            for w in matches[id(svc)]:
                owners.setdefault(id(w), []).append(svc)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, svc, exc)
    # a LoadBalancer or NodePort Service over the same pods as a ClusterIP one is the way in to
    # it (Online Boutique's frontend-external): the ClusterIP one comes first and stays
    ordered = sorted(
        manifests.of("Service"),
        key=lambda r: r.get("spec", "type") in ("LoadBalancer", "NodePort"),
    )
    claimed_by: dict[frozenset[int], str] = {}
    for svc in ordered:
        try:
            if svc.get("spec", "type") == "ExternalName":
                draft.warn(
                    f"{svc.origin('spec', 'type')}: an ExternalName service has no pods; skipped"
                )
                continue
            selector = _labels(svc.get("spec", "selector"))
            ns = svc.namespace or "default"
            name = scenario_name(svc.name)
            if name in draft.services:
                other = draft.services[name]
                renamed = scenario_name(f"{svc.name}-{ns}")
                draft.warn(
                    f"{svc.origin('metadata', 'name')}: {svc.name} also exists in namespace "
                    f"{other.namespace}; scenario service names are unique, so this one is "
                    f"{renamed}"
                )
                name = renamed
            matched = matches[id(svc)]
            if not matched:
                draft.warn(
                    f"{svc.origin('spec', 'selector')}: Service/{svc.name} selects no "
                    "Deployment or StatefulSet given; skipped"
                )
                continue
            mine = {id(w) for w in matched}
            wider = next(
                (o.name for o in owners[id(matched[0])] if mine < {id(w) for w in matches[id(o)]}),
                None,
            )
            if wider is not None:
                # a Service for one version of another's pods (a canary's backend): routes name
                # it, the scenario has it as that service's version
                draft.warn(
                    f"{svc.origin('spec', 'selector')}: Service/{svc.name} selects some of "
                    f"Service/{wider}'s pods; it is a version of {wider}, not a service of its own"
                )
                continue
            same = claimed_by.get(frozenset(mine))
            if same is not None:
                kind = svc.get("spec", "type")
                if kind in ("LoadBalancer", "NodePort"):
                    draft.entries.setdefault(
                        same, f"{svc.origin('spec', 'type')} (a {kind} Service over its pods)"
                    )
                draft.warn(
                    f"{svc.origin('spec', 'selector')}: Service/{svc.name} selects the same pods "
                    f"as {same}; imported once, as {same}"
                )
                continue
            claimed_by[frozenset(mine)] = name
            draft_svc = DraftService(
                name, scenario_name(ns), svc, selector, protocol=_protocol(svc)
            )
            draft_svc.versions.extend(_versions(manifests, draft, svc, matched, claimed))
            draft.services[name] = draft_svc
            _service_options(draft, svc, name, namespace_waypoints)
        except SHAPE_ERRORS as exc:
            shape_warning(draft, svc, exc)

    for w in workloads:
        try:
            pod_labels = _labels(w.get("spec", "template", "metadata", "labels"))
            pod_annotations = _labels(w.get("spec", "template", "metadata", "annotations"))
            _mesh_switches(draft, w, pod_labels, pod_annotations, ("spec", "template", "metadata"))
            _proxy_workers(draft, w, pod_annotations)
            if id(w) not in claimed:
                draft.clients[scenario_name(w.name)] = w
        except SHAPE_ERRORS as exc:
            shape_warning(draft, w, exc)
