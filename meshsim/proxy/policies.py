"""Route policies built from a scenario ``traffic`` entry, using :mod:`meshsim.policy`.

(Seam only for now: until the shared policy core lands, every route passes through.)
"""

from __future__ import annotations

from typing import Any

from meshsim.proxy.seam import PassThrough, RoutePolicy


def policy_for(traffic: dict[str, Any]) -> RoutePolicy:
    return PassThrough()
