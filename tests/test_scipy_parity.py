"""The statistics now taken from scipy give the numbers the hand-written ones gave.

Expected values were recorded from the previous numpy-only code (meshsim/calibrate/fit.py,
meshsim/results/stats.py, meshsim/bench/noise.py at 6c2966f) on these fixed inputs, before it
was deleted. Tolerances: maximum-likelihood parameters and log-likelihoods 1e-6 relative (the
old Newton iteration and its series digamma agreed with scipy to ~4e-9); KS distances 1e-6
(they move with the gamma MLE's last digits); the bootstrap draws the same resamples from
the same seed, so CIs agree to 1e-9; t quantiles to the old table's three decimals and to
1e-9 against closed forms; Welch's p-value to 1e-9 against scipy's test on the raw samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from meshsim.bench.noise import Sample, compare, welch, welch_test
from meshsim.calibrate.fit import (
    block_bootstrap,
    bootstrap,
    fit_line,
    fit_plane,
    fit_service_time,
    gamma_cdf,
    gamma_loglik,
    gamma_mle,
    ks_distance,
    lognormal_cdf,
    lognormal_loglik,
    lognormal_mle,
)
from meshsim.results.stats import t95, t_interval

REL = 1e-6
CI = 1e-9


def lognormal_sample() -> np.ndarray:
    return np.random.default_rng(101).lognormal(math.log(60.0), 0.5, 500)


def gamma_sample() -> np.ndarray:
    return np.random.default_rng(102).gamma(3.0, 20.0, 500)


# Old values: (lognormal mu, sigma), (gamma k, theta), loglik lognormal / gamma, KS D
# lognormal / gamma, each distribution fitted to each sample.
OLD_MLE = {
    "lognormal": ((4.074519621948941, 0.5106368335232929), (4.055298999154534, 16.491217396658012),
                  (-2410.680758051919, -2417.1909704845484),
                  (0.029756499008282256, 0.057208998772906305)),
    "gamma": ((3.852935351107989, 0.6396052830317632), (2.875104742006765, 19.70196667615551),
              (-2412.484923077889, -2400.676254392317),
              (0.04997268242644792, 0.023559468106707837)),
}  # fmt: skip


@pytest.mark.parametrize("which", ["lognormal", "gamma"])
def test_maximum_likelihood_fits_and_scores_match_the_old_code(which: str) -> None:
    x = lognormal_sample() if which == "lognormal" else gamma_sample()
    (mu0, s0), (k0, th0), (ll_ln, ll_ga), (d_ln, d_ga) = OLD_MLE[which]
    mu, sigma = lognormal_mle(x)
    k, theta = gamma_mle(x)
    assert (mu, sigma) == pytest.approx((mu0, s0), rel=REL)
    assert (k, theta) == pytest.approx((k0, th0), rel=REL)
    assert lognormal_loglik(x, mu, sigma) == pytest.approx(ll_ln, rel=REL)
    assert gamma_loglik(x, k, theta) == pytest.approx(ll_ga, rel=REL)
    assert ks_distance(x, lambda v: lognormal_cdf(v, mu, sigma)) == pytest.approx(d_ln, abs=1e-6)
    assert ks_distance(x, lambda v: gamma_cdf(v, k, theta)) == pytest.approx(d_ga, abs=1e-6)


def test_gamma_cdf_matches_the_old_incomplete_gamma() -> None:
    """The old series / continued fraction P(a, x) at shapes 0.5, 2.3, 7.5."""
    x = np.array([0.05, 0.5, 1.0, 3.0, 8.0, 20.0])
    old = {
        0.5: [
            0.2481703659541506,
            0.6826894921370833,
            0.8427007929497102,
            0.985694121564581,
            0.9999366575163338,
            0.9999999997460371,
        ],
        2.3: [
            0.00036629565729584675,
            0.05374347648107431,
            0.19045423611813989,
            0.7383818433126007,
            0.9949858766081163,
            0.999999907483352,
        ],
        7.5: [
            1.1910413849533106e-14,
            2.535644310823236e-07,
            2.9654977282545428e-05,
            0.020252253282185575,
            0.617948338497099,
            0.9995465018648978,
        ],
    }
    for a, expected in old.items():
        assert gamma_cdf(x, a, 1.0) == pytest.approx(expected, rel=1e-10, abs=1e-15)


def _close(est: dict[str, object], old: tuple[float, float, float], rel: float = CI) -> None:
    value, lo, hi = old
    assert [est["value"], *est["ci95"]] == pytest.approx([value, lo, hi], rel=rel)  # type: ignore[misc]


def test_service_time_fit_and_its_bootstrap_match_the_old_code() -> None:
    """Same seed, same resamples: every CI as before; the chosen distribution too."""
    ln = fit_service_time(list(lognormal_sample()), seed=3).to_json()
    assert ln["dist"] == "lognormal"
    _close(ln["mean"], (66.87681740350708, 63.617911513025064, 69.86705545055526))
    _close(ln["cv"], (0.5222336305203868, 0.48451601416732737, 0.558241496174812))
    _close(ln["p50"], (59.94038092974922, 53.83168904980164, 63.06128263084882))
    _close(ln["p99"], (178.59103853456665, 159.07927409541784, 202.11428828365402))
    _close(ln["params"]["mu"], (4.074519621948941, 4.027131324981922, 4.115430990904285))
    _close(ln["params"]["sigma"], (0.5106368335232929, 0.48128851857987726, 0.5389858811527641))
    ga = fit_service_time(list(gamma_sample()), seed=4).to_json()
    assert ga["dist"] == "gamma"
    _close(ga["mean"], (56.645217817473956, 53.82304131505386, 59.415685302098325))
    _close(ga["p99"], (152.94381196859672, 140.1953985757807, 186.63211015245716))
    # The gamma's bootstrap parameters are MLEs of each resample: 1e-6 as the MLE.
    _close(
        ga["params"]["shape"], (2.875104742006777, 2.5624461599779935, 3.2451977449600924), rel=REL
    )
    _close(
        ga["params"]["scale"], (19.701966676155426, 17.61428604468506, 22.072886123869203), rel=REL
    )


def test_bootstrap_over_whole_points_matches_the_old_code() -> None:
    groups = [
        list(np.random.default_rng(200 + i).lognormal(math.log(50 + 5 * i), 0.4, 80))
        for i in range(5)
    ]
    st = fit_service_time([], seed=5, groups=groups).to_json()
    assert st["dist"] == "lognormal"
    _close(st["mean"], (67.47734685070746, 60.22995032167325, 74.63109004077488))
    _close(st["p99"], (170.63283642421095, 154.35476885397344, 175.48365895387516))
    _close(st["params"]["sigma"], (0.44261102601015095, 0.4138772202451893, 0.45638079259910724))
    blocks = [np.random.default_rng(20 + i).normal(1000 + 30 * i, 40, 20) for i in range(3)]
    e = block_bootstrap(blocks, lambda a: float(np.median(a)), seed=5)
    assert (e.lo, e.hi) == pytest.approx((988.0210628492641, 1048.8567427929377), rel=CI)


def test_empirical_fallback_matches_the_old_code() -> None:
    x = np.concatenate(
        [np.random.default_rng(7).normal(30, 2, 400), np.random.default_rng(8).normal(90, 3, 400)]
    )
    st = fit_service_time(list(x), seed=6).to_json()
    assert st["dist"] == "empirical"
    assert st["params"] == {}
    _close(st["p50"], (57.532613112141775, 32.77528400223447, 85.34391084762485))
    assert st["goodness_of_fit"]["gamma"]["ks_d"] == pytest.approx(0.2936320148840236, abs=1e-6)


def test_plain_bootstrap_matches_the_old_code() -> None:
    hs = np.random.default_rng(10).normal(1000, 50, 60)
    e = bootstrap(hs, lambda a: float(np.median(a)), seed=5)
    assert (e.value, e.lo, e.hi) == pytest.approx(
        (989.6221921677227, 978.7868626607924, 1008.8319366572358), rel=CI
    )


def test_line_and_plane_fits_match_the_old_code() -> None:
    x = np.arange(8, dtype=float)
    y = 3.0 + 0.7 * x + np.random.default_rng(9).normal(0, 0.3, 8)
    f = fit_line(x, y, seed=2).to_json()
    _close(f["intercept"], (2.837787264033942, 2.4242421116679482, 3.281395993313058))
    _close(f["slope"], (0.7443325612324438, 0.6636330372111421, 0.8253044094831733))
    # Resamples that draw one distinct x: a flat line through their mean, as before.
    two = fit_line([0, 0, 4, 4], [1, 2, 5, 6], seed=3).to_json()
    _close(two["intercept"], (1.5, 1.0, 5.75))
    assert two["slope"]["ci95"] == pytest.approx([0.0, 1.25], abs=1e-12)
    flat = fit_line([1, 1, 1], [2, 3, 4], seed=2).to_json()
    assert [flat["slope"]["value"], *flat["slope"]["ci95"]] == [0.0, 0.0, 0.0]
    _close(flat["intercept"], (3.0, 2.0, 4.0))
    kib = np.repeat([0.25, 2.0, 16.0, 64.0], 4)
    wake = np.tile([1.6, 1.1, 0.5, 0.2], 4)
    y2 = 70.0 + 0.4 * kib + 45.0 * wake + np.random.default_rng(8).normal(0, 1.0, len(kib))
    p = fit_plane({"kib": kib, "wakeups": wake}, y2, seed=2).to_json()
    _close(p["intercept"], (69.66166549717252, 68.86698173804457, 70.56566159693217))
    _close(p["slopes"]["kib"], (0.4217417543880879, 0.3997799522077794, 0.4480336845202887))
    _close(p["slopes"]["wakeups"], (44.72743761469767, 43.80222972853949, 45.67919171114245))


# --------------------------------------------------------------------------- t and Welch

OLD_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 10: 2.228, 29: 2.045, 30: 2.042}


def test_t_quantiles_match_the_old_table_and_closed_forms() -> None:
    for dof, old in OLD_T95.items():
        assert t95(dof) == pytest.approx(old, abs=5e-4)  # the table's three decimals
    # Closed forms: t_1 is Cauchy, tan(pi (p - 1/2)); t_2 = (2p - 1) / sqrt(2 p (1 - p)).
    assert t95(1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
    assert t95(2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-9)
    # Beyond 30 the old table used the normal 1.960 (2 % narrow at 31); now the t value.
    assert t95(31) == pytest.approx(2.0395134464, rel=1e-9)
    assert t95(1_000_000) == pytest.approx(1.959963985, rel=1e-5)  # -> the normal quantile


def test_t_interval_matches_the_old_code_to_the_tables_precision() -> None:
    lo, hi = t_interval([9.9, 10.0, 10.1, 10.4, 9.7]) or [math.nan, math.nan]
    assert (lo, hi) == pytest.approx((9.698654767578542, 10.341345232421457), rel=1e-5)
    assert (hi - lo) / 2 == pytest.approx(
        stats.t.ppf(0.975, 4) * stats.sem([9.9, 10.0, 10.1, 10.4, 9.7]), rel=1e-12
    )


PAIRS = [  # (base, current, old t, old critical t, old verdict with 1 % tolerance)
    ([9.9, 10.0, 10.1], [10.9, 11.0, 11.1], 12.247448713915942, 2.776, "regressed"),
    ([8.0, 10.0, 12.0], [9.0, 11.0, 13.0], 0.6123724356957945, 2.776, "noise"),
    ([1.0, 1.5, 0.7, 1.2], [1.9, 2.4, 1.1, 3.0, 2.2], 2.8765700678497663, 2.571, "regressed"),
    ([5.0, 5.1], [5.3, 5.35, 5.4, 5.2, 5.31, 5.29], 4.5365098029645505, 12.706, "noise"),
]


@pytest.mark.parametrize(("base", "current", "old_t", "old_critical", "verdict"), PAIRS)
def test_welch_matches_the_old_code_and_scipys_test_on_the_raw_samples(
    base: list[float], current: list[float], old_t: float, old_critical: float, verdict: str
) -> None:
    b, c = Sample.of(base), Sample.of(current)
    t, critical = welch(b, c)
    assert t == pytest.approx(old_t, rel=1e-12)
    assert critical == pytest.approx(old_critical, abs=5e-4)
    assert compare(b, c, better="lower", tolerance_pct=1.0).status == verdict
    raw = stats.ttest_ind(current, base, equal_var=False)
    w = welch_test(b, c)
    # The standard errors, recovered from the 95 % intervals, are exact again: the p-value
    # is scipy's Welch test on the samples themselves.
    assert w.t == pytest.approx(abs(raw.statistic), rel=1e-12)
    assert w.p_value == pytest.approx(raw.pvalue, abs=1e-9)
    assert w.dof == pytest.approx(raw.df, rel=1e-12)
    assert w.critical_t == pytest.approx(stats.t.ppf(0.975, math.floor(raw.df)), rel=1e-12)
    assert compare(b, c, better="lower", tolerance_pct=1.0).p_value == pytest.approx(
        raw.pvalue, abs=1e-9
    )


def test_welch_without_spread_or_with_one_replication() -> None:
    same = welch_test(Sample.of([1.0, 1.0, 1.0]), Sample.of([1.2, 1.2, 1.2]))
    assert (same.t, same.p_value, same.critical_t) == (math.inf, 0.0, 0.0)
    one = welch_test(Sample.of([10.0]), Sample.of([10.9, 11.0, 11.1]))
    # Only the current side has spread: dof = n - 1 = 2, as the one-sample t-test.
    assert one.dof == pytest.approx(2.0)
    assert one.t == pytest.approx(1.0 / (0.1 / math.sqrt(3)))
    assert one.p_value == pytest.approx(
        stats.ttest_1samp([10.9, 11.0, 11.1], 10.0).pvalue, abs=1e-9
    )
