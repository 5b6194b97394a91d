"""The policy core's contract: a light import, and a shared Outcome (DESIGN principle 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import meshsim.policy as policy
from meshsim.policy import Outcome, OutcomeKind


def test_policy_imports_neither_simpy_nor_asyncio() -> None:
    code = (
        "import sys, meshsim.policy; "
        "print(sorted(m for m in ('simpy', 'asyncio', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_public_api_is_exported() -> None:
    for name in policy.__all__:
        assert hasattr(policy, name), name


def test_outcome_effective_status_for_local_failures() -> None:
    assert Outcome.reset().effective_status == 503
    assert Outcome.connect_failure().effective_status == 503
    assert Outcome.per_try_timeout().effective_status == 504
    assert Outcome.route_timeout().effective_status == 504
    assert Outcome.overflow().effective_status == 503
    assert Outcome.fault_abort(418).effective_status == 418
    assert Outcome.ok().is_5xx is False


def test_outcome_status_invariant() -> None:
    with pytest.raises(ValueError, match="status must be set"):
        Outcome(OutcomeKind.RESET, 503)
    with pytest.raises(ValueError, match="status must be set"):
        Outcome(OutcomeKind.RESPONSE)
    with pytest.raises(ValueError, match=r"100\.\.599"):
        Outcome.response(700)
