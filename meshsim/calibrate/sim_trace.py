"""Where each request's time goes in the simulated lab: a per-request breakdown by part.

The simulated lab (:func:`meshsim.calibrate.lab_scenario.lab_scenario`) is one chain: the load
generator -> client sidecar -> server sidecar -> echo, and back. :func:`trace` follows every
request along it and splits its latency into parts, each named by where it is spent (``hop``:
``load_generator``, ``client_sidecar``, ``server_sidecar``, ``echo``, ``network``,
``baseline``) and what it is (``part``):

- ``core_wait``: runnable, waiting for its node's core (the lab's schedstat run delay);
- ``worker_wait``: waiting for the proxy's worker thread (an event loop busy with another
  request: in the lab, the request waits in the socket) or for the echo's one slot;
- ``wake_latency``: a sidecar's thread being woken before its burst runs
  (``wakeup_latency_us``, ``cluster.wakeup_latency``);
- ``cpu``: the burst itself (proxy work, wake-ups' CPU included; the echo's and the load
  generator's CPU);
- ``connection_wait``: the load generator waiting for one of its connections;
- ``connection_setup``: a sidecar opening an upstream connection (its pool had none idle:
  every request with keep-alive off), round trips and handshake CPU included;
- ``network``: hop latency and network delays (what is left of a section once the rest is
  timed, checked against the closed form in the tests);
- ``baseline``: the measured latency outside the proxies that each prediction draws.

Each part also falls in one of three ``sections``, the shape the sidecars' access logs give
in the lab (``duration_ms``: from the request parsed to the response written): ``server``,
within the server sidecar's span (it and the echo); ``client``, within the client sidecar's
span but outside the server's; ``outside``, the rest of the load generator's latency. A
sidecar's span starts where its request-path burst starts running (after its waits: in the
lab the request is parsed once the event loop reads it) and ends where its response-path
burst ends; the telemetry after it is off the request's path, as in the lab.

The tracer is opt-in and costs an ordinary run nothing: it re-types a built
:class:`~meshsim.sim.engine.Simulation`'s few objects (the proxies, the nodes, the connection
pools; the workload's connections and the echo's slots become timed resources) to
subclasses that time what they already do. No event is added or moved (the timing rides on
callbacks of events that happen anyway), so a traced run is the same run as an untraced one,
request for request.

A part belongs to the request whose :meth:`WorkloadDriver._send
<meshsim.sim.workload.WorkloadDriver._send>` is running it: its frame is found on the stack
(each hop runs inside it, by ``yield from``), whether the engine drives the request as a
simpy process or as a bare generator. That is exact where a request's hops run inline, as in
the lab; scenarios that run parts of a request elsewhere (calls between services, traffic
rules' timeouts and mirrors, gateways) are refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import simpy

from meshsim.sim.app import Client
from meshsim.sim.cluster import Node
from meshsim.sim.cpu.drift import CpuDrift
from meshsim.sim.dataplanes.connections import Conn, Pools
from meshsim.sim.dataplanes.proxy import Proxy, Worker
from meshsim.sim.dataplanes.routing import L7Proxy
from meshsim.sim.dataplanes.sidecar import SidecarDataPlane
from meshsim.sim.engine import Simulation
from meshsim.sim.sampling import Sampler
from meshsim.sim.workload import WorkloadDriver

SECTIONS = ("outside", "client", "server")
"""The access logs' shape: outside the client sidecar, its own share, the server side."""

_REQUEST = WorkloadDriver._send.__code__
"""The code of a request's outermost generator: its frame stands for the request."""

Key = tuple[str, str, str]
"""(section, hop, part) of one timed part."""


