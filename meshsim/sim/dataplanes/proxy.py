"""A proxy process: worker threads that run on its node's cores, its CPU and its memory state.

Every proxy (an Envoy sidecar or waypoint, a linkerd2-proxy, a ztunnel) is a set of worker
threads, each a simpy resource, whose CPU bursts *also* take one of the hosting node's cores
(:class:`~meshsim.sim.cluster.Node`), so proxies compete with the apps on that node
(docs/mesh-semantics.md §10).

- Envoy pins each downstream connection to one worker for life (no work stealing): a
  connection carries the :class:`Worker` it was accepted on, drawn at random (the kernel's
  ``accept()`` balancing), and every request on it queues for that worker alone.
- A work-stealing runtime (tokio: linkerd2-proxy with more than one core, ztunnel) is one
  resource of capacity ``n``: any idle thread takes the next task.

Per-request CPU comes from the cost model in three parts (:meth:`ProxyCostModel.request_cpu_us`):
request path, response path, and work after the response (telemetry). The last runs on the
same worker and core right after the response path, *without* holding up the response: the
caller continues at once while the worker stays busy, so it delays the next request on that
worker, as istio.io describes (docs/published-figures.md §1a). It is done with a timeout callback,
not a process, to keep the per-request cost of the simulator low.

On FCFS cores a worker whose burst ends with another queued for it keeps its core for that
burst (:meth:`Node.hand_on <meshsim.sim.cluster.Node.hand_on>`): its event loop runs every
ready callback before it sleeps, and the app it shares the core with waits (a work-stealing
pool's threads, each picking any task, do not hand on).

Two optional costs do not scale with requests. ``wakeup_cpu_us`` is charged on a burst that
finds its worker idle: an event loop asleep in ``epoll_wait`` pays a switch-in and cold caches
when woken, while one that is busy picks the next ready event up in the same wake-up, so the
CPU per request falls with load (measured by ``meshsim calibrate``: voluntary context switches
per request against CPU per request). With ``wakeup_cache_decay_ms`` the caches cool while the
worker sleeps: a wake-up after sleeping ``t`` costs ``wakeup_cpu_us * (1 - exp(-t / decay))``,
so a worker woken again soon after its last burst pays little (on a shared host, a 4 MiB
walk after 1, 3 and 30 ms asleep cost 2.1, 3.9 and 5.8 times the same walk with no sleep).
``tcp_connection_cpu_us`` is charged per connection end when a connection opens
(:mod:`~meshsim.sim.dataplanes.connections`).

The three parts are the model's means. When the model gives ``request_cpu_cv`` (optional), each
call of :meth:`Proxy.costs` scales them by one gamma draw of mean 1 and that cv, taken from the
run's ``proxy_cpu`` stream (batched, :func:`~meshsim.sim.sampling.gamma_factor`); without it
every request costs exactly the mean, as before.

When the model gives ``cpu_drift_cv`` and ``cpu_drift_ms``, each proxy also multiplies all its
CPU (wake-ups included) by its own slowly drifting factor of mean 1
(:mod:`meshsim.sim.cpu.drift`): per-request noise averages out over a CFS period's requests,
a drift does not, and it decides how often a CPU limit near the average is reached.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator, Hashable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import simpy

from meshsim.sim.cluster import has_ready_work
from meshsim.sim.sampling import Sampler, Uniforms
from meshsim.sim.uncontended import give, take

if TYPE_CHECKING:
    from meshsim.models import ProxyCostModel
    from meshsim.scenario.resources import Resources
    from meshsim.sim.cluster import Node
    from meshsim.sim.cpu.drift import CpuDrift
    from meshsim.sim.cpu.fair import CGroup

Costs = tuple[float, float, float]
"""CPU seconds of one proxied request: (request path, response path, after the response)."""


class Worker:
    """A worker thread (capacity 1), or a work-stealing pool of threads (capacity n)."""

    __slots__ = (
        "awake_at",
        "busy_s",
        "idle_since",
        "index",
        "owed_s",
        "preempt_cpu_s",
        "preempted",
        "preemptions",
        "requests",
        "res",
        "wake_cpu_s",
        "wakeups",
    )

    def __init__(self, env: simpy.Environment, index: int, threads: int) -> None:
        self.index = index
        self.res = simpy.Resource(env, capacity=threads)
        self.busy_s = 0.0
        """CPU seconds this worker (or pool) has executed."""
        self.requests = 0
        """Request-path bursts run on it (one per proxied request)."""
        self.wakeups = 0
        """Bursts that found it asleep (counted only when wake-ups cost CPU or latency)."""
        self.awake_at = 0.0
        """When the thread being woken runs (:meth:`Proxy._wakeup`); in the past if none is."""
        self.idle_since = 0.0
        """When it last let go of a burst (kept only when wake-ups' caches cool)."""
        self.wake_cpu_s = 0.0
        """CPU seconds its wake-ups were charged, before the node's speed."""
        self.owed_s = 0.0
        """CPU seconds of wake-ups' returns to the poll not yet run: run once no burst is ready
        for it (``wakeup_cpu_after_share``, :meth:`Proxy._owed_if_idle`)."""
        self.preempted = False
        """Its thread gave its core up with a burst ready (FCFS cores: :meth:`Proxy._give_back`)
        and has not run since."""
        self.preemptions = 0
        """Times that happened."""
        self.preempt_cpu_s = 0.0
        """CPU seconds the resumptions were charged (``preemption_cpu_us``), before the node's
        speed."""

    def has_ready_work(self) -> bool:
        """Whether its thread has a request's burst ready (a single thread's only)."""
        return has_ready_work(self.res)

    def thread(self, wreq: object) -> object:
        """Who runs the burst that holds ``wreq``, for the fair scheduler: the worker's one
        thread, or in a pool whichever took that request (known by the request alone)."""
        return self if self.res._capacity == 1 else wreq


def _always() -> bool:
    return True


class Proxy:
    """One proxy: its workers, CPU account, connections held and configuration in view."""

    __slots__ = (
        "_costs",
        "_cpu_factor",
        "_pick",
        "after_factor",
        "alive",
        "connections",
        "cooling_s",
        "cpu_s",
        "drift",
        "env",
        "epoch",
        "handshakes",
        "hop_s",
        "kind",
        "limit",
        "model",
        "name",
        "net_node",
        "node",
        "pod",
        "pod_name",
        "preempt_s",
        "resources",
        "resumes",
        "session_tickets",
        "sessions",
        "stealing",
        "tcp_open_s",
        "tls_connections",
        "wake_after",
        "wake_latency_s",
        "wakes",
        "wakeup_s",
        "wasm_filters",
        "workers",
    )

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        kind: str,
        model: ProxyCostModel,
        node: Node,
        threads: int,
        *,
        stealing: bool,
        pick: Uniforms,
        pod: Any = None,
        telemetry: bool = True,
        wasm_filters: int = 0,
        cpu_factor: Sampler | None = None,
        drift: CpuDrift | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.env = env
        self.name = name
        self.kind = kind
        """'sidecar', 'ztunnel' or 'waypoint'."""
        self.model = model
        self.node = node
        self.net_node: Node | None = node
        """Where its traffic leaves from, for network delays (None: a client outside)."""
        self.pod = pod
        self.pod_name: str | None = None
        """Without ``pod``: the pod it shares with other containers, by name (an ingress
        controller's with its linkerd-proxy); None: a pod of its own."""
        self.resources = resources
        """Its container's requests and limits where it carries its own (a gateway's);
        None: the scenario's for its kind (:func:`~meshsim.sim.cpu.cgroups.resources_of`)."""
        self.alive = True
        """False while a proxy that is a pod of its own (a ztunnel, a waypoint) is down after
        an OOM kill (:mod:`meshsim.sim.cpu.oom`); a sidecar dies with its pod instead."""
        self.epoch = 0
        """Its kills so far: what a connection held before a kill checks it against."""
        self.stealing = stealing
        if stealing or threads == 1:
            self.workers = [Worker(env, 0, threads)]
        else:
            self.workers = [Worker(env, i, 1) for i in range(threads)]
        self._pick = pick
        self.cpu_s = 0.0
        """CPU seconds executed by this proxy (read by the engine's snapshots)."""
        self.hop_s = model.hop_latency_us * 1e-6
        self.wakeup_s = model.wakeup_cpu_us * 1e-6
        self.wake_after = model.wakeup_cpu_after_share
        """The share of a wake-up's CPU spent after the work ready at the wake-up, off the
        requests' path (the loop's return to its poll): owed until no burst is ready for the
        worker, then held as the telemetry is (:meth:`_linger`)."""
        self.preempt_s = model.preemption_cpu_us * 1e-6
        """CPU seconds a worker's burst pays when its thread resumes after a preemption."""
        self.cooling_s = model.wakeup_cache_decay_ms * 1e-3
        """The time constant over which a sleeping worker's caches cool (0: a wake-up costs
        ``wakeup_s`` however long the worker slept)."""
        self.wake_latency_s = model.wakeup_latency_us * 1e-6
        self.wakes = bool(self.wakeup_s or self.wake_latency_s) or node.wakeup_latency is not None
        """Whether a burst that finds its worker asleep pays a wake-up (CPU, latency)."""
        self.tcp_open_s = model.tcp_connection_cpu_us * 1e-6
        """CPU seconds of one TCP connection end (connect or accept, and its close)."""
        self.connections = 0
        """Open connections (downstream, upstream, tunnels), for memory."""
        self.tls_connections = 0
        self.handshakes = 0
        """TLS handshakes this proxy took part in (either side)."""
        self.session_tickets = model.tls_session_tickets
        """TLS session tickets its client side keeps per upstream cluster (0: it never
        resumes; :func:`~meshsim.sim.dataplanes.connections.connect`)."""
        self.resumes = model.tls_server_resumption
        """Whether its server side resumes a session from a ticket it issued."""
        self.sessions: dict[Hashable, deque[tuple[str, int]]] = {}
        """Per upstream cluster, the session tickets its client side holds, newest first:
        the server that issued each and that server's :attr:`epoch` then."""
        self.after_factor = 1.0 if telemetry else 0.0
        self.wasm_filters = wasm_filters
        self._costs: dict[tuple[int, int, bool], Costs] = {}
        self._cpu_factor = cpu_factor
        """Per-request multipliers of the mean costs (None: the model's cv is 0)."""
        self.drift = drift
        """The slow drift of all its CPU (None: the model has none; meshsim.sim.cpu.drift)."""
        self.limit: CGroup | None = None if node.bandwidth is None else node.bandwidth.limited(self)
        """Its cgroup where its CPU limit can bind on FCFS cores (None: unlimited or under
        the fair scheduler, which keeps its own cgroups)."""

    # ----------------------------------------------------------------- workers

    def accept(self) -> Worker:
        """The worker a new downstream connection is bound to (random: kernel balancing)."""
        workers = self.workers
        if len(workers) == 1:
            return workers[0]
        return workers[int(self._pick() * len(workers))]

    def costs(self, request_bytes: int, response_bytes: int, mtls: bool) -> Costs:
        """CPU seconds for one request through this proxy.

        The means are cached per size and TLS; with a ``request_cpu_cv`` each call scales
        all three parts by one mean-1 gamma draw (one request's work is cheap or dear as a
        whole: its cv is the model's).
        """
        key = (request_bytes, response_bytes, mtls)
        c = self._costs.get(key)
        if c is None:
            req, resp, after = self.model.request_cpu_us(
                request_bytes, response_bytes, mtls=mtls, wasm_filters=self.wasm_filters
            )
            c = self._costs[key] = (req * 1e-6, resp * 1e-6, after * 1e-6 * self.after_factor)
        factor = self._cpu_factor
        if factor is None:
            return c
        k = factor()
        return (c[0] * k, c[1] * k, c[2] * k)

    def work(self, worker: Worker, cpu_s: float) -> Generator[simpy.Event, Any, None]:
        """Run ``cpu_s`` on ``worker``: wait for the thread, then for a core of the node."""
        if self.wakes:
            extra, wait = self._wakeup(worker)
            if wait > 0.0:
                yield self.env.timeout(wait)
            if extra:
                after = extra * self.wake_after
                worker.owed_s += after
                cpu_s += extra - after
            if worker.owed_s:
                yield from self._linger(worker, cpu_s, 0.0)
                return
        if self.drift is not None:
            cpu_s *= self.drift.at(self.env.now)
        wreq: object = take(worker.res)
        if wreq is None:
            wreq = worker.res.request()
            yield wreq
        if worker.preempted:
            cpu_s += self._resumed(worker)
        node = self.node
        if node.cpu is not None:
            cpu_s *= node.speed
            yield node.cpu.run(cpu_s, node.cgroup(self), worker.thread(wreq), worker.has_ready_work)
            give(worker.res, wreq)
            if self.cooling_s:
                worker.idle_since = self.env.now
            self._account(worker, cpu_s)
            return
        g = self.limit
        if g is not None:
            creq, ran, since = yield from node.run_limited(id(worker), cpu_s, g)
            self._release(worker, wreq, creq, ran, since)
            return
        # Its thread's core if its last burst handed it on (Node.hand_on): it had this
        # burst ready and went on without sleeping.
        creq, since = yield from node.core_for(id(worker), self)
        cpu_s *= node.speed  # the host's phase when the burst starts (Node.execute)
        yield self.env.timeout(cpu_s)
        node.busy_s += cpu_s  # _account, inlined on the hot path (before _give_back: yields)
        self.cpu_s += cpu_s
        worker.busy_s += cpu_s
        self._give_back(worker, wreq, creq, since)
        if self.cooling_s:
            worker.idle_since = self.env.now

    def work_then_linger(
        self, worker: Worker, cpu_s: float, after_s: float
    ) -> Generator[simpy.Event, Any, None]:
        """Run ``cpu_s`` (the response path), return, and keep the worker busy ``after_s``."""
        if self.wakes:
            extra, wait = self._wakeup(worker)
            if wait > 0.0:
                yield self.env.timeout(wait)
            after = extra * self.wake_after
            worker.owed_s += after
            cpu_s += extra - after
        yield from self._linger(worker, cpu_s, after_s)

    def _linger(
        self, worker: Worker, cpu_s: float, after_s: float
    ) -> Generator[simpy.Event, Any, None]:
        """:meth:`work_then_linger` once the wake-up is paid; and any burst of a worker that
        owes the CPU of a wake-up's return to its poll (``wakeup_cpu_after_share``), which it
        pays after this burst if no other is ready then (else after a later one)."""
        k = self.drift.at(self.env.now) if self.drift is not None else 1.0
        cpu_s *= k
        after_s *= k
        wreq: object = take(worker.res)
        if wreq is None:
            wreq = worker.res.request()
            yield wreq
        if worker.preempted:
            cpu_s += self._resumed(worker)
        node = self.node
        if node.cpu is not None:
            # Under the fair scheduler the telemetry is a burst of its own on the same
            # thread, right after the response path: it holds the worker, and the core the
            # thread goes on with (unless a woken task preempts it). The thread goes on to
            # the telemetry, or to what it owes its poll, or else to its next request if one
            # is ready (_owed_if_idle).
            cpu_s *= node.speed
            goes_on = worker.has_ready_work if after_s <= 0.0 and not worker.owed_s else _always
            yield node.cpu.run(cpu_s, node.cgroup(self), worker.thread(wreq), goes_on)
            self._account(worker, cpu_s)
            after_s = (after_s + self._owed_if_idle(worker) * k) * node.speed
            if after_s > 0.0:
                node.cpu.submit(
                    after_s, node.cgroup(self), partial(self._end_after, worker, wreq, after_s),
                    worker.thread(wreq), worker.has_ready_work,
                )  # fmt: skip
            else:
                give(worker.res, wreq)
                if self.cooling_s:
                    worker.idle_since = self.env.now
            return
        g = self.limit
        if g is not None:
            creq, ran, since = yield from node.run_limited(id(worker), cpu_s, g)
            after_s += self._owed_if_idle(worker) * k
            if after_s > 0.0:
                self._account(worker, ran)
                # The telemetry goes on holding the core, within the same quota.
                self.env.process(self._linger_limited(worker, wreq, creq, g, after_s, since))
            else:
                self._release(worker, wreq, creq, ran, since)
            return
        creq, since = yield from node.core_for(id(worker), self)
        speed = node.speed
        cpu_s *= speed
        yield self.env.timeout(cpu_s)
        node.busy_s += cpu_s  # _account, inlined on the hot path
        self.cpu_s += cpu_s
        worker.busy_s += cpu_s
        after_s = (after_s + self._owed_if_idle(worker) * k) * speed
        if after_s > 0.0:
            linger = self.env.timeout(after_s)
            assert linger.callbacks is not None
            linger.callbacks.append(partial(self._end_linger, worker, wreq, creq, after_s, since))
        else:
            self._give_back(worker, wreq, creq, since)
            if self.cooling_s:
                worker.idle_since = self.env.now

    @staticmethod
    def _owed_if_idle(worker: Worker) -> float:
        """The wake-ups' CPU the worker owes for its return to its poll, due now if no burst
        is ready for it (its event loop goes back to ``epoll_wait`` only once the work ready
        at its wake-up is done: a clump's later requests do not wait for it), else 0 and
        still owed."""
        owed = worker.owed_s
        if not owed or has_ready_work(worker.res):
            return 0.0
        worker.owed_s = 0.0
        return owed

    def _linger_limited(
        self, worker: Worker, wreq: object, creq: object, g: CGroup, after_s: float, since: float
    ) -> Generator[simpy.Event, Any, None]:
        node = self.node
        assert node.bandwidth is not None
        creq, ran = yield from node.bandwidth.run(after_s, g, node.current_speed, held=creq)
        self._release(worker, wreq, creq, ran, since)

    def _end_linger(
        self,
        worker: Worker,
        wreq: object,
        creq: object,
        after_s: float,
        since: float,
        _event: simpy.Event,
    ) -> None:
        self._release(worker, wreq, creq, after_s, since)

    def _give_back(self, worker: Worker, wreq: object, creq: object, since: float) -> None:
        """A burst's end on FCFS cores: the worker given back, and the core handed on to the
        worker's next burst if one is ready (its thread goes on without sleeping: see
        :mod:`meshsim.sim.cluster`), else given back."""
        res = worker.res
        node = self.node
        if not has_ready_work(res):
            give(node.cores, creq)
            give(res, wreq)
        elif node.yields(self):
            # A lighter thread waits for the core: it goes first (it woke and preempted this
            # one, whose ready work resumes after it).
            worker.preempted = True
            worker.preemptions += 1
            give(node.cores, creq)
            give(res, wreq)
        else:
            give(res, wreq)  # first: that burst is granted before the core is re-offered
            if not node.hand_on(id(worker), creq, since):
                worker.preempted = True  # its slice ran out
                worker.preemptions += 1

    def _resumed(self, worker: Worker) -> float:
        """The CPU seconds a burst pays as its thread resumes after a preemption (its
        caches refilled after the thread that ran in between, the switch back)."""
        worker.preempted = False
        worker.preempt_cpu_s += self.preempt_s
        return self.preempt_s

    def _release(
        self, worker: Worker, wreq: object, creq: object, cpu_s: float, since: float
    ) -> None:
        """A burst's end on FCFS cores (:meth:`_give_back`), ``cpu_s`` accounted (first: it
        counts in the thread's CPU that :meth:`Node.yields` compares)."""
        self._account(worker, cpu_s)
        self._give_back(worker, wreq, creq, since)
        if self.cooling_s:
            worker.idle_since = self.env.now

    def _end_after(self, worker: Worker, wreq: object, after_s: float) -> None:
        give(worker.res, wreq)
        if self.cooling_s:
            worker.idle_since = self.env.now
        self._account(worker, after_s)

    def _wakeup(self, worker: Worker) -> tuple[float, float]:
        """(CPU seconds, seconds to wait) of the wake-up this burst pays: the wake-up's cost
        and the host's latency to run the thread if the burst finds ``worker`` asleep, the
        rest of that latency if the thread is being woken, else nothing.

        A thread is asleep when none of the worker's capacity is held and nothing queues for
        it; a burst that queues (or a thread still finishing telemetry) rides the current
        wake-up, which is how an event loop batches the events ready when it polls. (A
        work-stealing pool wakes one thread at a time here: a burst arriving while one is
        being woken waits for it rather than waking a second.)
        """
        res = worker.res
        if len(res.users) < res._capacity and not res.put_queue:  # count, capacity, queue
            now = self.env.now
            if now < worker.awake_at:
                return 0.0, worker.awake_at - now
            worker.wakeups += 1
            draw = self.node.wakeup_latency
            wait = draw() if draw is not None else self.wake_latency_s
            worker.awake_at = now + wait
            cpu = self.wakeup_s
            if self.cooling_s:
                # The host's other work evicts a sleeping thread's caches over time: a
                # short sleep leaves them warm, a long one cold (wakeup_cpu_us).
                cpu *= -math.expm1(-(now - worker.idle_since) / self.cooling_s)
            worker.wake_cpu_s += cpu
            return cpu, wait
        return 0.0, 0.0

    def _account(self, worker: Worker, cpu_s: float) -> None:
        self.node.busy_s += cpu_s
        self.cpu_s += cpu_s
        worker.busy_s += cpu_s

    # ----------------------------------------------------------------- its process

    def killed(self) -> None:
        """Its process is killed (an OOM kill of a proxy that is a pod's container of its
        own): down until :meth:`restarted`, and what it held goes with it: its connections,
        its TLS session tickets; what held them checks its ``epoch``."""
        self.alive = False
        self.epoch += 1
        self.connections = self.tls_connections = 0
        self.sessions.clear()

    def restarted(self) -> None:
        """A fresh process after the kubelet's backoff."""
        self.alive = True

    # ----------------------------------------------------------------- connections

    def opened(self, tls: bool) -> None:
        self.connections += 1
        if tls:
            self.tls_connections += 1

    def closed(self, tls: bool) -> None:
        self.connections -= 1
        if tls:
            self.tls_connections -= 1

    def handshake_s(self, role: Literal["client", "server"], resumed: bool) -> float:
        """CPU seconds of this proxy's side of a TLS 1.3 mutual handshake."""
        return self.model.handshake_cpu_us(role, resumed) * 1e-6

    # ----------------------------------------------------------------- memory

    def memory_mb(self, clusters: int, endpoints: int) -> float:
        return self.model.memory_mb(
            max(self.connections, 0),
            clusters,
            endpoints,
            tls_connections=max(min(self.tls_connections, self.connections), 0),
        )
