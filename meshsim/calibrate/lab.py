"""The calibration lab on loopback: load generator -> client sidecar -> server sidecar -> echo.

Every component but the load generator is a subprocess (:mod:`meshsim.calibrate.node`) pinned
to one core with ``os.sched_setaffinity``; the load generator runs in this process, pinned too.
With two cores the placement is::

    core 0: load generator (this process) + client sidecar   (the "client node")
    core 1: server sidecar + echo upstream                    (the "server node")

so that each sidecar shares its core with one lighter component, and the lab maps onto a
two-node, one-core-per-node simulated cluster (see :mod:`meshsim.calibrate.validate`). The
placement actually obtained is recorded in :attr:`Lab.placement`.

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

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from meshsim.calibrate import host_phases, speed, wake_latency
from meshsim.calibrate.decomposition import duration_quantiles, lab_parts
from meshsim.calibrate.proxycmd import CommandNode, ProxyCommand, free_port, stop_process
from meshsim.errors import MeshsimError
from meshsim.proxy.loadgen import LoadSpec, run_load

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_KIB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / 1024.0
MAX_SAMPLES = 4000  # per-request CPU samples kept per sidecar and point
BASELINE_QUANTILES = 1000
HAVE_SCHEDSTAT = Path("/proc/self/schedstat").exists()
REPEATS = 3
"""Passes over the held-out points in the full grid."""
"""Latency quantiles kept for each point without proxies (the baseline's distribution)."""


@dataclass(frozen=True)
class LabConfig:
    """A proxy configuration of the grid."""

    mtls: bool = False
    keep_alive: bool = True
    filters: int = 0

    @property
    def name(self) -> str:
        return (
            f"{'mtls' if self.mtls else 'plain'}-{'ka' if self.keep_alive else 'noka'}"
            f"-f{self.filters}"
        )


@dataclass(frozen=True)
class Point:
    """One measurement: a configuration, a payload, a load (rps 0 = closed loop, saturation)."""

    config: LabConfig
    payload: int
    rps: float
    connections: int
    proxied: bool = True
    duration_s: float = 3.0
    role: str = "fit"
    """``fit`` (used by the fit), ``held_out`` (used only to validate predictions) or
    ``baseline`` (load generator -> echo at a held-out load: the latency outside the proxies
    that the prediction adds to the simulated proxy path; never compared with a prediction)."""
    repeat: int = 0
    """Which pass over the held-out loads: they are measured in several passes, minutes apart,
    so that the lab's run-to-run spread is measured with them."""


@dataclass
class Measured:
    point: Point
    achieved_rps: float
    latency_ms: dict[str, float]
    requests: int
    errors: int
    warnings: list[str]
    client_cpu_us: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)
    process_cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    latency_quantiles_ms: list[float] = field(default_factory=list)
    """Points without proxies: the corrected latency at the quantiles (i + 0.5) / N, N =
    :data:`BASELINE_QUANTILES` (an empirical distribution of the baseline)."""
    send_latency_quantiles_ms: list[float] = field(default_factory=list)
    """Points without proxies: the same quantiles of the latency from each request's actual
    send (the load generator's ``uncorrected`` histogram): without the wait for its release
    tick, which the simulated load generator makes itself (empty: older records)."""
    requests_per_release: float | None = None
    """Open loop: requests the load generator's scheduler released per wake-up of its timer
    (None: older records, closed loops)."""
    wakeups_per_request: dict[str, float] = field(default_factory=dict)
    """Voluntary context switches per completed request, per process (empty: not measured)."""
    run_delay_us_per_request: dict[str, float] = field(default_factory=dict)
    """Time runnable but not running, per completed request, per process (schedstat)."""
    sidecar_duration_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per sidecar, its access log's ``duration_ms`` (request parsed to response written)
    over the point: p50, p90, p99, mean and samples (empty: not measured)."""
    latency_parts_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """From those and the load generator's latency, p50 and mean of: the end-to-end
    latency, the part outside the client sidecar, its own share, the server side
    (:func:`meshsim.calibrate.decomposition.lab_parts`; empty: not measured)."""
    speed: dict[str, Any] = field(default_factory=dict)
    """The machine's speed around the point: per lab core, seconds of the fixed probe of
    :mod:`meshsim.calibrate.speed` right ``before`` and ``after`` the load, and the mean of
    the sampler's probes ``during`` it (empty: older records)."""
    host_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    """The host's fast and slow phases around the point: per lab core, the two-state fit of
    :mod:`meshsim.calibrate.host_phases` to chunks timed right before and after the load
    (empty: older records)."""
    host_trace: dict[str, list[int]] = field(default_factory=dict)
    """Held-out points: per lab core, those chunks' 1 ms bins in percent of their mean, the
    series the simulated lab replays (:func:`meshsim.calibrate.host_phases.point_trace`;
    empty for other points and older records)."""
    wake_latency_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """The host's latency to run a sleeping process a message woke, around the point: per
    lab core, percentiles (``p0`` .. ``p100``) of one-way loopback hops to a process
    sleeping there from one on the same core, right before and after the load
    (:mod:`meshsim.calibrate.wake_latency`; empty: older records)."""
    wake_latency_cross_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same, sent from the other lab core."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["point"]["config"]["name"] = self.point.config.name
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Measured:
        p = dict(d["point"])
        cfg = dict(p.pop("config"))
        cfg.pop("name", None)
        point = Point(config=LabConfig(**cfg), **p)
        rest = {k: v for k, v in d.items() if k != "point"}
        return Measured(point=point, **rest)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class Sched:
    """A process's scheduler counters, summed over its threads."""

    cpu_s: float
    run_delay_s: float | None
    """None where the kernel keeps no schedstat."""
    voluntary: int

    def __sub__(self, other: Sched) -> Sched:
        rd = (
            None
            if self.run_delay_s is None or other.run_delay_s is None
            else self.run_delay_s - other.run_delay_s
        )
        return Sched(self.cpu_s - other.cpu_s, rd, self.voluntary - other.voluntary)

    def __add__(self, other: Sched) -> Sched:
        rd = (
            None
            if self.run_delay_s is None or other.run_delay_s is None
            else self.run_delay_s + other.run_delay_s
        )
        return Sched(self.cpu_s + other.cpu_s, rd, self.voluntary + other.voluntary)