class _Acc:
    """One request's parts while it runs."""

    __slots__ = (
        "client_end",
        "client_start",
        "drift",
        "in_conn",
        "parts",
        "pending",
        "released",
        "section",
        "server_end",
        "server_start",
        "wake",
        "wake_wait",
    )

    def __init__(self, released: float) -> None:
        self.parts: dict[Key, float] = {}
        self.released = released
        """When its ``_send`` began, i.e. when the load generator released it (the first
        step that asks for the request's parts runs then)."""
        self.section = "outside"
        self.client_start: float | None = None
        self.client_end: float | None = None
        self.server_start: float | None = None
        self.server_end: float | None = None
        self.in_conn = 0
        """Inside a connection set-up: timed as a whole, its bursts not again."""
        self.pending = 0.0
        """Worker wait of the burst under way (it belongs to the section before the burst)."""
        self.wake = 0.0
        """Wake-up CPU the burst under way was charged."""
        self.wake_wait = 0.0
        """Wake-up latency the burst under way waited."""
        self.drift = 1.0
        """The factor its proxy's CPU drift gave the burst under way (its CPU is its cost
        times that)."""

    def add(self, hop: str, part: str, seconds: float, section: str | None = None) -> None:
        if seconds:
            key = (section or self.section, hop, part)
            self.parts[key] = self.parts.get(key, 0.0) + seconds


@dataclass(frozen=True)
class RequestParts:
    """Every request sent in the measurement window that completed: its latency, the two
    sidecars' spans and its parts (columns ``keys``), all in seconds."""

    keys: tuple[Key, ...]
    values: np.ndarray
    """Shape (requests, len(keys)); a part a request did not have is 0."""
    total: np.ndarray
    """The load generator's latency (from the intended send time)."""
    client_span: np.ndarray
    server_span: np.ndarray

    def column(
        self, section: str | None = None, hop: str | None = None, part: str | None = None
    ) -> np.ndarray:
        """The per-request sum of the parts that match (None matches any)."""
        idx = [
            i
            for i, (s, h, p) in enumerate(self.keys)
            if section in (None, s) and hop in (None, h) and part in (None, p)
        ]
        if not idx:
            return np.zeros(len(self.total))
        out: np.ndarray = self.values[:, idx].sum(axis=1)
        return out

    def section_total(self, section: str) -> np.ndarray:
        """The section's time per request, from the spans (what the access logs give)."""
        if section == "server":
            return self.server_span
        if section == "client":
            out: np.ndarray = self.client_span - self.server_span
            return out
        rest: np.ndarray = self.total - self.client_span
        return rest


