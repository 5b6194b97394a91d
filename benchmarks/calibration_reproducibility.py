"""Are two calibrations on one machine the same within their confidence intervals?

    python benchmarks/calibration_reproducibility.py A.measurements.json B.measurements.json
    python benchmarks/calibration_reproducibility.py --quick      # runs two quick calibrations

Fits both lab records (``meshsim calibrate`` writes ``NAME.measurements.json`` beside the
model) and prints, for every estimate that carries a bootstrap CI, both values, whether each
lies inside the other's 95% CI and whether the CIs overlap. With two honest 95% CIs of equal
width, "the other's estimate inside my CI" holds with probability 0.83 even when nothing
differs between the runs, and "the CIs overlap" with 0.994 (tests/test_calibrate_fit.py), so
the overlap count is the criterion; the inside counts are printed as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from meshsim.calibrate.calibration import fit_model, measure_lab


def estimates(fit: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """Every (value, lo, hi) in a fit record, by a readable name."""
    out: dict[str, tuple[float, float, float]] = {}

    def add(name: str, e: dict[str, Any] | None) -> None:
        if e and "ci95" in e:
            out[name] = (float(e["value"]), float(e["ci95"][0]), float(e["ci95"][1]))

    st = fit["service_time"]
    for k in ("mean", "cv", "p50", "p99"):
        add(f"service_time.{k}", st.get(k))
    est = fit["estimates"]
    for name in (
        "callbacks_cpu_us",
        "process_cpu_us_vs_kib",
        "process_cpu_us_vs_rps",
        "filter_cpu_us",
        "tls_extra_cpu_us_vs_kib",
        "memory_kib_plain",
        "memory_kib_tls",
    ):
        line = est.get(name)
        if line:
            add(f"{name}.intercept", line["intercept"])
            add(f"{name}.slope", line["slope"])
    plane = est.get("process_cpu_us_vs_kib_and_wakeups")
    if plane:
        add("cpu_vs_kib_and_wakeups.intercept", plane["intercept"])
        for k, e in plane["slopes"].items():
            add(f"cpu_vs_kib_and_wakeups.{k}", e)
    add("handshake_cpu_us_per_side", est.get("handshake_cpu_us_per_side"))
    add("request_cpu_cv", est.get("request_cpu_cv"))
    add("tcp_connection_cpu_us (range over sidecars)", est.get("tcp_connection_cpu_us"))
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, dict[str, int]]:
    ea, eb = estimates(a), estimates(b)
    names = [n for n in ea if n in eb]
    head = (
        f"{'estimate':<44} {'run A (95% CI)':>30} {'run B (95% CI)':>30}  A in B  B in A  overlap"
    )
    lines = [head, "-" * len(head)]
    counts = {"estimates": len(names), "a_in_b": 0, "b_in_a": 0, "overlap": 0}
    for n in names:
        (va, la, ha), (vb, lb, hb) = ea[n], eb[n]
        a_in_b, b_in_a = lb <= va <= hb, la <= vb <= ha
        overlap = la <= hb and lb <= ha
        counts["a_in_b"] += a_in_b
        counts["b_in_a"] += b_in_a
        counts["overlap"] += overlap
        lines.append(
            f"{n:<44} {f'{va:.4g} ({la:.4g}..{ha:.4g})':>30} "
            f"{f'{vb:.4g} ({lb:.4g}..{hb:.4g})':>30}  {'yes' if a_in_b else 'NO':>6}  "
            f"{'yes' if b_in_a else 'NO':>6}  {'yes' if overlap else 'NO':>7}"
        )
    lines.append(
        f"\n{counts['overlap']} of {counts['estimates']} CIs overlap; run A's estimate "
        f"inside B's CI for {counts['a_in_b']}, B's inside A's for {counts['b_in_a']}"
    )
    return "\n".join(lines), counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="*", type=Path, help="two NAME.measurements.json files")
    ap.add_argument("--quick", action="store_true", help="run two quick calibrations now")
    ap.add_argument("--json", type=Path, help="also write the counts and table here")
    args = ap.parse_args(argv)
    if args.records and len(args.records) != 2:
        ap.error("give two measurement records, or none with --quick")
    if args.records:
        data = [json.loads(p.read_text()) for p in args.records]
    else:
        data = [measure_lab(args.quick, log=lambda s: print(s, file=sys.stderr)) for _ in range(2)]
        tmp = Path(tempfile.mkdtemp(prefix="meshsim-repro-"))
        for i, d in enumerate(data):
            (tmp / f"run{i}.measurements.json").write_text(json.dumps(d))
        print(f"records kept in {tmp}", file=sys.stderr)
    fits = [fit_model(d)["fit"] for d in data]
    text, counts = compare(fits[0], fits[1])
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
