"""The paper's qualitative findings, checked on the sweep's own table: held, not held, or not
measurable with this grid, each with the figures that decide it.

Pletenev et al. 2025 report, for Llama-3.1-8B: near-perfect reliability for small N (Figure 2);
more negative than positive shift for small N (Table 3); refusals falling after training (15 %
to about 0, Table 4); answers exploding for Unknown facts trained alone, not with known facts or
paraphrases (Table 4, "Alençon"); benchmark (MMLU) drops growing with N (Table 7). These are the
checks; the thresholds are stated in each so a reader can disagree with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean
from typing import Any

from kia.sweep.table import benchmark_tasks

SMALL_N_RELIABILITY = 0.9  # "near-perfect": mean reliability at the grid's smallest N


def _values(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    v = _values(rows, key)
    return mean(v) if v else None


def _finding(key: str, text: str, held: bool | None, evidence: str) -> dict[str, Any]:
    return {"id": key, "finding": text, "held": held, "evidence": evidence}


def findings(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    ns = sorted({r["n"] for r in rows})
    small = [r for r in rows if r["n"] == ns[0]]
    out = []

    rel = _mean(small, "reliability")
    low = min(_values(small, "reliability"), default=None)
    out.append(_finding(
        "small_n_reliability", "near-perfect reliability for small N",
        None if rel is None else rel >= SMALL_N_RELIABILITY,
        "not measured" if rel is None else
        f"mean reliability at N = {ns[0]}: {rel:.3f} (lowest point {low:.3f}); held if >= {SMALL_N_RELIABILITY}",
    ))  # fmt: skip

    neg, pos = _mean(small, "negative_shift"), _mean(small, "positive_shift")
    per = []
    for recipe in dict.fromkeys(r["recipe"] for r in small):
        group = [r for r in small if r["recipe"] == recipe]
        a, b = _mean(group, "negative_shift"), _mean(group, "positive_shift")
        if a is not None and b is not None:
            per.append(f"{recipe}: {a:.3f} vs {b:.3f}")
    out.append(_finding(
        "small_n_shift", "negative shift above positive shift for small N",
        None if neg is None or pos is None else neg > pos,
        "not measured" if neg is None or pos is None else
        f"at N = {ns[0]}, mean negative {neg:.3f} vs positive {pos:.3f} ({'; '.join(per)})",
    ))  # fmt: skip

    pairs = [(r["refusal_rate_base"], r["refusal_rate"]) for r in rows
             if r.get("refusal_rate_base") is not None and r.get("refusal_rate") is not None]  # fmt: skip
    fell = sum(a < b for b, a in pairs)
    out.append(_finding(
        "refusals_fall", "refusals fall after training",
        None if not pairs else fell > len(pairs) / 2 and mean(a for _, a in pairs) < mean(b for b, _ in pairs),
        "not measured" if not pairs else
        f"lower at {fell} of {len(pairs)} points; mean {mean(b for b, _ in pairs):.3f} (base) -> "
        f"{mean(a for _, a in pairs):.3f} (adapted)",
    ))  # fmt: skip

    alone = [r for r in rows if not (r["highly_known"] or r["paraphrases"] or r["maybe_known"])]
    mixed = [r for r in rows if r["highly_known"] or r["paraphrases"] or r["maybe_known"]]
    ea, em = _mean(alone, "exploded_answers"), _mean(mixed, "exploded_answers")
    out.append(_finding(
        "explosion", "answers explode for Unknown facts trained without known facts or paraphrases",
        None if ea is None or em is None else ea > em and ea > 0,
        "needs a recipe K=0,P=0 and one with K or P" if ea is None or em is None else
        f"mean exploded answers per point: {ea:.2f} trained alone vs {em:.2f} with known facts or paraphrases",
    ))  # fmt: skip

    tasks = benchmark_tasks(rows)
    by_n = {}
    for n in ns:
        deltas = [r[f"bench_{t}_delta"] for r in rows if r["n"] == n for t in tasks
                  if r.get(f"bench_{t}_delta") is not None]  # fmt: skip
        if deltas:
            by_n[n] = mean(deltas)
    measurable = len(by_n) >= 2
    # A lower mean at the largest N is not enough: a few documents of noise give that half the time.
    # Held also needs the drop to be sure there, where the audit measured it: at the largest N every
    # seed's point has a task whose 95 % interval of the change lies below zero.
    top = max(by_n) if by_n else None
    top_rows = [r for r in rows if r["n"] == top]
    sure = all(any((r.get(f"bench_{t}_ci_high") if r.get(f"bench_{t}_ci_high") is not None
                    else r.get(f"bench_{t}_delta", 0)) < 0 for t in tasks) for r in top_rows)  # fmt: skip
    out.append(_finding(
        "benchmark_drop", "benchmark drop grows with N",
        None if not measurable else by_n[max(by_n)] < by_n[min(by_n)] and sure,
        "needs benchmarks at two N or more" if not measurable else
        "mean accuracy change over " + ", ".join(tasks) + ": "
        + ", ".join(f"N = {n}: {d:+.3f}" for n, d in by_n.items())
        + f"; at N = {top} {'every' if sure else 'not every'} point has a task whose interval lies below 0",
    ))  # fmt: skip
    return out
