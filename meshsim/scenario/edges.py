"""The mesh's edges in a scenario: zones and clusters, locality load balancing, zone failures.

``cluster.zones`` lists the failure domains the nodes live in (each zone belongs to one
cluster and one region); without it the cluster is one zone of ``cluster.nodes`` nodes, as
before. ``traffic[].locality_lb`` is Istio's ``localityLbSetting`` for one destination
(docs/mesh-semantics.md §14): weights that ``distribute`` a source zone's traffic, or priority
``failover`` (which Istio applies only when the rule also has outlier detection). Linkerd
maps it to Kubernetes topology-aware routing (endpoint hints for the client's zone).
The checks that span the document (zone names that must exist) are in :func:`zone_problems`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from meshsim.scenario.base import MAX_COUNT, Name, NonNegativeFloat, PositiveFloat, Spec
from meshsim.scenario.resources import Resources

if TYPE_CHECKING:
    from meshsim.scenario.model import Scenario

Loc = tuple[str | int, ...]

DEFAULT_CLUSTER = "cluster-1"
DEFAULT_REGION = "region-1"
WEIGHT_TOTAL = 100
"""Istio's validation requires each weight of a ``distribute`` entry in [1, 100] and their
total exactly 100 ("total locality weight N != 100", istio pkg/config/validation)."""


class Zone(Spec):
    """A failure domain (``topology.kubernetes.io/zone``): its nodes, cluster and region."""

    name: Name
    nodes: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        description="Nodes in this zone (at least one)."
    )
    cluster: Name = Field(DEFAULT_CLUSTER, description="The Kubernetes cluster of the zone.")
    region: Name = Field(DEFAULT_REGION, description="topology.kubernetes.io/region.")
    vm: bool = Field(
        False,
        description="Virtual machines joined to the mesh (Istio WorkloadEntry with a sidecar on "
        "the VM; Linkerd mesh expansion), not Kubernetes nodes: only services that name this "
        "zone in their 'zones' run here.",
    )
    network_us: NonNegativeFloat | None = Field(
        None, description="vm only: one-way latency between these VMs and the cluster (µs)."
    )


class Distribute(Spec):
    """Where a source zone's traffic goes: weights by destination zone, adding up to 100."""

    from_: str = Field(alias="from", description="A source zone name, or '*' for every zone.")
    to: dict[str, Annotated[int, Field(ge=1, le=WEIGHT_TOTAL)]] = Field(
        min_length=1, description="Weights by destination zone, each 1-100 (Istio's rule)."
    )

    @model_validator(mode="after")
    def _weights_add_up(self) -> Distribute:
        total = sum(self.to.values())
        if total != WEIGHT_TOTAL:
            raise ValueError(
                f"the weights of 'to' add up to {total}; Istio requires exactly "
                f"{WEIGHT_TOTAL} ({', '.join(f'{k}: {v}' for k, v in self.to.items())})"
            )
        return self


class Failover(Spec):
    """When the source's own region has no healthy endpoint, go to region ``to`` next."""

    from_: str = Field(alias="from", description="A source region.")
    to: str = Field(description="The region to fail over to.")


class LocalityLb(Spec):
    """Istio's LocalityLoadBalancerSetting for one destination (one of distribute/failover)."""

    enabled: bool = True
    distribute: list[Distribute] | None = Field(None, min_length=1)
    failover: list[Failover] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_mode(self) -> LocalityLb:
        if self.distribute is not None and self.failover is not None:
            raise ValueError("give 'distribute' or 'failover', not both (Istio applies one)")
        return self


class FailZoneEvent(Spec):
    """Every node of a zone fails (or, with ``services``, those services' pods in it).

    The pods stop answering at once; Kubernetes takes them out of the endpoints only after
    the node controller's grace period, so proxies keep them until then (or until their
    outlier detection ejects them).
    """

    at_s: NonNegativeFloat
    action: Literal["fail-zone"]
    target: str = Field(description="A zone of cluster.zones.")
    services: list[Name] | None = Field(
        None, description="Only these services' pods fail (a zonal dependency); default all."
    )
    endpoints_removed_after_s: NonNegativeFloat = Field(
        40.0,
        description="When the pods leave the endpoints: kube-controller-manager's "
        "--node-monitor-grace-period (40 s default).",
    )
    duration_s: PositiveFloat | None = Field(
        None,
        description="The zone comes back after this long, as a recover-zone event would "
        "(default: not in the run).",
    )
    mode: Literal["blackhole", "refuse"] = Field(
        "blackhole",
        description="blackhole: the pods' addresses answer nothing (a power or network "
        "outage): a new connection waits for the proxy's connect timeout, requests on "
        "connections held at the failure hang until a timeout or the connection is found "
        "dead; refuse: connections are refused at once (the pods' processes died, their "
        "nodes still answer).",
    )
    restart_after_s: NonNegativeFloat = Field(
        10.0,
        description="After duration_s: how long the pods take to start again once their "
        "nodes are back, when they had left the endpoints (see recover-zone).",
    )


