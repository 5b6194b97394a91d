"""Reports: loading runs, comparability rules, rendering (HTML + Markdown), CLI, Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.api import run_scenario
from meshsim.errors import MeshsimError
from meshsim.report import Comparison, Prices, render_report
from meshsim.results.store import load_run, save_run
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict
from meshsim.scenario.model import MESH_NAMES
from meshsim.sim.dataplanes import DATA_PLANES

MESHES = [m for m in MESH_NAMES if m in DATA_PLANES]
"""Every mesh with a data plane today (at least `none`)."""

SMALL: dict[str, Any] = {
    "meshsim": 1,
    "name": "small",
    "seed": 3,
    "duration_s": 8,
    "warmup_s": 1,
    "replications": 2,
    "meshes": MESHES,
    "cluster": {"nodes": 2, "cores_per_node": 4},
    "services": [
        {
            "name": "front",
            "replicas": 2,
            "cpu_ms": {"dist": "exponential", "mean": 1.0},
            "calls": [{"service": "back"}],
        },
        {"name": "back", "replicas": 1, "cpu_ms": {"dist": "exponential", "mean": 0.5}},
    ],
    "workloads": [{"name": "users", "target": "front", "arrival": "poisson", "rate_rps": 40}],
    "events": [{"at_s": 4, "action": "errors", "target": "back", "rate": 0.2, "duration_s": 2}],
}

SECTIONS = [
    "verdict", "findings", "latency", "added-latency", "latency-vs-load", "resources", "handshakes",
    "resilience", "control-plane", "cost", "cost-models", "warnings", "runs",
]  # fmt: skip
if "cilium" in MESHES:  # its kernel CPU gets the observability-and-kernel table (issue 16)
    SECTIONS.insert(SECTIONS.index("handshakes") + 1, "observability")
FIGURES = [
    "latency-percentiles", "latency-vs-load", "proxy-cpu-per-1000rps", "proxy-cpu-total",
    "proxy-memory-total", "proxy-memory-per-proxy", "handshakes", "timeline-success",
    "timeline-latency",
]  # fmt: skip


def small(rate: float = 40, **changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(SMALL))
    data["workloads"][0]["rate_rps"] = rate
    data.update(changes)
    return data


def make_run(directory: Path, data: dict[str, Any], meshes: list[str] | None = None) -> Path:
    scenario = from_dict(data)
    result = run_scenario(scenario, meshes=meshes)
    return save_run(result, build_summary(result), scenario.to_dict(), directory)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small runs of one scenario at 40 and 80 rps: a load series."""
    base = tmp_path_factory.mktemp("runs")
    return make_run(base / "r40", small(40)), make_run(base / "r80", small(80))


