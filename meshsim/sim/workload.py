"""Workloads: open-loop arrivals (Poisson, constant, phases) and closed-loop clients.

Open-loop latency is measured from the *intended* send time: when the client's
connections are all busy, the wait counts (no coordinated omission).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from meshsim.scenario.model import Workload
from meshsim.sim.app import Client, Request
from meshsim.sim.sampling import Sampler, make_sampler, quantile_sampler
from meshsim.sim.uncontended import give, start, take

if TYPE_CHECKING:
    from meshsim.sim.app import ServiceRuntime
    from meshsim.sim.cluster import Node
    from meshsim.sim.engine import Simulation


_TICK_EPS = 1e-9
"""Ticks: a time a hair under a tick boundary (float error) is on it."""


class WorkloadDriver:
    """Drives one workload's clients until the end of the measurement window."""

    def __init__(self, sim: Simulation, spec: Workload, target: ServiceRuntime) -> None:
        self.sim = sim
        self.env = sim.env
        self.spec = spec
        self.target = target
        self.client = Client(name=spec.name)
        self.rng = sim.streams(f"arrivals/{spec.name}")
        self.connections = (
            simpy.Resource(sim.env, capacity=spec.connections) if spec.connections else None
        )
        self.sent = 0
        self.completed = 0
        self.in_flight = 0
        self.sent_in_window = 0
        self.releases_in_window: int | None = None
        self.client_delay = (
            make_sampler(spec.client_delay_ms, sim.streams(f"client_delay/{spec.name}"), 1e-3)
            if spec.client_delay_ms is not None
            else None
        )
        self.client_cpu = (
            make_sampler(spec.client_cpu_ms, sim.streams(f"client_cpu/{spec.name}"), 1e-3)
            if spec.client_cpu_ms is not None
            else None
        )
        self.client_thread = (
            simpy.Resource(sim.env, capacity=spec.client_threads)
            if self.client_cpu is not None
            else None
        )
        """The client's own threads (``client_threads``): one is an event loop."""
        self.timer_lateness: Sampler | None = None
        """How late the load generator's timer fires after the request it sleeps for is due
        (``release_lateness_ms``; None: releases on a grid of ticks)."""
        self.release_lateness_s: list[float] = []
        """Per timer wake-up in the window: how late it released the request it slept for
        (negative: early), as the lab's load generator records it."""
        self.from_send_s: list[float] | None = None
        """Set to a list to have each request sent in the window on a client with its own
        CPU timed from its send (its thread taking it up) to its response read, as the lab's
        load generator stamps it (its uncorrected latency): the calibration's baselines."""
        self._loop_idle_since = 0.0
        """When the client's event loop last went to sleep (its thread's last burst ended)."""
        self._loop_woken: simpy.Event | None = None
        """Succeeded by a response reaching the client while its timer waits on its loop."""
        if spec.release_lateness_ms is not None:
            qs = np.asarray(spec.release_lateness_ms, dtype=float) * 1e-3
            ps = (np.arange(len(qs)) + 0.5) / len(qs)
            self.timer_lateness = quantile_sampler(
                ps, qs, sim.streams(f"release/{spec.name}"), float(qs.mean())
            )

    def start(self) -> None:
        if self.spec.arrival == "closed":
            think = (
                make_sampler(self.spec.think_time_ms, self.rng, 1e-3)
                if self.spec.think_time_ms is not None
                else None
            )
            for _ in range(self.spec.clients or 0):
                self.env.process(self._closed_client(think))
        elif self.spec.release_tick_ms is not None:
            self.env.process(self._ticked_open_loop(self.spec.release_tick_ms * 1e-3))
        else:
            self.env.process(self._open_loop())

    # ----------------------------------------------------------------- open loop

    def _open_loop(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        end = self.sim.end_s
        spec = self.spec
        boundaries = [p.at_s for p in spec.phases or []]
        # Exponential gaps drawn in batches: a scalar draw per request is the
        # single most expensive line of a run otherwise.
        gaps: list[float] = []
        poisson = spec.arrival == "poisson"
        send = self._send
        due: float | None = None
        # The request of an arrival starts once the loop has scheduled its own next event,
        # as a process's Initialize event would run it (uncontended.start).
        while env.now < end:
            rate = spec.rate_at(env.now)
            upcoming = [b for b in boundaries if b > env.now]
            next_change = upcoming[0] if upcoming else end
            if rate <= 0:
                yield env.timeout(min(next_change, end) - env.now)
                continue
            # The rate holds until next_change: send at it without looking the phase up
            # again for every request.
            while env._now < end:  # env.now without a property call, per request
                if poisson:
                    if not gaps:
                        gaps = self.rng.exponential(1.0, 4096)[::-1].tolist()
                    gap = gaps.pop() / rate
                else:
                    gap = 1.0 / rate
                at = env._now + gap
                if at >= next_change and next_change < end:
                    # Memorylessness makes re-drawing at a rate change exact for Poisson;
                    # a constant stream restarts its spacing at the boundary.
                    wait = env.timeout(next_change - env.now)
                    if due is not None:
                        start(env, send(due))
                        due = None
                    yield wait
                    break
                if at >= end:
                    if due is not None:
                        start(env, send(due))
                    return
                wait = env.timeout(gap)
                if due is not None:
                    start(env, send(due))
                yield wait
                due = env._now

    def _ticked_open_loop(self, tick_s: float) -> Generator[simpy.Event, Any, None]:
        """The same arrivals, released on the load generator's timer ticks.

        An event-loop load generator sleeps until a request is due, but its loop's timer
        counts whole ticks, and once running it sends everything due within half a tick (a
        shorter sleep would only add error): a request leaves at the tick nearest its
        intended time, with the others near it. A generator that shares a core with the
        client's sidecar (``client_cpu_ms`` with ``meshed_clients``) must first get that core
        back, and sends what is due by then: the busier the core, the bigger the clumps.
        The clumps are what the first proxy sees (one wake-up for several requests, and a
        short queue behind the first), and what the calibration lab's load generator does
        (:mod:`meshsim.proxy.loadgen`). Latency counts from the intended time, or from the
        release when that came first.

        With ``release_lateness_ms`` the releases are not on a grid but where the timer
        fires, as the lab's load generator has them: it sleeps until its next request is due
        (unless that is within half a tick) and its timer fires late, or early, by a drawn
        lateness, so the releases are as irregular as the timer (the lab's came 0.5 to 1.6 ms
        apart at 7741 rps where a grid has them all a tick apart: the clumps' sizes vary,
        and with them the queues behind them).
        """
        env = self.env
        host = self.sim.data_plane.client_host(self.client) if self.client_cpu else None
        thread = self.client_thread
        send = self._send
        half = tick_s / 2.0
        due = self._intended_times()
        self.releases_in_window = 0
        at = next(due, None)

        dispatch_cpu = self.client_cpu if host is not None and thread is not None else None
        # When the loop is done sending the last clump, by its CPU: it arms its next sleep
        # then (uvloop's call_later reads the clock as it arms the timer).
        sent_by = 0.0

        def release() -> bool:
            nonlocal at, sent_by
            if at is None:
                return False
            if self.sim.warmup_s <= at:
                self.releases_in_window = (self.releases_in_window or 0) + 1
            # The request this tick was chosen for goes whatever the rounding (one due
            # exactly halfway between two ticks once never left), the others due within
            # half a tick with it. The loop sends them one by one and reads its clock
            # before each: with CPU of its own to send one (client_cpu_ms), the clock has
            # moved on by the sends before it, and so has the half tick. Each request's
            # latency counts from there, when the loop reached it, if it was due by then.
            reached = env._now
            while True:
                if dispatch_cpu is None:
                    env.process(send(min(at, reached)))
                else:
                    half_s = dispatch_cpu() / 2.0
                    env.process(send(min(at, reached), half_s))
                    reached += half_s
                at = next(due, None)
                if at is None or at > reached + half:
                    sent_by = reached
                    return True

        lateness = self.timer_lateness
        event_loop = self.spec.release_timer == "event_loop"
        record = self.release_lateness_s.append
        warmup = self.sim.warmup_s
        while at is not None:
            slept = at - env._now > half
            if event_loop:
                if slept:
                    yield from self._loop_timer(at, tick_s, sent_by, host)
            else:
                if lateness is None:
                    wake = round(at / tick_s) * tick_s
                else:
                    wake = at + lateness() if slept else env._now
                if wake > env._now:
                    yield env.timeout(wake - env._now)
            if host is None or thread is None:
                if slept and at >= warmup:
                    record(env._now - at)
                release()
                self._loop_idle_since = env._now
                continue
            # The timer wakes the client's thread, which sends what is due once it runs.
            slot: object | None = take(thread)
            if slot is None:
                slot = thread.request()
                yield slot
            if slept and at >= warmup:

                def release_late(due: float = at) -> bool:
                    # The lateness is the lab's: from the request's due time to the moment
                    # the woken loop runs the sleeper (which has its core by then).
                    record(env._now - due)
                    return release()

                yield from host.wake_thread(self.client, release_late, thread)
            else:
                yield from host.wake_thread(self.client, release, thread)
            give(thread, slot)
            self._loop_idle_since = env._now

    def _loop_timer(
        self, at: float, tick_s: float, armed_at: float = 0.0, host: Node | None = None
    ) -> Generator[simpy.Event, Any, None]:
        """Sleep as a libuv loop sleeps for a request due at ``at`` (``release_timer:
        event_loop``): until its timer fires, after which the caller queues for the loop's
        thread as the timer's callback does.

        libuv keeps its clock in whole milliseconds (uvloop's ``call_later`` rounds the delay
        to them, and ``uv_update_time`` truncates the clock when the timer is armed: at
        ``armed_at``, once the loop has sent its last clump, so a clump sent across a tick
        arms from the next one), so the timer is due at a tick boundary up to 1.5 ticks
        before or 0.5 after ``at``; it runs at the first loop iteration whose clock has
        reached that boundary. A loop that is
        running then (a response being read, or queued for its core) fires it once that
        work is done. A sleeping one wakes on its own whole ticks after it last began to
        sleep, with the kernel's timer slack on top (``epoll_wait`` counts its timeout in
        milliseconds from the call), or sooner for a response: the busier the loop, the
        nearer the boundary it fires, which is why a load generator beside the proxies is
        less late than beside the echo alone. A loop that slept until its own timer while
        its node's cores were idle then waits for the host to run it
        (``cluster.idle_wakeup_latency``: on a VM, the halted vCPU woken first)."""
        env = self.env
        now = env._now
        armed = max(now, armed_at)
        boundary_tick = math.floor(armed / tick_s + _TICK_EPS) + round((at - armed) / tick_s)
        boundary = boundary_tick * tick_s
        if boundary > now:
            yield env.timeout(boundary - now)
        thread = self.client_thread
        if thread is not None and (thread.count or thread.queue):
            return
        idle = self._loop_idle_since
        ticks_left = boundary_tick - math.floor(idle / tick_s + _TICK_EPS)
        wake = idle + ticks_left * tick_s + self.spec.timer_slack_us * 1e-6
        if wake > env._now:
            woken = self._loop_woken = env.event()
            yield env.timeout(wake - env._now) | woken
            self._loop_woken = None
            # Slept until its own timer: on a node with nothing running (a halted vCPU) the
            # host must first run it.
            if host is not None and not woken.triggered:
                draw = host.idle_wakeup_latency
                if draw is not None and host.all_idle():
                    yield env.timeout(draw())

    def _intended_times(self) -> Iterator[float]:
        """The open loop's intended send times, from now to the end of the run."""
        end = self.sim.end_s
        spec = self.spec
        boundaries = sorted(p.at_s for p in spec.phases or [])
        poisson = spec.arrival == "poisson"
        gaps: list[float] = []
        t = self.env.now
        while True:
            rate = spec.rate_at(t)
            upcoming = [b for b in boundaries if b > t]
            next_change = upcoming[0] if upcoming else end
            if rate <= 0:
                if next_change >= end:
                    return
                t = next_change
                continue
            if poisson:
                if not gaps:
                    gaps = self.rng.exponential(1.0, 4096)[::-1].tolist()
                at = t + gaps.pop() / rate
            else:
                at = t + 1.0 / rate
            if at >= next_change and next_change < end:
                t = next_change  # memoryless: redraw at the new rate
                continue
            if at >= end:
                return
            t = at
            yield at

    # ----------------------------------------------------------------- closed loop

    def _closed_client(self, think: Any) -> Generator[simpy.Event, Any, None]:
        env = self.env
        end = self.sim.end_s
        while env.now < end:
            yield from self._send(env.now)
            if think is not None:
                yield env.timeout(think())

    # ----------------------------------------------------------------- one request

    def _send(
        self, intended_at: float, half_s: float | None = None
    ) -> Generator[simpy.Event, Any, None]:
        """One request, from ``intended_at``; with ``client_cpu_ms``, ``half_s`` is the
        client's CPU to send it and again to read its response (drawn here if not given)."""
        sim = self.sim
        env = self.env
        spec = self.spec
        self.sent += 1
        self.in_flight += 1
        if intended_at >= sim.warmup_s:
            self.sent_in_window += 1
        rid = sim.next_request_id()
        req = Request(rid, spec.name, intended_at, spec.request_bytes, spec.path, spec.headers)
        client_cpu = self.client_cpu
        host = sim.data_plane.client_host(self.client) if client_cpu is not None else None
        pool = self.connections
        conn: object | None = None
        if pool is not None:
            conn = take(pool)
            if conn is None:
                conn = pool.request()
                yield conn
        sent_at: float | None = None
        if host is None or client_cpu is None:
            # sim.call, inline: one frame less under every event of the request.
            status = yield from sim.route(self.client, self.target, req, None)
            sim.record_edge(self.client, self.target, req, intended_at, status)
            if (woken := self._loop_woken) is not None and not woken.triggered:
                woken.succeed()
            self._loop_idle_since = env._now
        else:
            # The client's own work is on its request's path, half to send it and half to
            # read the response, each queued for its node's cores behind (or ahead of) the
            # client's sidecar: a load generator sharing a core with it is held up by it.
            if half_s is None:
                half_s = client_cpu() / 2.0
            sent_at = yield from self._client_burst(host, half_s)
            status = yield from sim.call(self.client, self.target, req, None)
            # The response wakes the client's loop, and a timer it sleeps on fires once the
            # response is read (_loop_timer).
            if (woken := self._loop_woken) is not None and not woken.triggered:
                woken.succeed()
            yield from self._client_burst(host, half_s)
        if pool is not None and conn is not None:
            give(pool, conn)
        if self.client_delay is not None:
            # Outside the cluster and after the connection is free: it delays what the
            # client records, not the next request on the connection.
            yield env.timeout(self.client_delay())
        if sent_at is not None and self.from_send_s is not None and sent_at >= sim.warmup_s:
            self.from_send_s.append(env.now - sent_at)
        self.in_flight -= 1
        self.completed += 1
        sim.recorder.workload(spec.name, rid, intended_at, env.now, status)

    def _client_burst(self, host: Node, cpu_s: float) -> Generator[simpy.Event, Any, float]:
        """``cpu_s`` of the client's own CPU on one of its threads; a single thread with
        its next burst queued goes on with it on the same core (Node.execute's ready).
        Returns when the thread took it up."""
        thread = self.client_thread
        assert thread is not None
        slot: object | None = take(thread)
        if slot is None:
            slot = thread.request()
            yield slot
        taken = self.env._now
        yield from host.execute(cpu_s, self.client, ready=thread)
        give(thread, slot)
        self._loop_idle_since = self.env._now
        return taken

    def requested_rps(self) -> float | None:
        """The mean open-loop rate over the measurement window (None for closed loops)."""
        spec = self.spec
        if spec.arrival == "closed":
            return None
        lo, hi = self.sim.warmup_s, self.sim.end_s
        points = sorted({lo, hi, *[p.at_s for p in spec.phases or [] if lo < p.at_s < hi]})
        total = sum(spec.rate_at(a) * (b - a) for a, b in itertools.pairwise(points))
        return total / (hi - lo)
