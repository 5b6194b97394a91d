"""``meshsim size``: cores, memory and added latency for a mesh at a load, in seconds.

The inputs are what users ask with (docs/modern-anchors.md section 9): requests per second per
workload (or in total), pods, services, connections, payload sizes, churn, the mesh and its mode.
Each answer comes from the cost models (``models/*.yaml``) by closed forms where they hold:

- proxy CPU: the model's CPU per request plus wake-ups at the proxy's utilisation
  (:mod:`meshsim.studies.hop_latency`), so CPU is not linear in rate, and the proxy's ceiling
  (all workers busy);
- proxy memory: :meth:`ProxyCostModel.memory_mb` with the connections and the configuration in
  view (an unscoped Istio sidecar holds every service and endpoint; a Linkerd proxy and a scoped
  sidecar what they call);
- control plane: istiod's :func:`~meshsim.sim.controlplane.istiod.steady_state` (the fit's own
  arithmetic) per replica; the Linkerd destination controller's watch and update costs as
  :mod:`meshsim.sim.controlplane.linkerd` charges them;
- added latency per hop: M/M/c waits at each proxy's workers, summed over the passes of a hop.

Near saturation (a proxy's utilisation from :data:`SIMULATE_FROM` to the saturation mark) the
M/M/c waits are too coarse, so a short simulation of one meshed hop at that rate is run
instead, and the answer says which method gave it. Every number carries a *model band*: the
same arithmetic at Latin-hypercube parameter sets over the models' ranges
(:func:`meshsim.models.samples.draw_parameter_sets`), min and max.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshsim.models import ProxyCostModel, drawn_parameters, load_model, ranged_parameters
from meshsim.models.samples import draw_parameter_sets
from meshsim.scenario.limits import workload_requests
from meshsim.scenario.model import Scenario, Workload
from meshsim.scenario.references import call_edges
from meshsim.sim.controlplane.istiod import steady_state
from meshsim.studies.hop_latency import SATURATED, ProxyLoad, hop_samples_us, steady

SIZING_MESHES = ("istio", "linkerd", "istio-ambient")
MODEL_NAMES = {
    "istio": ("istio-sidecar", "istiod"),
    "linkerd": ("linkerd-proxy", "linkerd-control-plane"),
    "istio-ambient": ("ztunnel", "istiod"),
}
WAYPOINT_MODEL = "waypoint"
SIMULATE_FROM = 0.7
"""Utilisation from which the hop latency is simulated rather than taken from M/M/c."""
DRAWS = 40_000
"""Draws of a hop's latency per parameter set (the p99 of 40,000 draws is within ~2 %)."""
KIB_PER_MIB = 1024.0
ISTIO_SIDECAR_REQUEST = (0.1, 128.0)
"""Istio's default sidecar resources.requests: 100m CPU, 128Mi (values.global.proxy)."""
LINKERD_PROXY_REQUEST = (0.0, 0.0)
"""Linkerd sets no proxy requests unless config.linkerd.io/proxy-cpu-request says so."""


@dataclass(frozen=True)
class Group:
    """Pods that share a load: ``rps`` requests per second come in, ``calls`` go out per one."""

    name: str
    rps: float
    pods: int
    calls: float = 0.0

    @property
    def proxy_rps(self) -> float:
        """Requests through each pod's sidecar: inbound plus outbound."""
        return self.rps * (1 + self.calls) / self.pods


@dataclass(frozen=True)
class SizingInput:
    groups: tuple[Group, ...]
    services: int
    meshes: tuple[str, ...] = ("istio", "linkerd")
    connections: int = 8
    request_bytes: int = 1024
    response_bytes: int = 1024
    churn_per_s: float = 0.0
    """Pods replaced per second (rollouts, autoscaling, restarts)."""
    mtls: bool = True
    workers: dict[str, int] = field(default_factory=dict)
    sidecar_scoping: bool = False
    view_services: int | None = None
    """Services each proxy holds when scoped (Istio Sidecar) or what a Linkerd proxy calls."""
    istiod_replicas: int = 1
    nodes: int | None = None
    node_cores: int = 8
    waypoints: int = 0
    samples: int = 32
    seed: int = 1
    simulate: str = "auto"
    """'auto' (near saturation), 'always' or 'never'."""
    models: dict[str, str] = field(default_factory=dict)
    """Overrides: mesh -> proxy model file or name."""

    @property
    def pods(self) -> int:
        return sum(g.pods for g in self.groups)

    @property
    def entry_rps(self) -> float:
        return sum(g.rps for g in self.groups) - self.call_rps

    @property
    def call_rps(self) -> float:
        return sum(g.rps * g.calls for g in self.groups)

    @property
    def node_count(self) -> int:
        return self.nodes if self.nodes is not None else max(1, math.ceil(self.pods / 10))