class Page(HTMLParser):
    """Section ids, figure ids with whether they hold an <svg>, and outside references."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: dict[str, bool] = {}
        self.external: list[str] = []
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        if tag == "figure" and a.get("id"):
            self._figure = str(a["id"]).removeprefix("fig-")
            self.figures[self._figure] = False
        if tag == "svg" and self._figure is not None:
            self.figures[self._figure] = True
        for key in ("src", "href"):
            value = a.get(key) or ""
            if tag in ("img", "script", "link", "iframe") and value and not value.startswith("#"):
                self.external.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None


# ----------------------------------------------------------------------------- load_run


def test_load_run_round_trip(runs: tuple[Path, Path]) -> None:
    run = load_run(runs[0])
    assert run.meshes == MESHES
    assert run.scenario["name"] == "small"
    assert not run.series.empty
    h = run.merged(MESHES[0], "workloads", "users")
    p99 = run.summary["runs"][MESHES[0]]["workloads"]["users"]["latency_ms"]["p99"]
    assert h.quantile(0.99) * 1e3 == pytest.approx(p99)


def test_load_run_refuses_what_is_not_a_run(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    with pytest.raises(MeshsimError, match="no such run directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(MeshsimError, match=r"not a meshsim run directory \(missing summary"):
        load_run(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    (broken / "summary.json").write_text("{not json")
    with pytest.raises(MeshsimError, match="corrupt JSON"):
        load_run(broken)
    summary = json.loads((runs[0] / "summary.json").read_text())
    (broken / "summary.json").write_text(json.dumps({**summary, "schema": 99}))
    with pytest.raises(MeshsimError, match="results schema 99"):
        load_run(broken)
    (broken / "summary.json").write_text(json.dumps(summary))
    (broken / "histograms.json").write_text(json.dumps({"other": []}))
    with pytest.raises(MeshsimError, match="do not match"):
        load_run(broken)


# ----------------------------------------------------------------------------- comparability


def test_different_scenarios_are_refused(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    other = make_run(tmp_path / "other", small(40, seed=4), meshes=["none"])
    with pytest.raises(MeshsimError, match="different scenarios and cannot be compared"):
        Comparison.of([load_run(runs[0]), load_run(other)])


def test_load_series_is_accepted_and_ordered(runs: tuple[Path, Path]) -> None:
    comp = Comparison.of([load_run(runs[1]), load_run(runs[0])])
    assert [lv.offered_rps for lv in comp.levels] == [80.0, 40.0]
    load = comp.load_frame()
    assert sorted(set(load["offered_rps"])) == [40.0, 80.0]
    assert set(load["mesh"]) == set(MESHES)


def test_one_mesh_per_run_directory_merges(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", small(40), meshes=["none"])
    b = make_run(tmp_path / "b", small(40), meshes=["none"])
    with pytest.raises(MeshsimError, match="appears in both"):
        Comparison.of([load_run(a), load_run(b)])
    if len(MESHES) > 1:
        c = make_run(tmp_path / "c", small(40), meshes=[MESHES[1]])
        assert Comparison.of([load_run(a), load_run(c)]).meshes == ["none", MESHES[1]]


def test_load_series_needs_the_same_meshes(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    if len(MESHES) < 2:
        pytest.skip("needs a second mesh")
    lone = make_run(tmp_path / "lone", small(120), meshes=["none"])
    with pytest.raises(MeshsimError, match="same meshes at every rate"):
        Comparison.of([load_run(runs[0]), load_run(lone)])


# ----------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def report(runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    comp = Comparison.of([load_run(runs[0]), load_run(runs[1])])
    html, md = render_report(comp, out, prices=Prices(core_hour_usd=0.04, gb_hour_usd=0.005))
    assert html == out
    assert md == out.with_suffix(".md")
    return out


def test_report_has_every_section_and_figure(report: Path) -> None:
    page = Page()
    page.feed(report.read_text(encoding="utf-8"))
    assert page.sections == SECTIONS
    expected = list(FIGURES)
    if len(MESHES) > 1:
        expected.insert(1, "added-latency")
    assert sorted(page.figures) == sorted(expected)
    assert all(page.figures.values()), "every figure holds an inline <svg>"
    text = report.read_text(encoding="utf-8")
    if "istio" in MESHES:
        assert "models/istio-sidecar.yaml" in text, "the cost-models section names the file"
    assert page.external == [], "the report loads nothing from elsewhere"
    # The small runs change no endpoint, so there is no convergence to show.
    assert "so there was nothing to converge" in text
    assert "Prices given: $0.04 per core-hour, $0.005 per GB-hour." in text
    assert "One load level only" not in text  # two load levels were given


def test_markdown_twin_links_svg_files(report: Path) -> None:
    md = report.with_suffix(".md").read_text(encoding="utf-8")
    for section in (
        "## Verdict",
        "## Findings",
        "## Latency per mesh and workload",
        "## Cost estimate",
    ):
        assert section in md
    for fig in FIGURES:
        name = f"report-{fig}.svg"
        assert f"]({name})" in md
        svg = (report.parent / name).read_text(encoding="utf-8")
        assert svg.startswith("<svg")


def test_svg_ids_are_unique_across_figures(report: Path) -> None:
    import re

    ids = re.findall(r'\bid="([^"]+)"', report.read_text(encoding="utf-8"))
    assert len(ids) == len(set(ids))


def test_rendering_is_deterministic(runs: tuple[Path, Path], tmp_path: Path) -> None:
    comp = Comparison.of([load_run(runs[0])])
    a, _ = render_report(comp, tmp_path / "a" / "r.html")
    b, _ = render_report(comp, tmp_path / "b" / "r.html")
    assert a.read_bytes() == b.read_bytes()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.integration
def test_report_opens_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (/usr/bin/chromium): screenshot check skipped")
    png = tmp_path / "report.png"
    done = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,3000", f"--screenshot={png}", report.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000  # a blank page compresses to far less


# ----------------------------------------------------------------------------- CLI


def test_cli_report(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(
        cli, ["report", str(runs[0]), str(runs[1]), "--out", str(out), "--core-hour-usd", "0.05"]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert out.with_suffix(".md").is_file()


def test_cli_report_to_a_markdown_path_keeps_both(runs: tuple[Path, Path], tmp_path: Path) -> None:
    # Asked for report.md, the Markdown goes there and its HTML twin beside it: neither is
    # written over the other (they once were, under one name).
    out = tmp_path / "report.md"
    result = CliRunner().invoke(cli, ["report", str(runs[0]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").lstrip().startswith("#")
    assert "<html" in out.with_suffix(".html").read_text(encoding="utf-8").lower()
    # (rich wraps the paths wherever the terminal ends)
    assert f"{out.with_suffix('.html')}and{out}" in "".join(result.output.split())


def test_cli_report_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "not a meshsim run directory" in result.output
    assert "Traceback" not in result.output


def test_cli_report_refuses_negative_prices(runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["report", str(runs[0]), "--out", str(tmp_path / "r.html"), "--gb-hour-usd", "-1"]
    )
    assert result.exit_code == 2
    assert "--gb-hour-usd must be 0 or more" in result.output


def test_cli_compare_runs_then_reports(tmp_path: Path) -> None:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump(small(40, replications=1)))
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        cli,
        ["compare", str(scenario), "--meshes", ",".join(MESHES), "--duration-s", "6",
         "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "run" / "summary.json").is_file()
    assert load_run(out / "run").scenario["duration_s"] == 6
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert page.sections == SECTIONS
    assert "One load level only" in (out / "report.md").read_text(encoding="utf-8")


def test_cli_compare_rejects_an_unknown_mesh(tmp_path: Path) -> None:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump(small(40)))
    result = CliRunner().invoke(
        cli, ["compare", str(scenario), "--meshes", "none,consul", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert "unknown mesh 'consul'" in result.output
