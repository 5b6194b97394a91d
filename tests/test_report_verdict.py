"""The report's first screen: verdict tables and ranked findings, on constructed summaries."""

from __future__ import annotations

from typing import Any

import pytest

from meshsim.report.findings import Finding, findings, ranked
from meshsim.report.verdict import Cell, added_latency_cell, verdict_note, verdict_tables


def _sig(p50: float, p99: float, ci: float | None = None, **extra: Any) -> dict[str, Any]:
    sig: dict[str, Any] = {
        "requests": 10_000,
        "success_rate": 1.0,
        "latency_ms": {"p50": p50, "p99": p99},
    }
    if ci is not None:
        sig["latency_ci95_ms"] = {"p50": [p50 - ci, p50 + ci], "p99": [p99 - ci, p99 + ci]}
    sig.update(extra)
    return sig


def _runs(**bands: Any) -> dict[str, dict[str, Any]]:
    return {
        "none": {"workloads": {"users": _sig(2.0, 5.0, ci=0.1)}, "replications": 3},
        "istio": {
            "workloads": {"users": _sig(3.0, 8.0, ci=0.2, **bands)},
            "proxies": {"cpu_vcpu_per_1000rps": 0.4, "memory_mb_per_proxy": 60.0, "count": 6},
            "control_plane": {"cpu_vcpu": 0.1, "memory_mb": 200.0},
            "replications": 3,
        },
        "linkerd": {
            "workloads": {"users": _sig(2.5, 6.0, ci=0.2)},
            "proxies": {
                "cpu_vcpu_per_1000rps": 0.2,
                "memory_mb_per_proxy": 20.0,
                "count": 6,
                "band": {"cpu_vcpu_per_1000rps": [0.1, 0.5]},
            },
            "control_plane": {"cpu_vcpu": 0.05, "memory_mb": 150.0},
            "replications": 3,
        },
    }


def test_added_latency_cell_is_the_difference_with_a_conservative_ci() -> None:
    cell = added_latency_cell(_sig(3.0, 8.0, ci=0.2), _sig(2.0, 5.0, ci=0.1), "p50")
    assert cell.value == pytest.approx(1.0)
    assert cell.ci == pytest.approx((2.8 - 2.1, 3.2 - 1.9))
    assert cell.band is None


def test_added_band_is_the_mesh_band_less_the_baseline_value() -> None:
    sig = _sig(3.0, 8.0, latency_band_ms={"p50": [2.5, 4.0], "p99": [7.0, 9.0]})
    cell = added_latency_cell(sig, _sig(2.0, 5.0), "p99")
    assert cell.value == pytest.approx(3.0)
    assert cell.ci is None
    assert cell.band == pytest.approx((2.0, 4.0))
    explicit = _sig(3.0, 8.0, added_latency_band_ms={"p50": [0.1, 0.2]})
    assert added_latency_cell(explicit, _sig(2.0, 5.0), "p50").band == (0.1, 0.2)


def test_verdict_table_has_one_row_per_mesh_with_every_column() -> None:
    (table,) = verdict_tables(_runs())
    assert table.workload == "users"
    assert [row[0] for row in table.rows] == ["istio", "linkerd"]
    text = table.text_rows()
    assert text[0][1] == "1 (CI 0.7..1.3)"
    assert text[0][3] == "0.4"
    assert text[1][3] == "0.2 (model 0.1..0.5)"
    assert text[1][4] == "20"
    assert text[1][6] == "150"
    assert table.has_ci
    assert table.has_band


def test_verdict_note_says_which_intervals_are_missing() -> None:
    runs = _runs()
    for run in runs.values():
        for sig in run["workloads"].values():
            sig.pop("latency_ci95_ms")
    runs["linkerd"]["proxies"].pop("band")
    note = verdict_note(verdict_tables(runs), replications=1)
    assert "No simulation CI: 1 replication(s)" in note
    assert "No model band" in note
    assert "--model-samples" in note
    assert "No model band" not in verdict_note(verdict_tables(_runs()), replications=3)


def test_cell_text_handles_missing_values() -> None:
    assert Cell(None).text() == "-"
    assert Cell(float("nan")).text() == "-"
    assert Cell(12345.0).text() == "12,345"


def test_findings_are_ranked_by_size_and_noise_is_counted() -> None:
    found = [
        Finding("latency", "small", size=0.05),
        Finding("latency", "noise", noise=True),
        Finding("resources", "big", size=1.0),
        Finding("saturation", "saturated", size=float("inf")),
        Finding("latency", "medium", size=0.3),
    ]
    top, more, noise = ranked(found, limit=3)
    assert [f.text for f in top] == ["saturated", "big", "medium"]
    assert [f.text for f in more] == ["small"]
    assert noise == 1


def test_real_findings_carry_their_relative_size() -> None:
    found = {f.text: f for f in findings(_runs()) if not f.noise}
    linkerd_cpu = next(t for t in found if "proxy CPU per 1000 rps" in t)
    assert found[linkerd_cpu].size == pytest.approx(1.0)  # 0.4 against 0.2
    added_istio_p99 = next(t for t in found if t.startswith("istio adds") and "p99" in t)
    assert found[added_istio_p99].size == pytest.approx(0.6)  # 3 ms over 5 ms


def test_tiny_figures_are_written_as_decimals_not_exponents() -> None:
    from meshsim.report.verdict import _num

    # A control plane's vCPU in the verdict table: 3.44e-05 read as a typo to readers.
    assert _num(3.44e-05, 3) == "0.0000344"
    assert _num(-2.1e-05, 3) == "-0.000021"
    assert _num(0.00353, 3) == "0.00353"
    assert _num(1.25, 3) == "1.25"
    assert _num(12345.0, 3) == "12,345"
