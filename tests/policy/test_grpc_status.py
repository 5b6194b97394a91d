"""A gRPC failure comes in an HTTP 200: the policies read its ``grpc-status``.

docs/mesh-semantics.md §1.1/§1.3 (Envoy's gRPC retry conditions, Istio's default
``unavailable,cancelled``), §3.2 (outlier detection counts the HTTP status Envoy maps a
grpc-status header to), §6.1 (ServiceProfile retries), §6.2 (``retry.linkerd.io/grpc``),
§6.4 (failure accrual). Exact, deterministic cases.
"""

from __future__ import annotations

import numpy as np

from meshsim.policy import (
    GrpcStatus,
    LinkerdRetryPolicy,
    Outcome,
    OutlierConfig,
    OutlierDetector,
    RetryPolicy,
    ServiceProfileRetry,
    TpsBudget,
    grpc_to_http_status,
)
from meshsim.policy.chain import ClusterRuntime, Exchange
from meshsim.policy.mapping import ClusterPolicy, RoutePolicy

RNG = np.random.default_rng(0)


def _grpc(code: GrpcStatus, *, trailers: bool = False) -> Outcome:
    return Outcome.response(200, grpc_status=code, grpc_in_trailers=trailers)


def test_envoy_maps_each_grpc_status_to_an_http_status() -> None:
    """Envoy's grpcToHttpStatus (source/common/grpc/status.cc), every code; an unknown
    code is a 500."""
    assert {code.name: grpc_to_http_status(code) for code in GrpcStatus} == {
        "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
        "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
        "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
    }  # fmt: skip
    assert grpc_to_http_status(17) == 500
    assert _grpc(GrpcStatus.UNAVAILABLE).is_grpc_error
    assert not _grpc(GrpcStatus.OK).is_grpc_error
    assert not Outcome.ok().is_grpc_error


def test_istio_default_policy_retries_unavailable_in_a_200_and_not_internal() -> None:
    """§1.3: istiod's default retry_on has ``unavailable`` and ``cancelled``; the chain
    must not stop at the 200 before the retry policy sees its grpc-status. Two retries,
    then URX; INTERNAL, OK and a status in trailers stop at once."""
    route = RoutePolicy(envoy_retry=RetryPolicy.istio_default())
    ex = Exchange(route, envoy=True, now=0.0)
    verdicts = [ex.decide("a", _grpc(GrpcStatus.UNAVAILABLE), 0.0, RNG, None) for _ in range(3)]
    assert [(v.retry, v.event) for v in verdicts] == [
        (True, "retries"), (True, "retries"), (False, "retries_exhausted"),
    ]  # fmt: skip
    cancelled = _grpc(GrpcStatus.CANCELLED)
    assert Exchange(route, envoy=True, now=0.0).decide("a", cancelled, 0.0, RNG, None).retry
    for outcome in (
        _grpc(GrpcStatus.INTERNAL),
        _grpc(GrpcStatus.DEADLINE_EXCEEDED),
        _grpc(GrpcStatus.OK),
        _grpc(GrpcStatus.UNAVAILABLE, trailers=True),  # Envoy reads headers only (§1.1)
        Outcome.ok(),
    ):
        assert not Exchange(route, envoy=True, now=0.0).decide("a", outcome, 0.0, RNG, None).retry


def test_linkerd_grpc_annotation_retries_unavailable_in_headers_or_trailers() -> None:
    """§6.2: ``retry.linkerd.io/grpc: unavailable`` (limit 1) retries an UNAVAILABLE once,
    wherever its grpc-status came; not an INTERNAL."""
    policy = LinkerdRetryPolicy.from_annotations(grpc="unavailable")
    route = RoutePolicy(linkerd_retry=policy, repick_split_per_try=True)
    for trailers in (False, True):
        ex = Exchange(route, envoy=False, now=0.0)
        first = ex.decide("a", _grpc(GrpcStatus.UNAVAILABLE, trailers=trailers), 0.0, RNG, None)
        second = ex.decide("b", _grpc(GrpcStatus.UNAVAILABLE, trailers=trailers), 0.0, RNG, None)
        assert (first.retry, second.retry, second.event) == (True, False, "retries_exhausted")
    internal = Exchange(route, envoy=False, now=0.0).decide(
        "a", _grpc(GrpcStatus.INTERNAL), 0.0, RNG, None
    )
    assert not internal.retry


def test_service_profile_retries_a_grpc_failure_in_headers_only() -> None:
    """§6.1: no response class matches a 200, so linkerd2-proxy classifies by its
    grpc-status header; trailers come after the classification (``eos(None)``)."""
    retry = ServiceProfileRetry(TpsBudget(ttl_s=10.0, min_per_s=10, ratio=0.2))
    assert retry.is_failure(_grpc(GrpcStatus.UNAVAILABLE))
    assert retry.is_failure(_grpc(GrpcStatus.DEADLINE_EXCEEDED))
    assert not retry.is_failure(_grpc(GrpcStatus.UNAVAILABLE, trailers=True))
    assert not retry.is_failure(_grpc(GrpcStatus.NOT_FOUND))
    assert not retry.is_failure(_grpc(GrpcStatus.OK))
    assert retry.decide(_grpc(GrpcStatus.UNAVAILABLE), 0.0).retry


def _detector() -> OutlierDetector:
    config = OutlierConfig.istio(consecutive_5xx_errors=5, max_ejection_percent=100.0)
    return OutlierDetector(config, ["a", "b"])


def test_outlier_detection_counts_unavailable_in_headers_as_a_503() -> None:
    """§3.2: Envoy reports a grpc-status header as the HTTP status it maps to: five
    UNAVAILABLE (503) in a row eject the host; the same in trailers is a 200, and a
    RESOURCE_EXHAUSTED (429) no error at all."""
    od = _detector()
    ejected = [od.record("a", _grpc(GrpcStatus.UNAVAILABLE), 1.0, RNG) for _ in range(5)]
    assert ejected == [False, False, False, False, True]
    assert od.is_ejected("a")
    for outcome in (
        _grpc(GrpcStatus.UNAVAILABLE, trailers=True),
        _grpc(GrpcStatus.RESOURCE_EXHAUSTED),
    ):
        od = _detector()
        assert not any(od.record("a", outcome, 1.0, RNG) for _ in range(10))
        assert not od.is_ejected("a")


def test_failure_accrual_shuts_an_endpoint_after_7_unavailable() -> None:
    """§6.4: UNAVAILABLE is one of Linkerd's gRPC failure codes (in headers or trailers):
    seven in a row shut the endpoint. Through the chain's record step, as both drivers
    call it."""
    cluster = ClusterRuntime(
        ClusterPolicy("peak_ewma", accrual_mode="consecutive"), h1=False, now=0.0
    )
    trips = [cluster.record("a", _grpc(GrpcStatus.UNAVAILABLE, trailers=True), 1.0, RNG)
             for _ in range(7)]  # fmt: skip
    assert trips == [0] * 6 + [1]
    assert cluster.healthy(["a", "b"], 1.0, RNG) == ["b"]