def proc_sched(pid: int) -> Sched:
    """CPU, run delay and voluntary context switches of ``pid``, all threads.

    ``schedstat`` gives CPU and run delay in nanoseconds; a kernel without it (no
    CONFIG_SCHED_INFO) leaves the CPU to ``/proc/PID/stat``'s clock ticks and the run delay
    unknown.
    """
    cpu_ns = delay_ns = voluntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that has just ended
            if HAVE_SCHEDSTAT:
                fields = (task / "schedstat").read_text().split()
                cpu_ns += int(fields[0])
                delay_ns += int(fields[1])
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
    if not HAVE_SCHEDSTAT:
        return Sched(proc_cpu_s(pid), None, voluntary)
    return Sched(cpu_ns * 1e-9, delay_ns * 1e-9, voluntary)


def tree_sched(pids: list[int]) -> Sched:
    """:func:`proc_sched` summed over a process tree (processes that have ended count 0)."""
    total = Sched(0.0, 0.0 if HAVE_SCHEDSTAT else None, 0)
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total = total + proc_sched(pid)
    return total


def proc_rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise MeshsimError(f"no VmRSS for process {pid}")


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
        return self.new_log_samples()[0]

    def new_log_samples(self) -> tuple[list[float], list[float]]:
        """``cpu_us`` and ``duration_ms`` of the access-log lines written since the last
        call (:func:`access_log_samples`)."""
        if self.log is None or not self.log.exists():
            return [], []
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


def baseline_quantiles_ms(h: HdrHistogram) -> list[float]:
    """A latency histogram (us) at the quantiles (i + 0.5) / N, N = :data:`BASELINE_QUANTILES`,
    in ms: a baseline's empirical distribution."""
    return [
        h.get_value_at_percentile(100.0 * (i + 0.5) / BASELINE_QUANTILES) / 1000.0
        for i in range(BASELINE_QUANTILES)
    ]


