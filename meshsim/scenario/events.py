"""The ``events:`` block: the timeline of failures and changes that a run applies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from meshsim.scenario.base import (
    MAX_COUNT,
    MAX_QUANTITY,
    NonNegativeFloat,
    PositiveFloat,
    Probability,
    Spec,
)
from meshsim.scenario.edges import FailZoneEvent, RecoverZoneEvent


class _Event(Spec):
    at_s: NonNegativeFloat
    target: str = Field(description="A service ('ratings') or one version ('reviews-v2').")


class KillEvent(_Event):
    """Replicas die at once; requests they hold fail, as after SIGKILL.

    With ``graceful: true`` the kill is announced: the pods leave the endpoints at once
    (Terminating), keep serving for ``prestop_s`` (a preStop delay) while the control plane
    tells the proxies, and only then die.
    """

    action: Literal["kill"]
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    graceful: bool = Field(False, description="Announce the kill (pod deletion with preStop).")
    prestop_s: NonNegativeFloat = Field(
        5.0, description="graceful only: how long a terminating pod keeps serving."
    )


class SlowEvent(_Event):
    """Replicas' CPU per request is multiplied by ``factor`` for ``duration_s``."""

    action: Literal["slow"]
    factor: PositiveFloat
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Replicas (default all)."
    )
    duration_s: PositiveFloat | None = None


GrpcStatusName = Literal[
    "cancelled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
    "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
    "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss",
    "unauthenticated",
]  # fmt: skip
"""The gRPC statuses other than OK, by name (grpc/grpc ``doc/statuscodes.md``, lower case)."""


def _grpc_status_name(value: object) -> object:
    # UNAVAILABLE as grpc-go spells it, deadline-exceeded as retry_on does: one status each.
    return value.lower().replace("-", "_") if isinstance(value, str) else value


class ErrorsEvent(_Event):
    """Replicas fail with probability ``rate`` for ``duration_s``: an HTTP service answers
    ``status`` (500 by default); a ``protocol: grpc`` service answers a gRPC status in a
    200, ``grpc_status`` (UNAVAILABLE by default: what a gRPC server under overload or
    shutting down returns), unless ``status`` asks it for an HTTP status instead."""

    action: Literal["errors"]
    rate: Probability
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] | None = Field(
        None, description="Replicas (default all)."
    )
    duration_s: PositiveFloat | None = None
    status: Annotated[int, Field(ge=400, le=599)] | None = Field(
        None,
        description="The HTTP status answered (default 500; a protocol: grpc service "
        "answers grpc_status unless this is set).",
    )
    grpc_status: Annotated[GrpcStatusName, BeforeValidator(_grpc_status_name)] | None = Field(
        None,
        description="protocol: grpc only: the gRPC status answered in a 200, grpc-status "
        "in its headers (default unavailable; UNAVAILABLE, deadline-exceeded spellings too).",
    )


class ScaleEvent(_Event):
    """The target's replica count becomes ``replicas``."""

    action: Literal["scale"]
    replicas: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    prestop_s: NonNegativeFloat | None = Field(
        None,
        description="Scale-down: removed pods leave the endpoints at once and die after this "
        "long; default: they finish what they hold and never die (the run is too short).",
    )


class RolloutEvent(_Event):
    """A Deployment rolling update: ``max_surge`` new pods at a time; once they are ready, as
    many old ones are deleted (gracefully, with ``prestop_s``, unless ``graceful`` is false)."""

    action: Literal["rollout"]
    max_surge: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    graceful: bool = True
    prestop_s: NonNegativeFloat = 5.0


class ChurnEvent(_Event):
    """Pods replaced at a steady rate (one at a time, chosen at random, in the same version):
    the old pod is deleted (gracefully unless ``graceful`` is false) and a new one started.
    ``target: '*'`` draws from every service."""

    action: Literal["churn"]
    pods_per_minute: PositiveFloat
    duration_s: PositiveFloat | None = Field(None, description="Default: until the end.")
    graceful: bool = False
    prestop_s: NonNegativeFloat = 5.0


class ConfigEvent(_Event):
    """A configuration change (a VirtualService, DestinationRule, ...) about ``target``, or
    about the whole mesh with ``target: '*'``: istiod makes a full push to the proxies that
    depend on it; Linkerd's policy controller streams one update to each watcher."""

    action: Literal["config"]
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = Field(
        1, description="Changes, spaced by interval_s."
    )
    interval_s: NonNegativeFloat = 0.0


class ControlPlaneDownEvent(_Event):
    """The control plane (istiod with its CA; Linkerd's destination and identity) stops: no
    pushes, no certificates. Proxies keep the configuration and certificates they have."""

    action: Literal["control-plane-down"]
    target: str = Field("control-plane", description="Always 'control-plane'.")
    duration_s: PositiveFloat | None = Field(None, description="Default: until the end.")


class ControlPlaneSlowEvent(_Event):
    """The control plane's CPU work takes ``factor`` times as long for ``duration_s``."""

    action: Literal["control-plane-slow"]
    target: str = Field("control-plane", description="Always 'control-plane'.")
    factor: Annotated[float, Field(ge=1, le=MAX_QUANTITY)]
    duration_s: PositiveFloat | None = None


Event = Annotated[
    KillEvent
    | SlowEvent
    | ErrorsEvent
    | ScaleEvent
    | RolloutEvent
    | ChurnEvent
    | ConfigEvent
    | ControlPlaneDownEvent
    | ControlPlaneSlowEvent
    | FailZoneEvent
    | RecoverZoneEvent,
    Field(discriminator="action"),
]

CONTROL_PLANE_TARGET = "control-plane"
"""The target of control-plane events."""
ANY_SERVICE = "*"
"""The target of churn and config events that concern every service."""
