"""SLO checks on a summary: a breach makes ``meshsim run`` exit with status 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meshsim.scenario.model import Slo

if TYPE_CHECKING:
    from meshsim.results.schema import Signals, Summary

Statistic = Literal["mean", "p50", "p90", "p99", "p999"]


@dataclass(frozen=True)
class Breach:
    mesh: str
    subject: str
    objective: str
    limit: float
    measured: float | None

    def __str__(self) -> str:
        shown = "no data" if self.measured is None else f"{self.measured:.4g}"
        sense = ">=" if self.objective == "success_rate" else "<="
        return (
            f"{self.mesh}: {self.subject} {self.objective} = {shown} "
            f"(objective {sense} {self.limit:g})"
        )


def check_slos(slos: list[Slo], summary: Summary) -> list[Breach]:
    breaches: list[Breach] = []
    for slo in slos:
        for mesh, run in summary["runs"].items():
            if slo.mesh is not None and slo.mesh != mesh:
                continue
            signals: Signals | None
            if slo.service is not None:
                subject, signals = f"service {slo.service}", run["services"].get(slo.service)
            else:
                name = slo.workload or ""
                subject, signals = f"workload {slo.workload}", run["workloads"].get(name)
            latency = signals["latency_ms"] if signals is not None else None
            objectives: tuple[tuple[Statistic, float | None], ...] = (
                ("mean", slo.mean_ms), ("p50", slo.p50_ms), ("p90", slo.p90_ms),
                ("p99", slo.p99_ms), ("p999", slo.p999_ms),
            )  # fmt: skip
            for key, limit in objectives:
                if limit is None:
                    continue
                measured = latency.get(key) if latency is not None else None
                if measured is None or measured > limit:
                    breaches.append(Breach(mesh, subject, f"{key}_ms", limit, measured))
            if slo.success_rate is not None:
                rate = signals["success_rate"] if signals is not None else None
                if rate is None or rate < slo.success_rate:
                    breaches.append(Breach(mesh, subject, "success_rate", slo.success_rate, rate))
    return breaches