class RecoverZoneEvent(Spec):
    """A failed zone comes back (its nodes Ready again).

    If the failed pods are still in the endpoints (the node controller's grace period had
    not run out: a partition that healed), they answer again at once. Otherwise they start
    again on the same nodes after ``restart_after_s`` and, as any new pod, become ready
    through the mesh (certificate, configuration) and rejoin the endpoints through the
    control plane's propagation. Outlier-ejected hosts come back after their ejection time.
    """

    at_s: NonNegativeFloat
    action: Literal["recover-zone"]
    target: str = Field(description="A zone of cluster.zones that a fail-zone event failed.")
    restart_after_s: NonNegativeFloat = Field(
        10.0,
        description="From the nodes' return to the pods' containers being up and their app "
        "passing its first readiness probe (node boot, kubelet, app start). ASSUMPTION: "
        "10 s, one readinessProbe period at Kubernetes' default periodSeconds 10; range "
        "1-120 s (an app that is ready at once to a slow JVM start).",
    )


def zone_names(scenario: Scenario) -> list[str]:
    zones = scenario.cluster.zones
    return [z.name for z in zones] if zones else []


def zone_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """Checks that span the document: zone names used elsewhere must exist."""
    from meshsim.scenario.references import _unknown

    zones = scenario.cluster.zones or []
    names = [z.name for z in zones]
    seen: set[str] = set()
    for i, zone in enumerate(zones):
        if zone.name in seen:
            yield ("cluster", "zones", i, "name"), f"zone '{zone.name}' is listed twice"
        seen.add(zone.name)
        if zone.network_us is not None and not zone.vm:
            yield (
                ("cluster", "zones", i, "network_us"),
                "network_us is for VM zones (vm: true); a zone's nodes use cluster.network",
            )
    if zones and all(z.vm for z in zones):
        yield ("cluster", "zones"), "every zone is of VMs: the mesh needs a Kubernetes cluster"
    for i, service in enumerate(scenario.services):
        for j, name in enumerate(service.zones or []):
            if name not in seen:
                yield ("services", i, "zones", j), _unknown("zone in cluster.zones", name, names)
    regions = sorted({z.region for z in zones}) or [DEFAULT_REGION]
    services = {s.name for s in scenario.services}
    for i, rule in enumerate(scenario.traffic):
        lb = rule.locality_lb
        if lb is None:
            continue
        if not zones:
            yield (
                ("traffic", i, "locality_lb"),
                "locality load balancing needs zones: list them in cluster.zones",
            )
            continue
        for j, d in enumerate(lb.distribute or []):
            if d.from_ != "*" and d.from_ not in seen:
                yield (
                    ("traffic", i, "locality_lb", "distribute", j, "from"),
                    _unknown("zone", d.from_, names),
                )
            for dst in d.to:
                if dst not in seen:
                    yield (
                        ("traffic", i, "locality_lb", "distribute", j, "to", dst),
                        _unknown("zone", dst, names),
                    )
        for j, f in enumerate(lb.failover or []):
            for key, region in (("from", f.from_), ("to", f.to)):
                if region not in regions:
                    yield (
                        ("traffic", i, "locality_lb", "failover", j, key),
                        _unknown("region", region, regions),
                    )
    yield from _zone_event_problems(scenario, seen, names, services)


def _zone_event_problems(
    scenario: Scenario, seen: set[str], names: list[str], services: set[str]
) -> Iterator[tuple[Loc, str]]:
    """fail-zone and recover-zone: zones that exist, services that exist, and a recovery
    only of a zone that is down at that time."""
    from meshsim.scenario.references import _unknown

    down_until: dict[str, float] = {}
    """Zone -> when it comes back (inf: not in the run), from the fail-zone events so far."""
    order = sorted(range(len(scenario.events)), key=lambda i: scenario.events[i].at_s)
    for i in order:
        event = scenario.events[i]
        if event.action not in ("fail-zone", "recover-zone"):
            continue
        if event.target not in seen:
            yield ("events", i, "target"), _unknown("zone in cluster.zones", event.target, names)
            continue
        back = down_until.get(event.target)
        if event.action == "recover-zone":
            if back is None or back <= event.at_s:
                yield (
                    ("events", i, "target"),
                    f"zone '{event.target}' is not down at {event.at_s:g} s: a recover-zone "
                    "needs a fail-zone of the same zone before it (and no recovery between)",
                )
            down_until[event.target] = event.at_s
            continue
        for j, svc in enumerate(event.services or []):
            if svc not in services:
                yield ("events", i, "services", j), _unknown("service", svc, sorted(services))
        end = math.inf if event.duration_s is None else event.at_s + event.duration_s
        if back is not None and back > event.at_s:
            end = max(end, back)  # another failure in a zone that is down: both last
        down_until[event.target] = end


