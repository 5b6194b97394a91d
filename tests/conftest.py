"""Test-suite options: a bounded sample of slow tests for CI."""

from __future__ import annotations

import datetime
import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow-sample",
        type=int,
        default=None,
        help="Run only N of the tests marked slow, chosen by the date (all when omitted).",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    n = config.getoption("--slow-sample")
    if n is None:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    # The sample rotates daily, so that every slow test runs in CI over a few days,
    # while one day's runs are reproducible.
    rng = random.Random(datetime.date.today().toordinal())
    keep = {item.nodeid for item in rng.sample(slow, min(n, len(slow)))}
    deselected = [item for item in slow if item.nodeid not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
