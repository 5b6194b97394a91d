"""The outcome of one attempt (one try of a request against one upstream host).

Every policy in this package looks at the same small record: the HTTP status (if a
response arrived), the gRPC status (and whether it came in headers or trailers), or the
way the attempt failed without a response. Retries (docs/mesh-semantics.md §1.1, §6.1, §6.2),
outlier detection (§3.2) and failure accrual (§6.4) each classify it in their own words.

Envoy turns each local failure into a local reply; :attr:`Outcome.effective_status`
gives that reply's status so that, for instance, outlier detection in its default
non-split mode counts a reset as a 503 and a timeout as a 504 (§3.2, "Error Mapping").
A gRPC server answers every call with HTTP 200: its status is ``grpc-status``, in the
headers of a Trailers-Only response (an error with no message body, what a server under
overload or shutting down sends) or in the trailers after a body.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["GrpcStatus", "Outcome", "OutcomeKind", "grpc_to_http_status"]


class OutcomeKind(enum.Enum):
    """How an attempt ended."""

    RESPONSE = "response"
    """The upstream sent response headers (``status`` is set)."""
    RESET = "reset"
    """The stream was reset or the connection dropped before a response (Envoy UR/UC)."""
    CONNECT_FAILURE = "connect_failure"
    """No connection could be made (refused, connect timeout; Envoy UF)."""
    REFUSED_STREAM = "refused_stream"
    """The upstream HTTP/2 server refused the stream (REFUSED_STREAM)."""
    PER_TRY_TIMEOUT = "per_try_timeout"
    """The per-try timeout fired before response headers (Envoy UT on the try, 504)."""
    ROUTE_TIMEOUT = "route_timeout"
    """The overall route/request timeout fired (Envoy 504 UT); never retried (§1.1)."""
    OVERFLOW = "overflow"
    """A local circuit-breaker overflow (503 UO, ``x-envoy-overloaded``); never retried."""
    FAULT_ABORT = "fault_abort"
    """An injected abort (Envoy FI): a local reply, never retried (§7.2)."""
    FAILFAST = "failfast"
    """Linkerd balancer fail-fast (503, §5.1)."""
    LOAD_SHED = "load_shed"
    """Linkerd load shed (its queue full, or shut in fail-fast); not retryable (§6.2)."""


class GrpcStatus(enum.IntEnum):
    """The gRPC status codes (grpc/grpc ``doc/statuscodes.md``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Envoy's Grpc::Utility::grpcToHttpStatus (source/common/grpc/status.cc); a code it does not
# know is a 500.
_GRPC_HTTP: dict[int, int] = {
    GrpcStatus.OK: 200,
    GrpcStatus.CANCELLED: 499,
    GrpcStatus.UNKNOWN: 500,
    GrpcStatus.INVALID_ARGUMENT: 400,
    GrpcStatus.DEADLINE_EXCEEDED: 504,
    GrpcStatus.NOT_FOUND: 404,
    GrpcStatus.ALREADY_EXISTS: 409,
    GrpcStatus.PERMISSION_DENIED: 403,
    GrpcStatus.RESOURCE_EXHAUSTED: 429,
    GrpcStatus.FAILED_PRECONDITION: 400,
    GrpcStatus.ABORTED: 409,
    GrpcStatus.OUT_OF_RANGE: 400,
    GrpcStatus.UNIMPLEMENTED: 501,
    GrpcStatus.INTERNAL: 500,
    GrpcStatus.UNAVAILABLE: 503,
    GrpcStatus.DATA_LOSS: 500,
    GrpcStatus.UNAUTHENTICATED: 401,
}


def grpc_to_http_status(code: int) -> int:
    """The HTTP status Envoy maps a gRPC status to (UNAVAILABLE 503, INTERNAL 500, ...)."""
    return _GRPC_HTTP.get(code, 500)


# The status of the local reply Envoy (or linkerd2-proxy) produces for each failure kind.
_LOCAL_STATUS: dict[OutcomeKind, int] = {
    OutcomeKind.RESET: 503,
    OutcomeKind.CONNECT_FAILURE: 503,
    OutcomeKind.REFUSED_STREAM: 503,
    OutcomeKind.PER_TRY_TIMEOUT: 504,
    OutcomeKind.ROUTE_TIMEOUT: 504,
    OutcomeKind.OVERFLOW: 503,
    OutcomeKind.FAILFAST: 503,
    OutcomeKind.LOAD_SHED: 503,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced.

    Invariant: ``status`` is set exactly when ``kind`` is RESPONSE or FAULT_ABORT.
    Build instances with the class-method constructors, e.g. ``Outcome.response(503)``.
    """

    kind: OutcomeKind
    status: int | None = None
    """HTTP status of the response (RESPONSE, FAULT_ABORT)."""
    grpc_status: int | None = None
    """gRPC status, if the response carried one."""
    grpc_in_trailers: bool = False
    """True if ``grpc_status`` came in trailers (Envoy only reads headers, §1.1)."""
    rate_limited: bool = False
    """The response carried ``x-envoy-ratelimited`` (§1.1)."""
    overloaded: bool = False
    """The response carried ``x-envoy-overloaded`` (an upstream Envoy's overflow, §1.1)."""

    def __post_init__(self) -> None:
        has_status = self.kind in (OutcomeKind.RESPONSE, OutcomeKind.FAULT_ABORT)
        if has_status != (self.status is not None):
            raise ValueError(f"Outcome {self.kind.value}: status must be set iff a reply exists")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"HTTP status must be in 100..599 (not {self.status})")

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def response(
        cls,
        status: int,
        *,
        grpc_status: int | None = None,
        grpc_in_trailers: bool = False,
        rate_limited: bool = False,
        overloaded: bool = False,
    ) -> Outcome:
        """An upstream response with HTTP ``status``."""
        return cls(
            OutcomeKind.RESPONSE, status, grpc_status, grpc_in_trailers, rate_limited, overloaded
        )

    @classmethod
    def ok(cls) -> Outcome:
        """A plain 200 response."""
        return cls(OutcomeKind.RESPONSE, 200)

    @classmethod
    def reset(cls) -> Outcome:
        return cls(OutcomeKind.RESET)

    @classmethod
    def connect_failure(cls) -> Outcome:
        return cls(OutcomeKind.CONNECT_FAILURE)

    @classmethod
    def refused_stream(cls) -> Outcome:
        return cls(OutcomeKind.REFUSED_STREAM)

    @classmethod
    def per_try_timeout(cls) -> Outcome:
        return cls(OutcomeKind.PER_TRY_TIMEOUT)

    @classmethod
    def route_timeout(cls) -> Outcome:
        return cls(OutcomeKind.ROUTE_TIMEOUT)

    @classmethod
    def overflow(cls) -> Outcome:
        return cls(OutcomeKind.OVERFLOW)

    @classmethod
    def fault_abort(cls, status: int) -> Outcome:
        return cls(OutcomeKind.FAULT_ABORT, status)

    @classmethod
    def failfast(cls) -> Outcome:
        return cls(OutcomeKind.FAILFAST)

    @classmethod
    def load_shed(cls) -> Outcome:
        return cls(OutcomeKind.LOAD_SHED)

    # -- views --------------------------------------------------------------------------

    @property
    def effective_status(self) -> int:
        """The HTTP status the caller finally sees (a local reply's status for failures)."""
        if self.status is not None:
            return self.status
        return _LOCAL_STATUS[self.kind]

    @property
    def is_grpc_error(self) -> bool:
        """The response carried a gRPC status other than OK (in headers or trailers)."""
        return self.grpc_status is not None and self.grpc_status != GrpcStatus.OK

    @property
    def is_5xx(self) -> bool:
        """True when the effective status is 500..599."""
        return 500 <= self.effective_status <= 599

    @property
    def is_locally_originated(self) -> bool:
        """True for failures with no upstream response (connect failure, reset, timeout)."""
        return self.kind in (
            OutcomeKind.RESET,
            OutcomeKind.CONNECT_FAILURE,
            OutcomeKind.REFUSED_STREAM,
            OutcomeKind.PER_TRY_TIMEOUT,
            OutcomeKind.ROUTE_TIMEOUT,
        )
