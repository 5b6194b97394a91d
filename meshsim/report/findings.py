"""Short findings written from the numbers of ``summary["runs"]``.

Rules, so a reader can check every sentence:

* Latency: a mesh is *ahead* of another at a percentile when its value is lower and,
  with replications >= 2, the two 95 % confidence intervals do not overlap (a
  conservative test). Overlapping intervals are reported as *within the noise*. Where the
  summary has the paired interval of the difference (the runs share random numbers:
  ``difference_ci95_ms`` between two meshes, ``added_latency_ci95_ms`` against `none`), a
  difference is real when that interval excludes zero.
  With one replication there is no interval: the difference is stated with that
  caveat, and differences under the histogram's 1 % resolution are always noise.
* Success rate: two rates differ when the gap exceeds 1.96 standard errors of a
  difference of binomial proportions (requests over all replications).
* Proxy resources carry no interval in the summary (they are means over
  replications); they are compared as ratios.
* Model band: when the runs drew cost-model parameter sets (``--model-samples``), a latency or
  resource difference is stated as real only if every set gives it the same sign; otherwise
  it is restated as not settled, naming the parameter that decides it
  (:mod:`meshsim.report.sensitivity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from meshsim.report.sensitivity import band_verdict, settle_hint
from meshsim.results.summary import shares_text, uneven_pods, version_requests

RESOLUTION = 0.01
"""Relative resolution of latency histograms (DESIGN: two significant digits)."""
PERCENTILES = ("p50", "p99")


@dataclass(frozen=True)
class Finding:
    topic: str
    """latency, added-latency, success, resources, saturation, balance."""
    text: str
    noise: bool = False
    """True when the finding says a difference is within the noise."""
    size: float = 0.0
    """How large the difference is, relative (0.4 = 40 %); the report ranks findings by it."""
    pair: tuple[str, str] | None = None
    """The two meshes compared, for the model-band check."""
    metric: str = ""
    """The compared metric's dotted name in the summary's model samples."""
    diff: float = 0.0
    """``metric(pair[0]) - metric(pair[1])`` at the models' central values."""
    depends_on: str | None = None
    """The parameter that decides the finding, when it does not hold across the model band."""


def fmt_ms(value: float) -> str:
    """Milliseconds with three significant digits (at least two decimals below 1 ms)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} ms"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f} ms"


def _ci(sig: Mapping[str, Any], p: str, key: str = "latency_ci95_ms") -> tuple[float, float] | None:
    ci = (sig.get(key) or {}).get(p)
    if not ci or any(v is None for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def _paired(
    sig_a: Mapping[str, Any], mesh_a: str, sig_b: Mapping[str, Any], mesh_b: str, p: str
) -> tuple[float, float] | None:
    """The paired 95 % CI of mesh a's latency minus mesh b's (``difference_ci95_ms``, kept
    under whichever of the two comes first), or None."""
    ci = _ci(sig_a.get("difference_ci95_ms") or {}, p, mesh_b)
    if ci is not None:
        return ci
    ci = _ci(sig_b.get("difference_ci95_ms") or {}, p, mesh_a)
    return None if ci is None else (-ci[1], -ci[0])


def _ci_text(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [95 % CI {ci[0]:.3g}-{ci[1]:.3g}]"


def compare_latency(
    mesh_a: str,
    sig_a: Mapping[str, Any],
    mesh_b: str,
    sig_b: Mapping[str, Any],
    p: str,
    workload: str,
) -> Finding | None:
    """One sentence comparing two meshes' latency at percentile ``p`` for a workload."""
    a, b = sig_a["latency_ms"].get(p), sig_b["latency_ms"].get(p)
    if a is None or b is None:
        return None
    if a > b:
        mesh_a, sig_a, mesh_b, sig_b, a, b = mesh_b, sig_b, mesh_a, sig_a, b, a
    ci_a, ci_b = _ci(sig_a, p), _ci(sig_b, p)
    where = f"{p} latency of {workload}"
    values = f"{fmt_ms(a)}{_ci_text(ci_a)} against {fmt_ms(b)}{_ci_text(ci_b)}"
    relative = (b - a) / b if b else 0.0
    if relative < RESOLUTION:
        return Finding(
            "latency",
            f"{mesh_a} and {mesh_b} are within the noise on {where}: {values} "
            f"(under the histograms' 1 % resolution).",
            noise=True,
        )
    paired = _paired(sig_a, mesh_a, sig_b, mesh_b, p)
    if paired is not None:
        # The two runs share random numbers: the difference's own interval decides.
        span = f"the difference's 95 % CI {paired[0]:.3g}..{paired[1]:.3g} ms"
        if paired[1] >= 0.0:
            return Finding(
                "latency",
                f"{mesh_a} and {mesh_b} are within the noise on {where}: {values} "
                f"({span} holds zero).",
                noise=True,
            )
        values += f"; {span}"
        caveat = ""
    elif ci_a is not None and ci_b is not None:
        if ci_a[1] >= ci_b[0]:
            return Finding(
                "latency",
                f"{mesh_a} and {mesh_b} are within the noise on {where}: {values} "
                f"(the 95 % confidence intervals overlap).",
                noise=True,
            )
        caveat = ""
    else:
        caveat = " (one replication, so no confidence interval: rerun with replications >= 2)"
    return Finding(
        "latency",
        f"{mesh_a} is ahead of {mesh_b} on {where}: {values}, "
        f"{fmt_ms(b - a)} ({relative:.0%}) lower{caveat}.",
        size=relative,
        pair=(mesh_a, mesh_b),
        metric=f"workloads.{workload}.latency_ms.{p}",
        diff=a - b,
    )


