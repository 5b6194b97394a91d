"""Load results as fortio-compatible JSON (docs/tools-and-conventions.md section 2.2).

Durations inside ``DurationHistogram`` are in **seconds**, ``ActualDuration`` in nanoseconds,
and ``RequestedQPS`` is a string (``"max"`` for an unlimited rate), as fortio writes them, so
fortio's report server and the istio/tools scripts can read meshsim's files. The HDR buckets
become fortio's ``Data`` list; meshsim adds the uncorrected histogram under its own key.
"""

from __future__ import annotations

import platform
from typing import Any

from hdrh.histogram import HdrHistogram

from meshsim import __version__
from meshsim.proxy.loadgen import LoadResult

PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)


def histogram_json(hist: HdrHistogram, scale: float) -> dict[str, Any]:
    """fortio's histogram shape; ``scale`` converts recorded units (1e-6 for us -> s)."""
    count = hist.get_total_count()
    if count == 0:
        return {"Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0, "Data": None}
    data: list[dict[str, Any]] = []
    seen = 0
    prev_end = hist.get_min_value() * scale
    for item in hist.get_recorded_iterator():
        step = item.count_added_in_this_iter_step
        if step == 0:
            continue
        seen += step
        end = hist.get_highest_equivalent_value(item.value_iterated_to) * scale
        start = hist.get_lowest_equivalent_value(item.value_iterated_to) * scale
        data.append(
            {
                "Start": max(start, prev_end) if data else start,
                "End": end,
                "Percent": 100.0 * seen / count,
                "Count": step,
            }
        )
        prev_end = end
    mean = hist.get_mean_value()
    return {
        "Count": count,
        "Min": hist.get_min_value() * scale,
        "Max": hist.get_max_value() * scale,
        "Sum": mean * count * scale,
        "Avg": mean * scale,
        "StdDev": hist.get_stddev() * scale,
        "Data": data,
        "Percentiles": [
            {"Percentile": p, "Value": hist.get_value_at_percentile(p) * scale} for p in PERCENTILES
        ],
    }


def _duration_text(seconds: float) -> str:
    return f"{seconds:g}s"


def to_fortio(result: LoadResult, labels: str = "") -> dict[str, Any]:
    spec = result.spec
    return {
        "RunType": "HTTP",
        "Labels": labels or f"meshsim load {spec.url}",
        "StartTime": result.start_time.isoformat(),
        "RequestedQPS": "max" if spec.rps <= 0 else f"{spec.rps:g}",
        "RequestedDuration": _duration_text(spec.duration_s),
        "ActualQPS": result.actual_rps,
        "ActualDuration": int(result.actual_duration_s * 1e9),
        "NumThreads": spec.connections,
        "Version": f"meshsim-{__version__}",
        "DurationHistogram": histogram_json(result.corrected, 1e-6),
        "UncorrectedDurationHistogram": histogram_json(result.uncorrected, 1e-6),
        "Exactly": 0,
        "Jitter": False,
        "Uniform": False,
        "NoCatchUp": False,
        "Poisson": spec.poisson,
        "RetCodes": {str(code): n for code, n in sorted(result.ret_codes.items())},
        "Sizes": histogram_json(result.sizes, 1.0),
        "URL": spec.url,
        "NumConnections": spec.connections,
        "SocketCount": spec.connections + result.connect_failures,
        "AbortOn": 0,
        "Seed": spec.seed,
        "Scheduled": result.scheduled,
        "Sent": result.sent,
        "Unsent": result.unsent,
        "Errors": result.errors,
        "Warnings": list(result.warnings),
        "CoordinatedOmissionCorrected": True,
        "Host": platform.node(),
    }