@dataclass(frozen=True)
class Band:
    """A value and its model band (min and max over the parameter sets)."""

    value: float
    low: float
    high: float

    @classmethod
    def of(cls, central: float, others: Sequence[float]) -> Band:
        values = [central, *others]
        return cls(central, min(values), max(values))

    def show(self, fmt: str = ".3g") -> str:
        if self.low == self.high:
            return f"{self.value:{fmt}}"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass
class ProxyLine:
    name: str
    kind: str
    count: int
    rps_per_proxy: float
    utilisation: Band
    cpu_vcpu: Band
    memory_mb: Band
    max_rps: Band
    saturated: bool
    per_set: dict[str, list[float]] = field(default_factory=dict, repr=False)
    """cpu_vcpu and memory_mb in each parameter set, for the totals' bands."""


@dataclass
class MeshSizing:
    mesh: str
    proxies: list[ProxyLine]
    cpu_total: Band
    memory_total_mb: Band
    control_plane: dict[str, Band]
    control_plane_replicas: int
    hop_p50_ms: Band | None
    hop_p99_ms: Band | None
    hop_method: str
    decomposition_us: dict[str, float]
    requests: dict[str, float]
    notes: list[str]


# --------------------------------------------------------------------------- models and sets


def _models(mesh: str, inputs: SizingInput) -> dict[str, ProxyCostModel]:
    proxy, control = MODEL_NAMES[mesh]
    out = {"proxy": load_model(inputs.models.get(mesh, proxy)), "control": load_model(control)}
    if mesh == "istio-ambient" and inputs.waypoints > 0:
        out["waypoint"] = load_model(WAYPOINT_MODEL)
    return out


def _parameter_sets(
    models: dict[str, ProxyCostModel], inputs: SizingInput
) -> list[dict[str, ProxyCostModel]]:
    params = [p for m in models.values() for p in drawn_parameters(m)]
    if inputs.samples <= 0 or not params:
        return []
    labels = {role: ranged_parameters(m)[0].model if ranged_parameters(m) else role
              for role, m in models.items()}  # fmt: skip
    sets = draw_parameter_sets(params, inputs.samples, inputs.seed)
    return [{role: m.with_values(s.for_model(labels[role])) for role, m in models.items()}
            for s in sets]  # fmt: skip


def _banded(fn: Callable[[dict[str, ProxyCostModel]], float], central: dict[str, ProxyCostModel],
            sets: list[dict[str, ProxyCostModel]]) -> Band:  # fmt: skip
    return Band.of(fn(central), [fn(s) for s in sets])


# --------------------------------------------------------------------------- proxies


def _workers(mesh: str, model: ProxyCostModel, inputs: SizingInput) -> int:
    return inputs.workers.get(mesh, model.worker_threads)


def _proxy_memory(
    model: ProxyCostModel, inputs: SizingInput, clusters: int, endpoints: int
) -> float:
    tls = inputs.connections // 2 if inputs.mtls else 0
    return model.memory_mb(inputs.connections, clusters, endpoints, tls_connections=tls)


def _view(mesh: str, inputs: SizingInput, group: Group) -> tuple[int, int]:
    """(services, endpoints) a sidecar of ``group`` holds."""
    per_service = inputs.pods / max(inputs.services, 1)
    scoped = mesh == "linkerd" or inputs.sidecar_scoping
    if not scoped:
        return inputs.services, inputs.pods
    view = inputs.view_services or max(1, math.ceil(group.calls)) + 1
    view = min(view, inputs.services)
    return view, max(1, round(view * per_service))


