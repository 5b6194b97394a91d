"""``summary.json``: the results contract, version 1 (docs/DESIGN.md).

Fields are added freely; the contract's names are never renamed. Everything here
is a function of the scenario and seed, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import fmean
from typing import Any, cast

from meshsim.results.bands import attach_bands, samples_block
from meshsim.results.run import (
    ADDED_QUANTILES,
    SATURATION,
    MeshResult,
    Replication,
    RunResult,
    paired_difference_ci,
)
from meshsim.results.schema import (
    AddedLatencyMs,
    CGroupBlock,
    ControlPlaneBlock,
    CostModelRef,
    MeshRun,
    ModelSamplesBlock,
    PodBlock,
    ProxiesBlock,
    ResilienceBlock,
    Summary,
    WorkloadSignals,
)

SCHEMA_VERSION = 1


def mesh_summary(result: MeshResult) -> MeshRun:
    reps = result.replications
    services = {n: result.signals("services", n) for n in result.names("services")}
    workloads: dict[str, WorkloadSignals] = {}
    edges = {n: result.signals("edges", n) for n in result.names("edges")}
    for name in result.names("workloads"):
        signals = result.signals("workloads", name)
        requested = [r.requested_rps.get(name) for r in reps]
        req = requested[0] if requested and requested[0] is not None else None
        entry = {
            **signals,
            "requested_rps": req,
            "achieved_rps": _achieved_rps(reps, name, signals["rps"]),
        }
        releases = sum(r.releases.get(name, 0) for r in reps)
        if releases:
            # Mean over replications, weighted by what each sent.
            entry["requests_per_release"] = sum(r.sent[name] for r in reps) / releases
        workloads[name] = cast(WorkloadSignals, entry)
    proxies = cast(ProxiesBlock, _mean_blocks([r.proxies for r in reps]))
    control_plane = cast(ControlPlaneBlock, _mean_blocks([r.control_plane for r in reps]))
    nodes = {n: fmean(r.node_utilisation[n] for r in reps) for n in reps[0].node_utilisation}
    app_cpu = {s: fmean(r.app_cpu_vcpu[s] for r in reps) for s in reps[0].app_cpu_vcpu}
    pods = pods_summary(reps)
    warnings: list[str] = []
    for rep in reps:
        for w in rep.warnings:
            if w not in warnings:
                warnings.append(w)
    saturated = False
    for node, util in nodes.items():
        if util >= SATURATION:
            saturated = True
            warnings.append(f"{node} is saturated: its cores are {util:.0%} busy")
    worker = {p: fmean(r.worker_utilisation.get(p, 0.0) for r in reps) for p in _pods(reps)}
    busy = sorted(p for p, u in worker.items() if u >= SATURATION)
    if busy:
        saturated = True
        shown = ", ".join(busy[:5]) + (f" and {len(busy) - 5} more" if len(busy) > 5 else "")
        warnings.append(f"app workers saturated (>= {SATURATION:.0%} busy): {shown}")
    proxy_util = {
        w: fmean(r.proxy_worker_utilisation.get(w, 0.0) for r in reps)
        for w in reps[0].proxy_worker_utilisation
    }
    hot = sorted(w for w, u in proxy_util.items() if u >= SATURATION)
    if hot:
        saturated = True
        shown = ", ".join(hot[:5]) + (f" and {len(hot) - 5} more" if len(hot) > 5 else "")
        warnings.append(f"proxy workers saturated (>= {SATURATION:.0%} busy): {shown}")
    if proxy_util:
        proxies["max_worker_utilisation"] = max(proxy_util.values())
    window = sum(r.window_s for r in reps)
    for name, signals in workloads.items():
        req = signals["requested_rps"]
        if req and _fell_behind(req * window, signals["achieved_rps"] * window):
            warnings.append(
                f"workload {name}: achieved {signals['achieved_rps']:.1f} rps of the "
                f"{req:.1f} requested; latency is that of a system that cannot keep up"
            )
    if saturated:
        warnings.append(
            "saturated: latencies grow with the run's length and are not steady-state values"
        )
    run: MeshRun = {
        "replications": len(reps),
        "services": services,
        "workloads": workloads,
        "edges": edges,
        "proxies": proxies,
        "control_plane": control_plane,
        "cost_models": cast(list[CostModelRef], reps[0].cost_models),
        "nodes": {n: {"utilisation": u} for n, u in nodes.items()},
        "app_cpu_vcpu": app_cpu,
        "pods": pods,
        "resilience": resilience_summary(reps),
        "saturated": saturated,
        "warnings": warnings,
        "timeline": [{"at_s": t, "event": what} for t, what in reps[0].timeline],
    }
    if any(r.cgroups for r in reps):
        run["cgroups"] = cgroups_summary(reps)
    observed = [r.observability for r in reps if r.observability]
    if observed:
        run["observability"] = _mean_nested(observed)
    zoned = [r.topology for r in reps if r.topology]
    if zoned:
        # Counts differ between replications; the first one's are shown, as the timeline's.
        run["topology"] = zoned[0] or {}
    return run


def limit_can_bind(cgroup: Mapping[str, Any]) -> bool:
    """Whether a container's CPU limit (a ``runs.<mesh>.cgroups`` block) can throttle it: one
    below the cores its threads can use at once. A limit at or above them never binds
    (Istio's default 2000m on a two-worker sidecar), which under ``cfs`` is on the books like
    any other; FCFS nodes keep only the binding ones (meshsim.sim.cpu.bandwidth), so the two
    show the same containers. A limit above its node's cores cannot bind either, which this
    does not know: such a container is shown, with no throttling."""
    limit = cgroup.get("cpu_limit_m")
    threads = cgroup.get("threads")
    return limit is not None and (threads is None or limit < threads * 1000.0 - 1e-6)


UNEVEN = 1.5
"""Pods of one version are shown as uneven when the busiest took this many times the
requests of the least busy (or that one took none)."""


def version_requests(pods: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per version (``service version``), the requests of each of its pods that served the
    whole window, in creation order: the pods its callers' balancers chose between."""
    groups: dict[str, list[float]] = {}
    for pod in pods.values():
        if pod["whole_window"]:
            key = f"{pod['service']} {pod['version']}"
            groups.setdefault(key, []).append(float(pod["requests"]))
    return groups


def uneven_pods(pods: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[float]]]:
    """The versions whose pods took their requests unevenly, each with its pods' shares in
    creation order: how the callers' balancers spread them (a gRPC caller's one connection
    under an L4 balancer, a slow replica avoided, an ejection). Only pods that served the
    whole window count, and only within one version, so that neither a rollout nor a
    traffic split shows here."""
    out = []
    for key, counts in version_requests(pods).items():
        total = sum(counts)
        if len(counts) >= 2 and total > 0.0 and max(counts) >= UNEVEN * min(counts):
            out.append((key, [c / total for c in counts]))
    return out


