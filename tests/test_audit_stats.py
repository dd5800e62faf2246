"""Tier 1: the audit's statistics on cases with known answers (no model)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from kia.audit.stats import (
    Z95,
    Interval,
    cluster_bootstrap,
    difference_interval,
    fdr,
    mcnemar,
    mcnemar_paired,
    paired_bootstrap,
    standard_error,
    wilson,
)


def test_mcnemar_known_case():
    # b = 10, c = 2: P[X <= 2] for X ~ Bin(12, 1/2) = (1 + 12 + 66) / 4096, doubled.
    assert mcnemar(10, 2) == pytest.approx(2 * 79 / 4096)
    assert round(mcnemar(10, 2), 4) == 0.0386
    assert mcnemar(2, 10) == mcnemar(10, 2)


@pytest.mark.parametrize(("b", "c", "p"), [(0, 0, 1.0), (5, 5, 1.0), (0, 6, 2 / 64), (1, 0, 1.0), (0, 10, 2 / 1024)])
def test_mcnemar_edges(b, c, p):
    assert mcnemar(b, c) == pytest.approx(p)


@pytest.mark.parametrize(("b", "c"), [(3, 9), (17, 4), (30, 31), (0, 25), (12, 12)])
def test_mcnemar_matches_the_exact_binomial_test(b, c):
    assert mcnemar(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)


def test_mcnemar_paired_counts_only_discordant_items():
    base = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 3
    adapted = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 3
    lost, gained, p = mcnemar_paired(base, adapted)
    assert (lost, gained) == (10, 2)
    assert p == pytest.approx(mcnemar(10, 2))
    with pytest.raises(ValueError):
        mcnemar_paired([True], [True, False])


def test_wilson_known_values():
    low, high = wilson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95**2 / (10 + Z95**2))  # the k = 0 upper bound in closed form
    low, high = wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - Z95**2 / (10 + Z95**2))
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_wilson_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    n, p = 40, 0.2
    hits = sum(lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in rng.binomial(n, p, size=2000)))
    assert 0.93 <= hits / 2000 <= 0.98


def test_paired_bootstrap_is_seeded_and_centred_on_the_mean_difference():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, size=60)
    adapted = base + 0.2 + rng.normal(0, 0.05, size=60)
    a = paired_bootstrap(base, adapted, n_boot=1000, seed=3)
    b = paired_bootstrap(base, adapted, n_boot=1000, seed=3)
    assert a == b
    assert a.value == pytest.approx(float(np.mean(adapted - base)))
    assert a.low < a.value < a.high
    assert a.low > 0.15 and a.high < 0.25
    # Intentionally changed: p is now the sign-flip test's, not the percentile bootstrap's. No random sign
    # flip reaches the observed mean, so P⁺ = 1 / 1001 and p = 2 / 1001, the smallest p it can give.
    assert a.p_value == pytest.approx(2 / 1001)


def test_paired_bootstrap_degenerate_cases():
    same = paired_bootstrap([0.5, 0.1, 1.0], [0.5, 0.1, 1.0], n_boot=200)
    assert (same.value, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    const = paired_bootstrap([0.0] * 5, [0.3] * 5, n_boot=200)
    assert const.low == pytest.approx(0.3) and const.high == pytest.approx(0.3)
    empty = paired_bootstrap([], [], n_boot=200)
    assert empty.value == 0.0 and empty.p_value == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_paired_bootstrap_interval_width_matches_the_standard_error():
    rng = np.random.default_rng(2)
    d = rng.normal(0.1, 1.0, size=400)
    iv = paired_bootstrap(np.zeros(400), d, n_boot=4000, seed=0)
    se = d.std(ddof=1) / math.sqrt(400)
    assert (iv.high - iv.low) / 2 == pytest.approx(Z95 * se, rel=0.1)


def test_cluster_bootstrap_resamples_items_for_both_arms():
    base = np.array([1.0, 2.0, 3.0, 4.0])
    adapted = base + 1.0

    def stat(w):
        return float(w @ base / w.sum()), float(w @ adapted / w.sum())

    iv = cluster_bootstrap(stat, 4, n_boot=200, seed=0)
    assert iv.value == pytest.approx(1.0)
    assert iv.low == pytest.approx(1.0) and iv.high == pytest.approx(1.0)  # same items in both arms: no noise


def test_standard_error_and_difference_interval():
    assert standard_error([1, 0, 1, 0]) == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    assert standard_error([1]) == 0.0
    delta, low, high = difference_interval(0.60, 0.03, 0.50, 0.04)
    assert delta == pytest.approx(-0.10)
    assert high - delta == pytest.approx(Z95 * 0.05)  # sqrt(0.03² + 0.04²) = 0.05
    assert low == pytest.approx(-0.10 - Z95 * 0.05)


# kia's figures against scipy's on fixed data, the degenerate cases, seeds and power.


@pytest.mark.parametrize(("k", "n"), [(1, 10), (5, 10), (3, 40), (39, 40), (17, 250), (1, 1)])
def test_wilson_matches_scipy_binomtest(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_wilson_other_z_matches_the_closed_form():
    k, n, z = 7, 30, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(k, n, z) == pytest.approx((centre - half, centre + half), rel=1e-12)


def test_wilson_ends_are_exact_and_guards_hold():
    for n in (1, 7, 40, 1000):
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0
    assert wilson(0, -3) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(-1, 10)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (1, 2), (7, 8), (100, 130), (3, 40), (250, 200)])
def test_mcnemar_matches_binomtest_on_more_counts(b, c):
    assert mcnemar(b, c) == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
    assert mcnemar(b, c) == pytest.approx(min(1.0, 2 * sps.binom.cdf(min(b, c), b + c, 0.5)), rel=1e-9)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar(-1, 3)


def _differences(seed, n, shift):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, size=n)
    return base, base + shift + rng.exponential(0.3, size=n) - 0.3  # skewed differences, where BCa matters


def test_paired_bootstrap_interval_is_scipys_bca_and_p_is_scipys_sign_flip_test():
    base, adapted = _differences(4, 80, 0.05)
    iv = paired_bootstrap(base, adapted, n_boot=999, seed=7)
    d = adapted - base
    ref = sps.bootstrap((d,), np.mean, n_resamples=999, method="BCa", rng=np.random.default_rng(7))
    assert (iv.low, iv.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    flips = sps.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=999, rng=np.random.default_rng(7), vectorized=True
    )
    assert iv.p_value == pytest.approx(flips.pvalue, rel=1e-12)
    assert iv.value == pytest.approx(float(d.mean()))


def test_paired_bootstrap_degenerate_data_gives_the_point_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = paired_bootstrap([0.2], [0.7], n_boot=200)
        const = paired_bootstrap([0.0] * 5, [0.3] * 5, n_boot=200)
        tiny = paired_bootstrap([0.0, 0.0], [0.0, 1.0], n_boot=3)  # 3 resamples: BCa may be undefined
    assert (single.value, single.low, single.high, single.p_value) == (pytest.approx(0.5),) * 3 + (1.0,)
    assert const.low == const.high == const.value
    assert const.p_value == pytest.approx(2 / 32)  # 2⁵ = 32 <= 200: all sign vectors, only ±(all same) reach 0.3
    assert math.isfinite(tiny.low) and math.isfinite(tiny.high)


def test_paired_bootstrap_seed_matters_and_is_reproducible():
    base, adapted = _differences(5, 50, 0.0)
    assert paired_bootstrap(base, adapted, n_boot=300, seed=1) == paired_bootstrap(base, adapted, n_boot=300, seed=1)
    assert paired_bootstrap(base, adapted, n_boot=300, seed=1) != paired_bootstrap(base, adapted, n_boot=300, seed=2)


def test_paired_bootstrap_p_is_small_for_a_real_difference_and_large_for_none():
    base, adapted = _differences(6, 120, 0.15)
    assert paired_bootstrap(base, adapted, n_boot=999).p_value < 0.01
    x = np.random.default_rng(6).normal(size=60)
    none = paired_bootstrap(np.zeros(120), np.concatenate([x, -x]), n_boot=999)  # mean difference exactly 0
    assert none.p_value > 0.9
    assert none.low < 0 < none.high


def test_paired_bootstrap_sign_flip_p_is_the_exact_sign_test_on_binary_items():
    # Right/wrong items: the flips of the discordant items are the McNemar binomial, enumerated exactly.
    base = [True] * 6 + [False] * 1 + [True] * 3
    adapted = [False] * 6 + [True] * 1 + [True] * 3
    iv = paired_bootstrap([float(x) for x in base], [float(x) for x in adapted], n_boot=2000)
    assert iv.p_value == pytest.approx(mcnemar(6, 1))


def _weighted_means(base, adapted):
    def stat(w):
        return float(w @ base / w.sum()), float(w @ adapted / w.sum())

    return stat


def test_cluster_bootstrap_interval_is_scipys_bca_over_item_indices():
    base, adapted = _differences(8, 60, 0.1)
    iv = cluster_bootstrap(_weighted_means(base, adapted), 60, n_boot=400, seed=3)

    def theta(indices):
        w = np.bincount(indices, minlength=60)
        return w @ adapted / w.sum() - w @ base / w.sum()

    ref = sps.bootstrap((np.arange(60),), theta, n_resamples=400, method="BCa", rng=np.random.default_rng(3))
    assert (iv.low, iv.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    assert iv.value == pytest.approx(float(np.mean(adapted - base)))


def test_cluster_bootstrap_jackknife_gets_leave_one_out_weights():
    base, adapted = _differences(9, 30, 0.1)
    seen = []

    def stat(w):
        seen.append(w.copy())
        return _weighted_means(base, adapted)(w)

    cluster_bootstrap(stat, 30, n_boot=100, seed=0)
    loo = [w for w in seen if w.sum() == 29]
    assert len(loo) == 30 and all(set(np.unique(w)) == {0.0, 1.0} for w in loo)
    assert sorted(int(np.argmin(w)) for w in loo) == list(range(30))  # each item left out exactly once
    assert all(w.sum() == 30 for w in seen if w.sum() != 29)  # the data as observed and the resamples
    assert len(seen) == 1 + 100 + 30 + 1  # observed, resamples, jackknife, scipy's own observed call


def test_cluster_bootstrap_p_inverts_the_bca_interval():
    base, adapted = _differences(10, 80, 0.03)
    iv = cluster_bootstrap(_weighted_means(base, adapted), 80, n_boot=999, seed=5)
    assert 0.01 < iv.p_value < 0.9

    def theta(indices):
        w = np.bincount(indices, minlength=80)
        return w @ adapted / w.sum() - w @ base / w.sum()

    res = sps.bootstrap((np.arange(80),), theta, n_resamples=999, method="percentile", rng=np.random.default_rng(5))
    at_p = sps.bootstrap(
        (np.arange(80),), theta, n_resamples=0, bootstrap_result=res, confidence_level=1 - iv.p_value, method="BCa"
    ).confidence_interval
    nearest = min(abs(at_p.low), abs(at_p.high))
    assert nearest < 0.02 * (iv.high - iv.low)  # at confidence 1 − p an endpoint sits on zero


def _distinct_counts(seed, n, collapse):
    """Per item a distinct answer (plus shared ones); the adapted arm gives a shared target on a share of items."""
    rng = np.random.default_rng(seed)
    base = np.zeros((n, n + 5))
    base[np.arange(n), np.arange(n)] = 1.0
    base[np.arange(n), n + rng.integers(0, 5, size=n)] = 1.0
    adapted = base.copy()
    hit = rng.random(n) < collapse
    adapted[hit, :n] = 0.0
    adapted[hit, n] = 1.0

    def stat(w):
        return float(((w @ base) > 0).sum()), float(((w @ adapted) > 0).sum())

    return stat


def test_cluster_bootstrap_falls_back_to_the_jackknife_when_bca_is_undefined():
    stat = _distinct_counts(11, 200, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iv = cluster_bootstrap(stat, 200, n_boot=300, seed=0)
    b, a = stat(np.ones(200))
    loo = []
    for i in range(200):
        w = np.ones(200)
        w[i] = 0.0
        lb, la = stat(w)
        loo.append(la - lb)
    loo = np.array(loo)
    se = math.sqrt(199 / 200 * float(np.sum((loo - loo.mean()) ** 2)))
    assert iv.value == a - b
    assert (iv.low, iv.high) == pytest.approx((a - b - Z95 * se, a - b + Z95 * se), rel=1e-12)
    assert iv.p_value == pytest.approx(1 / 301)  # far from zero: the floor 1 / (B + 1)


def test_cluster_bootstrap_p_is_small_for_a_real_difference_and_large_for_none():
    base, adapted = _differences(12, 100, 0.15)
    assert cluster_bootstrap(_weighted_means(base, adapted), 100, n_boot=300).p_value < 0.01
    x = np.random.default_rng(12).normal(size=50)
    flat = np.concatenate([x, -x])
    assert cluster_bootstrap(_weighted_means(np.zeros(100), flat), 100, n_boot=300).p_value > 0.8
    assert cluster_bootstrap(_distinct_counts(13, 150, 0.3), 150, n_boot=300).p_value < 0.01
    assert cluster_bootstrap(_distinct_counts(13, 150, 0.0), 150, n_boot=300).p_value == 1.0


def test_cluster_bootstrap_degenerate_cases_and_seeds():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cluster_bootstrap(lambda w: (2.0, 5.0), 0) == Interval(3.0, 3.0, 3.0, 1.0)
        assert cluster_bootstrap(lambda w: (2.0, 5.0), 1) == Interval(3.0, 3.0, 3.0, 1.0)
        assert cluster_bootstrap(lambda w: (3.0, 3.0), 20, n_boot=100) == Interval(0.0, 0.0, 0.0, 1.0)
        assert cluster_bootstrap(lambda w: (0.0, 1.0), 20, n_boot=100) == Interval(1.0, 1.0, 1.0, 1 / 101)
    stat = _weighted_means(*_differences(14, 40, 0.0))
    assert cluster_bootstrap(stat, 40, n_boot=200, seed=4) == cluster_bootstrap(stat, 40, n_boot=200, seed=4)
    assert cluster_bootstrap(stat, 40, n_boot=200, seed=4) != cluster_bootstrap(stat, 40, n_boot=200, seed=5)


def test_fdr_matches_scipy_and_a_hand_computed_case():
    # Sorted: 0.01, 0.03, 0.04, 0.5 → m·p/rank = 0.04, 0.06, 0.0533, 0.5 → running minimum from the top.
    assert fdr([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    ps = [0.001, 0.2, 0.013, 0.04, 0.9, 0.049, 0.3, 0.0004]
    assert fdr(ps) == pytest.approx(list(sps.false_discovery_control(ps, method="bh")), rel=1e-12)


def test_fdr_passes_none_through_and_counts_only_real_tests():
    assert fdr([0.01, None, 0.04, 0.03, None, 0.5]) == pytest.approx([0.04, None, 0.16 / 3, 0.16 / 3, None, 0.5])
    assert fdr([]) == [] and fdr([None, None]) == [None, None]
    assert fdr([0.3]) == [0.3]
    assert all(isinstance(q, float) for q in fdr([0.2, 0.01]))


def test_paired_bootstrap_non_finite_scores_give_nan_not_a_p_of_zero():
    iv = paired_bootstrap([0.0, 1.0, math.nan], [1.0, 1.0, 1.0], n_boot=100)
    assert math.isnan(iv.low) and math.isnan(iv.high) and math.isnan(iv.p_value)