def _load(model: ProxyCostModel, rps: float, mesh: str, inputs: SizingInput,
          workers: int | None = None) -> ProxyLoad:  # fmt: skip
    return ProxyLoad(model, rps, inputs.request_bytes, inputs.response_bytes,
                     inputs.mtls or mesh == "istio-ambient",
                     workers if workers is not None else _workers(mesh, model, inputs))  # fmt: skip


def _line(name: str, role: str, count: int, rps: float, mesh: str, inputs: SizingInput,
          central: dict[str, ProxyCostModel], sets: list[dict[str, ProxyCostModel]],
          view: tuple[int, int], workers: int | None = None) -> ProxyLine:  # fmt: skip
    def load(ms: dict[str, ProxyCostModel]) -> ProxyLoad:
        return _load(ms[role], rps, mesh, inputs, workers)

    def memory(ms: dict[str, ProxyCostModel]) -> float:
        return _proxy_memory(ms[role], inputs, *view)

    util = _banded(lambda ms: load(ms).utilisation, central, sets)
    return ProxyLine(
        name=name, kind=central[role].kind, count=count, rps_per_proxy=rps, utilisation=util,
        cpu_vcpu=_banded(lambda ms: load(ms).vcpu, central, sets),
        memory_mb=_banded(memory, central, sets),
        max_rps=_banded(lambda ms: load(ms).max_rps, central, sets),
        saturated=util.value >= SATURATED,
        per_set={"cpu_vcpu": [load(ms).vcpu for ms in sets],
                 "memory_mb": [memory(ms) for ms in sets]},
    )  # fmt: skip


def _proxy_lines(mesh: str, inputs: SizingInput, central: dict[str, ProxyCostModel],
                 sets: list[dict[str, ProxyCostModel]]) -> list[ProxyLine]:  # fmt: skip
    if mesh != "istio-ambient":
        return [_line(g.name, "proxy", g.pods, g.proxy_rps, mesh, inputs, central, sets,
                      _view(mesh, inputs, g)) for g in inputs.groups]  # fmt: skip
    nodes = inputs.node_count
    # every hop crosses the source node's and the destination node's ztunnel; an entering
    # request only the destination's
    zt_rps = (inputs.entry_rps + 2 * inputs.call_rps) / nodes
    lines = [_line("ztunnel", "proxy", nodes, zt_rps, mesh, inputs, central, sets,
                   (inputs.services, inputs.pods))]  # fmt: skip
    if inputs.waypoints > 0:
        wp_rps = (inputs.entry_rps + inputs.call_rps) / inputs.waypoints
        share = max(1, math.ceil(inputs.services / inputs.waypoints))
        view = (share, max(1, round(share * inputs.pods / inputs.services)))
        lines.append(_line("waypoint", "waypoint", inputs.waypoints, wp_rps, mesh, inputs,
                           central, sets, view))  # fmt: skip
    return lines


# --------------------------------------------------------------------------- control plane


def _churn_pushes(model: ProxyCostModel, churn: float) -> float:
    """Debounced endpoint pushes per second for Poisson pod changes at ``churn`` per second.

    A push follows a change when no other comes within ``debounce_after`` (probability
    e^{-churn x after}); a stream of changes that never pauses is pushed every ``debounce_max``.
    """
    if churn <= 0:
        return 0.0
    after = model.value("debounce_after_ms") / 1e3
    most = model.value("debounce_max_ms") / 1e3
    return max(churn * math.exp(-churn * after), 1 / most)


def _istiod(mesh: str, inputs: SizingInput, model: ProxyCostModel) -> dict[str, float]:
    replicas = max(1, inputs.istiod_replicas)
    if mesh == "istio-ambient":
        proxies = inputs.node_count + inputs.waypoints
        view_s, view_e = inputs.services, inputs.pods
        new = 0.0
    else:
        proxies = inputs.pods
        group = inputs.groups[0]
        view_s, view_e = _view(mesh, inputs, group)
        new = inputs.churn_per_s
    pushes = _churn_pushes(model, inputs.churn_per_s)
    per_push = max(1, round(inputs.churn_per_s / pushes)) if pushes else 0
    eds_eps = min(inputs.pods, per_push * max(1, round(inputs.pods / inputs.services)))
    one = steady_state(
        model, services=inputs.services, proxies=math.ceil(proxies / replicas),
        endpoints=inputs.pods, view_services=view_s, view_endpoints=view_e,
        eds_pushes_per_s=pushes, eds_endpoints=eds_eps, new_proxies_per_s=new / replicas,
    )  # fmt: skip
    return {"cpu_vcpu": one["cpu_vcpu"] * replicas, "memory_mb": one["memory_mb"] * replicas,
            "cpu_vcpu_per_replica": one["cpu_vcpu"],
            "memory_mb_per_replica": one["memory_mb"]}  # fmt: skip


