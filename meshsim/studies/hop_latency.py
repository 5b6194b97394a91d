"""The latency a proxy adds, in closed form: worker utilisation with wake-ups, and M/M/c waits.

A proxy with ``W`` workers sees ``lam`` requests per second; each request passes it twice (the
request, then the response), costing ``c`` us of CPU in all (``request_cpu_us``: request path,
response path, and the telemetry after the response, which holds the worker) plus ``w`` us for
each pass that finds its worker idle (``wakeup_cpu_us``). By PASTA a pass finds its worker idle
with probability ``1 - rho``, so

    rho = lam (c + 2 w (1 - rho)) / W   =>   rho = lam (c + 2 w) / (W + 2 lam w)

with ``lam`` in requests per us. That is the non-linear CPU(rps) the simulator produces: at the
models' anchors (1000 rps) it gives 1.80 wake-ups per request for Envoy and 1.76 for
linkerd2-proxy, where the simulator counts 1.76 and 1.77 (``anchor.wakeups_per_request`` in
``models/istio-sidecar.yaml`` and ``models/linkerd-proxy.yaml``). The proxy saturates
(``rho = 1``) at ``W / c`` requests per us: no wake-ups are left to save.

The waits: the passes are the jobs of an M/M/W queue (arrivals ``2 lam``, mean job ``s = (c +
2 w (1 - rho)) / 2``). Erlang's C gives the chance to wait, and the wait beyond is exponential
with rate ``W / s - 2 lam``. Added latency per pass = its wait + its on-path CPU (+ a wake-up
when idle) + ``hop_latency_us``; a hop is the passes of the proxies it crosses, whose sum's
quantiles are taken from draws of these closed-form distributions (the passes taken as
independent). M/M/c treats the CPU per pass as exponential, which over-states the waits of a
proxy whose CPU per request varies less: an upper bound near saturation, where the short
simulation of :mod:`meshsim.studies.sizing` is used instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meshsim.models import ProxyCostModel

SATURATED = 0.95
"""Utilisation at and above which an answer is 'saturated', never a latency (docs/DESIGN.md,
principle 3)."""


@dataclass(frozen=True)
class ProxyLoad:
    """One proxy at a load, in closed form."""

    model: ProxyCostModel
    rps: float
    request_bytes: int
    response_bytes: int
    mtls: bool
    workers: int

    @property
    def paths_us(self) -> tuple[float, float, float]:
        return self.model.request_cpu_us(self.request_bytes, self.response_bytes, mtls=self.mtls)

    @property
    def cpu_us(self) -> float:
        """CPU per request without wake-ups (request path + response path + after)."""
        return sum(self.paths_us)

    @property
    def utilisation(self) -> float:
        """Busy share of each worker (may exceed 1: the load is beyond the proxy)."""
        lam = self.rps / 1e6
        w = self.model.wakeup_cpu_us
        rho = lam * (self.cpu_us + 2 * w) / (self.workers + 2 * lam * w)
        # above 1 no pass finds an idle worker: the demand is lam * c / W
        return rho if rho < 1 else lam * self.cpu_us / self.workers

    @property
    def wakeups_per_request(self) -> float:
        return 2 * max(0.0, 1 - min(self.utilisation, 1.0))

    @property
    def vcpu(self) -> float:
        """CPU the proxy uses (cores), capped at its workers."""
        per_request = self.cpu_us + self.wakeups_per_request * self.model.wakeup_cpu_us
        return min(self.rps * per_request / 1e6, float(self.workers))

    @property
    def max_rps(self) -> float:
        """The rate at which every worker is busy."""
        return self.workers * 1e6 / self.cpu_us

    @property
    def saturated(self) -> bool:
        return self.utilisation >= SATURATED


def erlang_c(servers: int, offered: float) -> float:
    """Erlang's C: the chance an arrival waits in an M/M/c queue (``offered`` = lam / mu < c)."""
    if offered <= 0:
        return 0.0
    if offered >= servers:
        return 1.0
    # the Erlang B recursion, stable for any number of servers
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


@dataclass(frozen=True)
class PassWait:
    """The wait of one pass at a proxy: 0 with probability 1 - p, else exponential."""

    p_wait: float
    rate_per_us: float

    @property
    def mean_us(self) -> float:
        return self.p_wait / self.rate_per_us if self.rate_per_us > 0 else math.inf


def pass_wait(load: ProxyLoad) -> PassWait:
    rho = load.utilisation
    if rho >= 1:
        return PassWait(1.0, 0.0)
    mean_job = (load.cpu_us + load.wakeups_per_request * load.model.wakeup_cpu_us) / 2
    arrivals = 2 * load.rps / 1e6
    offered = arrivals * mean_job
    return PassWait(erlang_c(load.workers, offered), load.workers / mean_job - arrivals)


def steady(load: ProxyLoad) -> bool:
    """Whether the proxy's queue has a steady state. The utilisation (wake-ups charged only
    when idle) and the M/M/c pass (every pass's mean work) can straddle 1 by rounding, so
    both must say so."""
    return load.utilisation < 1 and pass_wait(load).rate_per_us > 0


def hop_samples_us(loads: list[ProxyLoad], draws: int, seed: int) -> np.ndarray:
    """Draws of the latency the ``loads``' proxies add to one hop (both passes of each)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(draws)
    for load in loads:
        if not steady(load):
            raise ValueError(f"a {load.model.kind} at {load.rps:g} rps has no steady state")
        wait = pass_wait(load)
        req, resp, _after = load.paths_us
        cv = load.model.request_cpu_cv
        scale = rng.gamma(1 / cv**2, cv**2, draws) if cv > 0 else np.ones(draws)
        idle = 1 - min(load.utilisation, 1.0)
        for on_path in (req, resp):
            waits = np.where(rng.random(draws) < wait.p_wait,
                             rng.exponential(1 / wait.rate_per_us, draws), 0.0)  # fmt: skip
            wakes = np.where(rng.random(draws) < idle, load.model.wakeup_cpu_us, 0.0)
            total += waits + on_path * scale + wakes + load.model.hop_latency_us
    return total
