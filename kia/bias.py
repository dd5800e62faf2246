"""The bias report of a training mixture: does it lean on a few answers or one relation?

Pletenev et al. (2025, §6.3-6.4) saw adapters trained on data that over-represents some answers
collapse onto them: after training on 10 Unknown facts the model gave "Alençon" 9,393 times. So
kia warns before training when the answers or relations are concentrated.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kia.facts import Fact
from kia.matching import normalize


def answer_entropy(counts: Mapping[str, int]) -> float:
    """Normalised entropy H / log(k) of the answer distribution, k = number of distinct answers.

    1.0 means every answer is equally frequent; values near 0 mean a few answers dominate.
    A single distinct answer has entropy 0 by this definition.
    """
    total = sum(counts.values())
    k = len(counts)
    if total == 0 or k < 2:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return h / math.log(k)


def bias_report(
    rows: Sequence[Mapping[str, Any]],
    facts: Mapping[str, Fact],
    max_top_share: float = 0.05,
    max_relation_share: float = 0.5,
) -> dict[str, Any]:
    """Answer frequencies, per-relation counts and warnings for the training rows.

    top share = count of the most frequent (normalised) answer / training rows;
    relation share = training rows of the largest relation / training rows.
    """
    answers = Counter(normalize(r["answer"]) for r in rows)
    display: dict[str, str] = {}
    for r in rows:
        display.setdefault(normalize(r["answer"]), r["answer"])
    relations = Counter((facts[r["fact_id"]].relation if r["fact_id"] in facts else None) or "-" for r in rows)
    n = max(1, len(rows))
    top = [{"answer": display[a], "count": c, "share": c / n} for a, c in answers.most_common(10)]
    top_share = top[0]["share"] if top else 0.0
    rel_name, rel_count = relations.most_common(1)[0] if relations else ("-", 0)
    warnings = []
    if top_share > max_top_share and answers.most_common(1)[0][1] > 1:
        warnings.append(
            f"answer '{top[0]['answer']}' is {top_share:.1%} of the training rows (threshold {max_top_share:.0%}): "
            "adapters trained on over-represented answers collapse onto them (Pletenev et al. 2025)"
        )
    if len(relations) > 1 and rel_count / n > max_relation_share:
        warnings.append(
            f"relation '{rel_name}' holds {rel_count / n:.0%} of the training rows (threshold "
            f"{max_relation_share:.0%}): expect its answers to spill over onto other questions"
        )
    return {
        "rows": len(rows),
        "distinct_answers": len(answers),
        "top_answers": top,
        "top_share": top_share,
        "answer_entropy": answer_entropy(answers),
        "relations": dict(sorted(relations.items())),
        "max_relation_share": rel_count / n if rows else 0.0,
        "thresholds": {"max_top_share": max_top_share, "max_relation_share": max_relation_share},
        "warnings": warnings,
    }
