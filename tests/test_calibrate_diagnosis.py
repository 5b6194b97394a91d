"""The validation report's diagnosis, split into one function per mechanism, writes what the
single function it replaced wrote: the paragraphs for the committed calibration and for five
variants of its fit record (each switches a paragraph on, off or to its other wording) were
recorded from the old code and are compared word for word."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from meshsim.calibrate.diagnosis import DIAGNOSES, diagnose
from meshsim.calibrate.validate import Comparison

CASE = json.loads((Path(__file__).parent / "data" / "calibrate_diagnosis_case.json").read_text())


def variant(name: str) -> dict[str, Any]:
    fit: dict[str, Any] = copy.deepcopy(CASE["fit"])
    est = fit["estimates"]
    if name in ("noplane", "noplane_noidle"):
        est["process_cpu_us_vs_kib_and_wakeups"] = None  # the fall with load, unexplained
    if name == "noplane_noidle":
        est["idle_cpu_ms_per_s"] = None
    if name == "nodelay":
        fit["client_delay"] = None  # no measured baseline: the tail paragraph's other form
    if name == "tls":  # a fixed mTLS cost the model did not take as a parameter
        fit["parameters_fitted"] = [
            p for p in fit["parameters_fitted"] if p != "tls_request_cpu_us"
        ]
        est["tls_extra_cpu_us_vs_kib"]["intercept"]["value"] = 33.0
    if name == "nocv":
        est["request_cpu_cv"] = None
    return fit


def rows() -> list[Comparison]:
    return [Comparison(**r) for r in CASE["rows"]]


@pytest.mark.parametrize("name", ["real", "noplane", "noplane_noidle", "nodelay", "tls", "nocv"])
def test_diagnosis_matches_the_single_function_it_replaced(name: str) -> None:
    assert diagnose(variant(name), rows()) == CASE["expected"][name]


def test_variants_switch_the_paragraphs_they_target() -> None:
    """The cases are not all alike: each variant changes what is said."""
    texts = {n: diagnose(variant(n), rows()) for n in CASE["expected"]}
    assert len(texts["real"]) == 6
    assert any(s.startswith("mTLS adds 33 us") for s in texts["tls"])
    assert not any(s.startswith("The simulator's idle bursts") for s in texts["noplane"])
    assert texts["noplane"][0] != texts["noplane_noidle"][0]
    assert texts["nocv"][-1].startswith("p99 is under-predicted: the simulator charges")


def test_no_mechanism_speaks_without_its_evidence() -> None:
    """Without held-out rows and with a flat CPU line, nothing is diagnosed but the lab's
    tail (a property of the fit record alone)."""
    fit = variant("real")
    fit["estimates"]["process_cpu_us_vs_rps"]["slope"]["ci95"] = [-0.1, 0.1]
    notes = diagnose(fit, [])
    assert len(notes) == 1
    assert notes[0].startswith("The lab's tail exists without the proxies")
    assert len(DIAGNOSES) == 8


def test_rescaled_wakeup_cpu_is_counted_in_cold_wakeups_on_both_sides() -> None:
    """A switch after a short sleep pays a share of the fully cold cost: the lab's wake-up
    CPU per request is its switches counted in cold ones times the fitted cost, and the
    simulator's is what it charged, not raw switches times the fully cold cost."""
    from meshsim.calibrate.cache_cooling import cold_wakeups

    fit = variant("real")
    fit["cache_cooling"] = {"fit": {"decay_ms": 27.3}}
    fit["wakeup_scale"] = {
        "per_switch_us": 2181.0,
        "per_simulated_wakeup_us": 2224.0,
        "scale": 1.02,
    }
    rs = [r for r in rows() if not r.saturation and r.point["keep_alive"] and not r.point["mtls"]]
    r = rs[0]
    r.point.update(
        process_cpu_us_per_request={"client_sidecar": 140.0, "server_sidecar": 150.0},
        wakeups_per_request={"client_sidecar": 0.9, "server_sidecar": 0.8},
    )
    r.measured["wakeups_per_request"] = 0.85
    r.predicted.update(wakeups_per_request=0.9, wakeup_cpu_us_per_request=45.6)
    text = next(s for s in diagnose(fit, [r]) if s.startswith("The simulator's idle bursts"))
    cold = cold_wakeups(
        r.point["process_cpu_us_per_request"],
        r.point["wakeups_per_request"],
        float(r.measured["rps"]),
        27.3,
    )
    assert cold is not None
    assert 0.0 < cold < 0.85  # a share of the raw switches
    assert f"{r.point['rps']:g}: {cold * 2181.0:.0f}/46." in text