def shares_text(shares: list[float]) -> str:
    """Pods' shares in per cent, as the CLI, the report and its findings print them
    (``66 / 34 / 0``; beyond six pods their range)."""
    if len(shares) <= 6:
        return " / ".join(f"{100 * v:.0f}" for v in shares)
    return f"{len(shares)} pods, {100 * min(shares):.0f}..{100 * max(shares):.0f}"


def pods_summary(reps: list[Replication]) -> dict[str, PodBlock]:
    """Each app pod over the replications: the mean of its requests and CPU, and whether it
    served the whole window in every one (a pod some replication lacks counts zero there)."""
    names = dict.fromkeys(p for r in reps for p in r.pods)
    out: dict[str, PodBlock] = {}
    for name in names:
        seen = [r.pods[name] for r in reps if name in r.pods]
        first = seen[0]
        out[name] = {
            "service": first["service"],
            "version": first["version"],
            "requests": sum(p["requests"] for p in seen) / len(reps),
            "app_cpu_vcpu": sum(p["app_cpu_vcpu"] for p in seen) / len(reps),
            "whole_window": len(seen) == len(reps) and all(p["whole_window"] for p in seen),
        }
    return out


def cgroups_summary(reps: list[Replication]) -> dict[str, CGroupBlock]:
    """Per container cgroup (``cluster.scheduler: cfs``): the mean over replications, and
    the share of its bandwidth periods that were throttled (nr_throttled / nr_periods)."""
    out: dict[str, CGroupBlock] = {}
    for name in reps[0].cgroups:
        rows = [r.cgroups[name] for r in reps if name in r.cgroups]
        periods = fmean(row["nr_periods"] for row in rows)
        throttled = fmean(row["nr_throttled"] for row in rows)
        out[name] = {
            "node": rows[0]["node"],
            "cpu_weight": rows[0]["cpu_weight"],
            "cpu_limit_m": rows[0]["cpu_limit_m"],
            # Results stored before threads were recorded have none.
            "threads": rows[0].get("threads"),
            "pod": rows[0].get("pod"),
            "qos_class": rows[0].get("qos_class"),
            "cpu_vcpu": fmean(row["cpu_vcpu"] for row in rows),
            "nr_periods": periods,
            "nr_throttled": throttled,
            "throttled_share": throttled / periods if periods else 0.0,
            "throttled_s": fmean(row["throttled_s"] for row in rows),
            "oom_kills": fmean(row["oom_kills"] for row in rows),
        }
    return out


def _achieved_rps(reps: list[Replication], name: str, rps: float) -> float:
    """Requests of a workload that finished in the window, per second: what a load generator
    reports (fortio's ActualQPS). ``rps`` counts the requests *sent* in the window, all of
    which the run drains, so it stays at the offered rate for a system that cannot keep up.
    Results stored before completions were counted fall back to ``rps``."""
    completed = [r.workloads[name].completed for r in reps if name in r.workloads]
    window = sum(r.window_s for r in reps if name in r.workloads)
    counts = [c for c in completed if c is not None]
    if not completed or len(counts) < len(completed) or not window:
        return rps
    return sum(counts) / window