def _linkerd_control(inputs: SizingInput, model: ProxyCostModel) -> dict[str, float]:
    """The destination controller as meshsim.sim.controlplane.linkerd charges it."""
    v = model.value
    watches = sum(g.pods * _view("linkerd", inputs, g)[0] for g in inputs.groups)
    per_service_eps = inputs.pods / max(inputs.services, 1)
    watchers_per_service = watches / max(inputs.services, 1)
    view = watches / max(inputs.pods, 1)
    # an endpoint change: one update per watcher of its service; a new proxy: a snapshot of
    # every service it watches
    update = v("update_cpu_us") + v("update_endpoint_us")
    snapshot = v("update_cpu_us") + v("snapshot_endpoint_us") * per_service_eps
    update_us = inputs.churn_per_s * watchers_per_service * update
    snapshot_us = inputs.churn_per_s * view * snapshot
    cpu = (v("watch_cpu_us_per_s") * watches + update_us + snapshot_us) * 1e-6
    kb = (v("proxy_kb") * inputs.pods + v("watch_kb") * watches + v("service_kb") * inputs.services
          + v("registry_endpoint_kb") * inputs.pods)  # fmt: skip
    return {"cpu_vcpu": cpu, "memory_mb": v("base_memory_mb") + kb / KIB_PER_MIB}


def _control(mesh: str, inputs: SizingInput, model: ProxyCostModel) -> dict[str, float]:
    if mesh == "linkerd":
        return _linkerd_control(inputs, model)
    return _istiod(mesh, inputs, model)


# --------------------------------------------------------------------------- hop latency


def _hop_loads(mesh: str, inputs: SizingInput, ms: dict[str, ProxyCostModel],
               lines: list[ProxyLine]) -> list[ProxyLoad]:  # fmt: skip
    """The proxies a typical hop crosses, at their loads (the busiest group's sidecars)."""
    if mesh != "istio-ambient":
        busiest = max(lines, key=lambda line: line.rps_per_proxy)
        one = _load(ms["proxy"], busiest.rps_per_proxy, mesh, inputs)
        return [one, one]
    zt = _load(ms["proxy"], lines[0].rps_per_proxy, mesh, inputs)
    loads = [zt, zt]
    if len(lines) > 1:
        loads.append(_load(ms["waypoint"], lines[1].rps_per_proxy, mesh, inputs))
    return loads


def _quantiles(loads: list[ProxyLoad], seed: int) -> tuple[float, float]:
    x = hop_samples_us(loads, DRAWS, seed)
    return float(np.quantile(x, 0.5)) / 1e3, float(np.quantile(x, 0.99)) / 1e3


def _simulated(mesh: str, inputs: SizingInput, rps: float) -> tuple[float, float]:
    """Added p50, p99 (ms) of one meshed hop at ``rps``, simulated briefly against no mesh."""
    from meshsim.api import run_and_summarise
    from meshsim.scenario import from_dict

    duration = max(1.0, min(10.0, 20_000 / max(rps, 1.0)))
    scenario = from_dict({
        "meshsim": 1, "name": "size-hop", "seed": inputs.seed, "duration_s": duration,
        "warmup_s": duration / 10, "meshes": ["none", mesh],
        "cluster": {"nodes": 2, "cores_per_node": 64},
        "services": [{"name": "server", "replicas": 1, "concurrency": 100_000,
                      "cpu_ms": {"dist": "constant", "mean": 0.001},
                      "response_bytes": inputs.response_bytes}],
        "workloads": [{"name": "client", "target": "server", "rate_rps": rps,
                       "request_bytes": inputs.request_bytes,
                       "connections": inputs.connections}],
        "mesh_options": {"meshed_clients": True},
    })  # fmt: skip
    runs = run_and_summarise(scenario).summary["runs"]
    base = runs["none"]["workloads"]["client"]["latency_ms"]
    meshed = runs[mesh]["workloads"]["client"]["latency_ms"]
    added: list[float] = [float(meshed[q] or 0.0) - float(base[q] or 0.0) for q in ("p50", "p99")]
    return added[0], added[1]