def access_log_samples(data: bytes) -> tuple[list[float], list[float]]:
    """``cpu_us`` (only the requests the proxy sampled: it logs null for the others) and
    ``duration_ms`` (every request) of the access-log lines in ``data``."""
    cpu: list[float] = []
    durations: list[float] = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        value = rec.get("cpu_us")
        if isinstance(value, int | float):
            cpu.append(float(value))
        value = rec.get("duration_ms")
        if isinstance(value, int | float):
            durations.append(float(value))
    return cpu, durations


def _log_samples(node: Sidecar) -> tuple[list[float], list[float]]:
    """A sidecar's new access-log samples; a proxy command's log is not ours to read."""
    if isinstance(node, _Node):
        return node.new_log_samples()
    return node.new_cpu_samples(), []


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
        self, workdir: Path, proxy: ProxyCommand | None = None, key_type: str = "ecdsa-p256"
    ) -> None:
        from meshsim.proxy.ca import check_key_type

        self.proxy = proxy
        self.key_type = check_key_type(key_type)
        self._saved_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved_handlers[sig] = signal.signal(sig, _stop_signal)
        self.workdir = workdir
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
        try:
            self._issue_certs()
            self.echo = _Node("echo", ["echo"], self.core_server, None)
        except BaseException:
            self._restore_signals()
            raise
        probed = [c for c in (self.core_client, self.core_server) if c is not None]
        self.sampler = (
            speed.Sampler(probed, workdir / "speed-samples.txt")
            if probed and hasattr(os, "sched_setaffinity")
            else None
        )

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
            self.config = cfg
            return
        pool = [] if cfg.keep_alive else ["--no-pool"]
        filt = ["--filters", str(cfg.filters)]
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
                *filt,
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
                *filt,
                *pool,
            ],
            self.core_client,
            self.workdir / f"client-{cfg.name}.log",
        )
        self.config = cfg

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
            self.echo.stop()
            if self.sampler is not None:
                self.sampler.stop()
        finally:
            self._restore_signals()

    def _restore_signals(self) -> None:
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    @contextlib.contextmanager
    def _pinned(self) -> Iterator[None]:
        if self.core_client is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.core_client})
        try:
            yield
        finally:
            if self._saved_affinity and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, self._saved_affinity)

    def measure(self, point: Point, seed: int = 1) -> Measured:
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
        with self._pinned():
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
            phases_before = self.trace_host()
            wake_before = self.probe_wakeups()
            before = {k: tree_sched(p) for k, p in pids.items()}
            load_start = time.monotonic()
            result = run_load(spec)
            load_end = time.monotonic()
            after = {k: tree_sched(p) for k, p in pids.items()}
        time.sleep(0.05)  # let the access logs flush their last lines
        speed_after = self.probe_speed()
        phases_after = self.trace_host()
        wake_after = self.probe_wakeups()
        speed_during = (
            self.sampler.between(load_start, load_end) if self.sampler is not None else {}
        )
        n = max(result.completed, 1)
        used = {k: after[k] - before[k] for k in pids}
        if not point.proxied:
            for k in ("client_sidecar", "server_sidecar"):
                used.pop(k)
        per_req = {k: d.cpu_s * 1e6 / n for k, d in used.items()}
        wakeups = {k: d.voluntary / n for k, d in used.items()}
        run_delay = {
            k: d.run_delay_s * 1e6 / n for k, d in used.items() if d.run_delay_s is not None
        }
        h = result.corrected
        lat = {f"p{q:g}": h.get_value_at_percentile(q) / 1000.0 for q in (50, 90, 99)}
        lat["mean"] = h.get_mean_value() / 1000.0
        quantiles = [] if point.proxied else baseline_quantiles_ms(h)
        send_quantiles = [] if point.proxied else baseline_quantiles_ms(result.uncorrected)
        rng = np.random.default_rng(seed)

        def sample(xs: list[float]) -> list[float]:
            if len(xs) <= MAX_SAMPLES:
                return xs
            idx = rng.choice(len(xs), MAX_SAMPLES, replace=False)
            return [xs[i] for i in sorted(idx)]

        client, client_ms = _log_samples(self.client) if point.proxied else ([], [])
        server, server_ms = _log_samples(self.server) if point.proxied else ([], [])
        durations = {
            k: q
            for k, q in (
                ("client_sidecar", duration_quantiles(client_ms)),
                ("server_sidecar", duration_quantiles(server_ms)),
            )
            if q
        }
        return Measured(
            point=point,
            achieved_rps=result.actual_rps,
            latency_ms=lat,
            requests=result.completed,
            errors=result.errors,
            warnings=list(result.warnings),
            client_cpu_us=sample(client),
            server_cpu_us=sample(server),
            process_cpu_us_per_request=per_req,
            latency_quantiles_ms=quantiles,
            send_latency_quantiles_ms=send_quantiles,
            requests_per_release=(
                round(result.scheduled / result.releases, 4) if result.releases else None
            ),
            wakeups_per_request=wakeups,
            run_delay_us_per_request=run_delay,
            sidecar_duration_ms=durations,
            latency_parts_ms=lab_parts(lat, durations) or {},
            speed=speed.point_speed(speed_before, speed_after, speed_during),
            host_phases=host_phases.point_phases(phases_before, phases_after),
            host_trace=host_phases.point_trace(phases_before, phases_after)
            if point.role == "held_out"
            else {},
            wake_latency_us=wake_latency.point_wakeups(wake_before, wake_after),
            wake_latency_cross_us=wake_latency.point_wakeups(wake_before, wake_after, "cross"),
        )

    def probe_speed(self) -> dict[str, float]:
        """The speed probe's seconds on each of the lab's cores (:mod:`meshsim.calibrate.speed`)."""
        return speed.probe_cores(c for c in (self.core_client, self.core_server) if c is not None)

    def trace_host(self) -> dict[str, Any]:
        """The host's phases traced on each of the lab's cores
        (:mod:`meshsim.calibrate.host_phases`)."""
        return host_phases.trace_cores(
            c for c in (self.core_client, self.core_server) if c is not None
        )

    def probe_wakeups(self) -> wake_latency.Probe:
        """One-way hops to a process sleeping on each of the lab's cores
        (:mod:`meshsim.calibrate.wake_latency`)."""
        return wake_latency.probe_cores(
            c for c in (self.core_client, self.core_server) if c is not None
        )

    def idle_cpu_ms_per_s(self, seconds: float = 3.0) -> dict[str, float]:
        """CPU per second of the base configuration's components with no traffic, measured
        after a short load: what a fixed background cost (timers, polling) would show."""
        self.reconfigure(LabConfig())
        assert self.client is not None
        assert self.server is not None
        with self._pinned():
            run_load(
                LoadSpec(
                    url=f"http://127.0.0.1:{self.client.port}/echo",
                    rps=0,
                    connections=8,
                    duration_s=0.3,
                    method="POST",
                    body=b"x" * 1024,
                )
            )
        time.sleep(0.2)
        nodes: dict[str, Sidecar] = {
            "client_sidecar": self.client,
            "server_sidecar": self.server,
            "echo": self.echo,
        }
        pids = {k: n.pids() for k, n in nodes.items()}
        before = {k: tree_sched(p) for k, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        dt_s = time.monotonic() - t0
        after = {k: tree_sched(p) for k, p in pids.items()}
        out = {k: (after[k] - before[k]).cpu_s * 1e3 / dt_s for k in nodes}
        out["resolution_ms_per_s"] = (1e-6 if HAVE_SCHEDSTAT else 1e3 / CLK_TCK) / dt_s
        return out

    # ------------------------------------------------------------------ per-connection costs

    def connection_memory(self, counts: tuple[int, ...] = (0, 100, 200, 300)) -> dict[str, Any]:
        """RSS of a sidecar against idle connections held open to it, plain and mTLS.

        Plain: connections to the client sidecar of a plain configuration. mTLS: connections
        with full handshakes to the server sidecar of an mTLS configuration.
        """
        out: dict[str, Any] = {}
        for tls in (False, True):
            self.reconfigure(LabConfig(mtls=tls))
            node = self.server if tls else self.client
            assert node is not None
            ctx = None
            if tls:
                from meshsim.proxy.tls import client_context

                ctx = client_context(self.tls_dir)
            rows: list[tuple[int, float]] = []
            with self._pinned():
                for k in counts:
                    rows.append((k, _rss_with_connections(node, k, ctx)))
            out["tls" if tls else "plain"] = rows
        return out

    def handshakes(self, n: int = 200) -> dict[str, list[float]]:
        """CPU microseconds per side of full mTLS handshakes with the proxy's own contexts.

        Driven in memory (``ssl.MemoryBIO``), so only the TLS work is timed; each side's
        ``thread_time`` is summed over its handshake steps.
        """
        from meshsim.proxy.tls import client_context, server_context

        cctx, sctx = client_context(self.tls_dir), server_context(self.tls_dir)
        client_us: list[float] = []
        server_us: list[float] = []
        with self._pinned():
            for _ in range(n):
                c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
                cli = cctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
                srv = sctx.wrap_bio(s_in, s_out, server_side=True)
                tc = ts = 0.0
                done_c = done_s = False
                for _step in range(10):
                    if not done_c:
                        done_c, dt = _handshake_step(cli)
                        tc += dt
                    s_in.write(c_out.read())
                    if not done_s:
                        done_s, dt = _handshake_step(srv)
                        ts += dt
                    c_in.write(s_out.read())
                    if done_c and done_s:
                        break
                if not (done_c and done_s):
                    raise MeshsimError("in-memory TLS handshake did not complete")
                client_us.append(tc * 1e6)
                server_us.append(ts * 1e6)
        return {"client": client_us, "server": server_us}

    def connection_costs(self, n: int = 200, *, tls: bool = True) -> dict[str, Any]:
        """The server sidecar's process CPU and wake-ups per request, one request at a time
        from this process, in four ways: all on one kept-alive connection; a new plain
        connection each (``Connection: close``); a new mTLS connection each, full
        handshake; and the same resuming the previous connection's TLS session.

        The differences are what a connection costs a black-box proxy, with everything else
        equal: an accepted TCP connection (new plain - kept alive), a full server-side
        handshake (new mTLS - new plain) and a resumed one (``resumed_fraction`` says how
        many the proxy did resume). The upstream connection to the echo stays pooled.
        """
        from meshsim.proxy.tls import client_context

        out: dict[str, Any] = {"requests": n}
        modes: list[tuple[str, LabConfig, ssl.SSLContext | None]] = [
            ("keepalive", LabConfig(), None),
            ("plain_connection", LabConfig(), None),
        ]
        if tls:
            ctx = client_context(self.tls_dir)
            modes += [
                ("tls_full", LabConfig(mtls=True), ctx),
                ("tls_resumed", LabConfig(mtls=True), ctx),
            ]
        for mode, cfg, mode_ctx in modes:
            self.reconfigure(cfg)
            node = self.server
            assert node is not None
            with self._pinned():
                _sequential_requests(node.port, 20, mode, mode_ctx)  # warm up
                pids = node.pids()
                before = tree_sched(pids)
                reused = _sequential_requests(node.port, n, mode, mode_ctx)
                used = tree_sched(pids) - before
            out[mode] = {"cpu_us": used.cpu_s * 1e6 / n, "wakeups": used.voluntary / n}
            if mode == "tls_resumed":
                out["resumed_fraction"] = reused / n
        return out


def _sequential_requests(port: int, n: int, mode: str, ctx: ssl.SSLContext | None) -> int:
    """``n`` GETs to ``port``, one after another (see :meth:`Lab.connection_costs`);
    returns how many TLS connections resumed a session."""
    keep = mode == "keepalive"
    request = (
        b"GET /echo HTTP/1.1\r\nHost: lab\r\n"
        + (b"" if keep else b"Connection: close\r\n")
        + b"\r\n"
    )
    reused = 0
    session: ssl.SSLSession | None = None
    conn: socket.socket | None = None
    try:
        for _ in range(n):
            if conn is None:
                conn = socket.create_connection(("127.0.0.1", port), 5.0)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ctx is not None:
                    conn = ctx.wrap_socket(
                        conn,
                        server_hostname="127.0.0.1",
                        session=session if mode == "tls_resumed" else None,
                    )
            conn.sendall(request)
            _read_response(conn)
            if isinstance(conn, ssl.SSLSocket):
                reused += bool(conn.session_reused)
                session = conn.session
            if not keep:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return reused


def _read_response(conn: socket.socket) -> None:
    """Read one HTTP/1.1 response with a Content-Length body (what the echo sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise MeshsimError("the proxy closed the connection before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise MeshsimError("the proxy closed the connection mid-response")
        body += chunk


def _handshake_step(side: ssl.SSLObject) -> tuple[bool, float]:
    """One round of one side's handshake: whether it completed, and the thread CPU it took."""
    t0 = time.thread_time()
    try:
        side.do_handshake()
        done = True
    except ssl.SSLWantReadError:
        done = False
    return done, time.thread_time() - t0


def _rss_with_connections(node: Sidecar, k: int, ctx: ssl.SSLContext | None) -> float:
    async def hold() -> float:
        loop = asyncio.get_running_loop()
        transports = []
        for _ in range(k):
            tr, _p = await loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                node.port,
                ssl=ctx,
                server_hostname="127.0.0.1" if ctx else None,
            )
            transports.append(tr)
        await asyncio.sleep(0.3)
        rss = sum(proc_rss_kib(pid) for pid in node.pids())
        for tr in transports:
            tr.close()
        await asyncio.sleep(0.2)
        return rss

    return asyncio.run(hold())


