"""PrefetchedGenerator draws exactly what numpy's Generator draws from the same stream."""

from __future__ import annotations

import numpy as np
import pytest

from meshsim.policy.balancer import LeastRequest, PeakEwma
from meshsim.sim.prefetched import PrefetchedGenerator, prefetched


def _pair(seed: int) -> tuple[np.random.Generator, PrefetchedGenerator]:
    return (
        np.random.Generator(np.random.PCG64(seed)),
        prefetched(np.random.Generator(np.random.PCG64(seed))),
    )


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_scalar_integers_match_numpy_across_blocks(seed: int) -> None:
    # Bounds 1 (no draw), small, odd, near and at 2^32 (rejections are frequent near
    # 3e9); 20,000 draws cross several prefetched blocks and split 64-bit outputs.
    plain, fast = _pair(seed)
    bounds = [1, 2, 3, 5, 7, 10, 64, 1000, 3_000_000_000, 2**32 - 1, 2**32]
    order = np.random.default_rng(seed).integers(0, len(bounds), 20_000)
    expected = [int(plain.integers(bounds[i])) for i in order]
    got = [fast.integers(bounds[i]) for i in order]
    assert got == expected


def test_other_draws_in_between_leave_the_stream_where_numpy_would() -> None:
    # Every kind of call mixed: served from the block, or synced back and left to numpy
    # (64-bit bounds, sizes, other methods); the sequences and the final state agree.
    plain, fast = _pair(7)
    picker = np.random.default_rng(3)
    out_plain: list[object] = []
    out_fast: list[object] = []
    for _ in range(5_000):
        kind = int(picker.integers(0, 6))
        for g, out in ((plain, out_plain), (fast, out_fast)):
            if kind == 0:
                out.append(int(g.integers(6)))
            elif kind == 1:
                out.append(int(g.integers(4, 9)))
            elif kind == 2:
                out.append(int(g.integers(0, 2**63)))
            elif kind == 3:
                out.append(g.random())
            elif kind == 4:
                out.append(g.integers(10, size=3).tolist())
            else:
                out.append(int(g.integers(1)))
    assert out_fast == out_plain
    assert fast.random() == plain.random()


@pytest.mark.parametrize("balancer", [LeastRequest, PeakEwma])
def test_balancer_picks_unchanged(balancer: type[LeastRequest] | type[PeakEwma]) -> None:
    plain, fast = _pair(11)
    hosts = ["a", "b", "c", "d", "e"]
    lb_plain, lb_fast = balancer(), balancer()
    picks: list[tuple[object, object]] = []
    for i in range(3_000):
        eps = hosts[: 1 + i % len(hosts)]
        a = lb_plain.pick(eps, i * 0.001, plain)
        b = lb_fast.pick(eps, i * 0.001, fast)
        picks.append((a, b))
        lb_plain.on_start(a, i * 0.001)
        lb_fast.on_start(b, i * 0.001)
        if i % 3 == 0:
            lb_plain.on_complete(a, 0.002, i * 0.001 + 0.002)
            lb_fast.on_complete(b, 0.002, i * 0.001 + 0.002)
    assert all(a == b for a, b in picks)
