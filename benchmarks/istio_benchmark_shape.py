"""Istio's latency benchmark shape, simulated, next to the published figures.

One client pod (fortio, meshed) and one server pod, 1 KiB payloads each way, 1000 rps,
16 connections, 2 Envoy workers, mTLS STRICT (istio.io Performance and Scalability,
docs/published-figures.md section 1a). Prints the latency the two sidecars add over the `none`
baseline at p90 and p99, and the sidecar CPU and memory, next to what istio.io published.
The published latencies come from different harnesses and hardware across versions
(docs/published-figures.md section 10.7): compare orders of magnitude, not digits.

    .venv/bin/python benchmarks/istio_benchmark_shape.py [--duration-s 30] [--seed 1]
"""

from __future__ import annotations

import argparse
from typing import Any

from meshsim.api import run_scenario
from meshsim.models import default_model
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict

PUBLISHED_ADDED_MS = [
    # (Istio version, p90, p99, source in docs/published-figures.md)
    ("1.5 (telemetry v2)", 2.8, 2.7, "section 1b"),
    ("1.7-era", 2.76, 2.88, "section 1b"),
    ("1.7-era with jitter", 1.72, 1.91, "section 1b"),
    ("1.20 (CNCF lab, bare metal)", 0.228, 0.298, "section 1b"),
]


def scenario(duration_s: float, seed: int) -> dict[str, Any]:
    return {
        "meshsim": 1,
        "name": "istio-benchmark-shape",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": 2.0,
        "meshes": ["none", "istio", "linkerd", "istio-ambient"],
        "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [
            {
                "name": "fortio-server",
                "replicas": 1,
                "response_bytes": 1024,
                "cpu_ms": {"dist": "constant", "mean": 0.05},
            }
        ],
        "workloads": [
            {
                "name": "fortio",
                "target": "fortio-server",
                "arrival": "poisson",
                "rate_rps": 1000.0,
                "request_bytes": 1024,
                "connections": 16,
            }
        ],
        "mesh_options": {"meshed_clients": True, "istio": {"workers": 2, "mtls": "STRICT"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    summary = build_summary(run_scenario(from_dict(scenario(args.duration_s, args.seed))))
    anchor = default_model("envoy-sidecar").anchor
    assert anchor is not None
    print("Added latency over `none` (ms), client + server proxies, 1000 rps, 1 KiB, 16 conns")
    print(f"{'':34} {'p50':>8} {'p90':>8} {'p99':>8}")
    for mesh, per_workload in summary["added_latency_ms"].items():
        a = per_workload["fortio"]
        print(f"{'simulated ' + mesh:34} {a['p50']:8.3f} {a['p90']:8.3f} {a['p99']:8.3f}")
    for version, p90, p99, where in PUBLISHED_ADDED_MS:
        print(f"{'published Istio ' + version:34} {'':>8} {p90:8.3f} {p99:8.3f}  ({where})")
    print()
    print("Proxy resources (per proxy)")
    for mesh, run in summary["runs"].items():
        p = run["proxies"]
        if not p.get("count"):
            continue
        print(
            f"  {mesh:14} proxies {p['count']}  vCPU/1000rps per proxy "
            f"{p['cpu_vcpu_per_1000rps'] / p['count']:.3f}  MB/proxy "
            f"{p['memory_mb_per_proxy']:.1f}  handshakes {p['handshakes']}"
        )
    print(
        f"  published Istio 1.24 sidecar: {anchor.vcpu_per_1000rps:.2f} vCPU, "
        f"{anchor.memory_mb:.0f} MB (models/istio-sidecar.yaml anchor)"
    )


if __name__ == "__main__":
    main()
