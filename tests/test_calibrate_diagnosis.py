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
