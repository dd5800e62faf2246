"""Tier 1: the audit's statistics on cases with known answers (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kia.audit.stats import (
    Z95,
    cluster_bootstrap,
    difference_interval,
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
    assert a.p_value == pytest.approx(2 / 1001)  # no resample reaches zero: the smallest p it can give


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
