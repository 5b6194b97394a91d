"""Linkerd ServiceProfile retry budget: tower's TpsBudget (docs/mesh-semantics.md §6.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsim.policy import TpsBudget


def test_s6_1_default_budget_amounts() -> None:
    """§6.1: ratio 0.2 -> deposit 1, withdraw 5; reserve 10/s x 10 s x 5 = 500 tokens."""
    b = TpsBudget.linkerd_default()
    assert (b.ratio, b.min_per_s, b.ttl_s) == (0.2, 10, 10.0)
    assert (b.deposit_amount, b.withdraw_amount) == (1, 5)
    assert b.reserve == 500
    assert b.window_s == pytest.approx(1.0)


def test_s6_1_reserve_gives_exactly_100_free_retries_and_is_not_refilled() -> None:
    b = TpsBudget.linkerd_default()
    granted = sum(b.withdraw(0.0) for _ in range(150))
    assert granted == 100
    # The reserve is a constant floor: a second later nothing has been refilled.
    assert not b.withdraw(1.0)


def test_s6_1_five_deposits_pay_for_one_retry() -> None:
    b = TpsBudget(ttl_s=10.0, min_per_s=0, ratio=0.2)
    for _ in range(4):
        b.deposit(0.0)
    assert not b.withdraw(0.0)
    b.deposit(0.0)
    assert b.withdraw(0.0)
    assert not b.withdraw(0.0)


@pytest.mark.parametrize(
    ("ratio", "amounts"), [(0.0, (0, 1)), (0.3, (1, 3)), (1.0, (1, 1)), (2.0, (1000, 500))]
)
def test_s6_1_token_amounts_follow_tower(ratio: float, amounts: tuple[int, int]) -> None:
    b = TpsBudget(ttl_s=1.0, min_per_s=0, ratio=ratio)
    assert (b.deposit_amount, b.withdraw_amount) == amounts


def test_tower_tps_empty() -> None:
    assert not TpsBudget(ttl_s=1.0, min_per_s=0, ratio=1.0).withdraw(0.0)


def test_tower_tps_leaky() -> None:
    b = TpsBudget(ttl_s=1.0, min_per_s=0, ratio=1.0)
    b.deposit(0.0)
    assert not b.withdraw(3.0)


def test_tower_tps_slots() -> None:
    """tower's own test: deposits expire slot by slot over the ttl."""
    b = TpsBudget(ttl_s=1.0, min_per_s=0, ratio=0.5)
    b.deposit(0.0)
    b.deposit(0.0)
    assert b.withdraw(0.901)  # 900 ms later the deposits still count
    t = 0.901 + 2.001  # blank slate
    b.deposit(t)
    t += 0.301
    b.deposit(t)
    t += 0.801
    b.deposit(t)
    # The first of these deposits has expired; the second and third pay for one retry.
    assert b.withdraw(t)
    assert not b.withdraw(t)


def test_tower_tps_reserve() -> None:
    b = TpsBudget(ttl_s=1.0, min_per_s=5, ratio=1.0)
    assert [b.withdraw(0.0) for _ in range(6)] == [True] * 5 + [False]


def test_budget_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        TpsBudget(ttl_s=0.5)
    with pytest.raises(ValueError, match="ratio"):
        TpsBudget(ratio=-0.1)


def test_time_going_backwards_is_an_error() -> None:
    b = TpsBudget(now=5.0)
    with pytest.raises(ValueError, match="backwards"):
        b.deposit(2.0)


_events = st.lists(
    st.tuples(st.floats(0.0, 2.5), st.sampled_from(["deposit", "withdraw"])),
    min_size=1,
    max_size=400,
)


@settings(deadline=None, max_examples=150)
@given(
    events=_events,
    ttl=st.integers(1, 20),
    min_per_s=st.integers(0, 5),
    ratio=st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0]),
)
def test_property_retries_never_exceed_ratio_times_requests_plus_reserve(
    events: list[tuple[float, str]], ttl: int, min_per_s: int, ratio: float
) -> None:
    """Over any interval shorter than ttl/2, withdraw·R <= reserve + deposit·D, where D counts
    the interval's deposits and those of the 2·ttl before it (the longest that tower's slots
    can remember). ttl/2 is the shortest time tower is guaranteed to remember a token: each
    expiry advances the slot index by ceil(elapsed / window), at most twice the windows
    elapsed."""
    b = TpsBudget(ttl_s=float(ttl), min_per_s=min_per_s, ratio=ratio)
    scale = b.window_s
    t = 0.0
    deposits: list[float] = []
    retries: list[float] = []
    for gap, kind in events:
        t += gap * scale
        if kind == "deposit":
            b.deposit(t)
            deposits.append(t)
        elif b.withdraw(t):
            retries.append(t)
    span = 0.45 * ttl
    for start in retries:
        granted = sum(1 for r in retries if start <= r < start + span)
        paid = sum(1 for d in deposits if start - 2 * ttl <= d < start + span)
        assert granted * b.withdraw_amount <= b.reserve + b.deposit_amount * paid


@settings(deadline=None)
@given(events=_events, min_per_s=st.integers(0, 5))
def test_property_within_one_window_the_budget_is_an_exact_counter(
    events: list[tuple[float, str]], min_per_s: int
) -> None:
    """Before the first window ends nothing expires: a withdrawal succeeds iff
    reserve + deposits - withdrawals >= withdraw_amount."""
    b = TpsBudget(ttl_s=10.0, min_per_s=min_per_s, ratio=0.2)
    tokens = b.reserve
    t = 0.0
    for gap, kind in events:
        t = min(t + gap * 1e-3, 0.999)
        if kind == "deposit":
            b.deposit(t)
            tokens += 1
        else:
            expected = tokens >= 5
            assert b.withdraw(t) is expected
            tokens -= 5 if expected else 0