def _hop(mesh: str, inputs: SizingInput, central: dict[str, ProxyCostModel],
         sets: list[dict[str, ProxyCostModel]], lines: list[ProxyLine]
         ) -> tuple[Band | None, Band | None, str, dict[str, float]]:  # fmt: skip
    loads = _hop_loads(mesh, inputs, central, lines)
    top = max(load.utilisation for load in loads)
    parts = {
        "proxy_cpu_on_path_us": sum(sum(ld.paths_us[:2]) for ld in loads),
        "hop_latency_us": sum(2 * ld.model.hop_latency_us for ld in loads),
        "wakeups_us": sum(ld.wakeups_per_request * ld.model.wakeup_cpu_us for ld in loads),
        "queueing_mean_us": 0.0,
    }
    if not all(steady(ld) for ld in loads):
        return None, None, "saturated: no steady state (add replicas or workers)", parts
    from meshsim.studies.hop_latency import pass_wait

    parts["queueing_mean_us"] = sum(2 * pass_wait(ld).mean_us for ld in loads)
    simulate = inputs.simulate == "always" or (
        inputs.simulate == "auto" and SIMULATE_FROM <= top < SATURATED
    )
    if simulate and mesh != "istio-ambient":
        p50, p99 = _simulated(mesh, inputs, loads[0].rps)
        how = (
            f"short simulation (one meshed hop at {loads[0].rps:.4g} rps; utilisation "
            f"{top:.2f} is past {SIMULATE_FROM}, where M/M/c waits are coarse); band missing"
        )
        return Band(p50, p50, p50), Band(p99, p99, p99), how, parts
    p50, p99 = _quantiles(loads, inputs.seed)
    if simulate:  # ambient: the one-hop simulation is not built for ztunnels and waypoints
        how_sim = "; no short simulation for istio-ambient (closed form used near saturation)"
    else:
        how_sim = ""
    others = [_quantiles(_hop_loads(mesh, inputs, s, lines), inputs.seed) for s in sets
              if all(steady(ld) for ld in _hop_loads(mesh, inputs, s, lines))]  # fmt: skip
    how = "closed form (M/M/c waits per proxy pass, wake-ups at utilisation)" + how_sim
    if top >= SATURATED:
        how += f"; SATURATED (utilisation {top:.2f}): the tail grows without bound near 1"
    return (Band.of(p50, [o[0] for o in others]), Band.of(p99, [o[1] for o in others]), how,
            parts)  # fmt: skip


# --------------------------------------------------------------------------- the answer


def size(inputs: SizingInput) -> list[MeshSizing]:
    """Size every mesh of ``inputs``."""
    out = []
    for mesh in inputs.meshes:
        if mesh not in SIZING_MESHES:
            raise ValueError(f"mesh must be one of {', '.join(SIZING_MESHES)}, not {mesh!r}")
        central = _models(mesh, inputs)
        sets = _parameter_sets(central, inputs)
        lines = _proxy_lines(mesh, inputs, central, sets)

        cp_central = _control(mesh, inputs, central["control"])
        cp_sets = [_control(mesh, inputs, ms["control"]) for ms in sets]
        cp = {key: Band.of(value, [c[key] for c in cp_sets]) for key, value in cp_central.items()}
        p50, p99, how, parts = _hop(mesh, inputs, central, sets, lines)
        notes = []
        for line in lines:
            if line.saturated:
                notes.append(
                    f"{line.name}: {line.kind} SATURATED at {line.rps_per_proxy:.4g} rps per "
                    f"proxy (utilisation {line.utilisation.value:.2f}); it tops out at "
                    f"{line.max_rps.value:.4g} rps with {_workers(mesh, central['proxy'], inputs)}"
                    " workers: more pods or workers needed"
                )  # fmt: skip
        if not sets:
            notes.append("model band missing: no parameter sets drawn (--samples 0)")
        req_cpu, req_mem = ISTIO_SIDECAR_REQUEST if mesh == "istio" else LINKERD_PROXY_REQUEST
        requests = {"cpu_cores": req_cpu * inputs.pods, "memory_mb": req_mem * inputs.pods}
        out.append(MeshSizing(
            mesh=mesh, proxies=lines, cpu_total=_total(lines, "cpu_vcpu", len(sets)),
            memory_total_mb=_total(lines, "memory_mb", len(sets)), control_plane=cp,
            control_plane_replicas=inputs.istiod_replicas if mesh != "linkerd" else 1,
            hop_p50_ms=p50, hop_p99_ms=p99, hop_method=how, decomposition_us=parts,
            requests=requests if mesh != "istio-ambient" else {}, notes=notes,
        ))  # fmt: skip
    return out


