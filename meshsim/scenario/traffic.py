"""The ``traffic:`` block: mesh-neutral traffic intent per service, in Istio's vocabulary.

Each mesh maps it to its own mechanisms (:mod:`meshsim.policy.mapping`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from meshsim.scenario.base import (
    MAX_COUNT,
    Name,
    NonNegativeFloat,
    Percent,
    PositiveFloat,
    Spec,
)
from meshsim.scenario.edges import LocalityLb

MAX_RETRIES = 100
"""Every retry is simulated; no configuration seen retries more than a handful of times."""
MAX_UINT32 = 2**32 - 1
"""Envoy's circuit-breaker thresholds are 32-bit (2^32-1, Istio's default, means none)."""


_CONDITION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _retry_condition(value: str) -> str:
    # The form only: which conditions each mesh knows is the traffic mapping's to say
    # (meshsim check builds every mesh). A status outside 100-599 or a non-ASCII digit
    # passed here and then crashed Linkerd's status-range parser when the run was built.
    if value.isascii() and value.isdigit():
        form = len(value) == 3 and 100 <= int(value) <= 599
    else:
        form = _CONDITION.fullmatch(value) is not None
    if not form:
        raise ValueError(
            f"expected a retry condition (e.g. 5xx, connect-failure) or an HTTP status "
            f"100-599, got {value!r}"
        )
    return value


RetryCondition = Annotated[str, AfterValidator(_retry_condition)]


MIN_SPLIT_WEIGHT = 0.001


class Retries(Spec):
    attempts: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = Field(
        None,
        description="Retries after the first try; unset: 2 (a VirtualService's default), "
        "1 under Cilium (Envoy's num_retries default in a CiliumEnvoyConfig).",
    )
    per_try_timeout_ms: PositiveFloat | None = None
    retry_on: list[RetryCondition] | None = Field(
        None, description="Envoy retry_on conditions, e.g. [connect-failure, 5xx]."
    )
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    backoff_base_ms: PositiveFloat | None = None


class CircuitBreaker(Spec):
    max_connections: Annotated[int, Field(ge=1, le=MAX_UINT32)] | None = None
    max_pending_requests: Annotated[int, Field(ge=1, le=MAX_UINT32)] | None = None
    max_requests: Annotated[int, Field(ge=1, le=MAX_UINT32)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=MAX_UINT32)] | None = None


class OutlierDetection(Spec):
    consecutive_5xx: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = None
    consecutive_gateway_errors: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = None
    interval_s: PositiveFloat | None = None
    base_ejection_s: PositiveFloat | None = None
    max_ejection_percent: Percent | None = None


class FaultDelay(Spec):
    percent: Percent
    fixed_ms: NonNegativeFloat


class FaultAbort(Spec):
    percent: Percent
    # Envoy's fault filter takes an abort status in [200, 600) (a 1xx is not a final
    # response); a run built with 100 failed with a ValueError.
    status: Annotated[int, Field(ge=200, le=599)]


class Fault(Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class Mirror(Spec):
    service: Name
    subset: Name | None = None
    percent: Percent = 100.0


class Match(Spec):
    path_prefix: str | None = None
    path_exact: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class TrafficRule(Spec):
    """Mesh-neutral traffic intent for one service, in Istio's vocabulary."""

    service: Name
    match: Match | None = None
    split: dict[str, NonNegativeFloat] | None = Field(
        None, description="Weights by version name, e.g. {v1: 90, v2: 10}."
    )
    timeout_ms: PositiveFloat | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    load_balancer: (
        Literal["round_robin", "least_request", "random", "ring_hash", "maglev", "peak_ewma"] | None
    ) = None
    fault: Fault | None = None
    mirror: Mirror | None = None
    locality_lb: LocalityLb | None = Field(
        None, description="Istio's localityLbSetting; Linkerd: topology-aware routing."
    )

    @model_validator(mode="after")
    def _split_has_weight(self) -> TrafficRule:
        if self.split is not None and sum(self.split.values()) <= 0:
            raise ValueError("split weights must add up to more than 0")
        # Meshes take whole-number weights: meshsim keeps three decimals (x 1000), so a split
        # whose weights are all below 0.001 would become all zeros when the run is built.
        if self.split is not None and max(self.split.values()) < MIN_SPLIT_WEIGHT:
            raise ValueError(
                f"the largest split weight must be at least {MIN_SPLIT_WEIGHT:g} (weights are "
                "kept to three decimals)"
            )
        return self
