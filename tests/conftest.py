"""Test-suite options: a bounded sample of slow tests for CI."""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow-sample",
        type=int,
        default=None,
        help="Run only N of the tests marked slow, chosen by the date (all when omitted).",
    )
    parser.addoption(
        "--statistical-sample",
        type=int,
        default=None,
        help="Run only N of the tests marked statistical, chosen by the date (all when omitted).",
    )


def _sample_date() -> datetime.date:
    """The day that picks the samples: MESHSIM_SAMPLE_DATE (YYYY-MM-DD; make test sets it
    once for all its passes and workers), else today."""
    given = os.environ.get("MESHSIM_SAMPLE_DATE")
    if not given:
        return datetime.date.today()
    try:
        return datetime.date.fromisoformat(given)
    except ValueError:
        raise pytest.UsageError(
            f"MESHSIM_SAMPLE_DATE={given!r}: expected a date as YYYY-MM-DD"
        ) from None


def _sample(items: list[pytest.Item], marker: str, n: int | None) -> tuple[set[str], set[str]]:
    """The node ids of the tests marked ``marker`` and of today's sample of ``n`` of them
    (every marked test when ``n`` is None). A sample never takes a slow test of the lab
    (the compiled proxies' calibrations, minutes each, more than make test's budget has
    room for beside the lab's own end-to-end run): CI runs those, every time, after it."""
    marked = sorted(item.nodeid for item in items if item.get_closest_marker(marker))
    if n is None or n >= len(marked):
        return set(marked), set(marked)
    lab = {item.nodeid for item in items if item.get_closest_marker("lab")}
    pool = [nodeid for nodeid in marked if nodeid not in lab]
    if n <= 0 or not pool:
        return set(marked), set()
    # A rotation, reproducible within a day: the marked tests (sorted by node id) are dealt
    # into ceil(len / n) days, day d taking the tests at d, d + days, d + 2 days, ..., so that
    # every marked test runs once every `days` days, and neighbours (the parameters of one
    # test, the tests of one file, which often share an expensive set-up such as a lab
    # calibration) fall on different days instead of the same one.
    days = math.ceil(len(pool) / n)
    day = _sample_date().toordinal() % days
    keep = {pool[(day + k * days) % len(pool)] for k in range(n)}
    return set(marked), keep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow, slow_kept = _sample(items, "slow", config.getoption("--slow-sample"))
    stat, stat_kept = _sample(items, "statistical", config.getoption("--statistical-sample"))
    # A test marked both slow and statistical runs when either sample takes it (dropping it
    # unless both took it would almost never run it).
    dropped = (slow | stat) - slow_kept - stat_kept
    if dropped:
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in dropped])
        items[:] = [item for item in items if item.nodeid not in dropped]


@pytest.fixture
def lab_model_1kib(tmp_path: Path) -> Path:
    """A copy of the committed lab model (models/calibrated/lab.yaml) whose fit record keeps
    only its 1 KiB fit points as fit points (3 loads of 12): what re-simulates every fit point
    (the wake-up rescaling) then costs a quarter, and what holds over any set of fit points
    still holds."""
    root = Path(__file__).resolve().parent.parent / "models" / "calibrated"
    shutil.copy(root / "lab.yaml", tmp_path / "lab.yaml")
    record = json.loads((root / "lab.fit.json").read_text())
    for r in record["points"]:
        if r["role"] == "fit" and r["payload_bytes"] != 1024:
            r["role"] = "fit-not-simulated"
    (tmp_path / "lab.fit.json").write_text(json.dumps(record))
    return tmp_path / "lab.yaml"


@pytest.fixture
def lab_model_few_held_out(tmp_path: Path) -> Path:
    """A copy of the committed lab model (with its measurements) whose fit record keeps three
    of its held-out points, and none of its CPU-limited ones: the lowest plain load, the
    saturation point and the mTLS one.
    What reads every held-out point (the notebook, the frames) reads them in a fifth of the
    simulation, and nothing about them depends on how many there are."""
    root = Path(__file__).resolve().parent.parent / "models" / "calibrated"
    for name in ("lab.yaml", "lab.measurements.json"):
        if (root / name).exists():
            shutil.copy(root / name, tmp_path / name)
    record = json.loads((root / "lab.fit.json").read_text())
    points = record["points"]
    plain = [points[i]["rps"] for i in record["held_out"]
             if points[i]["config"] == "plain-ka-f0" and points[i]["rps"] > 0]  # fmt: skip

    def kept(p: dict[str, object]) -> bool:
        return p["config"] == "mtls-ka-f0" or (
            p["config"] == "plain-ka-f0" and p["rps"] in (0.0, min(plain))
        )

    record["held_out"] = [i for i in record["held_out"] if kept(points[i])]
    record["throttled"] = []  # (the CPU-limited points are held out too)
    (tmp_path / "lab.fit.json").write_text(json.dumps(record))
    return tmp_path / "lab.yaml"


@pytest.fixture
def cgroups_text() -> Any:
    """The CLI's CPU-limits table of a summary as a 120-column terminal shows it ('' when the
    CLI prints none)."""
    from meshsim.cli.render import cgroups_table
    from rich.console import Console

    def render(summary: Mapping[str, Any]) -> str:
        table = cgroups_table(summary)
        if table is None:
            return ""
        console = Console(width=120, record=True)
        console.print(table)
        return console.export_text()

    return render
