"""Cost models of the proxies: loading and checking ``models/*.yaml``.

A model file gives every number the simulator needs to build a proxy's latency, CPU and memory
from mechanisms (parse, route, telemetry, TLS, socket I/O, configuration held), each number with
the source it came from (docs/DESIGN.md principle 2). This module is the only reader of those files:

- :func:`parse_model` / :func:`load_model` check a file and return a frozen
  :class:`ProxyCostModel`, or raise :class:`meshsim.errors.ModelError` naming the file, the line,
  the field and what was expected (principle 7). Nothing is defaulted silently: a parameter without
  a source, an unknown parameter or a missing one is an error; so is a ``range: [low, high]``
  without a ``range_source``, or one that does not contain its value.
- :class:`ProxyCostModel` turns the parameters into the quantities the simulator charges:
  per-request CPU by phase, handshake CPU, per-connection CPU and memory.
- :func:`ranged_parameters` lists a model's uncertain parameters under dotted names,
  :func:`drawn_parameters` adds its CPU total at the anchor where the anchor bounds it, and
  :meth:`ProxyCostModel.with_values` applies a drawn parameter set.

The set of required parameters depends on the proxy *kind* (an L4 ztunnel has no HTTP parser, a
sidecar has no HBONE framing), so calibrated files (``models/calibrated/``) go through the same
checks as the published ones. ``models/README.md`` explains every parameter and the arithmetic
that reproduces the published anchors.
"""

from __future__ import annotations

from meshsim.models.cost import Anchor, Parameter, ParameterRange, ProxyCostModel
from meshsim.models.files import default_model, load_model, model_names, models_dir, parse_model
from meshsim.models.parameters import (
    CONTROL_PLANE_KINDS,
    DEFAULT_MODEL_NAMES,
    KINDS,
    PARAMETER_SPECS,
    PROXY_KINDS,
    ControlPlaneKind,
    Kind,
    ParameterSpec,
    ProxyKind,
    optional_parameters,
    required_parameters,
)
from meshsim.models.ranges import (
    AnchorLevel,
    RangedParameter,
    drawn_parameters,
    model_label,
    ranged_parameters,
    unranged_parameters,
)

__all__ = [
    "CONTROL_PLANE_KINDS",
    "DEFAULT_MODEL_NAMES",
    "KINDS",
    "PARAMETER_SPECS",
    "PROXY_KINDS",
    "Anchor",
    "AnchorLevel",
    "ControlPlaneKind",
    "Kind",
    "Parameter",
    "ParameterRange",
    "ParameterSpec",
    "ProxyCostModel",
    "ProxyKind",
    "RangedParameter",
    "default_model",
    "drawn_parameters",
    "load_model",
    "model_label",
    "model_names",
    "models_dir",
    "optional_parameters",
    "parse_model",
    "ranged_parameters",
    "required_parameters",
    "unranged_parameters",
]