def added_latency(
    mesh: str, sig: Mapping[str, Any], base: Mapping[str, Any], p: str, workload: str
) -> Finding | None:
    """How much latency ``mesh`` adds over the `none` baseline, with the noise test."""
    a, b = sig["latency_ms"].get(p), base["latency_ms"].get(p)
    if a is None or b is None:
        return None
    ci_a, ci_b = _ci(sig, p), _ci(base, p)
    added = a - b
    rel = added / b if b else 0.0
    values = f"{fmt_ms(a)}{_ci_text(ci_a)} against {fmt_ms(b)}{_ci_text(ci_b)} without a mesh"
    paired = _ci(sig, p, "added_latency_ci95_ms")
    if paired is not None:
        # The difference's own interval (the runs share random numbers): noise if it holds 0.
        values += f"; the difference's 95 % CI {paired[0]:.3g}..{paired[1]:.3g} ms"
        overlap = paired[0] <= 0.0 <= paired[1]
    else:
        overlap = (
            ci_a is not None and ci_b is not None and ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]
        )
    if abs(rel) < RESOLUTION or overlap:
        return Finding(
            "added-latency",
            f"{mesh} adds no latency beyond the noise at {p} for {workload}: {values}.",
            noise=True,
        )
    verb = "adds" if added > 0 else "removes"
    caveat = "" if ci_a is not None and ci_b is not None else " (one replication, no interval)"
    return Finding(
        "added-latency",
        f"{mesh} {verb} {fmt_ms(abs(added))} ({abs(rel):.0%}) at {p} for {workload}: "
        f"{values}{caveat}.",
        size=abs(rel),
        pair=(mesh, "none"),
        metric=f"workloads.{workload}.latency_ms.{p}",
        diff=added,
    )


def compare_success(
    mesh_a: str, sig_a: Mapping[str, Any], mesh_b: str, sig_b: Mapping[str, Any], workload: str,
    replications: int = 1,
) -> Finding | None:  # fmt: skip
    """Compare success rates with a two-proportion z test at 95 %."""
    pa, pb = sig_a.get("success_rate"), sig_b.get("success_rate")
    if pa is None or pb is None:
        return None
    na = max(1, int(sig_a.get("requests", 0)) * replications)
    nb = max(1, int(sig_b.get("requests", 0)) * replications)
    if pa < pb:
        mesh_a, mesh_b, pa, pb, na, nb = mesh_b, mesh_a, pb, pa, nb, na
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    gap = pa - pb
    values = f"{pa:.2%} against {pb:.2%}"
    if gap == 0 or gap <= 1.96 * se:
        return Finding(
            "success",
            f"{mesh_a} and {mesh_b} have the same success rate for {workload} within the "
            f"noise: {values}.",
            noise=True,
        )
    return Finding(
        "success",
        f"{mesh_a} succeeds more often than {mesh_b} for {workload}: {values} "
        f"({gap * 100:.2f} points, beyond 1.96 standard errors).",
        size=gap / pa if pa else 0.0,
    )


