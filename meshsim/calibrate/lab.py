"""The calibration lab on loopback: load generator -> client sidecar -> server sidecar -> echo.

Every component but the load generator is a subprocess (:mod:`meshsim.calibrate.node`) pinned
to one core with ``os.sched_setaffinity``; the load generator runs in this process, pinned too.
With two cores the placement is::

    core 0: load generator (this process) + client sidecar   (the "client node")
    core 1: server sidecar + echo upstream                    (the "server node")

so that each sidecar shares its core with one lighter component, and the lab maps onto a
two-node, one-core-per-node simulated cluster (see :mod:`meshsim.calibrate.validate`). The
placement actually obtained is recorded in :attr:`Lab.placement`. Where the host lets it,
each component but the load generator also runs in a CPU cgroup of its own with no limit
(:attr:`Lab.cgroups`), as each container of a pod does: that decides how the processes
sharing a core preempt each other, and it is the cgroup a CPU-limited point limits.

Per point the lab records the load generator's corrected latencies (from the intended send
time), the achieved rate, each sidecar's per-request CPU samples (``cpu_us`` of its access log:
thread CPU inside the request's callbacks) and each process's total CPU per request (from
``/proc/PID/stat``, or to the nanosecond from ``/proc/PID/task/*/schedstat`` where the
kernel has it: callbacks *plus* event-loop and kernel work), each process's wake-ups per
request (voluntary context switches: the times its event loop went to sleep with nothing to
do, and had to be woken) and its run delay per request (time runnable but waiting for its
core, from ``schedstat``: how much the processes sharing a core hold each other up), and
each sidecar's ``duration_ms`` quantiles (from its access log: request parsed to response
written), which split the load generator's latency into the parts outside the client
sidecar, its own share and the server side (:mod:`meshsim.calibrate.decomposition`). Points
without proxies (load generator -> echo) give the baseline, so the proxies' added latency is
known.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from meshsim.calibrate import cache_cooling, cgroup, host_phases, period_cpu, speed, wake_latency
from meshsim.calibrate.cgroup import CpuCgroup, CpuStat
from meshsim.calibrate.point_record import LogSamples, PointRun, access_log_samples, measured
from meshsim.calibrate.points import LabConfig, Measured, Point
from meshsim.calibrate.procstat import tree_sched
from meshsim.calibrate.proxycmd import CommandNode, ProxyCommand, free_port, stop_process
from meshsim.errors import MeshsimError
from meshsim.proxy.loadgen import LoadSpec, run_load

PROBED_LOAD_S = 5.0
"""A full grid point's load. The host's probes around a point (its phases traced for
``host_phases.TRACE_S`` per core, the wake-up hops for ``wake_latency.PROBE_S``) take
about 3.5 s; around a shorter load (the quick grid's 1 s) they are scaled down with it,
the hops to no less than a third (100 hops per sender), so that the probes do not take
three times as long as the load they bracket."""


def probe_scale(point: Point) -> float:
    """The share of the full probes that a point's load gets (:data:`PROBED_LOAD_S`)."""
    return min(1.0, point.duration_s / PROBED_LOAD_S)


class _Node:
    """A pinned subprocess running one lab component."""

    def __init__(self, name: str, args: list[str], cpu: int | None, log: Path | None) -> None:
        self.name = name
        self.cpu = cpu
        self.log = log
        cmd = [sys.executable, "-m", "meshsim.calibrate.node", *args]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if log is not None:
            cmd += ["--access-log", str(log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise MeshsimError(f"lab component {name} failed to start: {line}{err[-2000:]}")
        self.port = int(line.split()[1])
        self._offset = 0

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def new_cpu_samples(self) -> list[float]:
        """``cpu_us`` of the access-log lines written since the last call."""
        return self.new_log_samples().cpu_us

    def new_log_samples(self) -> LogSamples:
        """What the access-log lines written since the last call say
        (:func:`access_log_samples`)."""
        if self.log is None or not self.log.exists():
            return LogSamples()
        with self.log.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        return access_log_samples(data[:cut])

    def stop(self) -> None:
        stop_process(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _log_samples(node: Sidecar) -> LogSamples:
    """A sidecar's new access-log samples; a proxy command's log is not ours to read."""
    if isinstance(node, _Node):
        return node.new_log_samples()
    return LogSamples(cpu_us=node.new_cpu_samples())


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def _stop_signal(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM and SIGINT end the lab like an exception, so that ``close()`` runs."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


Sidecar = _Node | CommandNode


class Lab:
    """The running lab for one configuration; :meth:`reconfigure` restarts the sidecars.

    The sidecars are meshsim's own proxy, or with ``proxy`` any proxy process started from a
    command template (:mod:`meshsim.calibrate.proxycmd`): the load generator, the echo, the
    placement and the measurements stay the same, only the process under test changes.

    Its components are subprocesses: :meth:`close` stops them (use it in ``finally``). While
    the lab runs, SIGTERM and SIGINT raise in the main thread instead of ending the process
    on the spot, so ``finally`` blocks run and no component is left behind; the components
    also ask the kernel to stop them if this process dies any other way
    (:func:`meshsim.calibrate.node.die_with_parent`).
    """

    def __init__(
        self,
        workdir: Path,
        proxy: ProxyCommand | None = None,
        key_type: str = "ecdsa-p256",
        *,
        containers: bool = True,
        cpu_sample_every: int | None = None,
    ) -> None:
        from meshsim.proxy.ca import check_key_type

        self.proxy = proxy
        self.key_type = check_key_type(key_type)
        self._saved_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved_handlers[sig] = signal.signal(sig, _stop_signal)
        self.workdir = workdir
        self.cpu_sample_every = cpu_sample_every
        """meshsim's sidecars time the CPU of one request in this many (None: the proxy's
        default; 1, every request: a timeline of the sidecars' CPU per request, which an
        experiment reads; the calibration keeps the default, whose cost its fit measured)."""
        cores = _cores()
        self.core_client = cores[0] if cores else None
        self.core_server = cores[1] if len(cores) > 1 else self.core_client
        self._saved_affinity = set(cores)
        self.placement = {
            "load_generator": self.core_client,
            "client_sidecar": self.core_client,
            "server_sidecar": self.core_server,
            "echo": self.core_server,
            "available_cores": cores,
        }
        self.tls_dir = workdir / f"tls-{key_type}"
        self.client: Sidecar | None = None
        self.server: Sidecar | None = None
        self.config: LabConfig | None = None
        # In one cgroup the process a sidecar's write wakes on its core (the echo) preempts
        # it before its event loop sleeps; as entities of different cgroups they do not, and
        # the sidecar sleeps and is woken for the reply: its wake-ups per request more than
        # doubled at 5700 rps (reports/validation/cpu-limits.md). A pod's containers are
        # cgroups of their own, so the lab's are too (the load generator stays in this
        # process's), and a CPU limit is all that its throttled points change.
        self._containers = (
            cgroup.Containers(("client_sidecar", "server_sidecar", "echo"), "meshsim-lab-")
            if containers
            else None
        )
        self.cgroups = self._containers.state if self._containers else "shared (not asked for)"
        """Where the lab's components run: each in a CPU cgroup of its own
        (:meth:`container`), or all in this process's, and why."""
        try:
            self._issue_certs()
            self.echo = _Node("echo", ["echo"], self.core_server, None)
            self._contain("echo", self.echo)
        except BaseException:
            self.close()
            raise

    def _issue_certs(self) -> None:
        """A throw-away CA of the lab's key type and one workload certificate for both
        sidecars (the CA's key is of the same type, as each mesh's own CA's is)."""
        from meshsim.proxy.ca import CertificateAuthority

        if (self.tls_dir / "cert.pem").exists():
            return
        ca = CertificateAuthority.create("cluster.local", key_type=self.key_type)
        ca.issue("default", "calibrate").write(self.tls_dir)

    def use(self, proxy: ProxyCommand | None, key_type: str) -> None:
        """Switch the process under test and the certificates' key type (the sidecars
        restart at the next measurement); the load generator and the echo stay."""
        from meshsim.proxy.ca import check_key_type

        self._stop_sidecars()
        self.config = None
        self.proxy = proxy
        self.key_type = check_key_type(key_type)
        self.tls_dir = self.workdir / f"tls-{key_type}"
        self._issue_certs()

    def reconfigure(self, cfg: LabConfig) -> None:
        if cfg == self.config:
            return
        self._stop_sidecars()
        if self.proxy is not None:
            self._start_commands(self.proxy, cfg)
            self._contain_sidecars()
            self.config = cfg
            return
        pool = [] if cfg.keep_alive else ["--no-pool"]
        both = ["--filters", str(cfg.filters)]
        if self.cpu_sample_every is not None:
            both += ["--cpu-sample-every", str(self.cpu_sample_every)]
        tls_srv = ["--tls", "server", "--tls-dir", str(self.tls_dir)] if cfg.mtls else []
        tls_cli = ["--tls", "client", "--tls-dir", str(self.tls_dir)] if cfg.mtls else []
        self.server = _Node(
            "server-sidecar",
            [
                "proxy",
                "--name",
                "inbound",
                "--upstream",
                f"127.0.0.1:{self.echo.port}",
                *tls_srv,
                *both,
                *pool,
            ],
            self.core_server,
            self.workdir / f"server-{cfg.name}.log",
        )
        self.client = _Node(
            "client-sidecar",
            [
                "proxy",
                "--name",
                "outbound",
                "--upstream",
                f"127.0.0.1:{self.server.port}",
                *tls_cli,
                *both,
                *pool,
            ],
            self.core_client,
            self.workdir / f"client-{cfg.name}.log",
        )
        self._contain_sidecars()
        self.config = cfg

    def container(self, name: str) -> CpuCgroup | None:
        """The CPU cgroup of the lab's component ``name`` (``client_sidecar``,
        ``server_sidecar``, ``echo``); None where the lab runs without them."""
        return self._containers.get(name) if self._containers else None

    def _contain(self, name: str, node: Sidecar) -> None:
        """Move a (re)started component into its cgroup, if the lab has them."""
        cg = self.container(name)
        if cg is None:
            return
        try:
            cg.add(node.pids())
        except OSError as exc:
            raise MeshsimError(f"cannot move the lab's {name} into {cg.path}: {exc}") from exc

    def _contain_sidecars(self) -> None:
        for name, node in (("client_sidecar", self.client), ("server_sidecar", self.server)):
            if node is not None:
                self._contain(name, node)

    def _start_commands(self, cmd: ProxyCommand, cfg: LabConfig) -> None:
        """Both sidecars from the command template (server first: the client needs its
        port)."""
        if cfg.filters:
            raise MeshsimError(
                f"a proxy command has no synthetic-filter knob (configuration {cfg.name})"
            )
        if cfg.mtls and not cmd.mtls:
            raise MeshsimError(f"{cmd.template!r} has no {{mtls}}: cannot run {cfg.name}")
        if not cfg.keep_alive and not cmd.keepalive_knob:
            raise MeshsimError(f"{cmd.template!r} has no {{keepalive}}: cannot run {cfg.name}")
        files = {
            "cert": str(self.tls_dir / "cert.pem"),
            "key": str(self.tls_dir / "key.pem"),
            "ca": str(self.tls_dir / "ca.pem"),
        }
        common = {
            **files,
            "mtls": "on" if cfg.mtls else "off",
            "keepalive": "on" if cfg.keep_alive else "off",
        }
        upstream = self.echo.port
        for role, core in (("inbound", self.core_server), ("outbound", self.core_client)):
            name = "server-sidecar" if role == "inbound" else "client-sidecar"
            port = free_port()
            scratch = self.workdir / f"{name}-{cfg.name}"
            scratch.mkdir(parents=True, exist_ok=True)
            argv = cmd.render(
                listen=f"127.0.0.1:{port}",
                upstream=f"127.0.0.1:{upstream}",
                role=role,
                workdir=str(scratch),
                **common,
            )
            node = CommandNode(name, argv, core, port, scratch / "output.log")
            if role == "inbound":
                self.server = node
                upstream = port
            else:
                self.client = node

    def _stop_sidecars(self) -> None:
        for node in (self.client, self.server):
            if node is not None:
                node.stop()
        self.client = self.server = None

    def close(self) -> None:
        try:
            self._stop_sidecars()
            if hasattr(self, "echo"):
                self.echo.stop()
        finally:
            if self._containers is not None:
                self._containers.close()
            self._restore_signals()

    def _restore_signals(self) -> None:
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        if self.core_client is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.core_client})
        try:
            yield
        finally:
            if self._saved_affinity and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, self._saved_affinity)

    def measure(self, point: Point, seed: int = 1) -> Measured:
        """Run one grid point's load, with the host's probes around it, and what it gave."""
        run = self._load(point, seed)
        return measured(point, run, seed)

    def measure_counted(
        self, point: Point, cgroup: CpuCgroup, seed: int = 1
    ) -> tuple[Measured, CpuStat]:
        """:meth:`measure`, and ``cgroup``'s ``cpu.stat`` over the load alone: not over the
        warm-up before it, a closed loop as fast as the path goes that a limited sidecar
        spends its quota in (run AB's 1.5x points counted two periods of about 50 ms in
        passes whose load never reached the quota), nor over the probes around it."""
        run = self._load(point, seed, cgroup)
        assert run.cpu_stat is not None
        return measured(point, run, seed), run.cpu_stat

    def _load(self, point: Point, seed: int, cgroup: CpuCgroup | None = None) -> PointRun:
        self.reconfigure(point.config)
        assert self.client is not None
        assert self.server is not None
        port = self.client.port if point.proxied else self.echo.port
        headers: tuple[tuple[str, str], ...] = ()
        if not point.config.keep_alive:
            headers = (("connection", "close"),)
        body = b"x" * point.payload
        spec = LoadSpec(
            url=f"http://127.0.0.1:{port}/echo",
            rps=point.rps,
            connections=point.connections,
            duration_s=point.duration_s,
            poisson=point.rps > 0,
            seed=seed,
            method="POST",
            body=body,
            headers=headers,
            drain_s=2.0,
        )
        nodes: dict[str, Sidecar] = {
            "client_sidecar": self.client,
            "server_sidecar": self.server,
            "echo": self.echo,
        }
        # Discard samples of earlier points and warm the path up (connections, caches).
        with self.pinned():
            run_load(
                LoadSpec(
                    url=spec.url,
                    rps=0,
                    connections=point.connections,
                    duration_s=0.2,
                    method="POST",
                    body=body,
                    headers=headers,
                )
            )
            self.client.new_cpu_samples()
            self.server.new_cpu_samples()
            pids = {k: n.pids() for k, n in nodes.items()}
            pids["load_generator"] = [os.getpid()]
            # The probe runs outside the CPU counters' window, on an idle lab.
            speed_before = self.probe_speed()
            phases_before = self.trace_host(probe_scale(point))
            wake_before = self.probe_wakeups(probe_scale(point))
            before = {k: tree_sched(p) for k, p in pids.items()}
            sidecars = {k: pids[k] for k in ("client_sidecar", "server_sidecar")}
            with period_cpu.PeriodSampler(sidecars if point.proxied else {}) as periods:
                stat_before = None if cgroup is None else cgroup.stat()
                wall_start = time.time()
                result = run_load(spec)
                wall_end = time.time()
                cpu_stat = (
                    cgroup.stat() - stat_before
                    if cgroup is not None and stat_before is not None
                    else None
                )
            after = {k: tree_sched(p) for k, p in pids.items()}
        time.sleep(0.05)  # let the access logs flush their last lines
        speed_after = self.probe_speed()
        phases_after = self.trace_host(probe_scale(point))
        wake_after = self.probe_wakeups(probe_scale(point))
        used = {k: after[k] - before[k] for k in pids}
        logs: dict[str, LogSamples] = {}
        if point.proxied:
            logs = {
                "client_sidecar": _log_samples(self.client),
                "server_sidecar": _log_samples(self.server),
            }
        else:
            for k in ("client_sidecar", "server_sidecar"):
                used.pop(k)
        return PointRun(
            result=result,
            used=used,
            logs=logs,
            by_period=period_cpu.measure(
                periods.samples,
                {k: log.answered_ts for k, log in logs.items() if log.answered_ts},
                wall_start,
                wall_end,
            ),
            speed=speed.point_speed(speed_before, speed_after),
            phases=(phases_before, phases_after),
            wakeups=(wake_before, wake_after),
            cpu_stat=cpu_stat,
        )

    def probe_speed(self) -> dict[str, float]:
        """The speed probe's seconds on each of the lab's cores (:mod:`meshsim.calibrate.speed`)."""
        return speed.probe_cores(c for c in (self.core_client, self.core_server) if c is not None)

    def trace_host(self, scale: float = 1.0) -> dict[str, Any]:
        """The host's phases traced on each of the lab's cores for ``scale`` of the full
        trace (:mod:`meshsim.calibrate.host_phases`)."""
        return host_phases.trace_cores(
            (c for c in (self.core_client, self.core_server) if c is not None),
            host_phases.TRACE_S * scale,
        )

    def probe_cache_cooling(self) -> dict[str, Any] | None:
        """How fast the host cools a sleeping process's caches, on the server core
        (:mod:`meshsim.calibrate.cache_cooling`); None where it cannot be probed."""
        cores = [c for c in (self.core_client, self.core_server) if c is not None]
        return cache_cooling.probe_lab(cores)

    def probe_wakeups(self, scale: float = 1.0) -> wake_latency.Probe:
        """One-way hops to a process sleeping on each of the lab's cores, for ``scale`` of
        the full probe and no less than a third (:mod:`meshsim.calibrate.wake_latency`)."""
        return wake_latency.probe_cores(
            (c for c in (self.core_client, self.core_server) if c is not None),
            wake_latency.PROBE_S * max(scale, 1.0 / 3.0),
        )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="meshsim-lab-"))
