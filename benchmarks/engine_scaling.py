"""How the simulator's cost grows with work: wall time and peak memory against request rate,
hops, services and pods, for meshes `none`, `istio`, `linkerd` and `istio-ambient`, each
beside a bare simpy loop with the same mechanisms (benchmarks/bare_simpy.py).

Every (point, mesh) runs in a fresh subprocess, so its peak RSS is its own: the first run
there is meshsim's (peak RSS read right after it), then the bare loop and meshsim alternate
``--repeats`` times and the medians are kept, so machine load hits both alike. ``wall s`` is
building the simulation plus running it; ``us/req-hop`` and ``over bare`` count the run only
(the engine's rate: meshsim's requests per wall second over the bare loop's, the same shape
in the same process; ``us/req-hop`` is the run's wall time per request and hop); under a
mesh the bare loop still models only `none`'s mechanisms, so the ratio is what the mesh's
proxies cost on top. ``(CPU)`` is the same ratio from each side's CPU time (process_time),
steadier than wall time on a shared machine; the baseline column compares it. Issue 17's
goal: ``over bare`` >= 1.0 for `none`. Each mesh's ratio by hops is printed after the
table, with the load average at the start and the end, which the figure's title and the
baseline (``meta/...``) carry too: runs of 3 simulated seconds move by 10-30% from one
run to the next on a shared machine, so read ratios, and compare them at similar load.

    python benchmarks/engine_scaling.py [--quick] [--repeats N] [--update-baseline]
                                        [--figure benchmarks/engine_scaling.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bare_simpy import Shape, bare_run  # noqa: E402

BASELINE = HERE / "baselines" / "engine_scaling.json"
FIGURE = HERE / "engine_scaling.svg"
MESHES = ("none", "istio", "linkerd", "istio-ambient")
BASE = Shape(rate_rps=1000.0, hops=1, services=1, replicas=2, duration_s=3.0)
AXES: dict[str, tuple[str, list[float]]] = {
    "rate": ("rate_rps", [250.0, 500.0, 1000.0, 2000.0]),
    "hops": ("hops", [1, 2, 4]),
    "services": ("services", [1, 10, 50]),
    "pods": ("replicas", [2, 10, 50]),
}
"""Axis -> (Shape field, values); every other field stays at BASE's."""


def scenario_of(shape: Shape, mesh: str) -> Any:
    from meshsim.scenario import from_dict

    services = []
    workloads = []
    for c in range(shape.services):
        for h in range(shape.hops):
            services.append({
                "name": f"c{c}-s{h}",
                "replicas": shape.replicas,
                "cpu_ms": {"dist": "exponential", "mean": shape.cpu_ms},
                "concurrency": shape.concurrency,
                "calls": [{"service": f"c{c}-s{h + 1}"}] if h + 1 < shape.hops else [],
            })  # fmt: skip
        workloads.append({
            "name": f"load{c}", "target": f"c{c}-s0", "arrival": "poisson",
            "rate_rps": shape.rate_rps / shape.services, "connections": shape.connections,
        })  # fmt: skip
    return from_dict({
        "meshsim": 1, "name": "engine-scaling", "seed": 1,
        "duration_s": shape.duration_s, "warmup_s": shape.warmup_s, "meshes": [mesh],
        "cluster": {
            "nodes": shape.nodes, "cores_per_node": shape.cores_per_node,
            "network": {"same_node_us": shape.same_node_us,
                        "cross_node_us": shape.cross_node_us, "client_us": shape.client_us},
        },
        "services": services,
        "workloads": workloads,
    })  # fmt: skip


def _meshsim_once(shape: Shape, mesh: str) -> tuple[int, float, float, float]:
    """Requests sent, seconds to build the simulation, seconds to run it (wall, CPU)."""
    from meshsim.sim.engine import Simulation

    scenario = scenario_of(shape, mesh)
    t0 = time.perf_counter()
    sim = Simulation(scenario, mesh, 1)
    t1 = time.perf_counter()
    c1 = time.process_time()
    sim.run()
    cpu = time.process_time() - c1
    return sum(w.sent for w in sim.workloads), t1 - t0, time.perf_counter() - t1, cpu


def _bare_once(shape: Shape) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    c0 = time.process_time()
    sent = bare_run(shape)
    return sent, time.perf_counter() - t0, time.process_time() - c0


