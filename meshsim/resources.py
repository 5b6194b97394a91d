"""Package data on disk: the shipped cost models and report templates.

Both live in repository folders (``models/``, ``reports/templates/``) that pyproject.toml maps
into the package as ``meshsim._models`` and ``meshsim._templates``. Readers want real paths
(jinja2's loader, ``Path.glob``, provenance printed to users), and every install that meshsim
supports (editable, wheel) unpacks package data on disk, so a zipped install is refused plainly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from meshsim.errors import MeshsimError


def package_data_dir(package: str) -> Path:
    """The folder of ``package`` (e.g. ``"meshsim._models"``) as a real path."""
    folder = resources.files(package)
    if not isinstance(folder, Path):
        raise MeshsimError(
            f"meshsim's package data ({package}) is not on disk ({folder!r}); "
            "install meshsim from a wheel or source tree, not from a zip archive"
        )
    return folder
