"""The statistics of the audit: intervals and paired tests, small and dependency-light (numpy only).

Every comparison in the audit is paired: both arms answer the very same items, so the tests work
on per-item differences (McNemar for right/wrong items, a bootstrap otherwise), which is far more
sensitive than comparing two independent accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95 % interval and, where it compares two arms, a p-value."""

    value: float
    low: float
    high: float
    p_value: float | None = None


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial share k / n.

    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n). Unlike the normal (Wald) interval it stays
    inside [0, 1] and does not collapse to a point at k = 0 or k = n, which matters for the small
    counts of an audit (e.g. 0 refusals out of 40). With n = 0 the share is unknown: (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends (no rounding)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts.

    b = items right in one arm only, c = items right in the other arm only. Under "no change" each
    discordant item is equally likely to fall either way, so min(b, c) ~ Binomial(b + c, 1/2) and
    p = min(1, 2 · P[X <= min(b, c)]). Concordant items carry no information about the change. The
    exact form is used because audits often have few discordant items, where the chi-square form
    is poor. Example: b = 10, c = 2 gives p = 2 · 79 / 4096 = 0.0386.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_paired(base: Sequence[bool], adapted: Sequence[bool]) -> tuple[int, int, float]:
    """(lost, gained, p): items right in the base arm only, right in the adapted arm only, and the
    exact McNemar p-value of the two."""
    if len(base) != len(adapted):
        raise ValueError(f"paired arms need the same items, got {len(base)} and {len(adapted)}")
    lost = sum(1 for x, y in zip(base, adapted, strict=True) if x and not y)
    gained = sum(1 for x, y in zip(base, adapted, strict=True) if y and not x)
    return lost, gained, mcnemar(lost, gained)


def _bootstrap_p(stats: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value for "the difference is zero": twice the share of
    resampled differences on the far side of zero, with the +1 correction so it is never 0."""
    n = len(stats)
    below = int(np.sum(stats <= 0))
    above = int(np.sum(stats >= 0))
    return min(1.0, 2 * (1 + min(below, above)) / (n + 1))


def paired_bootstrap(base: Sequence[float], adapted: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean of the per-item differences (adapted − base) with a 95 % percentile-bootstrap interval.

    Items are resampled with replacement (`n_boot` times, numpy Generator seeded with `seed`, so
    the interval is reproducible); each resample's mean difference forms the bootstrap distribution.
    Resampling items, not arms, keeps the pairing. The p-value is the two-sided bootstrap one.
    """
    b = np.asarray(base, dtype=float)
    a = np.asarray(adapted, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"paired arms need the same items, got {b.shape[0]} and {a.shape[0]}")
    d = a - b
    if d.size == 0:
        return Interval(0.0, 0.0, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(d.mean()), float(low), float(high), _bootstrap_p(means))


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], tuple[float, float]], n_items: int, *, n_boot: int = 500, seed: int = 0
) -> Interval:
    """Bootstrap of a paired statistic that is not a mean of per-item values (e.g. answer entropy).

    `statistic(weights)` gets how many times each item is drawn (all ones = the data as observed)
    and returns (base value, adapted value); the interval is that of adapted − base over `n_boot`
    resamples of the items, so both arms always see the same items. Statistics such as a count of
    distinct answers shrink under resampling (a resample repeats items), so the bootstrap
    distribution is shifted to centre on the observed difference before its percentiles are read
    (a bias-corrected percentile interval); the p-value comes from the same shifted distribution.
    """
    base, adapted = statistic(np.ones(n_items))
    observed = adapted - base
    if n_items == 0:
        return Interval(observed, observed, observed, 1.0)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        w = np.bincount(rng.integers(0, n_items, size=n_items), minlength=n_items).astype(float)
        b, a = statistic(w)
        diffs[i] = a - b
    diffs += observed - diffs.mean()
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Interval(observed, float(low), float(high), _bootstrap_p(diffs))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of a mean: sample standard deviation (Bessel) / sqrt(n), as lm-eval reports it."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return 0.0
    return float(x.std(ddof=1) / math.sqrt(x.size))


def difference_interval(
    base: float, base_se: float, adapted: float, adapted_se: float, z: float = Z95
) -> tuple[float, float, float]:
    """Combined interval of a difference of two accuracies: (delta, low, high) with
    delta = adapted − base and half-width z · sqrt(se_base² + se_adapted²).

    This is how benchmark tables ("Slimming Down LLMs") combine two scores' standard errors: it
    treats the arms as independent, so on paired items it is conservative (wider than the paired
    interval); the paired McNemar p-value is reported beside it.
    """
    delta = adapted - base
    half = z * math.sqrt(base_se**2 + adapted_se**2)
    return delta, delta - half, delta + half
