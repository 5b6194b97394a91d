"""A CPU cgroup for a process under test: its limit, its weight and its ``cpu.stat``.

The lab puts a proxy in a cgroup of its own to measure what Kubernetes' CPU limits do to it:
CFS bandwidth control gives the cgroup ``quota`` of CPU time per ``period`` and throttles it
until the next period once spent (the kernel's ``Documentation/scheduler/sched-bwc.rst``).
On cgroup v2 that is ``cpu.max`` (``"quota period"``) and ``cpu.weight``, with ``cpu.stat``
counting ``nr_periods``, ``nr_throttled`` and ``throttled_usec``; on a cgroup v1 ``cpu``
hierarchy (hybrid hosts, where v2 has no cpu controller) the same mechanism is
``cpu.cfs_quota_us``, ``cpu.cfs_period_us`` and ``cpu.shares``, and ``cpu.stat`` gives
``throttled_time`` in nanoseconds. :func:`probe` says which one this host lets us write, or
why neither.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meshsim.sim.cpu.cgroups import cpu_shares, cpu_weight

ROOT = Path("/sys/fs/cgroup")

OLDER_RECORDS = "shared (recorded before the lab gave its components cgroups)"
"""The lab's cgroups in a record that does not say: every component in the calibrating
process's own (:attr:`meshsim.calibrate.lab.Lab.cgroups`)."""


@dataclass(frozen=True)
class Support:
    """Where CPU cgroups can be made on this host (``path`` None: nowhere, see ``reason``)."""

    version: int | None
    path: Path | None
    reason: str


@dataclass(frozen=True)
class CpuStat:
    """Bandwidth counters of one cgroup (differences of two readings are what happened)."""

    nr_periods: int
    nr_throttled: int
    throttled_s: float
    usage_s: float

    def __sub__(self, other: CpuStat) -> CpuStat:
        return CpuStat(
            self.nr_periods - other.nr_periods,
            self.nr_throttled - other.nr_throttled,
            self.throttled_s - other.throttled_s,
            self.usage_s - other.usage_s,
        )


def _v2_root(root: Path) -> Path | None:
    """The cgroup v2 mount with the cpu controller: /sys/fs/cgroup or a hybrid's unified/."""
    for candidate in (root, root / "unified"):
        controllers = candidate / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return candidate
    return None


def probe(root: Path = ROOT) -> Support:
    """Which cgroup version this process can create CPU cgroups in, and where."""
    v2 = _v2_root(root)
    reasons: list[str] = []
    if v2 is not None:
        if _writable_child(v2):
            return Support(2, v2, "cgroup v2 with the cpu controller")
        reasons.append(f"cgroup v2 at {v2} is not writable by this process")
    else:
        reasons.append("no cgroup v2 hierarchy with the cpu controller")
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        if _writable_child(v1):
            return Support(1, v1, "cgroup v1 cpu controller (" + "; ".join(reasons) + ")")
        reasons.append(f"cgroup v1 at {v1} is not writable by this process")
    else:
        reasons.append("no cgroup v1 cpu controller")
    return Support(None, None, "; ".join(reasons))


def _writable_child(parent: Path) -> bool:
    test = parent / f"meshsim-probe-{os.getpid()}"
    try:
        test.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        test.rmdir()
    return True


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the cgroups ``PREFIX<pid>-...`` under ``parent`` whose process is gone (a lab
    killed by SIGKILL cannot remove its own); those removed. A cgroup that still holds a
    process is kept."""
    removed = []
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            path.rmdir()
            removed.append(path)
    return removed


class CpuCgroup:
    """A child cgroup with a CPU limit and weight; processes are moved in with :meth:`add`.

    Use it as a context manager: on exit its processes go back to the parent and the
    cgroup is removed.
    """

    def __init__(
        self,
        name: str,
        *,
        limit_m: float | None,
        request_m: float | None = None,
        period_us: int = 100_000,
        support: Support | None = None,
        task_weight: bool = False,
    ) -> None:
        support = support or probe()
        if support.path is None or support.version is None:
            raise OSError(f"cannot make a CPU cgroup here: {support.reason}")
        self.version = support.version
        self.parent = support.path
        self.path = support.path / name
        self.period_us = period_us
        self.limit_m = limit_m
        self.path.mkdir(exist_ok=True)
        # With ``task_weight`` the cgroup weighs what a plain nice-0 process does beside it
        # (v2 weight 100, v1 shares 1024: the kernel's own equivalence); otherwise what
        # kubelet gives the request (1000m: shares 1024 but v2 weight 39, runc's map).
        shares = 1024 if task_weight else cpu_shares(request_m)
        if self.version == 2:
            weight = 100 if task_weight else cpu_weight(shares)
            self._write("cpu.weight", str(weight))
        else:
            self._write("cpu.cfs_period_us", str(period_us))
            self._write("cpu.shares", str(shares))
        self.set_limit(limit_m)

    def set_limit(self, limit_m: float | None) -> None:
        """CFS bandwidth control at ``limit_m`` millicores (None: no limit)."""
        self.limit_m = limit_m
        quota_us = None if limit_m is None else int(limit_m * self.period_us / 1000)
        if self.version == 2:
            self._write("cpu.max", f"{'max' if quota_us is None else quota_us} {self.period_us}")
        else:
            self._write("cpu.cfs_quota_us", str(-1 if quota_us is None else quota_us))

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def add(self, pids: Iterable[int]) -> None:
        """Move processes (and on v1 their threads) into the cgroup."""
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def stat(self) -> CpuStat:
        fields: dict[str, int] = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                fields[key] = int(value)
        if self.version == 2:
            throttled = fields.get("throttled_usec", 0) / 1e6
            usage = fields.get("usage_usec", 0) / 1e6
        else:
            throttled = fields.get("throttled_time", 0) / 1e9
            acct = self.parent.parent / "cpuacct" / self.path.name / "cpuacct.usage"
            usage = int(acct.read_text()) / 1e9 if acct.exists() else float("nan")
        return CpuStat(fields.get("nr_periods", 0), fields.get("nr_throttled", 0), throttled, usage)

    def close(self) -> None:
        procs = self.path / "cgroup.procs"
        if procs.exists():
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    (self.parent / "cgroup.procs").write_text(pid)
        # A process still exiting keeps the cgroup busy for a moment.
        for _ in range(20):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> CpuCgroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Containers:
    """A CPU cgroup ``PREFIX<pid>-NAME`` for each named component of this process, each with
    no limit and a plain process's weight, as a pod's containers have (stale ones of a
    killed process removed first); :attr:`state` says which, or why there are none."""

    def __init__(self, names: Iterable[str], prefix: str) -> None:
        self._groups: dict[str, CpuCgroup] = {}
        support = probe()
        if support.path is None:
            self.state = f"shared ({support.reason})"
            return
        remove_stale(support.path, prefix)
        try:
            for name in names:
                self._groups[name] = CpuCgroup(
                    f"{prefix}{os.getpid()}-{name}",
                    limit_m=None,
                    support=support,
                    task_weight=True,
                )
        except OSError as exc:
            self.close()
            self.state = f"shared (cannot make the components' CPU cgroups: {exc})"
            return
        self.state = f"one per component (cgroup v{support.version})"

    def get(self, name: str) -> CpuCgroup | None:
        """The component's cgroup; None where there are none."""
        return self._groups.get(name)

    def close(self) -> None:
        for cg in self._groups.values():
            cg.close()
        self._groups.clear()
