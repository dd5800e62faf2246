"""Knowledge shift: how the adapter moved held-out facts between categories (Pletenev et al. §5, Tables 3 and 5).

Every held-out fact is probed in both arms with the same prompts; its three-way category in each
arm (Unknown / MaybeKnown / HighlyKnown, from P_greedy over the exemplar sets) gives one cell of a
3 × 3 transition matrix, rows = base, columns = adapted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CATEGORIES = ("Unknown", "MaybeKnown", "HighlyKnown")
_RANK = {c: i for i, c in enumerate(CATEGORIES)}
POSITIVE = (("Unknown", "MaybeKnown"), ("Unknown", "HighlyKnown"), ("MaybeKnown", "HighlyKnown"))
NEGATIVE = (("HighlyKnown", "MaybeKnown"), ("HighlyKnown", "Unknown"), ("MaybeKnown", "Unknown"))
REASONS = ("non_refusal", "explosion", "target_based", "same_relation")


def category(p_greedy: float) -> str:
    """The three-way label from P_greedy: HighlyKnown = 1, MaybeKnown in (0, 1), Unknown = 0."""
    if p_greedy >= 1:
        return "HighlyKnown"
    return "MaybeKnown" if p_greedy > 0 else "Unknown"


def direction(base: str, adapted: str) -> str | None:
    """ "positive" when the fact moved up (better known), "negative" when it moved down, else None."""
    b, a = _RANK[base], _RANK[adapted]
    return "positive" if a > b else "negative" if a < b else None


def transition_matrix(base: Sequence[str], adapted: Sequence[str]) -> list[list[int]]:
    """counts[i][j] = facts in base category i and adapted category j (order: CATEGORIES)."""
    if len(base) != len(adapted):
        raise ValueError(f"paired arms need the same facts, got {len(base)} and {len(adapted)}")
    m = [[0] * 3 for _ in CATEGORIES]
    for b, a in zip(base, adapted, strict=True):
        m[_RANK[b]][_RANK[a]] += 1
    return m


def shift_shares(matrix: Sequence[Sequence[int]]) -> dict[str, dict[str, float]]:
    """Each transition as a share of the facts in its source category.

    share(S→T) = matrix[S][T] / Σ_j matrix[S][j]. The paper does not state its denominator; the
    source category is the one that answers "of the facts the model knew, how many did it lose?",
    and is comparable across held-out sets of different make-up. 0 when the source is empty.
    """
    out: dict[str, dict[str, float]] = {"positive": {}, "negative": {}}
    for name, pairs in (("positive", POSITIVE), ("negative", NEGATIVE)):
        for s, t in pairs:
            row = matrix[_RANK[s]]
            n = sum(row)
            out[name][f"{s}->{t}"] = row[_RANK[t]] / n if n else 0.0
    return out


def shift_totals(matrix: Sequence[Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(shifted facts, facts that could shift that way) for each direction.

    positive_shift = (UK→MK + UK→HK + MK→HK) / (|UK| + |MK|): of the facts that could improve, the
    share that did; negative_shift = (HK→MK + HK→UK + MK→UK) / (|HK| + |MK|): of the facts that
    could be lost, the share that were. (HighlyKnown cannot shift up, Unknown cannot shift down.)
    """
    rows = {c: sum(matrix[_RANK[c]]) for c in CATEGORIES}
    pos = sum(matrix[_RANK[s]][_RANK[t]] for s, t in POSITIVE)
    neg = sum(matrix[_RANK[s]][_RANK[t]] for s, t in NEGATIVE)
    return {
        "positive": (pos, rows["Unknown"] + rows["MaybeKnown"]),
        "negative": (neg, rows["HighlyKnown"] + rows["MaybeKnown"]),
    }


def fact_reasons(
    *,
    shift: str,
    base_refused: bool,
    adapted_refused: bool,
    adapted_answer_key: str,
    relation: str | None,
    exploded: set[str],
    targets: set[str],
    injected_relations: set[str],
) -> list[str]:
    """The paper's reasons (Table 5) that apply to one shifted fact; they may overlap.

    - non_refusal (positive shifts only): the base model refused (first greedy answer) and the
      adapted model answers: training removed a refusal rather than adding knowledge;
    - explosion: the adapted first answer is an exploded answer (see collapse.exploded_answers);
    - target_based: the adapted first answer equals (normalised) a training target answer;
    - same_relation: the fact's relation is the relation of some injected fact (the paper's
      "domain shift", with the relation standing in for the DBpedia domain).
    `adapted_answer_key` is the normalised adapted first answer.
    """
    out = []
    if shift == "positive" and base_refused and not adapted_refused:
        out.append("non_refusal")
    if adapted_answer_key and adapted_answer_key in exploded:
        out.append("explosion")
    if adapted_answer_key and adapted_answer_key in targets:
        out.append("target_based")
    if relation and relation in injected_relations:
        out.append("same_relation")
    return out


def reason_shares(shifted: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per direction: n shifted facts and the share of them each reason covers, plus `explained`
    (share with at least one reason). Rows need `shift` ("positive"/"negative") and `reasons`.
    non_refusal is reported for positive shifts only, as in the paper."""
    groups: dict[str, list[list[str]]] = {"positive": [], "negative": []}
    for row in shifted:
        if row["shift"] in groups:
            groups[row["shift"]].append(list(row["reasons"]))
    out: dict[str, dict[str, float | int]] = {}
    for name, rows in groups.items():
        n = len(rows)
        names = REASONS if name == "positive" else REASONS[1:]
        entry: dict[str, float | int] = {"n": n}
        for r in names:
            entry[r] = sum(r in rs for rs in rows) / n if n else 0.0
        entry["explained"] = sum(bool(rs) for rs in rows) / n if n else 0.0
        out[name] = entry
    return out