# --------------------------------------------------------------------------- gateways


class GatewayRoute(Spec):
    """An HTTPRoute (Gateway API) or VirtualService bound to the gateway."""

    service: Name
    path_prefix: str = "/"


class GatewayTls(Spec):
    """TLS terminated at the gateway for the workloads' clients."""

    requests_per_connection: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        100,
        description="Requests a client connection carries before it closes: the gateway does "
        "one full TLS handshake (server side) per this many requests.",
    )


class GatewayAutoscale(Spec):
    """An HPA on the gateway's CPU: the replica count it settles at for the workloads' peak
    rate (no scaling dynamics). Defaults: the AKS Istio add-on's gateway HPA, min 2, max 5,
    80 % CPU (docs/published-figures.md 7b), and the istio-ingressgateway chart's CPU request
    of 100m."""

    min_replicas: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 5
    target_cpu_percent: Annotated[float, Field(gt=0, le=100)] = 80.0
    cpu_request_m: PositiveFloat = 100.0

    @model_validator(mode="after")
    def _bounds(self) -> GatewayAutoscale:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


class Gateway(Spec):
    """An ingress gateway: Istio's (Envoy, ``istio-ingressgateway`` or a Gateway API
    Gateway; in ambient mode it sends HBONE to the destination's ztunnel), or for Linkerd an
    ingress controller (ingress-nginx with service-upstream) meshed by a linkerd-proxy
    sidecar in its pod (meshsim.sim.ingress_controller, docs/mesh-semantics.md §17)."""

    name: Name
    replicas: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 2
    routes: list[GatewayRoute] = Field(
        default_factory=list, description="Where it sends requests (at least one)."
    )
    tls: GatewayTls | None = Field(None, description="Terminate TLS from clients (HTTPS).")
    model: str | None = Field(
        None,
        description="Istio runs: the gateway Envoy's cost-model file (default "
        "models/istio-ingressgateway.yaml).",
    )
    ingress_model: str | None = Field(
        None,
        description="Linkerd runs: the ingress controller's cost-model file, kind "
        "ingress-nginx (default models/ingress-nginx.yaml); its sidecar is the run's "
        "linkerd-proxy model.",
    )
    zone: str | None = Field(None, description="Place the replicas in this zone.")
    autoscale: GatewayAutoscale | None = Field(
        None, description="Size the replicas as an HPA on CPU would (replaces 'replicas')."
    )
    resources: Resources | None = Field(
        None,
        description="Requests and limits of the gateway's container: Istio's Envoy (default "
        "the gateway chart's, requests 100m / 128Mi, limits 2000m / 1024Mi; its workers are "
        "the CPU limit in whole cores, as pilot-agent sets them), or in Linkerd runs the "
        "ingress controller's (default the ingress-nginx chart's, requests 100m / 90Mi, no "
        "limits; its linkerd-proxy takes mesh_options.linkerd.proxy_resources). The CPU "
        "limit throttles as a sidecar's does; past its memory limit a replica's container is "
        "OOM-killed and the replica leaves the load balancer until it restarts.",
    )

    @model_validator(mode="after")
    def _one_cpu_request(self) -> Gateway:
        given = self.resources.cpu_request_m if self.resources is not None else None
        hpa = self.autoscale
        if (
            given is not None
            and hpa is not None
            and "cpu_request_m" in hpa.model_fields_set
            and abs(hpa.cpu_request_m - given) > 1e-9
        ):
            raise ValueError(
                f"autoscale.cpu_request_m {hpa.cpu_request_m:g} and the resources' CPU request "
                f"{given:g}m disagree: the HPA divides by the container's request, give it once"
            )
        return self

    @property
    def cpu_request_m(self) -> float:
        """The CPU request an HPA divides by: the resources' if given, else autoscale's."""
        given = self.resources.cpu_request_m if self.resources is not None else None
        if given is not None:
            return given
        return self.autoscale.cpu_request_m if self.autoscale is not None else 0.0


