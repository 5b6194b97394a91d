"""Kubernetes' cgroup tree on this host's kernel: how a core is shared, beside the fair
scheduler's prediction (meshsim.sim.cpu.kubepods, meshsim.sim.cpu.fair).

Busy loops pinned to one core, each in a CPU cgroup laid out as kubelet would lay out two
pods: pod a (a 500m request: an app asking 500m and a proxy asking nothing, as Linkerd's by
default) and pod b (an app asking 500m), and, for contrast, the same containers side by side
with no pod level (``cluster.cgroup_hierarchy: flat``). Each case runs the loops a few
seconds and reads each one's CPU time (/proc/PID/schedstat); the simulator runs the same
hogs on one core of a FairScheduler with the same tree and weights (cgroup v1: cpu.shares
as the kernel's weight; v2: cpu.weight from kubelet's and runc's map).

    sudo python reports/validation/experiments/pod_shares.py [--core 1] [--seconds 3]

Needs a writable CPU cgroup hierarchy (root on cgroup v1 or v2); says why not otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import simpy

from meshsim.calibrate.cgroup import CpuCgroup, Support, probe
from meshsim.sim.cpu.cgroups import cpu_shares, cpu_weight, load_weight
from meshsim.sim.cpu.fair import CGroup, FairScheduler, GroupEntity

REQUESTS_M = {"a": 500.0, "a/proxy": None, "a/app": 500.0, "b": 500.0, "b/app": 500.0}
CASES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "pods: a's proxy and b's app busy": (True, ("a/proxy", "b/app")),
    "pods: a's proxy, a's app and b's app busy": (True, ("a/proxy", "a/app", "b/app")),
    "flat: the proxy and b's app busy": (False, ("a/proxy", "b/app")),
}


def _weight(request_m: float | None, version: int) -> float:
    shares = cpu_shares(request_m)
    return float(shares) if version == 1 else load_weight(cpu_weight(shares))


def predicted(nested: bool, busy: Sequence[str], version: int) -> dict[str, float]:
    """Each busy container's share of one core under the simulator's fair scheduler."""
    env = simpy.Environment()
    cpu = FairScheduler(env, 1)
    pods: dict[str, GroupEntity] = {}
    leaves: dict[str, CGroup] = {}
    for name in busy:
        pod, _, _container = name.partition("/")
        parent = None
        if nested:
            if pod not in pods:
                pods[pod] = cpu.parent_group(pod, _weight(REQUESTS_M[pod], version))
            parent = pods[pod]
        leaves[name] = cpu.group(name, _weight(REQUESTS_M[name], version), parent=parent)
    for g in leaves.values():
        cpu.submit(100.0, g, lambda: None)
    env.run(until=10.0)
    cpu._update()
    return {name: g.cpu_s / 10.0 for name, g in leaves.items()}


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


@contextlib.contextmanager
def _tree(support: Support, nested: bool, busy: Sequence[str]) -> Iterator[dict[str, CpuCgroup]]:
    top = f"meshsim-pod-shares-{os.getpid()}"
    made: list[CpuCgroup] = [CpuCgroup(top, limit_m=None, support=support, task_weight=True)]
    leaves: dict[str, CpuCgroup] = {}
    try:
        for name in busy:
            pod, _, container = name.partition("/")
            if nested:
                if not any(g.path.name == pod for g in made):
                    made.append(CpuCgroup(f"{top}/{pod}", limit_m=None,
                                          request_m=REQUESTS_M[pod], support=support))  # fmt: skip
                path = f"{top}/{pod}/{container}"
            else:
                path = f"{top}/{pod}-{container}"
            leaves[name] = CpuCgroup(
                path, limit_m=None, request_m=REQUESTS_M[name], support=support
            )
            made.append(leaves[name])
        yield leaves
    finally:
        for g in reversed(made):
            g.close()


def measured(
    support: Support, nested: bool, busy: Sequence[str], core: int, seconds: float
) -> dict[str, float]:
    """Each busy container's share of ``core`` over ``seconds``, on this host's kernel."""
    assert support.version is not None
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in busy]
    try:
        for p in loops:
            os.sched_setaffinity(p.pid, {core})
        with _tree(support, nested, busy) as leaves:
            for name, p in zip(busy, loops, strict=True):
                leaves[name].add([p.pid])
            time.sleep(0.3)
            start = {p.pid: _cpu_ns(p.pid) for p in loops}
            t0 = time.monotonic()
            time.sleep(seconds)
            used = {p.pid: _cpu_ns(p.pid) - start[p.pid] for p in loops}
            elapsed = time.monotonic() - t0
            for p in loops:
                p.kill()
                p.wait()
    finally:
        for p in loops:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {name: used[p.pid] / 1e9 / elapsed for name, p in zip(busy, loops, strict=True)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    support = probe()
    if support.version is None:
        print(f"no writable CPU cgroup here: {support.reason}")
        return 1
    print(f"cgroup v{support.version} ({support.reason}); core {args.core}, {args.seconds:g} s")
    for case, (nested, busy) in CASES.items():
        got = measured(support, nested, busy, args.core, args.seconds)
        want = predicted(nested, busy, support.version)
        print(case)
        for name in busy:
            print(f"  {name:8} kernel {got[name]:6.1%}   simulator {want[name]:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
