"""Envoy outlier detection (passive health checking), docs/mesh-semantics.md §3.

One :class:`OutlierDetector` per Envoy cluster (per client proxy). A caller:

* calls :meth:`OutlierDetector.record` with every attempt's outcome for the host it went
  to (consecutive-error ejection happens inline, on the error that reaches the threshold);
* calls :meth:`OutlierDetector.poll` whenever time advances (or exactly at
  :attr:`OutlierDetector.next_sweep_at`): it runs every interval sweep that is due, each at
  its own scheduled time, un-ejecting hosts and running success-rate / failure-percentage
  detection;
* balances over :meth:`OutlierDetector.eligible` hosts (healthy ones, or all in panic).

Durations are in seconds; percentages in percent (0-100).
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from meshsim.policy.outcome import Outcome, OutcomeKind, grpc_to_http_status

__all__ = ["EjectionEvent", "OutlierConfig", "OutlierDetector"]

_NOT_REPORTED = (
    OutcomeKind.OVERFLOW,
    OutcomeKind.FAULT_ABORT,
    OutcomeKind.FAILFAST,
    OutcomeKind.LOAD_SHED,
)


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """``Cluster.outlier_detection`` plus the healthy panic threshold (§3.1).

    The bare constructor gives raw Envoy's defaults; :meth:`istio` gives what istiod
    programs for a DestinationRule ``outlierDetection`` block (Istio configures *no*
    detector without one: model that as no ``OutlierDetector`` at all).
    """

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: float = 100.0
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: float = 0.0
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_time_s: float = 300.0
    """Cap on one ejection; the effective cap is ``max(max, base)``."""
    max_ejection_time_jitter_s: float = 0.0
    max_ejection_percent: float = 10.0
    always_eject_one_host: bool = False
    enforcing_success_rate: float = 100.0
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: float = 1.9
    """Envoy's ``success_rate_stdev_factor`` / 1000 (1900 -> 1.9)."""
    enforcing_failure_percentage: float = 0.0
    failure_percentage_threshold: float = 85.0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    healthy_panic_threshold: float = 50.0
    """Below this share of healthy hosts, balance across all hosts (panic)."""

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.base_ejection_time_s <= 0:
            raise ValueError("interval_s and base_ejection_time_s must be > 0")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be in [0, 100]")

    @classmethod
    def envoy_default(cls) -> OutlierConfig:
        """Raw Envoy: 5 x 5xx, gateway-failure enforcing 0, success-rate enforcing 100,
        10 s interval, 30 s base, 300 s max, 10 %, panic 50 % (§12.2)."""
        return cls()

    @classmethod
    def istio(
        cls,
        *,
        consecutive_5xx_errors: int = 5,
        consecutive_gateway_errors: int = 0,
        interval_s: float = 10.0,
        base_ejection_time_s: float = 30.0,
        max_ejection_percent: float = 10.0,
        min_health_percent: float = 0.0,
    ) -> OutlierConfig:
        """A DestinationRule ``outlierDetection`` block as istiod maps it (§3.1).

        ``consecutive5xxErrors`` 0 disables that check; gateway errors are off unless > 0
        (then enforcing 100 %); success-rate detection is forced off; the panic threshold
        is ``minHealthPercent`` (default 0 %, so panic never happens).
        """
        return cls(
            consecutive_5xx=consecutive_5xx_errors,
            enforcing_consecutive_5xx=100.0 if consecutive_5xx_errors > 0 else 0.0,
            consecutive_gateway_failure=consecutive_gateway_errors or 5,
            enforcing_consecutive_gateway_failure=100.0 if consecutive_gateway_errors > 0 else 0.0,
            interval_s=interval_s,
            base_ejection_time_s=base_ejection_time_s,
            max_ejection_percent=max_ejection_percent,
            enforcing_success_rate=0.0,
            healthy_panic_threshold=min_health_percent,
        )

    @property
    def effective_max_ejection_time_s(self) -> float:
        return max(self.max_ejection_time_s, self.base_ejection_time_s)


@dataclass(frozen=True, slots=True)
class EjectionEvent:
    """A change in a host's ejection state, for logs and tests."""

    time: float
    host: Hashable
    ejected: bool
    """True for an ejection, False for an un-ejection."""
    cause: str
    """``consecutive_5xx``, ``consecutive_gateway_failure``, ``success_rate``,
    ``failure_percentage`` or ``unejected``."""


@dataclass(slots=True)
class _HostMonitor:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_at: float | None = None
    ejection_time_s: float = 0.0
    backoff_k: int = 0
    """Envoy's ``ejectTimeBackoff``: the multiplier of the base ejection time."""
    num_ejections: int = 0
    requests: int = 0
    failures: int = 0