def gateway_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """Gateways: each has a route, to a service that exists; workloads' ``via`` names one
    that routes to their target."""
    from meshsim.scenario.references import _unknown

    gateways = scenario.gateways
    names = [g.name for g in gateways]
    services = [s.name for s in scenario.services]
    zones = zone_names(scenario)
    for i, gw in enumerate(gateways):
        if gw.name in names[:i]:
            yield ("gateways", i, "name"), f"gateway name '{gw.name}' is used twice"
        if not gw.routes:
            yield (
                ("gateways", i, "routes"),
                f"gateway '{gw.name}' has no route: give at least one {{service: ...}}",
            )
        for j, route in enumerate(gw.routes):
            if route.service not in services:
                yield (
                    ("gateways", i, "routes", j, "service"),
                    _unknown("service", route.service, services),
                )
        if gw.zone is not None and gw.zone not in zones:
            yield ("gateways", i, "zone"), _unknown("zone in cluster.zones", gw.zone, zones)
    for i, wl in enumerate(scenario.workloads):
        if wl.via is None:
            continue
        if wl.via not in names:
            yield ("workloads", i, "via"), _unknown("gateway", wl.via, names)
            continue
        gw = gateways[names.index(wl.via)]
        if gw.routes and all(r.service != wl.target for r in gw.routes):
            yield (
                ("workloads", i, "target"),
                f"gateway '{gw.name}' has no route to '{wl.target}' (its routes: "
                f"{', '.join(r.service for r in gw.routes)})",
            )


# --------------------------------------------------------------------------- multi-cluster


class MultiClusterOptions(Spec):
    """How each mesh joins the clusters of ``cluster.zones`` (meshsim.sim.multicluster)."""

    istio: Literal["multi-primary", "primary-remote"] = Field(
        "multi-primary",
        description="multi-primary: an istiod per cluster watching every API server; "
        "primary-remote: the first cluster's istiod serves all.",
    )
    linkerd: Literal["pod-to-pod", "gateway"] = Field(
        "pod-to-pod",
        description="Linkerd multicluster: mirrored endpoints on a flat network, or the "
        "linked cluster's gateway.",
    )
    east_west_gateway: bool = Field(
        False, description="Istio: clusters on separate networks, joined by east-west gateways."
    )
    gateway_replicas: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1,
        description="Pods of each cluster's east-west gateway (Istio) or multicluster gateway "
        "(Linkerd gateway mode); both charts deploy 1.",
    )

    @field_validator("istio", "linkerd", mode="before")
    @classmethod
    def _model_of_the_mesh(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name or ""
        mine = _MULTICLUSTER_MODELS[name]
        other = "linkerd" if name == "istio" else "istio"
        if isinstance(value, str) and value not in mine and value in _MULTICLUSTER_MODELS[other]:
            raise ValueError(
                f"'{value}' is one of {other.capitalize()}'s multi-cluster models; "
                f"{name.capitalize()}'s are {' or '.join(repr(m) for m in mine)}"
            )
        return value


_MULTICLUSTER_MODELS = {
    "istio": ("multi-primary", "primary-remote"),
    "linkerd": ("pod-to-pod", "gateway"),
}


def multicluster_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """Every cluster has Kubernetes nodes: its control plane (and gateway) run there."""
    zones = scenario.cluster.zones or []
    clusters: dict[str, int] = {}
    for i, zone in enumerate(zones):
        clusters.setdefault(zone.cluster, i)
    if all(z.vm for z in zones):
        return  # zone_problems says the mesh needs a Kubernetes cluster
    for cluster, first in clusters.items():
        if all(z.vm for z in zones if z.cluster == cluster):
            yield (
                ("cluster", "zones", first, "cluster"),
                f"cluster '{cluster}' has no nodes (all its zones are of VMs): its control "
                "plane and gateway need Kubernetes nodes; give it a zone of nodes, or put "
                "the VMs in another cluster",
            )


# --------------------------------------------------------------------------- egress


class External(Spec):
    """A host outside the mesh (Istio ServiceEntry; Linkerd: an external name called through
    the sidecar): its answer time and errors, and whether calls leave by an egress gateway."""

    latency_ms: PositiveFloat = Field(description="Mean time for the host to answer.")
    latency_cv: Annotated[float, Field(ge=0, le=10)] = Field(
        0.0, description="Spread of the answer time (lognormal); 0 = constant."
    )
    error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="Share of calls the host answers with 'error_status'."
    )
    error_status: Annotated[int, Field(ge=400, le=599)] = 503
    egress_gateway: bool = Field(
        False, description="Istio: leave through an egress gateway (mTLS to it, then out)."
    )


def external_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    """An external service is a host, not pods: no replicas, versions or calls."""
    for i, svc in enumerate(scenario.services):
        if svc.external is None:
            continue
        if svc.replicas != 0 or svc.versions is not None:
            yield (
                ("services", i, "replicas"),
                f"'{svc.name}' is external (outside the mesh): set replicas: 0 and no versions",
            )
        if svc.calls:
            yield ("services", i, "calls"), f"'{svc.name}' is external: it makes no calls"
    for i, wl in enumerate(scenario.workloads):
        target = next((s for s in scenario.services if s.name == wl.target), None)
        if target is not None and target.external is not None:
            yield (
                ("workloads", i, "target"),
                f"'{wl.target}' is external: a workload targets a service in the mesh",
            )