class Tracer:
    """The parts of one simulation's requests; attach with :func:`trace` before running."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self._open: dict[object, _Acc] = {}
        """Requests under way, by the frame of their ``_send``."""
        self._rows: list[tuple[float, float, float, dict[Key, float]]] = []
        self.client_proxies: set[int] = set()

    # ----------------------------------------------------------------- bookkeeping

    def current(self) -> _Acc | None:
        """The running request's parts (None when no request is running)."""
        frame = _request_frame()
        if frame is None:
            return None
        acc = self._open.get(frame)
        if acc is None:
            acc = self._open[frame] = _Acc(self.env.now)
        return acc

    def role(self, proxy: Proxy) -> str:
        return "client_sidecar" if id(proxy) in self.client_proxies else "server_sidecar"

    def burst(self, acc: _Acc, proxy: Proxy, t0: float, cpu_s: float, *, request: bool) -> None:
        """A proxy burst from ``t0`` to now: its waits, then its CPU; a request-path burst
        opens its sidecar's span, a response-path burst closes it."""
        now = self.env.now
        cpu = (cpu_s + acc.wake) * acc.drift
        worker_wait = acc.pending
        wake_wait = acc.wake_wait
        core_wait = (now - t0) - worker_wait - wake_wait - cpu
        acc.pending = acc.wake = acc.wake_wait = 0.0
        acc.drift = 1.0
        role = self.role(proxy)
        acc.add(role, "wake_latency", wake_wait)
        acc.add(role, "worker_wait", worker_wait)
        acc.add(role, "core_wait", core_wait)
        if request:
            if role == "client_sidecar":
                if acc.client_start is None:
                    acc.client_start = now - cpu
                acc.section = "client"
            else:
                acc.server_start = now - cpu
                acc.section = "server"
            acc.add(role, "cpu", cpu)
            return
        acc.add(role, "cpu", cpu)
        if role == "client_sidecar":
            acc.client_end = now
            acc.section = "outside"
        else:
            acc.server_end = now
            acc.section = "client"

    def finish(self, started_at: float, finished_at: float) -> None:
        """The running request is done: keep its parts if it was sent in the window."""
        frame = _request_frame()
        acc = self._open.pop(frame, None) if frame is not None else None
        if acc is None or not (self.sim.warmup_s <= started_at < self.sim.end_s):
            return
        total = finished_at - started_at
        # From its intended time to its release: the load generator's timer tick, the
        # timer's wake-up waiting for its thread and core.
        acc.add("load_generator", "release_wait", max(acc.released - started_at, 0.0), "outside")
        # A request the loop reached after its release, behind the sends before it in its
        # clump, counts from then (WorkloadDriver._ticked_open_loop): the waits that covered
        # the time before, first for a connection, then for the loop's thread, are not its.
        early = started_at - acc.released
        for part in ("connection_wait", "worker_wait"):
            key = ("outside", "load_generator", part)
            cut = min(max(early, 0.0), acc.parts.get(key, 0.0))
            acc.add("load_generator", part, -cut, "outside")
            early -= cut
        client = _span(acc.client_start, acc.client_end)
        server = _span(acc.server_start, acc.server_end)
        spans = {"outside": total - client, "client": client - server, "server": server}
        for section, length in spans.items():
            timed = sum(v for (s, _h, _p), v in acc.parts.items() if s == section)
            acc.add("network", "network", length - timed, section)
        self._rows.append((total, client, server, acc.parts))

    def result(self) -> RequestParts:
        keys = sorted({k for _t, _c, _s, parts in self._rows for k in parts})
        col = {k: i for i, k in enumerate(keys)}
        values = np.zeros((len(self._rows), len(keys)))
        for r, (_t, _c, _s, parts) in enumerate(self._rows):
            for k, v in parts.items():
                values[r, col[k]] = v
        rows = self._rows
        return RequestParts(
            tuple(keys),
            values,
            np.array([r[0] for r in rows]),
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows]),
        )

    # ----------------------------------------------------------------- timed resources

    def timed(self, res: simpy.Resource, on_wait: Callable[[_Acc, float], None]) -> simpy.Resource:
        """A resource like ``res`` (not yet used) whose queued requests time their wait."""
        return _TimedResource(self, int(res.capacity), on_wait)


