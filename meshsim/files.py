"""Atomic file writes: a temporary file in the same folder, synced, then renamed.

Whoever reads the file at the same moment (a proxy reloading its certificate, a report
reading a run, a resumed sweep) sees the old content or the new, never half of it, and an
interrupted write leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``; ``mode`` 0o600 for private keys.

    The mode is set explicitly because ``mkstemp`` creates 0600 files, which would make
    every result unreadable to the rest of a team sharing a folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
