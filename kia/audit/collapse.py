"""Answer collapse: does the adapted model pile its answers onto a few strings? (Pletenev et al. §5, Table 4)

All greedy answers to the held-out questions are counted (every exemplar set, refusals skipped,
answers compared after `kia.facts.matching.normalize`). A healthy model spreads its answers over many
strings; a collapsed one repeats a few ("Alençon" 9,393 times in the paper's worst run).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kia.facts import normalize


@dataclass
class AnswerCounts:
    """Counts per normalised answer, remembering the first surface form seen for display."""

    counts: Counter[str] = field(default_factory=Counter)
    surface: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, answers: Iterable[str]) -> AnswerCounts:
        out = cls()
        for a in answers:
            key = normalize(a)
            if not key:
                continue  # an empty answer is no answer: it cannot collapse onto anything
            out.counts[key] += 1
            out.surface.setdefault(key, a.strip())
        return out

    def show(self, key: str) -> str:
        return self.surface.get(key, key)


def collapse_stats(counts: AnswerCounts, top: int = 10) -> dict[str, object]:
    """Distinct answers, mean and standard deviation of the count per distinct answer, normalised
    entropy and the `top` most frequent answers.

    mean = (answers counted) / distinct; std = population standard deviation of the per-answer
    counts (np.std, as the paper's notebook computes the "spread" of Table 4);
    entropy = H / log(distinct) with H = −Σ p_i log p_i and p_i = count_i / total: 1 when every
    answer is distinct, towards 0 as answers pile onto one string (0 by definition for <= 1 distinct
    answer). Normalising by log(distinct) makes runs with different numbers of answers comparable.
    """
    values = np.array(list(counts.counts.values()), dtype=float)
    distinct = int(values.size)
    ordered = sorted(counts.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "distinct": distinct,
        "mean": float(values.mean()) if distinct else 0.0,
        "std": float(values.std()) if distinct else 0.0,
        "entropy": normalised_entropy(values),
        "top": [[counts.show(k), int(v)] for k, v in ordered],
    }


def normalised_entropy(values: np.ndarray) -> float:
    """H / log(k) of a vector of counts (zeros ignored); 0 for fewer than two non-zero counts."""
    v = values[values > 0]
    if v.size < 2:
        return 0.0
    p = v / v.sum()
    return float(-(p * np.log(p)).sum() / math.log(v.size))


def question_counts(per_question: Sequence[Sequence[str]]) -> AnswerCounts:
    """Per normalised answer, the number of questions that got it with at least one exemplar set."""
    out = AnswerCounts()
    for answers in per_question:
        seen = AnswerCounts.of(answers)
        out.counts.update(seen.counts.keys())
        for key, form in seen.surface.items():
            out.surface.setdefault(key, form)
    return out


def exploded_answers(
    base: AnswerCounts, adapted: AnswerCounts, *, factor: float = 5.0, floor: int = 5
) -> list[dict[str, object]]:
    """Answers the adapted model gives to far more questions than the base model does.

    exploded ⇔ q_adapted >= factor × max(q_base, 1) and q_adapted >= floor, where q is the number
    of held-out questions that get the answer (`question_counts`). The factor follows the paper's
    "predicted far more often than by the default model"; max(·, 1) lets an answer the base model
    never gave explode too; the floor keeps a 0 → 1 blip from counting. Questions, not answer
    occurrences: the exemplar sets of one question mostly agree, so one question whose answer
    changed would otherwise look like ten (the paper's 21,036 questions and floor of 850 hid this).
    Sorted by q_adapted, most first.
    """
    out = []
    for key, n in adapted.counts.items():
        b = base.counts.get(key, 0)
        if n >= factor * max(b, 1) and n >= floor:
            out.append({"answer": adapted.show(key), "key": key, "base": int(b), "adapted": int(n)})
    return sorted(out, key=lambda r: (-r["adapted"], r["key"]))  # type: ignore[operator]


def target_share(counts: AnswerCounts, targets: set[str]) -> float:
    """Share of the counted answers that equal (normalised) some training target answer.

    A model that learnt the facts, not just their answers, should not start answering other
    questions with the trained answers; the paper's "target-based" shifts are this leak.
    """
    total = sum(counts.counts.values())
    if not total:
        return 0.0
    return sum(v for k, v in counts.counts.items() if k in targets) / total


def normalised_targets(answers: Iterable[str]) -> set[str]:
    return {k for k in (normalize(a) for a in answers) if k}


class CollapseBootstrap:
    """Paired bootstrap over held-out questions of the collapse statistics.

    Each question contributes all its greedy answers in both arms; resampling questions (not single
    answers) keeps the answers of a question together and both arms on the same questions.
    `statistic(name)` returns the callable that `kia.audit.stats.cluster_bootstrap` expects.
    """

    def __init__(self, base: Sequence[Sequence[str]], adapted: Sequence[Sequence[str]], targets: set[str]):
        from scipy import sparse

        keys: dict[str, int] = {}
        self.n = len(base)
        mats = []
        for arm in (base, adapted):
            rows, cols = [], []
            for q, answers in enumerate(arm):
                for a in answers:
                    k = normalize(a)
                    if k:
                        rows.append(q)
                        cols.append(keys.setdefault(k, len(keys)))
            mats.append((rows, cols))
        width = max(1, len(keys))
        self.m = [
            sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(self.n, width))
            if r
            else sparse.csr_matrix((self.n, width))
            for r, c in mats
        ]
        self.is_target = np.zeros(width, dtype=bool)
        for k, i in keys.items():
            self.is_target[i] = k in targets

    def _counts(self, weights: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(weights @ m).ravel() for m in self.m]

    def distinct(self, weights: np.ndarray) -> tuple[float, float]:
        b, a = self._counts(weights)
        return float((b > 0).sum()), float((a > 0).sum())

    def entropy(self, weights: np.ndarray) -> tuple[float, float]:
        b, a = self._counts(weights)
        return normalised_entropy(b), normalised_entropy(a)

    def target_share(self, weights: np.ndarray) -> tuple[float, float]:
        out = []
        for c in self._counts(weights):
            total = c.sum()
            out.append(float(c[self.is_target].sum() / total) if total else 0.0)
        return out[0], out[1]