def measure_point(shape: Shape, mesh: str, repeats: int) -> dict[str, float]:
    """One (shape, mesh) in this process: see the module's docstring."""
    import meshsim.sim.engine  # noqa: F401  (imports before the RSS reference point)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sent, setup, run, cpu = _meshsim_once(shape, mesh)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    setups, runs, cpus = [setup], [run], [cpu]
    bare_walls, bare_cpus = [], []
    bare_sent = 0
    for i in range(repeats):
        bare_sent, bw, bc = _bare_once(shape)
        bare_walls.append(bw)
        bare_cpus.append(bc)
        if i + 1 < repeats:
            _, setup, run, cpu = _meshsim_once(shape, mesh)
            setups.append(setup)
            runs.append(run)
            cpus.append(cpu)
    setup = statistics.median(setups)
    run = statistics.median(runs)
    cpu = statistics.median(cpus)
    bare_wall = statistics.median(bare_walls)
    bare_cpu = statistics.median(bare_cpus)
    return {
        "requests": float(sent),
        "wall_s": setup + run,
        "setup_s": setup,
        "run_s": run,
        "us_per_request_hop": run / (sent * shape.hops) * 1e6,
        "bare_requests": float(bare_sent),
        "bare_wall_s": bare_wall,
        "over_bare": (sent / run) / (bare_sent / bare_wall),
        "cpu_us_per_request_hop": cpu / (sent * shape.hops) * 1e6,
        "over_bare_cpu": (sent / cpu) / (bare_sent / bare_cpu),
        "peak_rss_mb": peak,
        "rss_before_run_mb": rss_before,
    }


def points(quick: bool) -> list[tuple[str, float, Shape]]:
    """(axis, value, shape) for the grid; the base point appears once per axis it lies on."""
    base = replace(BASE, duration_s=1.0) if quick else BASE
    out = []
    for axis, (field, values) in AXES.items():
        for v in values[:2] if quick else values:
            kind = type(getattr(base, field))
            out.append((axis, v, replace(base, **{field: kind(v)})))
    return out