class OutlierDetector:
    """Envoy's outlier detector for one cluster (§3.2).

    Invariants: a host is ejected only if ``100·(ejected+1)/N <= max_ejection_percent``
    (or ``always_eject_one_host`` and none is ejected), where N is the number of hosts in
    the cluster; with the 10 % default and fewer than 10 hosts nothing is ever ejected. An
    ejection lasts ``min(base·k, max)`` (+ jitter), k growing by one per ejection while
    ``k·base < max + base`` and shrinking by one at each sweep where the host is not
    ejected; hosts are un-ejected only at sweeps.
    """

    def __init__(
        self,
        config: OutlierConfig | None = None,
        hosts: Iterable[Hashable] = (),
        *,
        now: float = 0.0,
    ) -> None:
        self.config = config if config is not None else OutlierConfig()
        self.events: list[EjectionEvent] = []
        """Every ejection and un-ejection, in time order."""
        self._monitors: dict[Hashable, _HostMonitor] = {}
        for host in hosts:
            self.add_host(host)
        self.next_sweep_at = now + self.config.interval_s
        """When the next interval sweep is due (the timer is armed at creation)."""

    # -- host set --------------------------------------------------------------------------

    def add_host(self, host: Hashable) -> None:
        self._monitors.setdefault(host, _HostMonitor())

    def remove_host(self, host: Hashable) -> None:
        self._monitors.pop(host, None)

    def has_host(self, host: Hashable) -> bool:
        return host in self._monitors

    @property
    def host_count(self) -> int:
        return len(self._monitors)

    @property
    def ejected(self) -> frozenset[Hashable]:
        return frozenset(h for h, m in self._monitors.items() if m.ejected_at is not None)

    def is_ejected(self, host: Hashable) -> bool:
        monitor = self._monitors.get(host)
        return monitor is not None and monitor.ejected_at is not None

    def backoff_multiplier(self, host: Hashable) -> int:
        """The host's current ejection-time multiplier k."""
        return self._monitors[host].backoff_k

    def eligible(self, hosts: Sequence[Hashable]) -> list[Hashable]:
        """The hosts a balancer may use: the non-ejected ones, or all of them in panic.

        Panic: healthy share < ``healthy_panic_threshold`` percent. With Istio's 0 % this
        never happens, so with every host ejected the list is empty (503 UH).
        """
        healthy = [h for h in hosts if not self.is_ejected(h)]
        if hosts and 100.0 * len(healthy) / len(hosts) < self.config.healthy_panic_threshold:
            return list(hosts)
        return healthy

    # -- results ---------------------------------------------------------------------------

    def record(
        self, host: Hashable, outcome: Outcome, now: float, rng: np.random.Generator
    ) -> bool:
        """Count one attempt's result for ``host``; True if it ejected the host now.

        Non-split mode: 5xx responses and locally originated errors (connect failure,
        reset, timeout) go into one counter, mapped to 503/504; local overflow and fault
        aborts never reach a host and are ignored. A gRPC status in the response headers
        counts as the HTTP status Envoy maps it to (UNAVAILABLE 503, INTERNAL 500,
        DEADLINE_EXCEEDED 504, ...; one in trailers is never seen, and the 200 counts). A
        non-5xx result resets both consecutive counters; a non-gateway 5xx resets the
        gateway counter.
        """
        if outcome.kind in _NOT_REPORTED:
            return False
        monitor = self._monitors.get(host)
        if monitor is None:
            raise KeyError(f"outlier detector: unknown host {host!r}; call add_host first")
        monitor.requests += 1
        status = outcome.effective_status
        grpc = outcome.grpc_status
        if grpc is not None and not outcome.grpc_in_trailers:
            # Envoy's router reports a gRPC request's grpc-status header as the HTTP status
            # it maps to (Filter::onUpstreamHeaders: grpcToHttpStatus, putHttpResponseCode).
            status = grpc_to_http_status(grpc)
        if not 500 <= status <= 599:
            monitor.consecutive_5xx = 0
            monitor.consecutive_gateway = 0
            return False
        monitor.failures += 1
        if monitor.ejected_at is not None:
            # Envoy ignores detections for an ejected host; un-ejection resets the counters.
            return False
        cfg = self.config
        if status in (502, 503, 504):
            monitor.consecutive_gateway += 1
        else:
            monitor.consecutive_gateway = 0
        monitor.consecutive_5xx += 1
        # Envoy's worker reports the error exactly when the count equals the threshold, and
        # the main thread resets the counter whether or not the ejection goes ahead.
        if cfg.consecutive_gateway_failure > 0 and (
            monitor.consecutive_gateway == cfg.consecutive_gateway_failure
        ):
            monitor.consecutive_gateway = 0
            if self._enforced(cfg.enforcing_consecutive_gateway_failure, rng) and self._eject(
                host, now, rng, "consecutive_gateway_failure"
            ):
                return True
        if cfg.consecutive_5xx > 0 and monitor.consecutive_5xx == cfg.consecutive_5xx:
            monitor.consecutive_5xx = 0
            if self._enforced(cfg.enforcing_consecutive_5xx, rng):
                return self._eject(host, now, rng, "consecutive_5xx")
        return False

    @staticmethod
    def _enforced(percent: float, rng: np.random.Generator) -> bool:
        if percent >= 100.0:
            return True
        if percent <= 0.0:
            return False
        return bool(rng.random() * 100.0 < percent)

    def _eject(self, host: Hashable, now: float, rng: np.random.Generator, cause: str) -> bool:
        cfg = self.config
        monitor = self._monitors[host]
        active = len(self.ejected)
        n = len(self._monitors)
        allowed = 100.0 * (active + 1) / n <= cfg.max_ejection_percent
        if not allowed and not (cfg.always_eject_one_host and active == 0):
            return False
        base, cap = cfg.base_ejection_time_s, cfg.effective_max_ejection_time_s
        if monitor.backoff_k * base < cap + base:
            monitor.backoff_k += 1
        jitter = (
            float(rng.random()) * cfg.max_ejection_time_jitter_s
            if (cfg.max_ejection_time_jitter_s > 0)
            else 0.0
        )
        monitor.ejection_time_s = min(base * monitor.backoff_k, cap) + jitter
        monitor.ejected_at = now
        monitor.num_ejections += 1
        monitor.consecutive_5xx = 0
        monitor.consecutive_gateway = 0
        self.events.append(EjectionEvent(now, host, True, cause))
        return True

    # -- interval sweeps -------------------------------------------------------------------

    def poll(self, now: float, rng: np.random.Generator) -> list[EjectionEvent]:
        """Run every sweep due at or before ``now``; return the events they produced."""
        start = len(self.events)
        while self.next_sweep_at <= now:
            self._sweep(self.next_sweep_at, rng)
            self.next_sweep_at += self.config.interval_s
        return self.events[start:]

    def _sweep(self, at: float, rng: np.random.Generator) -> None:
        for host, monitor in self._monitors.items():
            if monitor.ejected_at is None:
                monitor.backoff_k = max(0, monitor.backoff_k - 1)
            elif at - monitor.ejected_at >= monitor.ejection_time_s:
                monitor.ejected_at = None
                monitor.consecutive_5xx = 0
                monitor.consecutive_gateway = 0
                self.events.append(EjectionEvent(at, host, False, "unejected"))
        # This interval's request counts feed success-rate and failure-percentage detection.
        volumes = {h: (m.requests, m.failures) for h, m in self._monitors.items()}
        for monitor in self._monitors.values():
            monitor.requests = monitor.failures = 0
        self._success_rate(volumes, at, rng)
        self._failure_percentage(volumes, at, rng)

    def _success_rate(
        self, volumes: dict[Hashable, tuple[int, int]], at: float, rng: np.random.Generator
    ) -> None:
        cfg = self.config
        if cfg.enforcing_success_rate <= 0:
            return
        rates = {
            h: 100.0 * (req - fail) / req
            for h, (req, fail) in volumes.items()
            if req >= cfg.success_rate_request_volume and not self.is_ejected(h)
        }
        if len(rates) < cfg.success_rate_minimum_hosts:
            return
        mean = statistics.fmean(rates.values())
        stdev = statistics.pstdev(rates.values())
        threshold = mean - cfg.success_rate_stdev_factor * stdev
        for host, rate in rates.items():
            if rate < threshold and self._enforced(cfg.enforcing_success_rate, rng):
                self._eject(host, at, rng, "success_rate")

    def _failure_percentage(
        self, volumes: dict[Hashable, tuple[int, int]], at: float, rng: np.random.Generator
    ) -> None:
        cfg = self.config
        if cfg.enforcing_failure_percentage <= 0:
            return
        shares = {
            h: 100.0 * fail / req
            for h, (req, fail) in volumes.items()
            if req >= cfg.failure_percentage_request_volume and not self.is_ejected(h)
        }
        if len(shares) < cfg.failure_percentage_minimum_hosts:
            return
        for host, share in shares.items():
            if share >= cfg.failure_percentage_threshold and self._enforced(
                cfg.enforcing_failure_percentage, rng
            ):
                self._eject(host, at, rng, "failure_percentage")

    def time_until_uneject(self, host: Hashable, now: float) -> float:
        """Seconds until the host's ejection time has passed (``0`` if not ejected).

        The real un-ejection happens at the first sweep after that.
        """
        monitor = self._monitors[host]
        if monitor.ejected_at is None:
            return 0.0
        return max(0.0, monitor.ejected_at + monitor.ejection_time_s - now)