def compare_resources(runs: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """Proxy CPU per 1000 rps and total memory: every pair of meshes once, the leaner first."""
    out: list[Finding] = []
    meshed = {m: r["proxies"] for m, r in runs.items() if (r.get("proxies") or {}).get("count")}
    for key, what, unit in (
        ("cpu_vcpu_per_1000rps", "proxy CPU per 1000 rps", "vCPU"),
        ("memory_mb_total", "proxy memory in total", "MB"),
    ):
        values = {m: float(p.get(key, 0.0)) for m, p in meshed.items()}
        if len(values) < 2:
            continue
        ordered = sorted(values, key=lambda m: values[m])
        for i, lean in enumerate(ordered):
            for mesh in ordered[i + 1 :]:
                out.append(
                    _resource_finding(lean, values[lean], mesh, values[mesh], key, what, unit)
                )
    return out


def _resource_finding(
    lean: str, low: float, mesh: str, value: float, key: str, what: str, unit: str
) -> Finding:
    if value <= low * (1 + RESOLUTION):
        return Finding(
            "resources",
            f"{lean} and {mesh} need the same {what}: {low:.3g} {unit} against {value:.3g} {unit}.",
            noise=True,
        )
    ratio = f"{value / low:.1f}x" if low > 0 else "more than"
    return Finding(
        "resources",
        f"{lean} needs less {what} than {mesh}: {low:.3g} {unit} against "
        f"{value:.3g} {unit} ({mesh} uses {ratio} as much).",
        size=value / low - 1 if low > 0 else math.inf,
        pair=(lean, mesh),
        metric=f"proxies.{key}",
        diff=low - value,
    )


def uneven_balance(runs: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """A version whose pods took their requests unevenly under some meshes (one sentence per
    version and spread, the meshes that share it named together, the even ones after)."""
    spreads: dict[str, dict[str, list[str]]] = {}
    sizes: dict[str, float] = {}
    seen: dict[str, list[str]] = {}
    for mesh, run in runs.items():
        pods = run.get("pods") or {}
        for key in version_requests(pods):
            seen.setdefault(key, []).append(mesh)
        for key, shares in uneven_pods(pods):
            text = shares_text(shares)
            spreads.setdefault(key, {}).setdefault(text, []).append(mesh)
            sizes[key] = max(sizes.get(key, 0.0), max(shares) * len(shares) - 1.0)
    out: list[Finding] = []
    for key, by_text in spreads.items():
        parts = [
            f"{text} % of its requests under {_and(meshes)}" if not i else
            f"{text} % under {_and(meshes)}"
            for i, (text, meshes) in enumerate(by_text.items())
        ]  # fmt: skip
        uneven = {m for meshes in by_text.values() for m in meshes}
        even = [m for m in seen.get(key, []) if m not in uneven]
        tail = f"; evenly under {_and(even)}" if even else ""
        out.append(
            Finding(
                "balance",
                f"{key}'s pods took {'; '.join(parts)}{tail} (how the callers' "
                "balancers spread them: a gRPC caller's one connection under an L4 balancer, "
                "a slow pod avoided).",
                size=sizes[key],
            )
        )
    return out


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def findings(runs: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """All findings for one load level: ``runs`` is ``summary["runs"]``."""
    out: list[Finding] = []
    for mesh, run in runs.items():
        if run.get("saturated"):
            out.append(
                Finding(
                    "saturation",
                    f"{mesh} saturated the cluster or its apps: its latencies are not "
                    "steady-state values and are not compared as such.",
                    size=math.inf,
                )
            )
    meshes = list(runs)
    base = runs.get("none")
    workloads = list(dict.fromkeys(w for r in runs.values() for w in r.get("workloads", {})))
    reps = min(int(r.get("replications", 1)) for r in runs.values()) if runs else 1
    for workload in workloads:
        for p in PERCENTILES:
            if base is not None and workload in base["workloads"]:
                for mesh in meshes:
                    if mesh != "none" and workload in runs[mesh]["workloads"]:
                        f = added_latency(
                            mesh, runs[mesh]["workloads"][workload], base["workloads"][workload],
                            p, workload,
                        )  # fmt: skip
                        if f is not None:
                            out.append(f)
            meshed = [m for m in meshes if m != "none" and workload in runs[m]["workloads"]]
            if len(meshed) >= 2:
                out.extend(_pairwise_findings(runs, meshed, workload, p))
        present = [m for m in meshes if workload in runs[m]["workloads"]]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                f = compare_success(
                    a, runs[a]["workloads"][workload], b, runs[b]["workloads"][workload],
                    workload, reps,
                )  # fmt: skip
                if f is not None and not f.noise:
                    out.append(f)
    out.extend(compare_resources(runs))
    out.extend(uneven_balance(runs))
    return [judge_band(runs, f) for f in out]


def judge_band(runs: Mapping[str, Mapping[str, Any]], f: Finding) -> Finding:
    """Restate a finding that the models' own uncertainty can reverse (see sensitivity)."""
    if f.noise or f.pair is None or not f.metric:
        return f
    a, b = f.pair
    if a not in runs or b not in runs:
        return f
    verdict = band_verdict(runs[a], runs[b], f.metric, f.diff)
    if verdict is None:
        return f
    if verdict.holds:
        return replace(f, text=f"{f.text} It holds in all {verdict.samples} model parameter sets.")
    leader = verdict.leader
    caveat = "; few sets, so a pointer rather than a proof" if verdict.samples < 10 else ""
    # With few sets several parameters rank the same; naming one of them would be a guess.
    tied = [name for name, rho in verdict.deciding if leader and abs(rho) >= abs(leader[1]) - 1e-9]
    who = ""
    if leader is not None:
        who = leader[0] if len(tied) <= 1 else f"one of {', '.join(tied[:3])}"
        if len(tied) > 3:
            who += f" and {len(tied) - 3} more"
    decided = (
        f"depends on {who} (rank correlation {leader[1]:+.2f} with the difference over "
        f"{verdict.samples} parameter sets{caveat})"
        if leader is not None
        else "depends on the models' parameters"
    )
    hint = f" To settle it, {settle_hint(leader[0])}." if leader is not None else ""
    return replace(
        f,
        topic="depends",
        text=(
            f"Not settled, {decided}: at the models' central values, {f.text[0].lower()}"
            f"{f.text[1:].rstrip('.')}; but {verdict.flips} of {verdict.samples} parameter "
            f"sets within the models' ranges reverse or erase it.{hint}"
        ),
        depends_on=leader[0] if leader is not None else "",
    )


def _pairwise_findings(
    runs: Mapping[str, Mapping[str, Any]], meshes: list[str], workload: str, p: str
) -> list[Finding]:
    def value(m: str) -> float:
        v = runs[m]["workloads"][workload]["latency_ms"].get(p)
        return math.inf if v is None else float(v)

    # Every pair once, the faster first: with ambient ahead of both, "Linkerd against Istio"
    # is still the question a reader of two sidecar meshes came with.
    ordered = sorted(meshes, key=value)
    out = []
    for i, ahead in enumerate(ordered):
        for mesh in ordered[i + 1 :]:
            f = compare_latency(
                ahead, runs[ahead]["workloads"][workload], mesh,
                runs[mesh]["workloads"][workload], p, workload,
            )  # fmt: skip
            if f is not None:
                out.append(f)
    return out


def ranked(found: list[Finding], limit: int = 8) -> tuple[list[Finding], list[Finding], int]:
    """The findings that matter, largest first (at most ``limit``), then the rest.

    Returns ``(top, more, noise_count)``: saturation first, then real differences by size;
    the comparisons within the noise are only counted, since a wall of "within the noise"
    buries the few sentences a reader came for.
    """
    real = sorted((f for f in found if not f.noise), key=lambda f: -f.size)
    return real[:limit], real[limit:], sum(1 for f in found if f.noise)
