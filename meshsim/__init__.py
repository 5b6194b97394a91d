"""meshsim: a simulation and benchmarking lab for service meshes."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
