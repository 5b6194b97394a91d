"""Stored baselines for benchmarks: print a figure next to its baseline and goal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BASELINES = Path(__file__).parent / "baselines"


def compare(name: str, figures: dict[str, float], *, update: bool = False) -> dict[str, Any]:
    """Print ``figures`` beside the stored baseline for ``name``; store them if asked."""
    path = BASELINES / f"{name}.json"
    stored: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    for key, value in figures.items():
        base = stored.get(key)
        change = f"  ({(value - base) / base:+.1%} vs baseline {base:.4g})" if base else ""
        print(f"  {key:32s} {value:12.4g}{change}")
    if update or not stored:
        BASELINES.mkdir(exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"  baseline written: {path}")
    return stored


def wants_update() -> bool:
    return "--update-baseline" in sys.argv
