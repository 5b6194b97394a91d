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
    parser.addoption(
        "--statistical-sample",
        type=int,
        default=None,
        help="Run only N of the tests marked statistical, chosen by the date (all when omitted).",
    )


def _sample(items: list[pytest.Item], marker: str, n: int | None) -> list[pytest.Item]:
    """The tests marked ``marker`` that fall outside today's sample of ``n``."""
    if n is None:
        return []
    marked = [item for item in items if item.get_closest_marker(marker)]
    # The sample rotates daily, so that every marked test runs in CI over a few days,
    # while one day's runs are reproducible.
    rng = random.Random(f"{marker}:{datetime.date.today().toordinal()}")
    keep = {item.nodeid for item in rng.sample(marked, min(n, len(marked)))}
    return [item for item in marked if item.nodeid not in keep]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected = _sample(items, "slow", config.getoption("--slow-sample"))
    deselected += _sample(items, "statistical", config.getoption("--statistical-sample"))
    if deselected:
        dropped = {item.nodeid for item in deselected}
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.nodeid not in dropped]