def _fell_behind(expected: float, achieved: float) -> bool:
    """Whether a workload completed clearly fewer requests than it was asked to send.

    A Poisson count has standard deviation sqrt(N), so a short run at a modest rate
    misses its mean by a few percent by chance alone; only a shortfall beyond both
    2 % and three standard deviations says the system could not keep up.
    """
    shortfall = expected - achieved
    return shortfall > max(0.02 * expected, 3.0 * math.sqrt(expected))


def resilience_summary(reps: list[Any]) -> dict[str, ResilienceBlock]:
    """Per service: resilience counters, the mean over replications (rounded), and the
    retry amplification (attempts per request through the mesh's client proxies)."""
    out: dict[str, ResilienceBlock] = {}
    for name in sorted({s for r in reps for s in getattr(r, "resilience", {})}):
        blocks = [r.resilience.get(name, {}) for r in reps]
        keys = [k for k in blocks[0] if k != "by_endpoint"] if blocks[0] else []
        entry: dict[str, Any] = {k: round(fmean(float(b.get(k, 0)) for b in blocks)) for k in keys}
        endpoints = sorted({e for b in blocks for e in b.get("by_endpoint", {})})
        entry["by_endpoint"] = {
            e: round(fmean(float(b.get("by_endpoint", {}).get(e, 0)) for b in blocks))
            for e in endpoints
        }
        requests = entry.get("requests", 0)
        entry["amplification"] = entry.get("attempts", 0) / requests if requests else None
        out[name] = cast(ResilienceBlock, entry)
    return out


def _pods(reps: list[Any]) -> list[str]:
    names: list[str] = []
    for rep in reps:
        names.extend(p for p in rep.worker_utilisation if p not in names)
    return names


def _mean_blocks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise mean of numeric fields over replications (others from the first)."""
    if not blocks:
        return {}
    out: dict[str, Any] = {}
    for key, value in blocks[0].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            out[key] = value
        else:
            mean = fmean(float(b.get(key, 0.0)) for b in blocks)
            out[key] = round(mean) if isinstance(value, int) else mean
    return out


def _mean_nested(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`_mean_blocks` into nested blocks (the ``observability`` block's)."""
    out = _mean_blocks(blocks)
    for key, value in blocks[0].items():
        if isinstance(value, dict):
            out[key] = _mean_nested([b.get(key, {}) for b in blocks])
    return out


def build_summary(result: RunResult) -> Summary:
    summary: Summary = {
        "schema": SCHEMA_VERSION,
        "meshsim_version": result.meshsim_version,
        "scenario": result.scenario_name,
        "scenario_sha256": result.scenario_sha256,
        "seed": result.seed,
        "runs": {mesh: mesh_summary(mr) for mesh, mr in result.meshes.items()},
        "added_latency_ms": added_latency(result),
    }
    _attach_paired_intervals(result, summary)
    sampling = result.model_sampling
    if sampling is not None:
        per_set = [{mesh: mesh_summary(mr) for mesh, mr in runs.items()} for runs in sampling.runs]
        attach_bands(summary["runs"], sampling.sets, per_set)
        summary["model_samples"] = cast(
            "ModelSamplesBlock", samples_block(sampling.parameters, sampling.sets)
        )
    return summary


def _attach_paired_intervals(result: RunResult, summary: Summary) -> None:
    """Each mesh's workloads get the paired 95 % CIs of their latency against the `none`
    run's (``added_latency_ci95_ms``) and against each later mesh's
    (``difference_ci95_ms.<mesh>``): :func:`meshsim.results.run.paired_difference_ci`."""
    meshes = list(result.meshes.items())
    base = result.meshes.get("none")
    for i, (mesh, mr) in enumerate(meshes):
        if mesh == "none":
            continue
        for name, sig in summary["runs"][mesh]["workloads"].items():
            if base is not None:
                ci = paired_difference_ci(mr, base, name)
                if ci is not None:
                    sig["added_latency_ci95_ms"] = ci
            others: dict[str, dict[str, list[float] | None]] = {}
            for other, omr in meshes[i + 1 :]:
                if other == "none":
                    continue
                ci = paired_difference_ci(mr, omr, name)
                if ci is not None:
                    others[other] = ci
            if others:
                sig["difference_ci95_ms"] = others


def added_latency(result: RunResult) -> dict[str, dict[str, AddedLatencyMs]]:
    """Per mesh and workload, latency added over the `none` run at each percentile."""
    base = result.meshes.get("none")
    if base is None:
        return {}
    out: dict[str, dict[str, AddedLatencyMs]] = {}
    for mesh, mr in result.meshes.items():
        if mesh == "none":
            continue
        per_workload: dict[str, AddedLatencyMs] = {}
        for name in mr.names("workloads"):
            mine = mr.merged("workloads", name)
            theirs = base.merged("workloads", name)
            if not mine.count or not theirs.count:
                continue
            per_workload[name] = cast(AddedLatencyMs, {
                key: (mine.quantile(q) - theirs.quantile(q)) * 1e3
                for key, q in ADDED_QUANTILES
            })  # fmt: skip
        out[mesh] = per_workload
    return out
