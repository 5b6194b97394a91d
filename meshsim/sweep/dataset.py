"""A sweep's output directory: one Parquet dataset, one file per point, and a manifest.

```
OUT/sweep.json              the manifest: what sweep this is, its points' parameters
OUT/points/<point_id>.parquet
```

Each point's file is written whole to a temporary name and renamed into place, so a
file that exists is complete: an interrupted sweep resumes by skipping the points
whose files exist. Temporary names start with '.', which Parquet readers skip. A point
file that is not readable Parquet all the same (truncated by a copy, a disk that lied
about a sync) does not count as done: it is set aside as ``.<point_id>.parquet.corrupt``
and the point runs again.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from meshsim import __version__
from meshsim.errors import MeshsimError
from meshsim.files import write_atomic
from meshsim.results.store import environment, write_json
from meshsim.sweep.points import Point, canonical

if TYPE_CHECKING:
    import pandas as pd

    from meshsim.sweep.spec import Sweep

MANIFEST = "sweep.json"
POINTS = "points"
SCHEMA_VERSION = 1


def fingerprint(sweep: Sweep, axis_types: dict[str, str]) -> str:
    """What must match for results to share a directory: the base scenario with its
    overrides, the root seed, replications, the axes (not their values: adding values
    adds points) and the meshsim version."""
    key = {
        "base": sweep.base,
        "seed": sweep.spec.seed,
        "replications": sweep.spec.replications,
        "axes": axis_types,
        "meshsim": __version__,
    }
    return hashlib.sha256(canonical(key).encode("utf-8")).hexdigest()


def prepare(
    out: Path,
    sweep: Sweep,
    axis_types: dict[str, str],
    points: list[Point],
    *,
    set_aside: list[str] | None = None,
) -> set[str]:
    """Check or write the manifest, clear temporary files; return the finished point ids
    (see :func:`finished` for ``set_aside``)."""
    print_ = fingerprint(sweep, axis_types)
    manifest_path = out / MANIFEST
    known: dict[str, Any] = {}
    if manifest_path.exists():
        import json

        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MeshsimError(
                f"{manifest_path}: not a sweep manifest ({exc}); choose another --out, or "
                "delete it to start again"
            ) from None
        if not isinstance(manifest, dict):
            raise MeshsimError(f"{manifest_path}: not a sweep manifest (not a JSON object)")
        if manifest.get("fingerprint") != print_:
            raise MeshsimError(
                f"{out} holds results of a different sweep ('{manifest.get('sweep')}', or this "
                "one with another base scenario, seed, replications, axes or meshsim version); "
                "choose another --out, or delete it to start again"
            )
        known = manifest.get("points", {})
    points_dir = out / POINTS
    points_dir.mkdir(parents=True, exist_ok=True)
    for tmp in points_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    known.update({p.id: p.params for p in points})
    write_json(
        manifest_path,
        {
            "schema": SCHEMA_VERSION,
            "sweep": sweep.spec.name,
            "sweep_file": str(sweep.path),
            "fingerprint": print_,
            "seed": sweep.spec.seed,
            "replications": sweep.spec.replications,
            "axes": axis_types,
            "meshsim_version": __version__,
            "updated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
            "points": dict(sorted(known.items())),
        },
    )
    return finished(out, set_aside=set_aside)


def finished(out: Path, *, set_aside: list[str] | None = None) -> set[str]:
    """Ids of the points whose files are complete; others are renamed out of the dataset
    (their ids appended to ``set_aside``)."""
    done: set[str] = set()
    for path in sorted((out / POINTS).glob("*.parquet")):
        if path.name.startswith("."):
            continue
        if complete(path):
            done.add(path.stem)
            continue
        path.replace(path.with_name(f".{path.name}.corrupt"))
        if set_aside is not None:
            set_aside.append(path.stem)
    return done


def complete(path: Path) -> bool:
    """Whether ``path`` is a whole Parquet file with rows: its footer reads back (a
    truncated file has lost it) and names at least one row."""
    try:
        return bool(pq.read_metadata(path).num_rows > 0)
    except (OSError, ValueError, pa.ArrowException):
        return False


def write_point(out: Path, point_id: str, table: pa.Table) -> Path:
    """Write one point's rows atomically."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path = out / POINTS / f"{point_id}.parquet"
    write_atomic(path, buffer.getvalue())
    return path


def load(out: str | Path) -> pd.DataFrame:
    """A sweep's results as one frame, sorted by point, mesh, replication, kind, subject."""
    import pandas as pd

    points = Path(out) / POINTS
    files = sorted(points.glob("*.parquet"))
    if not files:
        raise MeshsimError(f"no sweep results in {out}")
    try:
        frame = pq.ParquetDataset(points).read().to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise MeshsimError(
            f"{points}: unreadable sweep results ({exc}); running the sweep again sets "
            "incomplete point files aside and reruns their points"
        ) from None
    keys = ["point_id", "mesh", "replication", "kind", "subject"]
    return pd.DataFrame(frame.sort_values(keys, kind="stable").reset_index(drop=True))