def point_line(i: int, total: int, p: Point, m: Measured) -> str:
    """The progress line of the ``i``-th (0-based) of ``total`` measured points."""
    return (
        f"[{i + 1}/{total}] {p.config.name} {p.payload}B "
        f"{f'pass {p.repeat + 1} ' if p.role != 'fit' else ''}"
        f"{'sat' if p.rps == 0 else f'{p.rps:g}rps'} "
        f"{'proxied' if p.proxied else 'direct'} {p.role}: "
        f"{m.achieved_rps:.0f} rps, p50 {m.latency_ms['p50']:.3f} ms, "
        f"p99 {m.latency_ms['p99']:.3f} ms"
    )


def grid(
    quick: bool, *, mtls: bool = True, filters: bool = True, keep_alive_off: bool = True
) -> list[Point]:
    """The measurement grid. Loads are fractions of an estimated capacity, set by the caller.

    Returned with placeholder rates (fractions of capacity in ``rps``); see :func:`scale`.
    The fit points come first, then :data:`REPEATS` passes over the held-out points with
    their baselines (one pass with ``quick``): a held-out load is measured minutes apart,
    and the spread between its passes is the lab's own noise, against which a prediction's
    error is judged. ``mtls``, ``filters`` and ``keep_alive_off`` False leave out the
    configurations a proxy under test cannot be set to (:mod:`meshsim.calibrate.proxycmd`).
    """
    from dataclasses import replace

    base = LabConfig()
    # Three fit loads and a closed loop, so that the wake-up fit spans from about one sleep
    # per request down to saturation's few.
    fracs_fit = (0.1, 0.35, 0.6)
    fracs_held = (0.2, 0.5, 0.7) if quick else (0.2, 0.5, 0.65, 0.8, 0.9)
    payloads = (256, 4096) if quick else (128, 1024, 8192, 32768)
    dur = 1.0 if quick else 5.0
    # Open loops get enough connections that they never queue for one: the lab's clumps
    # (meshsim.calibrate.release) send ten requests at once at the highest held-out load,
    # and with 8 connections, as many as the capacity probe's closed loop, the load
    # generator's own pool was ~80-90 % busy at the top two loads, which dominated their
    # latency (p50 1.6 to 8.3 ms over three passes at 80 % of capacity). The closed loop
    # keeps 8: its throughput is the capacity the loads are fractions of.
    conns = 32
    closed = 8
    main_pay = payloads[0] if quick else 1024
    configs = [LabConfig(mtls=True), LabConfig(filters=4)]
    if not quick:
        configs.append(LabConfig(keep_alive=False))
        configs.append(LabConfig(mtls=True, keep_alive=False))
    configs = [
        c
        for c in configs
        if (mtls or not c.mtls) and (filters or not c.filters) and (keep_alive_off or c.keep_alive)
    ]
    pts: list[Point] = []
    for pay in payloads:
        for f in fracs_fit:
            pts.append(Point(base, pay, f, conns, True, dur, "fit"))
            pts.append(Point(base, pay, f, conns, False, dur, "fit"))
    # Saturation at another payload than the held-out one: the only fit point where the
    # event loops hardly ever sleep, so the wake-up fit does not extrapolate to it.
    sat_pay = payloads[0] if payloads[0] != main_pay else payloads[-1]
    pts.append(Point(base, sat_pay, 0.0, closed, True, dur, "fit"))
    # Each configuration's point right after a base point of the same payload and load: the
    # configuration's cost is a difference, and the machine drifts over minutes (a per-filter
    # cost fitted from base points measured earlier came out 19.9 and 1.8 us in two runs).
    for cfg in configs:
        for pay in payloads if cfg.keep_alive else (main_pay,):
            pts.append(Point(base, pay, 0.1, conns, True, dur, "fit"))
            pts.append(Point(cfg, pay, 0.1, conns, True, dur, "fit"))
    held: list[Point] = []
    for f in fracs_held:
        held.append(Point(base, main_pay, f, conns, True, dur, "held_out"))
        held.append(Point(base, main_pay, f, conns, False, dur, "baseline"))
    held.append(Point(base, main_pay, 0.0, closed, True, dur, "held_out"))  # saturation
    if not quick:
        held += [Point(cfg, main_pay, 0.5, conns, True, dur, "held_out") for cfg in configs]
    if not quick and keep_alive_off:
        # Keep-alive off costs the load generator and the echo a connection per request too.
        held.append(
            Point(LabConfig(keep_alive=False), main_pay, 0.5, conns, False, dur, "baseline")
        )
    for r in range(1 if quick else REPEATS):
        pts += [replace(p, repeat=r) for p in held]
    return pts


