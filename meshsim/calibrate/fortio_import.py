"""``meshsim calibrate --from-fortio``: the per-hop cost of a real proxy from fortio runs.

Input: fortio JSON results (fortio's ``-json``, Nighthawk's ``--output-format fortio``, or
``meshsim load --json``) at several loads, with and without the mesh. Which run is which:

- a **manifest** (YAML) lists them: ``{hops: 2, workers: 2, request_bytes: 1024,
  runs: [{file: base-500.json, mesh: false}, {file: mesh-500.json, mesh: true}, ...]}``
  (paths relative to the manifest; ``hops`` = proxies on the request path, 2 for a client and a
  server sidecar; ``workers`` = proxy worker threads);
- or, for plain files, their ``Labels``: a label containing ``baseline``, ``no-mesh``,
  ``nomesh``, ``direct`` or ``none`` is a run without the mesh; ``mesh``, ``istio``,
  ``linkerd``, ``envoy`` or ``sidecar`` one with it (the baseline words are checked first).
  ``hops`` is then 2.

Runs are paired by ``RequestedQPS``. The per-hop added mean latency at each load,
``a = (Avg_mesh - Avg_base) / hops``, is fitted to ``a(lambda) = h + s + W(lambda, s)``: a fixed
non-CPU latency ``h`` (both directions), the proxy's on-path service time ``s``, and the M/M/1
queueing delay ``W = rho s / (1 - rho)`` of one worker with ``rho = lambda s / workers`` (an
approximation: exponential service, work spread evenly over the workers). ``s`` is found by a
grid search with ``h`` in closed form; the CIs come from a bootstrap over load levels. The
model file keeps the shape of the shipped model of its kind and scales its on-path CPU
components to ``s``; what latency runs cannot identify (TLS handshakes, memory) is copied
from the shipped model, each source saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from meshsim.calibrate.fit import Estimate, estimate, replicates
from meshsim.errors import MeshsimError
from meshsim.models import default_model

BASE_WORDS = ("baseline", "no-mesh", "nomesh", "direct", "none")
MESH_WORDS = ("mesh", "istio", "linkerd", "envoy", "sidecar")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MeshsimError(f"{path}: not a readable fortio JSON file: {exc}") from None
    if not isinstance(data, dict) or "DurationHistogram" not in data:
        raise MeshsimError(f"{path}: not a fortio result (no DurationHistogram)")
    return data


def classify(labels: str) -> bool | None:
    """True for a run with the mesh, False without, None when the label does not say."""
    low = labels.lower()
    if any(w in low for w in BASE_WORDS):
        return False
    if any(w in low for w in MESH_WORDS):
        return True
    return None


def collect(paths: list[Path]) -> tuple[list[tuple[dict[str, Any], bool, Path]], dict[str, Any]]:
    runs: list[tuple[dict[str, Any], bool, Path]] = []
    opts: dict[str, Any] = {}
    for path in paths:
        if path.suffix in (".yaml", ".yml"):
            man = yaml.safe_load(path.read_text()) or {}
            if not isinstance(man, dict) or not isinstance(man.get("runs"), list):
                raise MeshsimError(f"{path}: a manifest needs runs: [{{file, mesh}}, ...]")
            opts.update({k: v for k, v in man.items() if k != "runs"})
            for i, r in enumerate(man["runs"]):
                if not isinstance(r, dict) or "file" not in r or "mesh" not in r:
                    raise MeshsimError(f"{path}: runs[{i}]: expected {{file, mesh: true|false}}")
                f = (path.parent / str(r["file"])).resolve()
                runs.append((_read(f), bool(r["mesh"]), f))
            continue
        data = _read(path)
        kind = classify(str(data.get("Labels", "")))
        if kind is None:
            raise MeshsimError(
                f"{path}: its Labels {data.get('Labels')!r} say neither baseline "
                f"({', '.join(BASE_WORDS)}) nor mesh ({', '.join(MESH_WORDS)}); "
                "relabel it or use a manifest"
            )
        runs.append((data, kind, path))
    return runs, opts


def _qps_key(run: dict[str, Any]) -> str:
    return str(run.get("RequestedQPS", "max"))


def pair(runs: list[tuple[dict[str, Any], bool, Path]]) -> list[dict[str, Any]]:
    base = {_qps_key(r): r for r, mesh, _ in runs if not mesh}
    out = []
    for r, mesh, path in runs:
        key = _qps_key(r)
        if not mesh or key == "max" or key not in base:
            continue
        b = base[key]
        out.append(
            {
                "requested_qps": float(key),
                "file": str(path),
                "mesh_qps": float(r["ActualQPS"]),
                "base_qps": float(b["ActualQPS"]),
                "mesh_avg_us": float(r["DurationHistogram"]["Avg"]) * 1e6,
                "base_avg_us": float(b["DurationHistogram"]["Avg"]) * 1e6,
                "mesh_p50_us": _pct(r, 50.0),
                "base_p50_us": _pct(b, 50.0),
            }
        )
    return sorted(out, key=lambda p: p["requested_qps"])


def _pct(run: dict[str, Any], q: float) -> float | None:
    for p in run["DurationHistogram"].get("Percentiles") or []:
        if float(p["Percentile"]) == q:
            return float(p["Value"]) * 1e6
    return None


def _queue(lam: np.ndarray, s: float, workers: float) -> np.ndarray:
    rho = lam * s * 1e-6 / workers
    return np.asarray(np.where(rho < 1, rho * s / np.maximum(1 - rho, 1e-9), np.inf))


def fit_hop(lam: np.ndarray, added: np.ndarray, workers: float) -> tuple[float, float, float]:
    """(s, h, sse) minimising the squared error of ``h + s + W(lambda, s)`` (microseconds)."""
    cap = 0.999 * workers / (lam.max() * 1e-6) if lam.max() > 0 else added.max()
    best = (0.0, float(added.mean()), float("inf"))
    for s in np.linspace(0.0, min(float(added.max()), cap), 2001):
        q = _queue(lam, float(s), workers)
        h = max(float(np.mean(added - s - q)), 0.0)
        sse = float(np.sum((added - (h + s + q)) ** 2))
        if sse < best[2]:
            best = (float(s), h, sse)
    return best


def calibrate_from_fortio(
    paths: list[Path], out: Path, *, kind: str = "envoy-sidecar", seed: int = 0
) -> dict[str, Any]:
    runs, opts = collect(paths)
    pairs = pair(runs)
    if len(pairs) < 2:
        raise MeshsimError(
            f"need runs at two or more loads, each with and without the mesh "
            f"(found {len(pairs)} matched load levels)"
        )
    kind = str(opts.get("kind", kind))
    if kind not in ("envoy-sidecar", "linkerd-proxy"):
        raise MeshsimError(f"kind must be envoy-sidecar or linkerd-proxy, not {kind!r}")
    hops = float(opts.get("hops", 2))
    ref = default_model(kind)  # type: ignore[arg-type]
    workers = float(opts.get("workers", ref.worker_threads))
    req_bytes = int(opts.get("request_bytes", 0))
    lam = np.array([p["mesh_qps"] for p in pairs])
    added = np.array([(p["mesh_avg_us"] - p["base_avg_us"]) / hops for p in pairs])
    s, h, _ = fit_hop(lam, added, workers)
    reps = replicates(
        [lam, added], lambda la, ad: np.array(fit_hop(la, ad, workers)[:2]), seed=seed
    )
    s_est: Estimate = estimate(reps[0], s)
    h_est: Estimate = estimate(reps[1], h)
    resid = added - (h + s + _queue(lam, s, workers))
    resp_bytes = int(opts.get("response_bytes", req_bytes))
    r0, r1, _after = ref.request_cpu_us(req_bytes, resp_bytes, mtls=True)
    factor = s / (r0 + r1) if r0 + r1 > 0 else 1.0
    names = ", ".join(Path(p["file"]).name for p in pairs)
    src = f"(derived) meshsim calibrate --from-fortio: {names}"
    scaled = {
        "socket_io_us",
        "http_parse_request_us",
        "http_parse_response_us",
        "routing_us",
        "telemetry_us",
        "payload_cpu_us_per_kib",
    }
    params: dict[str, Any] = {}
    for name, p in ref.parameters.items():
        if name == "wakeup_cpu_us":
            continue  # the fitted on-path CPU s already holds whatever waking costs: absent = off
        if name in scaled:
            params[name] = {
                "value": round(p.value * factor, 3),
                "unit": p.unit,
                "source": src,
                "note": f"the shipped {ref.kind} model's value x {factor:.4f}, so "
                f"that the on-path CPU per hop equals the fitted "
                f"{s:.1f} us (the split between components is the shipped "
                "model's)",
            }
        elif name == "hop_latency_us":
            params[name] = {
                "value": round(h / 2.0, 3),
                "unit": p.unit,
                "source": src,
                "note": f"fitted fixed latency per hop {h:.1f} us, halved per direction",
            }
        elif name == "worker_threads":
            params[name] = {
                "value": workers,
                "unit": p.unit,
                "source": "the manifest's workers (default: the shipped model's)",
            }
        else:
            params[name] = {
                "value": p.value,
                "unit": p.unit,
                "source": f"copied from {Path(ref.path or '').name} (not identifiable "
                f"from latency runs): {p.source}",
            }
    doc = {
        "kind": kind,
        "describes": f"{ref.kind} per-hop cost fitted from fortio runs ({len(pairs)} loads, "
        f"{hops:g} proxies per request)",
        "measured_on": str(opts.get("measured_on", "the cluster of the fortio runs")),
        "parameters": params,
        "fit": {
            "method": "per-hop added mean latency = h + s + M/M/1 wait; grid search, bootstrap "
            "over load levels",
            "hops": hops,
            "workers": workers,
            "request_bytes": req_bytes,
            "pairs": pairs,
            "estimates": {
                "service_us": s_est.to_json(),
                "hop_latency_us": h_est.to_json(),
                "scale_factor": factor,
            },
            "residuals_us": [float(r) for r in resid],
            "held_out": [],
        },
    }
    from meshsim.calibrate.calibration import write_model

    write_model(doc, out)
    return doc
