"""Atomic writes (meshsim.files): content replaced whole, explicit permissions."""

from __future__ import annotations

import stat
from pathlib import Path

from meshsim.files import write_atomic


def test_replaces_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "summary.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_results_are_readable_by_others_and_keys_are_private(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; results must not inherit that, keys must keep it."""
    write_atomic(tmp_path / "summary.json", b"{}")
    write_atomic(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
