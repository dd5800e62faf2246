"""The bias report of a training mixture: does it lean on a few answers or on one relation?

    kia build runs/p1 --unknown 10   # bias.json warns: each answer is 10% of the training rows

Why: Pletenev et al. (2025, §6.3-6.4) saw adapters collapse onto answers over-represented in their
training data. After 10 Unknown facts alone (each answer 10% of the rows) the model gave "Alençon"
9,393 times across 21,036 questions, and the mean count per distinct answer rose from 3.72 to 9.22;
mixing in HighlyKnown facts (smaller shares) weakened the effect. Shifts of known facts also
concentrated in the trained relations ("domain shift"). So `kia build` measures the training
answers and relations and warns before anyone trains.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

MAX_TOP_SHARE = 0.05
MAX_RELATION_SHARE = 0.5
CITATION = "Pletenev et al. 2025 saw adapters collapse onto answers over-represented in training"


def normalized_entropy(counts: Mapping[Any, int]) -> float:
    """H / log(k): the Shannon entropy of the answer distribution over its maximum, k = distinct answers.

    H = -sum_a p_a log p_a with p_a = count_a / total. 1.0 means every answer is equally frequent;
    values near 0 mean a few answers dominate. Dividing by log k makes mixtures of different sizes
    comparable; one distinct answer (or none) gives 0, the most concentrated case.
    """
    total = sum(counts.values())
    k = sum(1 for c in counts.values() if c)
    if total == 0 or k < 2:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return h / math.log(k)


def answer_counts(answers: Sequence[str]) -> tuple[Counter[str], dict[str, str]]:
    """Counts per normalised answer ("Paris" and "paris." are one answer) and a display form for each."""
    from kia.facts import normalize

    counts: Counter[str] = Counter()
    display: dict[str, str] = {}
    for a in answers:
        key = normalize(a) or a  # an answer that normalises to nothing still counts as itself
        counts[key] += 1
        display.setdefault(key, a)
    return counts, display


def bias_report(
    rows: Sequence[Mapping[str, Any]],
    relations: Mapping[str, str | None],
    *,
    max_top_share: float = MAX_TOP_SHARE,
    max_relation_share: float = MAX_RELATION_SHARE,
    available_relations: int | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """Answer frequencies, per-relation counts and warnings for the training rows.

    `rows` need `answer` and `fact_id`; `relations` maps fact ids to relations. Metrics:
    - top share = count of the most frequent normalised answer / rows, the over-representation the
      paper saw models collapse onto; warned when > `max_top_share`;
    - normalised answer entropy (see `normalized_entropy`);
    - mean and standard deviation of the count per distinct answer, as the paper's Table 4 reports
      model outputs, so training data and audit outputs read on the same scale;
    - relation share = rows of the largest relation / rows; warned when > `max_relation_share` and
      the probe offers more than one relation (`available_relations`, default: those in the rows).
    """
    n = len(rows)
    counts, display = answer_counts([str(r["answer"]) for r in rows])
    per_relation = Counter(relations.get(r["fact_id"]) or "-" for r in rows)
    top_answers = [{"answer": display[a], "count": c, "share": c / n} for a, c in counts.most_common(top)]
    top_share = top_answers[0]["share"] if top_answers else 0.0
    values = list(counts.values())
    mean = sum(values) / len(values) if values else 0.0
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else 0.0
    rel_name, rel_count = per_relation.most_common(1)[0] if per_relation else ("-", 0)
    rel_share = rel_count / n if n else 0.0
    n_relations = available_relations if available_relations is not None else len(per_relation)
    warnings = []
    if top_answers and top_share > max_top_share:
        t = top_answers[0]
        warnings.append(
            f"answer '{t['answer']}' is {t['count']} of {n} training rows ({top_share:.1%}, threshold "
            f"{max_top_share:.0%}): {CITATION} (after 10 Unknown facts it answered 'Alençon' 9,393 times); "
            "add --highly-known facts or inject more facts at once"
        )
    if rel_name != "-" and n_relations > 1 and rel_share > max_relation_share:
        warnings.append(
            f"relation '{rel_name}' holds {rel_count} of {n} training rows ({rel_share:.0%}, threshold "
            f"{max_relation_share:.0%}): its answers may spill over onto other questions of that relation "
            f"({CITATION}, and known facts of the trained relations shifted most); try --stratify relation"
        )
    return {
        "rows": n,
        "distinct_answers": len(counts),
        "top_answers": top_answers,
        "top_share": top_share,
        "answer_entropy": normalized_entropy(counts),
        "mean_count_per_answer": mean,
        "std_count_per_answer": std,
        "relations": dict(sorted(per_relation.items())),
        "top_relation": {"relation": rel_name, "count": rel_count, "share": rel_share},
        "thresholds": {"max_top_share": max_top_share, "max_relation_share": max_relation_share},
        "warnings": warnings,
    }