CAPACITY_PROBES = 3
"""Closed-loop probes behind the capacity estimate; the grid's loads are fractions of it."""


def estimate_capacity(lab: Lab, quick: bool, log: Callable[[str], None]) -> float:
    """The proxied path's closed-loop throughput (8 connections, 256 B), conservatively.

    One probe is not enough on a shared virtual machine: the same CPU-bound loop took 71 to
    121 ms from one second to the next on the lab's host with nothing else running, and a
    single 3 s probe read 12361 rps in a run whose saturation points later read 7326-7820
    (every held-out load above half of it was then past saturation). The slowest of
    :data:`CAPACITY_PROBES` probes a second apart keeps the held-out fractions below the
    saturation that the machine's slower moments give.
    """
    probes: list[float] = []
    for i in range(CAPACITY_PROBES):
        if i:
            time.sleep(1.0)
        point = Point(LabConfig(), 256, 0.0, 8, True, 1.0 if quick else 2.0)
        probes.append(lab.measure(point, seed=i + 1).achieved_rps)
    cap = min(probes)
    shown = ", ".join(f"{r:.0f}" for r in probes)
    log(f"estimated capacity {cap:.0f} rps (slowest of closed-loop probes {shown}; 8 connections)")
    return cap


def scale(points: list[Point], capacity_rps: float) -> list[Point]:
    """Turn the grid's capacity fractions into rates (0 stays 0: closed loop)."""
    from dataclasses import replace

    return [replace(p, rps=round(p.rps * capacity_rps, 1)) for p in points]


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="meshsim-lab-"))