def _request_frame() -> object | None:
    """The frame of the running request's ``_send`` (the innermost one on the stack)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code is not _REQUEST:
        frame = frame.f_back  # type: ignore[assignment]
    return frame


def _span(start: float | None, end: float | None) -> float:
    return end - start if start is not None and end is not None else 0.0


class _TimedResource(simpy.Resource):
    """A resource whose queued requests call ``on_wait(parts, seconds)`` when granted.

    A request granted at once by :func:`meshsim.sim.uncontended.take` never gets here (it
    waited 0). The grant callback is appended before the process's own resume, so it runs
    in the same step and adds no event.
    """

    def __init__(self, tracer: Tracer, capacity: int, on_wait: Callable[[_Acc, float], None]):
        super().__init__(tracer.env, capacity)
        self._tracer = tracer
        self._on_wait = on_wait

    def request(self) -> simpy.resources.resource.Request:
        req: simpy.resources.resource.Request = super().request()
        acc = self._tracer.current()
        if acc is not None and req.callbacks is not None:
            asked = self._env.now
            on_wait = self._on_wait

            def granted(_event: simpy.Event) -> None:
                on_wait(acc, self._env.now - asked)

            req.callbacks.append(granted)
        return req


# --------------------------------------------------------------------------- re-typed objects


class _TracedProxy(L7Proxy):
    """A sidecar whose request- and response-path bursts are timed."""

    __slots__ = ()
    tracer: ClassVar[Tracer]

    def _wakeup(self, worker: Worker) -> tuple[float, float]:
        extra, wait = super()._wakeup(worker)
        acc = self.tracer.current()
        if acc is not None:
            # Only the wake-up's CPU before the work is on this request's path: the share
            # owed after it (wakeup_cpu_after_share) is paid once the ready work is done.
            # Counted whole, the burst's CPU was long and its core wait short by that share
            # (negative for a quarter of the sidecars' bursts on the committed model).
            acc.wake += extra * (1.0 - self.wake_after)
            acc.wake_wait += wait
        return extra, wait

    def work(self, worker: Worker, cpu_s: float) -> Generator[simpy.Event, Any, None]:
        acc = self.tracer.current()
        if acc is None or acc.in_conn:
            yield from super().work(worker, cpu_s)
            return
        t0 = self.env.now
        acc.pending = acc.wake = acc.wake_wait = 0.0
        yield from super().work(worker, cpu_s)
        self.tracer.burst(acc, self, t0, cpu_s, request=True)

    def work_then_linger(
        self, worker: Worker, cpu_s: float, after_s: float
    ) -> Generator[simpy.Event, Any, None]:
        acc = self.tracer.current()
        if acc is None or acc.in_conn:
            yield from super().work_then_linger(worker, cpu_s, after_s)
            return
        t0 = self.env.now
        acc.pending = acc.wake = acc.wake_wait = 0.0
        yield from super().work_then_linger(worker, cpu_s, after_s)
        self.tracer.burst(acc, self, t0, cpu_s, request=False)


class _TracedDrift(CpuDrift):
    """A proxy's CPU drift whose factor is noted on the request whose burst asked for it
    (the same calls, so the same draws, as an untraced run): a burst queued for the worker
    asks before the running one ends, so the drift's last factor may be another's."""

    __slots__ = ()
    tracer: ClassVar[Tracer]

    def at(self, now: float) -> float:
        factor = super().at(now)
        acc = self.tracer.current()
        if acc is not None:
            acc.drift = factor
        return factor


class _TracedNode(Node):
    """A node whose app and load-generator bursts (:meth:`Node.execute`) are timed."""

    __slots__ = ()
    tracer: ClassVar[Tracer]

    def execute(
        self, cpu_s: float, account: Any, ready: simpy.Resource | None = None
    ) -> Generator[simpy.Event, Any, None]:
        acc = self.tracer.current()
        t0 = self.env.now
        yield from super().execute(cpu_s, account, ready)
        if acc is None or acc.in_conn:
            return
        hop = "load_generator" if isinstance(account, Client) else "echo"
        acc.add(hop, "core_wait", (self.env.now - t0) - cpu_s)
        acc.add(hop, "cpu", cpu_s)


class _TracedPools(Pools):
    """Connection pools whose acquisitions are timed as a whole (a new connection's round
    trips, handshakes and their CPU: ``connection_setup`` of the calling sidecar)."""

    __slots__ = ()
    tracer: ClassVar[Tracer]

    def acquire(
        self,
        key: Any,
        client: Proxy | None,
        client_worker: Worker | None,
        server: Proxy,
        tls: bool,
        h2: bool,
        one_way_s: float,
        cluster: Hashable = None,
    ) -> Generator[simpy.Event, Any, Conn]:
        acc = self.tracer.current()
        if acc is None:
            conn: Conn = yield from super().acquire(
                key, client, client_worker, server, tls, h2, one_way_s, cluster
            )
            return conn
        t0 = self.env.now
        acc.in_conn += 1
        try:
            conn = yield from super().acquire(
                key, client, client_worker, server, tls, h2, one_way_s, cluster
            )
        finally:
            acc.in_conn -= 1
        hop = self.tracer.role(client) if client is not None else "load_generator"
        acc.add(hop, "connection_setup", self.env.now - t0)
        return conn


class _TimedBaseline(Sampler):
    """The baseline delay drawn outside the proxies, each draw timed as ``baseline``."""

    __slots__ = ()
    tracer: ClassVar[Tracer]

    def __call__(self) -> float:
        value = super().__call__()
        acc = self.tracer.current()
        if acc is not None:
            acc.add("baseline", "baseline", value)
        return value


def _retype(obj: Any, base: type, tracer: Tracer) -> None:
    """Make ``obj`` (exactly a ``base``) an instance of a subclass bound to ``tracer``."""
    cls = type(f"{base.__name__}ForTracer", (base,), {"__slots__": (), "tracer": tracer})
    obj.__class__ = cls


def trace(sim: Simulation) -> Tracer:
    """Attach a tracer to ``sim`` (built, not yet run): afterwards ``tracer.result()``.

    Raises ValueError for a simulation that is not a sidecar mesh, or whose requests run
    parts in processes of their own (calls between services, traffic rules, gateways).
    """
    scenario = sim.scenario
    dp = sim.data_plane
    if not isinstance(dp, SidecarDataPlane):
        raise ValueError(f"the per-request breakdown needs a sidecar mesh, not {sim.mesh!r}")
    if any(s.calls for s in scenario.services) or scenario.traffic or scenario.gateways:
        raise ValueError(
            "the per-request breakdown follows a request inline: a scenario with calls "
            "between services, traffic rules or gateways runs parts of it elsewhere"
        )
    tracer = Tracer(sim)
    # A client's sidecar is made on its first request; make it now to re-type it.
    for driver in sim.workloads:
        dp.client_host(driver.client)
    tracer.client_proxies = {id(p) for p in dp.client_sidecars.values()}
    for proxy in dp.proxies:
        if type(proxy) is not L7Proxy:
            raise ValueError(f"{proxy.name}: not a plain sidecar ({type(proxy).__name__})")
        _retype(proxy, _TracedProxy, tracer)
        if proxy.drift is not None:
            _retype(proxy.drift, _TracedDrift, tracer)
        for worker in proxy.workers:
            worker.res = tracer.timed(worker.res, _pending)
    for node in sim.nodes:
        _retype(node, _TracedNode, tracer)
    _retype(dp.pools, _TracedPools, tracer)
    for svc in sim.services.values():
        for pod in svc.pods:
            pod.slots = tracer.timed(pod.slots, _echo_wait)
    for driver in sim.workloads:
        if driver.connections is not None:
            driver.connections = tracer.timed(driver.connections, _connection_wait)
        if driver.client_thread is not None:
            driver.client_thread = tracer.timed(driver.client_thread, _client_thread_wait)
        if driver.client_delay is not None:
            _retype(driver.client_delay, _TimedBaseline, tracer)
    recorded = sim.recorder.workload

    def workload(name: str, rid: int, started_at: float, finished_at: float, status: int) -> None:
        recorded(name, rid, started_at, finished_at, status)
        tracer.finish(started_at, finished_at)

    sim.recorder.workload = workload  # type: ignore[method-assign]
    return tracer


def _pending(acc: _Acc, seconds: float) -> None:
    if not acc.in_conn:
        acc.pending += seconds


def _echo_wait(acc: _Acc, seconds: float) -> None:
    if not acc.in_conn:
        acc.add("echo", "worker_wait", seconds)


def _connection_wait(acc: _Acc, seconds: float) -> None:
    acc.add("load_generator", "connection_wait", seconds)


def _client_thread_wait(acc: _Acc, seconds: float) -> None:
    acc.add("load_generator", "worker_wait", seconds)


__all__ = ["SECTIONS", "RequestParts", "Tracer", "trace"]
