"""Istio fault injection (VirtualService ``http[].fault``), docs/mesh-semantics.md §7.2.

It runs in the Envoy fault filter of the *client* sidecar, before the router: the delay is
sampled and applied first, then the abort is sampled *independently* ("delays can be
followed by aborts"). An abort is a local reply (flag FI; a delay is DI): it never reaches
the upstream and is never retried (:meth:`meshsim.policy.outcome.Outcome.fault_abort`).
A percentage left unset means no request is affected. Linkerd has no fault-injection API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshsim.policy.split import fractional_percent, sample_per_million

__all__ = ["FaultAbort", "FaultDecision", "FaultDelay", "FaultInjection"]


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``fault.delay``: ``fixedDelay`` seconds for ``percentage`` percent of requests."""

    fixed_delay_s: float
    percent: float = 0.0

    def __post_init__(self) -> None:
        if self.fixed_delay_s < 0:
            raise ValueError("fixed_delay_s must be >= 0")
        fractional_percent(self.percent)  # validates the range


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """``fault.abort``: reply ``http_status`` (or ``grpc_status``) for ``percent`` percent."""

    http_status: int = 503
    percent: float = 0.0
    grpc_status: int | None = None

    def __post_init__(self) -> None:
        if not 200 <= self.http_status <= 599:
            raise ValueError(f"abort http_status must be in 200..599 (not {self.http_status})")
        fractional_percent(self.percent)


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """The faults for one request: wait ``delay_s``, then abort with ``abort_status`` if set."""

    delay_s: float = 0.0
    abort_status: int | None = None
    abort_grpc_status: int | None = None

    @property
    def delayed(self) -> bool:
        return self.delay_s > 0

    @property
    def aborted(self) -> bool:
        return self.abort_status is not None


@dataclass(frozen=True, slots=True)
class FaultInjection:
    """A VirtualService fault block; either part may be absent."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    def decide(self, rng: np.random.Generator) -> FaultDecision:
        """Sample the delay, then (independently) the abort, for one request.

        Two draws are always taken when both parts exist, so that the stream of random
        numbers does not depend on earlier outcomes.
        """
        delay_s = 0.0
        if self.delay is not None and sample_per_million(
            fractional_percent(self.delay.percent), rng
        ):
            delay_s = self.delay.fixed_delay_s
        if self.abort is not None and sample_per_million(
            fractional_percent(self.abort.percent), rng
        ):
            return FaultDecision(delay_s, self.abort.http_status, self.abort.grpc_status)
        return FaultDecision(delay_s)
