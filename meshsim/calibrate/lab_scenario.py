"""The calibration lab as a scenario, and one prediction of it.

The lab topology (:func:`lab_scenario`): a two-node cluster with one core per node, like the
lab's two pinned cores: node 0 runs the echo pod (single-threaded: concurrency 1) and its
sidecar, node 1 the client's sidecar (``meshed_clients``), as in the lab where core 1 runs the
server sidecar and the echo and core 0 the client sidecar and the load generator (whose CPU per
request the workload's ``client_cpu_ms`` charges on the client node; fit records without it
leave it out). The mesh is ``istio`` with ``workers: 1`` (the asyncio proxy is one thread;
with one worker the Istio data plane has no connection pinning to get wrong), ``h2_upgrade``
off (the proxy speaks HTTP/1.1 between sidecars), ``mtls`` STRICT or DISABLE as measured, and
the calibrated model file. The latency outside the proxies is the measured baseline's
(:func:`baseline_for`), the echo's and the load generator's CPU are what they cost beside
the proxies (:func:`colocated_cpu`), and the load generator releases requests on the lab's
effective timer tick (:func:`release_tick_ms`). :mod:`meshsim.calibrate.validate` compares
the predictions with the held-out measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from meshsim.proxy.loadgen import TIMER_TICK_S
from meshsim.sim.cpu.slices import kernel_base_slice_s

LAB_SCHEDULER: Literal["fcfs", "cfs"] = "cfs"
"""How the simulated lab's cores are shared (``cluster.scheduler``): the one that validates
better on the committed record, refitted under each (reports/validation/cpu-limits.md, "The
baseline counted twice": cfs 16 of 17 checked figures within goal, fcfs 14)."""

LAB_WARMUP_S = 0.5
"""The simulated lab's warm-up, before its measured window: a run of ``duration_s``
measures ``duration_s - LAB_WARMUP_S``, as the lab measures its load after a warm-up."""

if TYPE_CHECKING:
    from meshsim.sim.engine import Simulation


def baseline_for(fit: dict[str, Any], point: dict[str, Any]) -> dict[str, Any] | None:
    """The measured baseline (no proxies) for a point: same keep-alive if measured; same
    payload if measured, else the nearest; then the nearest load, or for a closed loop
    (saturation) the highest. None for fit records without baselines.

    A closed loop without proxies is no baseline for one through them: it runs several times
    faster (66k rps against 9k on the reference machine), where the load generator never
    sleeps and costs half as much CPU per request; the highest open-loop load is the nearest
    in rate to the proxied saturation.
    """
    cd = fit.get("client_delay")
    if not cd or not cd.get("baselines"):
        return None
    rows = [b for b in cd["baselines"] if b["rps"] > 0]
    ka = [b for b in rows if b.get("keep_alive", True) == bool(point["keep_alive"])]
    rows = ka or rows
    if not rows:
        return None
    pay = min(
        {b["payload_bytes"] for b in rows}, key=lambda b: abs(b - int(point["payload_bytes"]))
    )
    same = [b for b in rows if b["payload_bytes"] == pay]
    if point["rps"] <= 0:
        highest: dict[str, Any] = max(same, key=lambda b: float(b["rps"]))
        return highest
    best: dict[str, Any] = min(same, key=lambda b: abs(b["rps"] - float(point["rps"])))
    return best


def lab_scenario(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    *,
    duration_s: float = 4.0,
    seed: int = 1,
    cpu_scale: Mapping[str, float] | None = None,
    phases: Mapping[str, Mapping[str, float]] | None = None,
    trace: Mapping[str, Sequence[int]] | None = None,
    wakeups: Mapping[str, Mapping[str, float]] | None = None,
    cpu_limit_m: float | None = None,
    spells: Mapping[str, Mapping[str, Any]] | None = None,
    idle_wakeups: Mapping[str, Mapping[str, float]] | None = None,
    scheduler: Literal["fcfs", "cfs"] | None = None,
    outside_delay: bool = True,
) -> dict[str, Any]:
    """The lab as a scenario, its cores shared by ``scheduler`` (None: :data:`LAB_SCHEDULER`);
    ``cpu_scale`` multiplies the echo's (``echo``) and the load
    generator's (``load_generator``) CPU per request (see :func:`speed_scales`); ``trace``
    or ``phases`` (a point's ``host_trace`` or ``host_phases``, per lab core) give each node
    its core's fast and slow phases (:func:`host_speed`); ``wakeups`` (a point's
    ``wake_latency_us``) its core's wake-up latency (:func:`wakeup_latency`), and
    ``idle_wakeups`` (its ``wake_latency_cross_us``) the latency to run a thread on its core
    idle, which the load generator's timer pays (:func:`idle_wakeup_latency`);
    ``cpu_limit_m`` limits the server sidecar as a ``throttled`` point did
    (:func:`limit_server_sidecar`); ``spells`` (per lab core,
    :func:`meshsim.calibrate.host_spells.fit_cores`) gives each node its core's slow
    spells; ``outside_delay`` False leaves out the latency outside the proxies (the
    baseline's simulation of itself: :mod:`meshsim.calibrate.baseline_residual`)."""
    scale = cpu_scale or {}
    lab = fit["lab"]
    payload = int(point["payload_bytes"])
    base = baseline_for(fit, point)
    # With a measured baseline, the latency outside the proxies is drawn from it and the
    # pods are 0 apart (the proxies' loopback transit is in hop_latency_us); without one
    # (older fit records, closed loops), the baseline's p50 is the network delay.
    net = 0.0 if fit.get("client_delay") else float(lab["network_one_way_us"])
    beside = colocated_cpu(fit, point)
    echo_us = float(
        beside["echo"] if beside else (base or {}).get("echo_cpu_us") or lab["echo_cpu_us"]
    ) * scale.get("echo", 1.0)
    delay = None
    if outside_delay and base is not None and point["rps"] > 0:
        from meshsim.calibrate.baseline_residual import residual_applies, residual_delay_ms

        # What the simulated lab's load generator and echo do not make themselves, where
        # the baseline says what they cost and was timed as they would time it.
        applies = residual_applies(base)
        delay = residual_delay_ms(model_path, fit, base) if applies else base["delay_ms"]
    workload = _load_workload(fit, point, base, beside, scale, delay)
    doc: dict[str, Any] = {
        "meshsim": 1,
        "name": "calibration-lab",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": LAB_WARMUP_S,
        "meshes": ["istio"],
        "cluster": {
            "nodes": 2,
            "cores_per_node": 1,
            "network": {"same_node_us": net, "cross_node_us": net, "client_us": net},
            # The kernel's wake-up preemption, as the lab's scheduler trace shows it: the
            # load generator and the echo take their core from the busier sidecar on waking.
            "wakeup_preemption": True,
            **host_speed(fit, phases, trace, spells),
            **wakeup_latency(fit, wakeups),
            **idle_wakeup_latency(fit, idle_wakeups),
        },
        "services": [
            {
                "name": "echo",
                "replicas": 1,
                "concurrency": 1,
                "cpu_ms": {"dist": "constant", "mean": echo_us / 1000.0},
                "response_bytes": payload,
            }
        ],
        "workloads": [workload],
        "mesh_options": {
            "meshed_clients": True,
            "keep_alive": bool(point["keep_alive"]),
            "istio": {
                "workers": 1,
                "mtls": "STRICT" if point["mtls"] else "DISABLE",
                "h2_upgrade": False,
                "telemetry": True,
                "model": str(model_path),
            },
        },
    }
    scheduler = scheduler or LAB_SCHEDULER
    if cpu_limit_m is None and scheduler == "fcfs":
        # Named, not left to the default (cfs): the FCFS lab is the comparison's other side.
        doc["cluster"]["scheduler"] = "fcfs"
        return doc
    return limit_server_sidecar(
        doc, cpu_limit_m, scheduler=scheduler, base_slice_ms=lab_base_slice_ms(fit)
    )


def lab_base_slice_ms(fit: Mapping[str, Any]) -> float | None:
    """The lab kernel's EEVDF base slice (None: not known), which the simulated lab's fair
    scheduler takes: as the lab read it (``se.slice``, already scaled by the CPUs its kernel
    saw), else the default of the kernel release and CPUs it recorded. Each simulated node is
    one of those CPUs, whose own default would be a one-CPU kernel's."""
    machine = fit.get("machine") or {}
    if machine.get("sched_base_slice_ns"):
        return float(machine["sched_base_slice_ns"]) / 1e6
    cores = machine.get("cores")
    if not cores:
        return None
    return kernel_base_slice_s(str(machine.get("kernel", "")), int(cores)) * 1e3


def _load_workload(
    fit: Mapping[str, Any],
    point: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    beside: Mapping[str, float] | None,
    scale: Mapping[str, float],
    delay_ms: list[float] | None,
) -> dict[str, Any]:
    """The lab's load generator as the scenario's workload at ``point``: its open loop's
    releases and the latency outside the proxies (``delay_ms``: what the baseline ``base``
    measured without them has beyond the simulated lab's own, None: nothing), or its
    closed loop; and its CPU per request on the client's core (measured ``beside`` the
    point, else the baseline's), times ``scale``."""
    payload = int(point["payload_bytes"])
    conns = int(point["connections"])
    if point["rps"] > 0:
        workload: dict[str, Any] = {
            "name": "load",
            "target": "echo",
            "arrival": "poisson",
            "rate_rps": float(point["rps"]),
            "request_bytes": payload,
            "connections": conns,
        }
        if base is not None:
            if delay_ms is not None and max(delay_ms) > 0.0:
                workload["client_delay_ms"] = {"dist": "empirical", "values": delay_ms}
            tick = release_tick_ms(fit, base)
            if tick is not None:
                # The baseline is from each request's actual send: the simulated load
                # generator waits for its timer's tick itself, and its clumps reach the client
                # sidecar as the lab's do (one wake-up for several requests, a short queue).
                workload["release_tick_ms"] = tick
                if base.get("release_lateness_ms"):
                    # Where the lab timed its timer, the releases come when its event loop's
                    # millisecond timer fires, as libuv fires it: early or late by where
                    # the loop's clock stood and by when the loop wakes (its own sleep, or a
                    # response). The baselines' lateness checks this (the report).
                    workload["release_tick_ms"] = TIMER_TICK_S * 1000.0
                    workload["release_timer"] = "event_loop"
    else:
        # A closed loop: its throughput is what is checked. The baseline's latency is mostly
        # the load generator and echo queueing on their own cores, which the simulated lab
        # produces itself, so only their CPU is taken from it.
        workload = {
            "name": "load",
            "target": "echo",
            "arrival": "closed",
            "clients": conns,
            "request_bytes": payload,
            "connections": conns,
        }
    lg_cpu = beside["load_generator"] if beside else (base or {}).get("load_generator_cpu_us")
    if lg_cpu:
        # The load generator shares the client sidecar's core: its CPU per request, measured
        # without proxies at this load and keep-alive, occupies the client node.
        lg_us = float(lg_cpu) * scale.get("load_generator", 1.0)
        workload["client_cpu_ms"] = {"dist": "constant", "mean": lg_us / 1000.0}
    return workload


def limit_server_sidecar(
    doc: dict[str, Any],
    limit_m: float | None,
    *,
    period_ms: float = 100.0,
    scheduler: Literal["fcfs", "cfs"] | None = None,
    base_slice_ms: float | None = None,
) -> dict[str, Any]:
    """The lab scenario ``doc`` with its server sidecar limited to ``limit_m`` millicores
    (None: no limit) by CFS bandwidth control in ``period_ms`` periods, as the lab's
    ``throttled`` points limit it (:mod:`meshsim.calibrate.throttle`).

    The scheduler stays the unlimited points' (``scheduler`` None: the doc's own), so that
    a throttled point's prediction differs from its unlimited twin's by the limit alone.
    Under ``cfs`` every container gets the same smallest CPU request, so the same weight:
    in the lab every process is a plain process of equal weight, and only the limit
    differs; the base slice is the lab kernel's, ``base_slice_ms`` (:func:`lab_base_slice_ms`;
    None: the scenario's default)."""
    cluster = {**doc["cluster"], "cfs_period_ms": period_ms}
    if scheduler is not None:
        cluster["scheduler"] = scheduler
    out = {**doc, "cluster": cluster}
    limits = {} if limit_m is None else {"limits": {"cpu": f"{limit_m:g}m"}}
    if cluster.get("scheduler", "cfs") == "fcfs":  # (cfs: cluster.scheduler's default)
        out["services"] = [{**svc, "proxy_resources": limits} for svc in doc["services"]]
        return out
    # The lab's processes are cgroups side by side, not containers of pods; the wake-up
    # preemption is the fair scheduler's own (the FCFS key would only be ignored).
    cluster.pop("wakeup_preemption", None)
    out["cluster"] = {**cluster, "cgroup_hierarchy": "flat"}
    if base_slice_ms is not None:
        out["cluster"]["sched_base_slice_ms"] = base_slice_ms
    equal = {"requests": {"cpu": "2m"}}
    out["services"] = [
        {**svc, "resources": equal, "proxy_resources": {**equal, **limits}}
        for svc in doc["services"]
    ]
    istio = {**doc["mesh_options"]["istio"], "proxy_resources": equal}
    out["mesh_options"] = {**doc["mesh_options"], "istio": istio}
    return out


def node_cores(fit: Mapping[str, Any]) -> list[str]:
    """The lab core of each simulated node, as the records key cores: node 0 is the echo's
    (and the server sidecar's), node 1 the client sidecar's (and the load generator's);
    "" where the record has no placement."""
    placement = fit.get("placement") or {}
    return [
        str(core) if (core := placement.get(name)) is not None else ""
        for name in ("echo", "client_sidecar")
    ]


def host_speed(
    fit: Mapping[str, Any],
    phases: Mapping[str, Mapping[str, float]] | None,
    trace: Mapping[str, Sequence[int]] | None = None,
    spells: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``cluster.host_speed`` for the simulated lab's two nodes, each its lab core's (node 0:
    the echo's core, node 1: the client sidecar's): the core's measured trace replayed where
    the point has one, else its two-state fit, and on top the core's slow ``spells`` where
    they are given (:mod:`meshsim.calibrate.host_spells`, measured at the point as its
    phases are); empty when nothing says anything.

    Around a mean of 1 (:func:`meshsim.calibrate.host_phases.host_speed_spec`,
    :func:`meshsim.calibrate.host_spells.spell_spec`): the level is the speed adjustment's,
    the phases and spells only spread it."""
    from meshsim.calibrate.host_phases import host_speed_spec, replay_spec
    from meshsim.calibrate.host_spells import spell_spec

    given = spells or {}
    constant = {"slow_factor": 1.0, "slow_share": 0.0, "slow_dwell_ms": 1.0}
    specs: list[dict[str, Any] | None] = []
    for key in node_cores(fit):
        bins = (trace or {}).get(key)
        one = (phases or {}).get(key)
        spec = replay_spec(bins) if bins else host_speed_spec(one) if one else None
        core_spells = given.get(key)
        if core_spells and core_spells["spells"]:
            spec = {**(spec or constant), "spells": spell_spec(core_spells)}
        specs.append(spec)
    if all(s is None for s in specs):
        return {}
    return {"host_speed": [s or constant for s in specs]}


def wakeup_latency(
    fit: Mapping[str, Any], wakeups: Mapping[str, Mapping[str, float]] | None
) -> dict[str, Any]:
    """``cluster.wakeup_latency`` for the simulated lab's two nodes, each its lab core's
    (node 0: the echo's core, node 1: the client sidecar's): the point's wake-up latencies
    over the fit points' floor, charged as the fit charges them
    (:func:`meshsim.calibrate.wake_latency.wakeup_spec`); empty when the point or the fit
    points were not probed."""
    from meshsim.calibrate.wake_latency import wakeup_spec

    wake = fit.get("wake_latency")
    cores = node_cores(fit)
    if not wake or not wakeups or not all(c in wakeups for c in cores):
        return {}
    return {"wakeup_latency": [wakeup_spec(wakeups[c], wake) for c in cores]}


def idle_wakeup_latency(
    fit: Mapping[str, Any], idle: Mapping[str, Mapping[str, float]] | None
) -> dict[str, Any]:
    """``cluster.idle_wakeup_latency`` for the simulated lab's nodes: the latency to run a
    process sleeping on a lab core woken from the other one (the point's
    ``wake_latency_cross_us``), over the fit points' floor as the proxies' wake-ups are. A
    probe woken from the other core finds its own core idle, as the load generator's timer
    does when it expires with nothing running: on this VM the halted vCPU must be woken
    first (tens of microseconds, where a wake-up from a running core costs a few). Empty
    when the point or the fit points were not probed."""
    from meshsim.calibrate.wake_latency import wakeup_spec

    wake = fit.get("wake_latency")
    cores = node_cores(fit)
    if not wake or not idle or not all(c in idle for c in cores):
        return {}
    return {"idle_wakeup_latency": [wakeup_spec(idle[c], wake) for c in cores]}


def predict(
    model_path: Path,
    fit: dict[str, Any],
    point: dict[str, Any],
    *,
    duration_s: float = 4.0,
    cpu_scale: Mapping[str, float] | None = None,
    phases: Mapping[str, Mapping[str, float]] | None = None,
    trace: Mapping[str, Sequence[int]] | None = None,
    wakeups: Mapping[str, Mapping[str, float]] | None = None,
    cpu_limit_m: float | None = None,
    spells: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 1,
    idle_wakeups: Mapping[str, Mapping[str, float]] | None = None,
    scheduler: Literal["fcfs", "cfs"] | None = None,
) -> dict[str, float]:
    """One simulated run of the lab at ``point`` (see :func:`lab_scenario` for the options):
    the load's latency percentiles (ms) and throughput, the sidecars' wake-ups, the server
    sidecar's CPU per 100 ms period as the lab reads it (``period_cpu_cv``,
    ``period_lag1``: :class:`meshsim.calibrate.cpu_drift.SimulatedPeriods`), and with
    ``cpu_limit_m`` its cgroup counters over the measured window."""
    from meshsim.api import run_scenario
    from meshsim.calibrate.cpu_drift import SimulatedPeriods
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    doc = lab_scenario(
        model_path,
        fit,
        point,
        duration_s=duration_s,
        cpu_scale=cpu_scale,
        phases=phases,
        trace=trace,
        wakeups=wakeups,
        cpu_limit_m=cpu_limit_m,
        spells=spells,
        seed=seed,
        idle_wakeups=idle_wakeups,
        scheduler=scheduler,
    )
    probes: list[SimulatedPeriods] = []
    sims: list[Simulation] = []

    def observe(sim: Simulation) -> None:
        probes.append(SimulatedPeriods(sim, {"server_sidecar": SERVER_SIDECAR_CGROUP}))
        sims.append(sim)

    out = build_summary(run_scenario(from_dict(doc), observe=observe))["runs"]["istio"]
    periods = probes[0].figures().get("server_sidecar") or {}
    w = out["workloads"]["load"]
    lat = w["latency_ms"]
    sidecars: Mapping[str, Any] = out["proxies"].get("by_kind", {}).get("sidecar", {})
    requests = sidecars.get("requests")
    per_request = sidecars["wakeups"] / requests if requests else float("nan")
    wake_cpu_us = sidecars["wakeup_cpu_s"] * 1e6 / requests if requests else float("nan")
    preempted = sidecars.get("preemptions", 0) / requests if requests else float("nan")
    fair = [node.cpu for node in sims[0].nodes if node.cpu is not None]
    window_s = duration_s - LAB_WARMUP_S
    if fair and w["achieved_rps"] > 0.0 and window_s > 0.0:
        # Under cfs the workers count none: the fair scheduler counts the sidecars'
        # involuntary switches, what the lab counts, in the measured window; per request
        # of each sidecar there (each request passes both).
        switches = sum(
            n for cpu in fair for (victim, _by), n in cpu.preemptions.items()
            if victim.endswith("/sidecar")
        )  # fmt: skip
        preempted = switches / (2.0 * w["achieved_rps"] * window_s)
    # Throughput as the load generator counts it: requests completed in the window.
    return {
        "p50": _ms(lat["p50"]),
        "p90": _ms(lat["p90"]),
        "p99": _ms(lat["p99"]),
        "rps": w["achieved_rps"],
        "wakeups_per_request": per_request,
        # The wake-ups' CPU charged per request (model terms, before the node's speed): with
        # wakeup_cache_decay_ms less than wakeups_per_request x wakeup_cpu_us.
        "wakeup_cpu_us_per_request": wake_cpu_us,
        # Bursts whose worker's thread gave its core up with them ready, and the CPU the
        # resumptions were charged (model terms), per request.
        "preemptions_per_request": preempted,
        "preemption_cpu_us_per_request": (
            sidecars.get("preemption_cpu_s", 0.0) * 1e6 / requests if requests else float("nan")
        ),
        "saturated": bool(out.get("saturated", False)),
        **{k: w[k] for k in ("requests_per_release",) if k in w},
        **_lateness(sims[0]),
        "period_cpu_cv": periods.get("cpu_cv", float("nan")),
        "period_lag1": periods.get("lag1", float("nan")),
        "period_residual_cv": periods.get("residual_cv", float("nan")),
        **(throttling(out, doc) if cpu_limit_m is not None else {}),
    }


def _lateness(sim: Simulation) -> dict[str, float]:
    """The simulated load generator's timer lateness where it slept on a timer, as the lab
    records it (ms): ``lateness_mean``, ``lateness_p10``, ``lateness_p50``,
    ``lateness_p90``."""
    late = np.asarray([v for w in sim.workloads for v in w.release_lateness_s]) * 1e3
    if not len(late):
        return {}
    p10, p50, p90 = np.percentile(late, [10, 50, 90])
    return {
        "lateness_mean": float(late.mean()),
        "lateness_p10": float(p10),
        "lateness_p50": float(p50),
        "lateness_p90": float(p90),
    }


SERVER_SIDECAR_CGROUP = "echo-v1-0/sidecar"
"""The simulated lab's server sidecar: its proxy's name, and its cgroup's in
``summary.json``'s ``cgroups``."""


def throttling(run: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, float]:
    """The server sidecar's CFS bandwidth counters in a simulated run, as the lab reads
    ``cpu.stat``: periods, throttled periods, throttled seconds, and the measured window;
    and its CPU per completed request (what decides how often a limit is reached)."""
    group: Mapping[str, Any] = run.get("cgroups", {}).get(SERVER_SIDECAR_CGROUP, {})
    rps = run["workloads"]["load"]["achieved_rps"]
    return {
        "nr_periods": group.get("nr_periods", 0),
        "nr_throttled": group.get("nr_throttled", 0),
        "throttled_s": group.get("throttled_s", 0.0),
        "window_s": float(doc["duration_s"]) - float(doc["warmup_s"]),
        "server_sidecar_cpu_us": group.get("cpu_vcpu", 0.0) * 1e6 / rps if rps else float("nan"),
    }


def colocated_cpu(fit: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, float] | None:
    """The echo's and the load generator's CPU per request beside the proxies, at the point's
    load and payload, from the fit points (None: the record has too few to say).

    Next to a sidecar on its core, each is woken for nearly every request (the echo by the
    server sidecar's write: 0.75 wake-ups per request against 0.1 alone at 7900 rps), so at
    high load it costs more per request than the same load costs it without proxies. What
    it costs falls with the load: a share of it is paid per second, not per request (its
    event loop's timers, the lab's samplers in the load generator's process, wake-ups that
    batching amortises): the load generator's 84-94 us per request at about 1000 rps in
    most passes against 27-49 at 6100-6400 in runs V and W (reports/validation/README.md, "The echo
    and the load generator beside the proxies"). So each is fitted over the base
    configuration's proxied fit points as ``a + k x KiB + b / rps`` by least absolute
    deviations (the median's regression: the fit loads have one pass each but the lowest,
    whose passes disagree by up to 2x), which extrapolates to the held-out loads above the
    fit grid's highest (80 and 90 % of capacity against 60 %) as a per-second cost does,
    where holding the highest fit load's value charged the load generator 47 us against the
    30 it measured. A closed loop takes the median of the proxied closed loops, each moved
    to the point's payload by that fit's slope in KiB.
    """
    rows = [
        r
        for r in fit.get("points", [])
        if r["role"] == "fit"
        and r["proxied"]
        and r["keep_alive"]
        and not r["mtls"]
        and not r["filters"]
        and {"echo", "load_generator"} <= set(r["process_cpu_us_per_request"])
    ]
    names = ("echo", "load_generator")
    open_rows = [r for r in rows if r["rps"] > 0]
    coef: dict[str, np.ndarray] = {}
    sized = False
    if len({float(r["rps"]) for r in open_rows}) >= 2:
        kib = np.array([r["payload_bytes"] / 1024.0 for r in open_rows])
        per_s = 1.0 / np.array([float(r["rps"]) for r in open_rows])
        # Without a second payload there is no slope in KiB to fit: held at 0.
        sized = len(set(kib)) > 1
        design = np.column_stack([np.ones(len(open_rows)), per_s] + ([kib] if sized else []))
        for name in names:
            cpu = np.array([float(r["process_cpu_us_per_request"][name]) for r in open_rows])
            coef[name] = least_absolute_deviations(design, cpu)
    pay_kib = int(point["payload_bytes"]) / 1024.0
    if point["rps"] <= 0:
        closed = [r for r in rows if r["rps"] <= 0]
        if not closed:
            return None
        # The closed loops' payloads are not the point's (the fit's are the others): the open
        # loops' slope in KiB moves each there.
        return _positive({
            name: float(
                np.median(
                    [
                        r["process_cpu_us_per_request"][name]
                        + (
                            float(coef[name][2]) * (pay_kib - r["payload_bytes"] / 1024.0)
                            if sized
                            else 0.0
                        )
                        for r in closed
                    ]
                )
            )
            for name in names
        })  # fmt: skip
    if not coef:
        return None
    at = np.array([1.0, 1.0 / float(point["rps"])] + ([pay_kib] if sized else []))
    return _positive({name: float(at @ coef[name]) for name in names})


def _positive(cpu: dict[str, float]) -> dict[str, float] | None:
    """``cpu`` if every CPU per request in it is positive; None otherwise, so that the point
    takes its baseline's own measurement: on a host whose speed moved several-fold within a
    point (a quick grid's fit on a noisy VM, 2026-12-05), the fit's slope in KiB carried a
    closed loop's CPU from 4 KiB to 256 B at -10660 us a request."""
    return cpu if all(v > 0.0 for v in cpu.values()) else None


def least_absolute_deviations(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The coefficients minimising the sum of ``|y - design @ coef|`` (a linear program)."""
    from scipy.optimize import linprog

    n, k = design.shape
    # coef free, u and v >= 0 with design @ coef + u - v = y; minimise sum(u + v).
    cost = np.concatenate([np.zeros(k), np.ones(2 * n)])
    eq = np.hstack([design, np.eye(n), -np.eye(n)])
    bounds = [(None, None)] * k + [(0.0, None)] * (2 * n)
    res = linprog(cost, A_eq=eq, b_eq=y, bounds=bounds, method="highs")
    if not res.success:  # a feasible, bounded program: cannot happen short of NaNs in y
        raise ValueError(f"least absolute deviations did not solve: {res.message}")
    return np.asarray(res.x[:k])


def release_tick_ms(fit: Mapping[str, Any], base: Mapping[str, Any] | None) -> float | None:
    """The tick the simulated load generator releases an open loop's requests on, given the
    point's baseline (None: at their intended times, as for records whose baselines are from
    the intended time)."""
    if base is None or base.get("delay_from") != "send":
        return None
    return float(fit["lab"].get("release_tick_ms") or TIMER_TICK_S * 1000.0)


def _ms(latency: float | None) -> float:
    """A summary latency; NaN where no request was measured (None in summary.json)."""
    return float("nan") if latency is None else latency
