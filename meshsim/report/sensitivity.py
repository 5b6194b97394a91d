"""Does a difference between two meshes survive the models' uncertainty, and if not, why not?

With ``--model-samples N`` every mesh ran under the same N parameter sets (and the same random
numbers), so set k gives a *paired* difference ``d_k = metric_a(k) - metric_b(k)``. A finding
holds across the model band when every ``d_k`` has the sign of the difference at the models'
central values. Otherwise the answer depends on where in their ranges the parameters really
are, and the parameter that decides it is the one whose values rank most like the ``d_k``
(Spearman's rank correlation: monotone effects count, scale does not). With N of 4 to 16 a rank
correlation is itself noisy, so the report names the leading parameter and its coefficient,
and says how to settle the question (measure that model on the reader's hardware).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from meshsim.models import CONTROL_PLANE_KINDS, PARAMETER_SPECS
from meshsim.models.ranges import LEVEL_PARAMETER


@dataclass(frozen=True)
class BandVerdict:
    holds: bool
    """True when every parameter set gives the central difference's sign."""
    samples: int
    flips: int
    """How many sets give the opposite sign (or no difference)."""
    deciding: tuple[tuple[str, float], ...]
    """The two meshes' model parameters by decreasing |rank correlation| with the paired
    difference. With few sets this only points at candidates: say so where it is shown."""

    @property
    def leader(self) -> tuple[str, float] | None:
        return self.deciding[0] if self.deciding else None


def _values(run: Mapping[str, Any], metric: str) -> list[float | None] | None:
    block = run.get("model_samples")
    if not isinstance(block, Mapping):
        return None
    values = (block.get("metrics") or {}).get(metric)
    return list(values) if isinstance(values, list) else None


def rank_parameters(
    sets: np.ndarray, diffs: np.ndarray, names: list[str]
) -> tuple[tuple[str, float], ...]:
    """Parameters ordered by |Spearman rho| between their drawn values and ``diffs``."""
    out = []
    if len(diffs) < 3 or np.ptp(diffs) == 0:
        return ()
    for j, name in enumerate(names):
        column = sets[:, j]
        if np.ptp(column) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(stats.spearmanr(column, diffs).statistic)
        if math.isfinite(rho):
            out.append((name, rho))
    out.sort(key=lambda item: -abs(item[1]))
    return tuple(out)


CONTROL_PLANE = frozenset({*CONTROL_PLANE_KINDS, "cilium-operator", "spire"})
"""Model kinds that cost control-plane resources and convergence, not data-path work."""


def _model_labels(run: Mapping[str, Any], metric: str) -> set[str]:
    """The dotted-name prefixes (file stems, else kinds) of the models a mesh's run used that
    can move ``metric``: the control plane's for ``control_plane.*``, the data path's for
    latency and proxy resources (a control plane's CPU per CSR does not move proxy memory,
    however its drawn values happen to rank with it)."""
    want_control = metric.startswith("control_plane.")
    labels = set()
    for ref in run.get("cost_models") or []:
        if (str(ref.get("kind")) in CONTROL_PLANE) != want_control:
            continue
        file = str(ref.get("file") or "")
        labels.add(file.rsplit("/", 1)[-1].removesuffix(".yaml") if file else str(ref.get("kind")))
    return labels


_MEMORY_UNITS = frozenset({"MB", "KB"})
_NOT_CPU = frozenset({"hop_latency_us", "wakeup_latency_us", "ebpf_hop_latency_us"})
"""Microseconds of latency, not of CPU (their meaning says so: a wait, not work)."""


def can_move(parameter: str, metric: str) -> bool:
    """Whether a drawn parameter (dotted name) can enter ``metric`` at all: only memory sizes
    move memory, and memory sizes and pure latencies do not move CPU (a delay may: the
    debounce batches pushes, a cache's cooling prices a wake-up). A difference in memory that
    happens to rank with a handshake's CPU over four sets is chance, not cause."""
    bare = parameter.split(".", 1)[-1]
    if bare == LEVEL_PARAMETER:
        unit = "vCPU"
    else:
        spec = PARAMETER_SPECS.get(bare)
        if spec is None:
            return True
        unit = spec.unit
    if ".memory_" in metric:
        return unit in _MEMORY_UNITS
    if ".cpu_" in metric:
        return unit not in _MEMORY_UNITS and bare not in _NOT_CPU
    return True


def band_verdict(
    run_a: Mapping[str, Any], run_b: Mapping[str, Any], metric: str, central_diff: float
) -> BandVerdict | None:
    """Whether ``metric_a - metric_b`` keeps its central sign over the parameter sets.

    None when the runs carry no model samples for ``metric`` (no band to judge by).
    """
    a, b = _values(run_a, metric), _values(run_b, metric)
    if not a or not b or len(a) != len(b):
        return None
    pairs = [(i, x - y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x is not None
             and y is not None]  # fmt: skip
    if not pairs or central_diff == 0:
        return None
    sign = math.copysign(1.0, central_diff)
    flips = sum(1 for _, d in pairs if d * sign <= 0)
    block = run_a.get("model_samples") or run_b.get("model_samples") or {}
    names = list(block.get("parameters") or [])
    # Only the two meshes' own models can move their difference; the other parameters would
    # only add chance correlations (with 8 sets, one parameter in 20 reaches |rho| 0.7 by luck).
    labels = _model_labels(run_a, metric) | _model_labels(run_b, metric)
    own = [(not labels or n.split(".", 1)[0] in labels) and can_move(n, metric) for n in names]
    raw_sets = block.get("sets") or []
    deciding: tuple[tuple[str, float], ...] = ()
    if names and len(raw_sets) == len(a):
        rows = [raw_sets[i] for i, _ in pairs]
        matrix = np.array(
            [[math.nan if v is None else float(v) for v in row] for row in rows], dtype=float
        )
        ok = ~np.isnan(matrix).any(axis=0) & np.array(own, dtype=bool)
        kept = [n for n, keep in zip(names, ok, strict=True) if keep]
        deciding = rank_parameters(
            matrix[:, ok], np.array([d for _, d in pairs], dtype=float), kept
        )
    return BandVerdict(flips == 0, len(pairs), flips, deciding)


def settle_hint(parameter: str) -> str:
    """How a reader settles a question that a model parameter decides."""
    model = parameter.split(".", 1)[0]
    return (
        f"measure {model} on your hardware (`meshsim calibrate --proxy-cmd ...` for a proxy "
        f"binary, or `meshsim calibrate --from-fortio ...` from fortio runs) and pass the "
        f"fitted file through mesh_options"
    )
