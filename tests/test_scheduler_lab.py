"""CFS bandwidth control for real: the kernel's cpu.stat against the same arithmetic the
simulator's tests check (tests/test_scheduler.py).

A child process works 60 ms of CPU for every 100 ms of wall time (an open-loop schedule,
so it falls behind and stays runnable), in a cgroup limited to 50 ms per 100 ms. The
kernel then throttles it in (nearly) every period, for about the 50 ms the quota leaves,
and it gets half a core. The cgroup is given a large weight so that other work on the
machine does not keep it below its quota. Skipped, with the reason, where this process
cannot create a CPU cgroup (meshsim.calibrate.cgroup.probe).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshsim.calibrate.cgroup import CpuCgroup, CpuStat, Support, probe, remove_stale

WORKER = """
import sys, time
sys.stdin.readline()
start = time.monotonic()
owed = 0.0
k = 0
while time.monotonic() - start < {seconds}:
    # 60 ms of work arrives every 100 ms; do what is owed, busily.
    due = 0.060 * (int((time.monotonic() - start) / 0.1) + 1)
    t0 = time.process_time()
    while time.process_time() - t0 < 0.001 and owed < due:
        k += 1
    owed += time.process_time() - t0
    if owed >= due:
        time.sleep(0.001)
print(time.process_time(), flush=True)
"""


@pytest.mark.timing
@pytest.mark.integration
def test_a_cgroup_at_60_percent_of_a_core_with_a_50_percent_quota_is_throttled_each_period() -> (
    None
):
    support = probe()
    if support.path is None:
        pytest.skip(f"no writable CPU cgroup: {support.reason}")
    seconds = 3.0
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(seconds=seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        with CpuCgroup(
            f"meshsim-test-{proc.pid}", limit_m=500, request_m=10_000, support=support
        ) as cg:
            cg.add([proc.pid])
            before = cg.stat()
            began = time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            cpu_s = float(proc.stdout.readline())
            wall = time.monotonic() - began
            delta = cg.stat() - before
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    print(f"wall {wall:.2f} s, cpu {cpu_s:.2f} s, {delta}")
    periods = wall / 0.1
    # Every period in which it ran, it spent its 50 ms and waited (allow the first and
    # last, and one in ten for the machine's other work).
    assert delta.nr_periods >= 0.8 * periods
    assert delta.nr_throttled >= 0.8 * delta.nr_periods
    # About 50 ms throttled per throttled period (the kernel hands out runtime in 5 ms
    # pieces per CPU, so a period may overrun or fall short by a piece or two).
    assert 0.035 <= delta.throttled_s / delta.nr_throttled <= 0.065
    # Half a core: 50 ms per 100 ms, against the 60 ms it asked for.
    assert cpu_s / wall == pytest.approx(0.5, abs=0.08)


def _schedstat_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


@pytest.mark.timing
@pytest.mark.integration
@pytest.mark.parametrize("nested", [True, False])
def test_a_proxy_without_a_request_shares_a_core_by_its_pods_weight_on_the_kernel(
    nested: bool,
) -> None:
    # Two busy loops pinned to one core: a proxy asking no CPU (shares 2) in pod a (500m),
    # an app asking 500m in pod b (500m). Nested as kubelet nests them, the pods split the
    # core in half, as the simulator's tree (tests/test_scheduler_kubepods.py); side by
    # side, the proxy gets 2 / 514 of it (the simulator's flat layout). Within 5 points.
    support = probe()
    if support.path is None:
        pytest.skip(f"no writable CPU cgroup: {support.reason}")
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    top = f"meshsim-test-pods-{os.getpid()}"
    made: list[CpuCgroup] = []
    try:
        core = max(os.sched_getaffinity(0))
        for p in loops:
            os.sched_setaffinity(p.pid, {core})
        made.append(CpuCgroup(top, limit_m=None, support=support, task_weight=True))
        if nested:
            made.append(CpuCgroup(f"{top}/a", limit_m=None, request_m=500, support=support))
            made.append(CpuCgroup(f"{top}/b", limit_m=None, request_m=500, support=support))
            paths = (f"{top}/a/proxy", f"{top}/b/app")
        else:
            paths = (f"{top}/a-proxy", f"{top}/b-app")
        for path, request, p in zip(paths, (None, 500), loops, strict=True):
            leaf = CpuCgroup(path, limit_m=None, request_m=request, support=support)
            made.append(leaf)
            leaf.add([p.pid])
        time.sleep(0.3)
        before = [_schedstat_ns(p.pid) for p in loops]
        began = time.monotonic()
        time.sleep(1.5)
        shares = [
            (_schedstat_ns(p.pid) - b) / 1e9 / (time.monotonic() - began)
            for p, b in zip(loops, before, strict=True)
        ]
    finally:
        for p in loops:
            p.kill()
            p.wait()
        for cg in reversed(made):
            cg.close()
    print(f"nested {nested}: proxy {shares[0]:.1%}, app {shares[1]:.1%}")
    want = (0.5, 0.5) if nested else (2 / 514, 512 / 514)
    if support.version == 2:
        # cpu.weight from kubelet's and runc's map: 1 and 20 (load 10 and 205).
        want = (0.5, 0.5) if nested else (10 / 215, 205 / 215)
    assert shares == pytest.approx(want, abs=0.05)


# --------------------------------------------------------------------------- without a kernel


def _fake_v1(root: Path) -> None:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")


def test_probe_prefers_v2_with_the_cpu_controller_and_falls_back_to_v1(tmp_path: Path) -> None:
    assert probe(tmp_path).path is None
    assert "no cgroup v2 hierarchy" in probe(tmp_path).reason
    _fake_v1(tmp_path)
    assert (probe(tmp_path).version, probe(tmp_path).path) == (1, tmp_path / "cpu")
    # A hybrid host's unified/ without the cpu controller does not count...
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    assert probe(tmp_path).version == 1
    # ...one with it does.
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert (probe(tmp_path).version, probe(tmp_path).path) == (2, tmp_path)


def test_a_v2_cgroup_writes_cpu_max_and_weight_and_reads_cpu_stat(tmp_path: Path) -> None:
    support = Support(2, tmp_path, "test")
    cg = CpuCgroup("proxy", limit_m=250, request_m=100, support=support)
    assert (tmp_path / "proxy" / "cpu.max").read_text() == "25000 100000"
    assert (tmp_path / "proxy" / "cpu.weight").read_text() == "4"  # 100m -> 102 shares -> 4
    (tmp_path / "proxy" / "cpu.stat").write_text(
        "usage_usec 2000000\nuser_usec 1\nsystem_usec 1\nnr_periods 40\nnr_throttled 10\n"
        "throttled_usec 350000\n"
    )
    assert cg.stat() == CpuStat(40, 10, 0.35, 2.0)
    unlimited = CpuCgroup("free", limit_m=None, support=support)
    assert (tmp_path / "free" / "cpu.max").read_text() == "max 100000"
    del unlimited


def test_a_v1_cgroup_writes_the_cfs_quota_and_shares(tmp_path: Path) -> None:
    _fake_v1(tmp_path)
    cg = CpuCgroup("proxy", limit_m=500, request_m=None, support=probe(tmp_path))
    d = tmp_path / "cpu" / "proxy"
    assert (d / "cpu.cfs_quota_us").read_text() == "50000"
    assert (d / "cpu.cfs_period_us").read_text() == "100000"
    assert (d / "cpu.shares").read_text() == "2"
    (d / "cpu.stat").write_text("nr_periods 7\nnr_throttled 3\nthrottled_time 150000000\n")
    stat = cg.stat()
    assert (stat.nr_periods, stat.nr_throttled, stat.throttled_s) == (7, 3, 0.15)


def test_stale_cgroups_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = 2**22 + 1  # above the kernel's pid_max: no such process
    for name in (f"meshsim-lab-{dead}-echo", f"meshsim-lab-{os.getpid()}-echo", "other-1-x"):
        (tmp_path / name).mkdir()
    busy = tmp_path / f"meshsim-lab-{dead}-server_sidecar"
    (busy / "child").mkdir(parents=True)  # not empty: rmdir refuses, as for a busy cgroup
    assert remove_stale(tmp_path, "meshsim-lab-") == [tmp_path / f"meshsim-lab-{dead}-echo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"meshsim-lab-{os.getpid()}-echo", "other-1-x", busy.name]
    )
