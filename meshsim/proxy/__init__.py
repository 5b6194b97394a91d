"""The real proxy lab: an echo upstream, an open-loop load generator, a small CA and an
HTTP/1.1 sidecar proxy, all on asyncio (uvloop when available) with httptools parsing.

Submodules are imported on demand; importing :mod:`meshsim.proxy` itself is cheap.
"""

from __future__ import annotations
