"""Atomic file writes: a temporary file in the same folder, synced, then renamed.

Whoever reads the file at the same moment (a proxy reloading its certificate, a report
reading a run, a resumed sweep) sees the old content or the new, never half of it, and an
interrupted write leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from meshsim.errors import MeshsimError


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


class OutputError(MeshsimError):
    """An output location that cannot be written: said before any work is done."""


def prepare_output_dir(location: str | Path, *, option: str = "--out") -> Path:
    """Create ``path`` (and its parents) if needed and prove a file can be written in it.

    Checked before a long run rather than after it: a path under a regular file or
    ``/dev/null``, a read-only or full file system, ``/proc``. An empty path is refused
    (it would mean the current directory, where results would mix with anything else).

    Raises:
        OutputError: naming the path and why it cannot be used.
    """
    # Checked on the text: Path("") is already ".".
    if not str(location).strip():
        raise OutputError(f"{option} must name a directory (it is empty)")
    path = Path(location)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refused(option, path, "cannot create the directory", exc) from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".meshsim-probe-", suffix=".tmp")
    except OSError as exc:
        raise _refused(option, path, "cannot write in the directory", exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            # A few kilobytes, synced: a file system with no room left fails here.
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _refused(option, path, "cannot write in the directory", exc) from None
    finally:
        Path(probe).unlink(missing_ok=True)
    return path


def write_error(path: Path, exc: OSError) -> OutputError:
    """An error writing ``path`` half way (a disk that filled up during the run)."""
    return OutputError(f"cannot write {path} ({_reason(exc)})")


def _refused(option: str, path: Path, what: str, exc: OSError) -> OutputError:
    return OutputError(f"{option} {path}: {what} ({_reason(exc)})")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
