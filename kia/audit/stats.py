"""The statistics of the audit: intervals and paired tests, built on scipy.stats.

Every comparison in the audit is paired: both arms answer the very same items, so the tests work
on per-item differences (McNemar for right/wrong items, a sign-flip test and a bootstrap otherwise),
which is far more sensitive than comparing two independent accuracies.

The standard pieces are scipy's (`binomtest` for the Wilson interval and the exact McNemar test,
`bootstrap` for BCa intervals, `permutation_test` for the sign-flip test, `false_discovery_control`
for the many tests of one audit); this module adds the audit's guards (no items, degenerate data,
exact 0 and 1 at the ends), fixed seeds so that a report is reproducible, and the fallback of
`cluster_bootstrap` for statistics the bootstrap cannot handle.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from kia.stats import batch_size, mean_interval, seeded

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

    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), computed by
    `scipy.stats.binomtest(k, n).proportion_ci(confidence_level, method="wilson")` with
    confidence_level = 2Φ(z) − 1 = erf(z/√2) (0.95 for Z95). Unlike the normal (Wald) interval it
    stays inside [0, 1] and does not collapse to a point at k = 0 or k = n, which matters for the
    small counts of an audit (e.g. 0 refusals out of 40). With n = 0 the share is unknown: (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=math.erf(z / math.sqrt(2)), method="wilson")
    # The formula gives 0 and 1 at the ends only up to rounding (older scipy does not clip them).
    low = 0.0 if k == 0 else max(0.0, float(ci.low))
    high = 1.0 if k == n else min(1.0, float(ci.high))
    return low, high


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts.

    b = items right in one arm only, c = items right in the other arm only. Under "no change" each
    discordant item is equally likely to fall either way, so min(b, c) ~ Binomial(b + c, 1/2) and
    p = min(1, 2 · P[X <= min(b, c)]); this is `scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue`,
    whose two-sided p (sum of the outcomes no likelier than the observed one) is that doubled tail
    for the symmetric p = 1/2. Concordant items carry no information about the change. The exact
    form is used because audits often have few discordant items, where the chi-square form is poor.
    Example: b = 10, c = 2 gives p = 2 · 79 / 4096 = 0.0386. No discordant item: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0  # binomtest needs n >= 1; with no discordant item there is no evidence of change
    return min(1.0, float(stats.binomtest(int(min(b, c)), int(b + c), 0.5).pvalue))


def mcnemar_paired(base: Sequence[bool], adapted: Sequence[bool]) -> tuple[int, int, float]:
    """(lost, gained, p): items right in the base arm only, right in the adapted arm only, and the
    exact McNemar p-value of the two (`mcnemar(lost, gained)`): the right test for paired yes/no
    outcomes, since items right or wrong in both arms say nothing about the change."""
    if len(base) != len(adapted):
        raise ValueError(f"paired arms need the same items, got {len(base)} and {len(adapted)}")
    lost = sum(1 for x, y in zip(base, adapted, strict=True) if x and not y)
    gained = sum(1 for x, y in zip(base, adapted, strict=True) if y and not x)
    return lost, gained, mcnemar(lost, gained)


def _sign_flip_p(d: np.ndarray, n_boot: int, seed: int) -> float:
    """Two-sided paired sign-flip p-value for "the mean difference is zero" (see paired_bootstrap)."""
    if d.size < 2 or not d.any():
        return 1.0  # one item cannot show a change, and all-zero differences show none
    res = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_boot,
        batch=batch_size(d.size),
        **seeded(stats.permutation_test, seed),
    )
    return float(res.pvalue)


def paired_bootstrap(
    base: Sequence[float], adapted: Sequence[float], *, n_boot: int = 2000, seed: int = 0, with_p: bool = True
) -> Interval:
    """Mean of the per-item differences d = adapted − base with a 95 % BCa bootstrap interval and a
    paired sign-flip p-value.

    Interval: `scipy.stats.bootstrap((d,), np.mean, method="BCa", n_resamples=n_boot)` seeded with
    `seed`. Resampling the items' differences (not the arms) keeps the pairing. BCa reads the
    percentiles Φ(ẑ₀ + (ẑ₀ + z_α)/(1 − â(ẑ₀ + z_α))) of the resampled means, ẑ₀ correcting the median
    bias and â (from the jackknife) the skew; unlike the plain percentile interval it is second-order
    accurate, which matters for skewed differences such as shares with few discordant items. When
    all differences are equal (a single item included) every resample gives the mean and BCa is
    undefined: the interval is the point.

    p-value: the sign-flip test `scipy.stats.permutation_test((d,), np.mean,
    permutation_type="samples", n_resamples=n_boot)` seeded with `seed`. With m̂ = mean(d) and
    m_j = mean(s_j · d) for random signs s_j ∈ {±1}ⁿ, p = min(1, 2 · min(P⁺, P⁻)) where
    P⁺ = (1 + #{j : m_j ≥ m̂}) / (n_boot + 1) and P⁻ likewise with ≤ (all 2ⁿ sign vectors, without
    the +1, when 2ⁿ <= n_boot). Why: if the adapter changed nothing, an item's two arms are
    exchangeable, so each difference is as likely to be −d_i as d_i; the sign-flip distribution is
    then the exact null distribution and p is valid at any n. The percentile-bootstrap p it
    replaces (the share of resampled means beyond zero) reads a distribution centred on the
    observed mean, not the null, and is only valid for large n. One item, or no difference: p = 1.
    A NaN or infinite difference gives NaN interval and p. `with_p=False` skips the test (p None)
    for callers that report another one (McNemar for yes/no items): it is most of the cost.
    """
    b = np.asarray(base, dtype=float)
    a = np.asarray(adapted, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"paired arms need the same items, got {b.shape[0]} and {a.shape[0]}")
    d = a - b
    if d.size == 0:
        return Interval(0.0, 0.0, 0.0, 1.0)
    mean = float(d.mean())
    if not np.isfinite(d).all():
        # scipy would give a NaN interval but p = 0 (NaN compares false); a missing score is no evidence.
        return Interval(mean, math.nan, math.nan, math.nan)
    p = _sign_flip_p(d, n_boot, seed) if with_p else None
    if np.ptp(d) == 0:
        return Interval(mean, mean, mean, p)
    low, high = mean_interval(d, n_boot=n_boot, seed=seed)
    return Interval(mean, low, high, p)


def _mid_rank(dist: np.ndarray, x: float) -> float:
    """Mid-rank share of `dist` below x, (#{< x} + #{<= x}) / 2B: scipy's level for BCa's ẑ₀, so ties
    (frequent for counts) count half on each side."""
    return (np.count_nonzero(dist < x) + np.count_nonzero(dist <= x)) / (2 * dist.size)


def _share_p(q: float) -> float:
    """Two-sided p of a point at percentile level q of a distribution: 2 · min(q, 1 − q)."""
    return min(1.0, 2 * min(q, 1 - q))


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], tuple[float, float]], n_items: int, *, n_boot: int = 500, seed: int = 0
) -> Interval:
    """Bootstrap of a paired statistic that is not a mean of per-item values (e.g. answer entropy).

    `statistic(weights)` gets how many times each item is drawn (all ones = the data as observed)
    and returns (base value, adapted value); θ = adapted − base. Items are resampled, never arms, so
    both arms always see the same items. `scipy.stats.bootstrap` runs over the item indices 0..n−1
    (B = `n_boot` resamples, seeded with `seed`) and a resample of indices becomes weights by
    np.bincount(indices, minlength=n); BCa's jackknife passes the n leave-one-out index arrays,
    which thereby become weights of 1 with a 0 for the item left out, as they should.

    Interval, where BCa can be trusted: scipy's BCa, the percentiles α₁,₂ = Φ(ẑ₀ + (ẑ₀ ∓ z)/(1 −
    â(ẑ₀ ∓ z))) of the resampled θ*, z = Z95. ẑ₀ = Φ⁻¹(mid-rank share of θ* below θ̂) corrects the
    bias of the resampled statistic (it replaces the old ad hoc shift of the distribution onto θ̂);
    â = Σ U³ / (6 (Σ U²)^{3/2}) with U_i = θ̄₍.₎ − θ₍ᵢ₎ from the jackknife corrects the skew.
    p-value: the same interval inverted, so that p < 0.05 goes with a 95 % interval that excludes
    zero (up to the granularity of B resamples). With q₀ = (#{θ* < 0} + #{θ* ≤ 0} + 1) / (2B + 2),
    the mid-rank level of zero, and w = Φ⁻¹(q₀) − ẑ₀, zero is a BCa endpoint at the nominal
    z₀ = w / (1 + â·w) − ẑ₀, and p = 2Φ(−|z₀|); where 1 + â·w <= 0 zero lies beyond every BCa
    endpoint and p is the floor below.

    Otherwise a jackknife interval: θ̂ ± Z95 · se_J with se_J² = (n−1)/n · Σ (θ₍ᵢ₎ − θ̄₍.₎)², and
    p = 2Φ(−|θ̂| / se_J). "Otherwise" is where BCa is undefined or would read an endpoint beyond what
    B resamples resolve (α₁ < 1/B or α₂ > 1 − 1/B). Why: a count of distinct answers shrinks under
    resampling (a resample repeats some items and leaves others out), on an audit's data by several
    bootstrap standard deviations, so every θ* lies on one side of θ̂ (ẑ₀ = ±∞), and the bootstrap
    spread itself is about half the true one; the jackknife drops one item and duplicates none, and
    tracks the true spread (in a simulation of 480 questions × 10 answers, the old shifted interval
    of the distinct-answer difference covered the truth ~67 % of the time, the jackknife one ~97 %).
    The leave-one-out values are the ones BCa computed, so the fallback costs no extra call.

    Every p is clipped to [1/(B + 1), 1]: B resamples cannot resolve a smaller p. Fewer than two
    items: the point, p = 1. θ* never varies: the point, p = 2 · min(q₀, 1 − q₀). Cost: B + n + 2
    calls of `statistic` (the old shifted percentile interval made B + 1).
    """
    base, adapted = statistic(np.ones(n_items))
    observed = float(adapted - base)
    if n_items < 2:
        return Interval(observed, observed, observed, 1.0)
    floor = 1 / (n_boot + 1)
    caller_errstate = np.geterr()
    jackknife: dict[int, float] = {}
    index_sum = n_items * (n_items - 1) // 2

    def theta(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices), axis, -1)
        rows = indices.reshape(-1, indices.shape[-1])
        out = np.empty(len(rows))
        # The statistic runs under the caller's floating-point settings, not the muting around BCa.
        with np.errstate(**caller_errstate):
            for r, row in enumerate(rows):
                b, a = statistic(np.bincount(row, minlength=n_items).astype(float))
                out[r] = a - b
                if row.size == n_items - 1:  # a jackknife sample: kept for â, ẑ₀'s check and the fallback
                    jackknife[index_sum - int(row.sum())] = float(out[r])
        return out.reshape(indices.shape[:-1])

    data = (np.arange(n_items),)
    common = {"vectorized": True, "batch": batch_size(n_items)}
    res = stats.bootstrap(
        data, theta, n_resamples=n_boot, method="percentile", **common, **seeded(stats.bootstrap, seed)
    )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    q0 = (2 * n_boot * _mid_rank(dist, 0.0) + 1) / (2 * n_boot + 2)  # +1: never exactly 0 or 1
    if np.ptp(dist) == 0:
        return Interval(observed, observed, observed, max(floor, _share_p(q0)))

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # An undefined BCa (ẑ₀ = ±∞, â = 0/0) is caught below and replaced; scipy's warning would leak.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        bca = stats.bootstrap(data, theta, n_resamples=0, bootstrap_result=res, method="BCa", **common)
    for i in set(range(n_items)) - jackknife.keys():  # only if scipy ever stops passing index arrays
        w = np.ones(n_items)
        w[i] = 0.0
        b, a = statistic(w)
        jackknife[i] = float(a - b)
    loo = np.array([jackknife[i] for i in range(n_items)])
    low, high = float(bca.confidence_interval.low), float(bca.confidence_interval.high)

    u = loo.mean() - loo
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 and ±∞ mean "BCa undefined", tested below
        accel = float(np.sum(u**3) / (6 * np.sum(u**2) ** 1.5))
        z0 = float(special.ndtri(_mid_rank(dist, observed)))  # scipy's ẑ₀, needed again for the p-value
        levels = [float(special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))) for z in (-Z95, Z95)]
    resolved = all(math.isfinite(x) for x in (low, high, *levels))
    if resolved and 1 / n_boot <= levels[0] and levels[1] <= 1 - 1 / n_boot:
        w = float(special.ndtri(q0)) - z0
        p = floor if 1 + accel * w <= 0 else 2 * float(special.ndtr(-abs(w / (1 + accel * w) - z0)))
        return Interval(observed, low, high, min(1.0, max(floor, p)))

    se = math.sqrt((n_items - 1) / n_items * float(np.sum((loo - loo.mean()) ** 2)))
    if se == 0:
        return Interval(observed, observed, observed, 1.0 if observed == 0 else floor)
    p = 2 * float(special.ndtr(-abs(observed) / se))
    return Interval(observed, observed - Z95 * se, observed + Z95 * se, min(1.0, max(floor, p)))


def fdr(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q-values) of one audit's paired tests; None stays None.

    With the m given p-values sorted, p₍₁₎ <= … <= p₍ₘ₎: q₍ᵢ₎ = min over j >= i of min(1, m · p₍ⱼ₎ / j),
    by `scipy.stats.false_discovery_control(method="bh")` (None entries are not tests and do not
    count in m). Why: an audit runs some 15-30 paired tests, and at p < 0.05 one in twenty metrics
    the adapter did not change would still look significant; flagging q < 0.05 instead keeps the
    expected share of false flags among the flagged metrics below 5 %. BH rather than Bonferroni or
    Holm because an audit is a screen, where losing every real change to a family-wise bound costs
    more than an occasional false flag; BH holds for independent or positively dependent tests, the
    usual case for metrics computed on the same items (Benjamini-Yekutieli would hold for any
    dependence, at about 3.5-4× the q-values for m = 15-30).
    """
    given = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if given:
        q = stats.false_discovery_control([float(p_values[i]) for i in given], method="bh")  # type: ignore[arg-type]
        for i, v in zip(given, np.atleast_1d(q), strict=True):
            out[i] = float(v)
    return out


def standard_error(values: Sequence[float]) -> float:
    """Standard error of a mean: sample standard deviation (Bessel) / sqrt(n), as lm-eval reports it.

    Hand-written on purpose: the numpy one-liner is what scipy.stats.sem computes, and fewer than two
    values give 0 here rather than scipy's NaN.
    """
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