def run_grid(quick: bool, repeats: int, meshes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    done: dict[tuple[Shape, str], dict[str, float]] = {}
    for axis, value, shape in points(quick):
        for mesh in meshes:
            key = f"{axis}={value:g}/{mesh}"
            if (shape, mesh) not in done:
                arg = json.dumps({"shape": asdict(shape), "mesh": mesh, "repeats": repeats})
                out = subprocess.run(
                    [sys.executable, __file__, "--point", arg],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                done[(shape, mesh)] = json.loads(out.stdout.strip().splitlines()[-1])
            results[key] = done[(shape, mesh)]
            r = results[key]
            print(
                f"  {key:28s} {r['requests']:>8.0f} req {r['wall_s']:7.2f} s "
                f"{r['us_per_request_hop']:7.1f} us/req-hop  {r['over_bare']:5.2f}x bare  "
                f"{r['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    return results


def print_table(results: dict[str, dict[str, float]], stored: dict[str, float]) -> None:
    print(
        f"\n{'point':16s}{'mesh':>15s}{'requests':>10s}{'wall s':>8s}{'setup s':>8s}"
        f"{'us/req-hop':>11s}{'over bare':>10s}{'(CPU)':>7s}{'peak MB':>9s}"
        f"{'(CPU) vs baseline':>19s}"
    )
    for key, r in results.items():
        point, mesh = key.split("/")
        base = stored.get(f"{key}/over_bare_cpu")
        change = f"{(r['over_bare_cpu'] - base) / base:+.0%}" if base else "-"
        print(
            f"{point:16s}{mesh:>15s}{r['requests']:>10.0f}{r['wall_s']:>8.2f}"
            f"{r['setup_s']:>8.2f}{r['us_per_request_hop']:>11.1f}{r['over_bare']:>9.2f}x"
            f"{r['over_bare_cpu']:>6.2f}x{r['peak_rss_mb']:>9.0f}"
            f"{change:>19s}"
        )


def flat(results: dict[str, dict[str, float]]) -> dict[str, float]:
    keep = (
        "bare_wall_s",
        "wall_s",
        "setup_s",
        "us_per_request_hop",
        "over_bare",
        "cpu_us_per_request_hop",
        "over_bare_cpu",
        "peak_rss_mb",
        "requests",
    )
    return {f"{k}/{m}": v[m] for k, v in results.items() for m in keep}


def print_ratios(results: dict[str, dict[str, float]], meshes: tuple[str, ...]) -> None:
    """Each mesh's rate over the bare loop's along the hops axis (wall time, CPU time)."""
    hops = [k.split("/")[0] for k in results if k.startswith("hops=") and k.endswith("/none")]
    print(f"  over the bare loop (wall / CPU), by hops: {', '.join(hops)}")
    for mesh in meshes:
        cells = [results.get(f"{h}/{mesh}") for h in hops]
        text = "   ".join(
            f"{r['over_bare']:.2f} / {r['over_bare_cpu']:.2f}" for r in cells if r is not None
        )
        print(f"    {mesh:>14s}: {text}")


def figure(
    results: dict[str, dict[str, float]],
    path: Path,
    meshes: tuple[str, ...],
    load: tuple[float, float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(3, len(AXES), figsize=(4 * len(AXES), 9.5), constrained_layout=True)
    labels = {
        "rate": "request rate (rps)",
        "hops": "hops (chain length)",
        "services": "services (chains side by side)",
        "pods": "pods per service",
    }
    for col, axis in enumerate(AXES):
        keys = [k for k in results if k.startswith(f"{axis}=")]
        for mesh in meshes:
            mine = [k for k in keys if k.endswith(f"/{mesh}")]
            xs = [float(k.split("/")[0].split("=")[1]) for k in mine]
            axs[0][col].plot(xs, [results[k]["wall_s"] for k in mine], "o-", label=mesh)
            axs[1][col].plot(xs, [results[k]["over_bare_cpu"] for k in mine], "o-", label=mesh)
            axs[2][col].plot(xs, [results[k]["peak_rss_mb"] for k in mine], "o-", label=mesh)
        bare = [k for k in keys if k.endswith("/none")]
        axs[0][col].plot(
            [float(k.split("/")[0].split("=")[1]) for k in bare],
            [results[k]["bare_wall_s"] for k in bare],
            "k--",
            label="bare simpy",
        )
        axs[1][col].axhline(1.0, color="k", linestyle="--", linewidth=1)
        axs[2][col].set_xlabel(labels[axis])
        values = AXES[axis][1]
        for row in (0, 1, 2):
            axs[row][col].set_xscale("log")
            axs[row][col].set_xticks(values, [f"{v:g}" for v in values])
            axs[row][col].minorticks_off()
            axs[row][col].grid(True, alpha=0.3)
        axs[1][col].set_ylim(bottom=0.0)
    axs[0][0].set_ylabel(f"wall time (s) for {BASE.duration_s:g} simulated s")
    axs[1][0].set_ylabel("requests/s over the bare loop's (CPU time)")
    axs[2][0].set_ylabel("peak RSS of the process (MB)")
    axs[0][0].legend(fontsize=8)
    fig.suptitle(
        "meshsim engine cost against work (median of interleaved runs; load average "
        f"{load[0]:.1f} to {load[1]:.1f} on {os.cpu_count()} cores)"
    )
    fig.savefig(path)
    print(f"figure written: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 simulated s, two values per axis")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--meshes", default=",".join(MESHES))
    ap.add_argument("--figure", type=Path, default=None, help=f"write the figure (e.g. {FIGURE})")
    ap.add_argument("--update-baseline", action="store_true")
    ap.add_argument("--point", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        spec = json.loads(args.point)
        print(json.dumps(measure_point(Shape(**spec["shape"]), spec["mesh"], spec["repeats"])))
        return
    meshes = tuple(args.meshes.split(","))
    stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    print(
        f"engine scaling: {BASE.duration_s:g} simulated s per point (base {BASE.rate_rps:g} "
        f"rps, 1 hop, 2 pods), medians of {args.repeats} interleaved runs"
    )
    load_start = os.getloadavg()[0]
    results = run_grid(args.quick, args.repeats, meshes)
    load_end = os.getloadavg()[0]
    print_table(results, stored)
    print(f"\n  load average (1 min): {load_start:.2f} at the start, {load_end:.2f} at the end")
    print_ratios(results, meshes)
    none = results.get("hops=1/none")
    if none is not None:
        verdict = "meets" if none["over_bare"] >= 1.0 else "MISSES"
        print(
            f"  goal: none at the base point >= 1.0x the bare loop -> {none['over_bare']:.2f}x "
            f"(CPU time: {none['over_bare_cpu']:.2f}x) {verdict}"
        )
    if args.figure is not None:
        figure(results, args.figure, meshes, (load_start, load_end))
    if args.update_baseline or (not stored and not args.quick):
        stored = flat(results)
        stored["meta/load_average_1min_start"] = load_start
        stored["meta/load_average_1min_end"] = load_end
        BASELINE.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"  baseline written: {BASELINE}")


if __name__ == "__main__":
    main()