def _total(lines: list[ProxyLine], attr: str, sets: int) -> Band:
    """The sum over every proxy, in the central models and in each parameter set."""
    central = sum(getattr(line, attr).value * line.count for line in lines)
    return Band.of(central, [sum(line.per_set[attr][k] * line.count for line in lines)
                             for k in range(sets)])  # fmt: skip


def to_dict(result: list[MeshSizing]) -> dict[str, Any]:
    """The answer as plain data (``meshsim size --json``)."""
    out: dict[str, Any] = {}
    for m in result:
        out[m.mesh] = {
            "proxies": [{
                "name": p.name, "kind": p.kind, "count": p.count,
                "rps_per_proxy": p.rps_per_proxy, "utilisation": p.utilisation.as_dict(),
                "cpu_vcpu": p.cpu_vcpu.as_dict(), "memory_mb": p.memory_mb.as_dict(),
                "max_rps": p.max_rps.as_dict(), "saturated": p.saturated,
            } for p in m.proxies],
            "cpu_vcpu_total": m.cpu_total.as_dict(),
            "memory_mb_total": m.memory_total_mb.as_dict(),
            "control_plane": {k: b.as_dict() for k, b in m.control_plane.items()},
            "control_plane_replicas": m.control_plane_replicas,
            "hop_added_ms": {
                "p50": m.hop_p50_ms.as_dict() if m.hop_p50_ms else None,
                "p99": m.hop_p99_ms.as_dict() if m.hop_p99_ms else None,
                "method": m.hop_method, "decomposition_us": m.decomposition_us,
            },
            "requested": m.requests,
            "notes": m.notes,
        }  # fmt: skip
    return out


# --------------------------------------------------------------------------- from a scenario


def _workload_rps(wl: Workload) -> float:
    if wl.rate_rps is not None:
        return wl.rate_rps
    if wl.phases:
        return max(p.rate_rps for p in wl.phases)
    return workload_requests(wl, 1.0)  # closed loop: an upper bound


def groups_from_scenario(scenario: Scenario) -> list[Group]:
    """One group per service: the rate reaching it (workloads' rates carried down the call
    graph by call probabilities, versions weighted by the traffic split or their replicas),
    its pods, and the calls it makes per request."""
    services = {s.name: s for s in scenario.services}
    rates = dict.fromkeys(services, 0.0)
    for wl in scenario.workloads:
        rates[wl.target] += _workload_rps(wl)
    splits = {r.service: r.split for r in scenario.traffic if r.split}
    indegree = dict.fromkeys(services, 0)
    for _caller, callee in call_edges(scenario):
        indegree[callee] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    calls_out: dict[str, float] = {}
    while ready:
        name = ready.pop(0)
        svc = services[name]
        subsets = svc.subsets()
        split = splits.get(name) or {}
        weights = [float(split.get(v.name, 0.0)) if split else float(v.replicas) for v in subsets]
        if sum(weights) <= 0:
            weights = [1.0] * len(subsets)
        made = 0.0
        for version, weight in zip(subsets, weights, strict=True):
            share = weight / sum(weights)
            for call in version.calls if version.calls is not None else svc.calls:
                rates[call.service] += rates[name] * share * call.probability
                made += share * call.probability
        calls_out[name] = made
        for callee in {c for caller, c in call_edges(scenario) if caller == name}:
            indegree[callee] -= 1
            if indegree[callee] == 0:
                ready.append(callee)
    return [
        Group(name, rates[name], svc.total_replicas, calls_out.get(name, 0.0))
        for name, svc in services.items()
        if svc.total_replicas > 0
    ]
