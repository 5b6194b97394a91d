"""Tidy pandas frames of run results (pandas is imported here, not in the simulator)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from meshsim.results.run import QUANTILES

if TYPE_CHECKING:
    from meshsim.results.run import RunResult

SIGNAL_COLUMNS = [
    "mesh", "replication", "kind", "subject", "requests", "errors", "success_rate", "rps",
    "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
]  # fmt: skip


def signals_frame(result: RunResult) -> pd.DataFrame:
    """One row per mesh, replication and subject (workload, service or edge)."""
    rows = []
    for mesh, mr in result.meshes.items():
        for rep in mr.replications:
            for kind in ("workloads", "services", "edges"):
                for name, s in getattr(rep, kind).items():
                    h = s.histogram
                    row = {
                        "mesh": mesh,
                        "replication": rep.index,
                        "kind": kind[:-1],
                        "subject": name,
                        "requests": s.requests,
                        "errors": s.errors,
                        "success_rate": (s.requests - s.errors) / s.requests
                        if s.requests
                        else None,
                        "rps": s.requests / rep.window_s,
                        "mean_ms": h.mean * 1e3,
                    }
                    for key, q in QUANTILES.items():
                        row[f"{key}_ms"] = h.quantile(q) * 1e3
                    rows.append(row)
    frame = pd.DataFrame(rows, columns=SIGNAL_COLUMNS)
    return frame.astype({"requests": "int64", "errors": "int64", "replication": "int64"})


def series_frame(result: RunResult) -> pd.DataFrame:
    """Per-second series: requests, errors and mean latency by send time."""
    frames = []
    for mesh, mr in result.meshes.items():
        for rep in mr.replications:
            for kind in ("workloads", "services", "edges"):
                for name, s in getattr(rep, kind).items():
                    n = len(s.series["requests"])
                    f = pd.DataFrame(
                        {
                            "mesh": mesh,
                            "replication": rep.index,
                            "kind": kind[:-1],
                            "subject": name,
                            "second": range(n),
                            "requests": s.series["requests"],
                            "errors": s.series["errors"],
                            "latency_sum_s": s.series["latency_sum_s"],
                            "latency_max_s": s.series["latency_max_s"],
                        }
                    )
                    frames.append(f)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["mean_latency_ms"] = (
        out["latency_sum_s"] / out["requests"].where(out["requests"] > 0)
    ) * 1e3
    out["success_rate"] = 1.0 - out["errors"] / out["requests"].where(out["requests"] > 0)
    return out


RECORD_COLUMNS = [
    "mesh", "replication", "request_id", "workload", "kind", "subject",
    "started_at", "finished_at", "latency_ms", "status",
]  # fmt: skip


def records_frame(result: RunResult) -> pd.DataFrame:
    rows = []
    for mesh, mr in result.meshes.items():
        for rep in mr.replications:
            for r in rep.records or []:
                rows.append(
                    (mesh, rep.index, r.request_id, r.workload, r.kind, r.subject,
                     r.started_at, r.finished_at, (r.finished_at - r.started_at) * 1e3, r.status)
                )  # fmt: skip
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)
