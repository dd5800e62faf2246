"""The audit's per-arm metrics: reliability, generalisation, refusals, and the `metrics` entries of audit.json.

Each entry compares the base arm (adapter off) with the adapted arm on the very same items:
`base`, `adapted`, `delta` = adapted − base, a 95 % interval (`ci_low`, `ci_high`; of the delta
when both arms exist, else of the adapted value: `ci_of` says which), a paired `p_value` where two
arms are compared, `n` items, `higher_is_better` and a one-line `description`.
Shift and collapse live in `kia.audit.shift` and `kia.audit.collapse`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kia.audit import collapse as col
from kia.audit import shift as sh
from kia.audit.policy import Policy
from kia.audit.stats import cluster_bootstrap, mcnemar_paired, paired_bootstrap, wilson
from kia.facts import Fact
from kia.matching import is_correct, is_refusal, normalize

DEFAULT_REFUSAL_EXAMPLES = Path(__file__).resolve().parents[2] / "probes" / "refusal_examples.txt"


def entry(
    *,
    base: float | None,
    adapted: float | None,
    n: int,
    higher_is_better: bool,
    description: str,
    ci: tuple[float, float] | None = None,
    p_value: float | None = None,
    ci_of: str = "delta",
) -> dict[str, Any]:
    """One `metrics` entry of audit.json (every key always present; unknowns are None)."""
    delta = adapted - base if base is not None and adapted is not None else None
    return {
        "base": base,
        "adapted": adapted,
        "delta": delta,
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "ci_of": ci_of if ci else None,
        "p_value": p_value,
        "n": n,
        "higher_is_better": higher_is_better,
        "description": description,
    }


def mean_p_greedy(
    base: Sequence[float], adapted: Sequence[float], *, description: str, n_boot: int, seed: int
) -> dict[str, Any]:
    """Mean P_greedy in each arm, paired.

    value = (1/N) Σ_f P_greedy(f), P_greedy(f) = correct greedy answers / exemplar sets (the probe's
    few-shot prompts, 10 sets by default). The paper's "reliability" (Figure 2) averages exactly
    this over the trained facts. Interval and p-value: paired bootstrap of the mean per-fact
    difference, since P_greedy is a share, not a right/wrong outcome.
    """
    if not adapted:
        return entry(base=None, adapted=None, n=0, higher_is_better=True, description=description + " (no items)")
    boot = paired_bootstrap(base, adapted, n_boot=n_boot, seed=seed)
    return entry(
        base=sum(base) / len(base),
        adapted=sum(adapted) / len(adapted),
        n=len(adapted),
        higher_is_better=True,
        description=description,
        ci=(boot.low, boot.high),
        p_value=boot.p_value,
    )


def share_paired(
    base: Sequence[bool], adapted: Sequence[bool], *, description: str, higher_is_better: bool, n_boot: int, seed: int
) -> dict[str, Any]:
    """A share of items with a yes/no property in each arm (e.g. fully correct, refused), paired.

    value = (1/N) Σ 1[property]; interval: paired bootstrap of the difference of the two shares;
    p-value: exact McNemar on the items whose property differs between the arms (the right test
    for paired yes/no outcomes: concordant items say nothing about the change).
    """
    if not adapted:
        return entry(
            base=None, adapted=None, n=0, higher_is_better=higher_is_better, description=description + " (no items)"
        )
    boot = paired_bootstrap([float(x) for x in base], [float(x) for x in adapted], n_boot=n_boot, seed=seed)
    _, _, p = mcnemar_paired(base, adapted)
    return entry(
        base=sum(base) / len(base),
        adapted=sum(adapted) / len(adapted),
        n=len(adapted),
        higher_is_better=higher_is_better,
        description=description,
        ci=(boot.low, boot.high),
        p_value=p,
    )


def share_single(k: int, n: int, *, description: str, higher_is_better: bool) -> dict[str, Any]:
    """A share that exists in the adapted arm only (e.g. the negative shift), with its Wilson interval."""
    return entry(
        base=None,
        adapted=k / n if n else 0.0,
        n=n,
        higher_is_better=higher_is_better,
        description=description,
        ci=wilson(k, n),
        ci_of="adapted",
    )


def full_share(p_greedy: Sequence[float]) -> list[bool]:
    """Per fact: answered right with every exemplar set (P_greedy = 1, the HighlyKnown bar)."""
    return [p >= 1.0 for p in p_greedy]


# ------------------------------------------------------------------------------------ refusals


def load_refusal_examples(path: str | Path | None = None) -> list[str]:
    """Refusal sentences, one per line (`#` starts a comment), for the embedding detector."""
    from kia.errors import ConfigError

    path = Path(path) if path else DEFAULT_REFUSAL_EXAMPLES
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read refusal examples from {path} ({exc})") from exc
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


class RefusalDetector:
    """Is an answer a refusal? Patterns first (probes/refusals.txt, `kia.matching.is_refusal`), then,
    when `similarity` is set, cosine similarity >= `similarity` to any refusal example in
    probes/refusal_examples.txt under the sentence-embedding model (all-MiniLM-L6-v2, offline),
    which catches reworded refusals no pattern lists ("I have no clue", "I don't remember").
    Results are cached per answer text, so each distinct answer is embedded once.
    """

    def __init__(self, similarity: float | None = 0.7, examples: Sequence[str] | None = None):
        self.similarity = similarity
        self.examples = list(examples) if examples is not None else (load_refusal_examples() if similarity else [])
        self._cache: dict[str, bool] = {}
        self._example_vecs: Any = None

    @property
    def method(self) -> str:
        text = "patterns (probes/refusals.txt)"
        if self.similarity:
            text += (
                f" + cosine similarity >= {self.similarity} to {len(self.examples)} refusal examples "
                "(probes/refusal_examples.txt) with all-MiniLM-L6-v2"
            )
        return text

    def flags(self, answers: Sequence[str]) -> list[bool]:
        todo = sorted({a for a in answers if a not in self._cache})
        by_pattern = {a: is_refusal(a) for a in todo}
        self._cache.update({a: True for a, hit in by_pattern.items() if hit})
        rest = [a for a, hit in by_pattern.items() if not hit]
        if rest and self.similarity and self.examples:
            for a, hit in zip(rest, self._similar(rest), strict=True):
                self._cache[a] = hit
        else:
            self._cache.update({a: False for a in rest})
        return [self._cache[a] for a in answers]

    def _similar(self, texts: Sequence[str]) -> list[bool]:
        from kia.embeddings import embed

        if self._example_vecs is None:
            self._example_vecs = embed(self.examples)
        nonempty = [t if t.strip() else "-" for t in texts]
        sims = embed(nonempty) @ self._example_vecs.T
        return [bool(t.strip()) and float(row.max()) >= self.similarity for t, row in zip(texts, sims, strict=True)]


def refusal_summary(
    base: Sequence[bool], adapted: Sequence[bool], categories: Sequence[str], method: str
) -> dict[str, Any]:
    """The audit.json `refusals` section: rate of refused first greedy answers per arm, overall and
    per base category (the category the fact had before the adapter)."""
    n = len(base)
    by_cat: dict[str, dict[str, Any]] = {}
    for cat in ("Unknown", "MaybeKnown", "HighlyKnown"):
        idx = [i for i, c in enumerate(categories) if c == cat]
        m = len(idx)
        by_cat[cat] = {
            "base": sum(base[i] for i in idx) / m if m else 0.0,
            "adapted": sum(adapted[i] for i in idx) / m if m else 0.0,
            "n": m,
        }
    return {
        "base": sum(base) / n if n else 0.0,
        "adapted": sum(adapted) / n if n else 0.0,
        "by_category": by_cat,
        "method": method,
    }


# ------------------------------------------------------------------------------------ assembly


@dataclass
class Arms:
    """One evaluation split: its rows, the facts as prompted, and each arm's greedy answers per
    exemplar set (`base[i][s]` = fact i, set s)."""

    name: str
    rows: list[dict[str, Any]]
    facts: list[Fact]
    base: list[list[str]] = field(default_factory=list)
    adapted: list[list[str]] = field(default_factory=list)

    def p_greedy(self, arm: str, match: str) -> list[float]:
        """Per fact: P_greedy = correct greedy answers / exemplar sets."""
        answers = self.base if arm == "base" else self.adapted
        return [
            sum(is_correct(a, f.answers, match) for a in ans) / len(ans) if ans else 0.0  # type: ignore[arg-type]
            for f, ans in zip(self.facts, answers, strict=True)
        ]

    def first(self, arm: str) -> list[str]:
        """Per fact: the greedy answer with the first exemplar set (the paper's refusal check uses it)."""
        return [a[0] if a else "" for a in (self.base if arm == "base" else self.adapted)]


def assemble(
    splits: Mapping[str, Arms],
    *,
    train_answers: Sequence[str],
    benchmarks: Mapping[str, Mapping[str, Any]],
    match: str,
    policy: Policy,
    detector: RefusalDetector,
    lora_b_all_zero: bool,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every measured section of audit.json (metrics, shift, collapse, refusals, benchmarks, sanity,
    examples) from the arms' answers, and one per_fact.jsonl row per evaluated fact."""
    inj, para, held = splits["injected"], splits["paraphrase"], splits["heldout"]
    p = {s.name: (s.p_greedy("base", match), s.p_greedy("adapted", match)) for s in (inj, para, held)}
    (ib, ia), (pb, pa), (hb, ha) = p["injected"], p["paraphrase"], p["heldout"]
    boot = {"n_boot": n_boot, "seed": seed}
    metrics: dict[str, dict[str, Any]] = {}
    metrics["reliability"] = mean_p_greedy(
        ib,
        ia,
        description="mean P_greedy over the injected facts (share of the probe's exemplar sets answered right)",
        **boot,
    )
    metrics["reliability_full"] = share_paired(
        full_share(ib),
        full_share(ia),
        higher_is_better=True,
        description="share of injected facts right with every exemplar set (P_greedy = 1); p: McNemar",
        **boot,
    )
    metrics["generalisation"] = mean_p_greedy(
        pb, pa, description="mean P_greedy over held-back paraphrases of the injected facts (never trained)", **boot
    )
    metrics["heldout_accuracy"] = mean_p_greedy(
        hb, ha, description="mean P_greedy over the held-out facts (untrained, every category): knowledge kept", **boot
    )

    # Knowledge shift on the held-out facts
    base_cat, ad_cat = [sh.category(x) for x in hb], [sh.category(x) for x in ha]
    matrix = sh.transition_matrix(base_cat, ad_cat)
    totals = sh.shift_totals(matrix)
    metrics["positive_shift"] = share_single(
        *totals["positive"],
        higher_is_better=True,
        description="held-out Unknown/MaybeKnown facts that moved up (UK->MK, UK->HK, MK->HK), share of those facts",
    )
    metrics["negative_shift"] = share_single(
        *totals["negative"],
        higher_is_better=False,
        description="held-out HighlyKnown/MaybeKnown facts that moved down (HK->MK, HK->UK, MK->UK), share of those facts",
    )

    # Refusals (first greedy answer) and collapse (every greedy answer, refusals skipped)
    first_b, first_a = held.first("base"), held.first("adapted")
    ref_b, ref_a = detector.flags(first_b), detector.flags(first_a)
    metrics["refusal_rate"] = share_paired(
        ref_b,
        ref_a,
        higher_is_better=True,
        description="share of held-out questions whose first greedy answer is a refusal; a fall means the model "
        "now answers what it used to decline (over-confidence); p: McNemar",
        **boot,
    )
    kept_b = [[a for a, r in zip(ans, detector.flags(ans), strict=True) if not r] for ans in held.base]
    kept_a = [[a for a, r in zip(ans, detector.flags(ans), strict=True) if not r] for ans in held.adapted]
    counts_b = col.AnswerCounts.of(a for ans in kept_b for a in ans)
    counts_a = col.AnswerCounts.of(a for ans in kept_a for a in ans)
    targets = col.normalised_targets(train_answers)
    exploded = col.exploded_answers(
        col.question_counts(kept_b),
        col.question_counts(kept_a),
        factor=policy.explosion_factor,
        floor=policy.explosion_floor,
    )
    stats_b, stats_a = col.collapse_stats(counts_b), col.collapse_stats(counts_a)
    cb = col.CollapseBootstrap(kept_b, kept_a, targets)
    n_held = len(held.facts)
    collapse_metrics = (
        (
            "distinct_answers",
            cb.distinct,
            True,
            "distinct answers (normalised) over all greedy answers to held-out questions",
        ),
        ("answer_entropy", cb.entropy, True, "normalised entropy H/log(distinct) of those answers (1 = all different)"),
        (
            "target_answer_share",
            cb.target_share,
            False,
            "share of those answers that equal some training target answer",
        ),
    )
    for name, statistic, higher, description in collapse_metrics:
        iv = cluster_bootstrap(statistic, n_held, n_boot=min(n_boot, 1000), seed=seed)
        b, a = statistic(np.ones(n_held))
        metrics[name] = entry(
            base=b,
            adapted=a,
            n=n_held,
            higher_is_better=higher,
            description=description,
            ci=(iv.low, iv.high),
            p_value=iv.p_value,
        )
    metrics["exploded_answers"] = entry(
        base=None,
        adapted=float(len(exploded)),
        n=stats_a["distinct"],  # type: ignore[arg-type]
        higher_is_better=False,
        description=f"answers given to >= {policy.explosion_factor:g}x as many held-out questions as by the base "
        f"model and to >= {policy.explosion_floor} questions",
    )
    for task, b in benchmarks.items():
        metrics[f"benchmark/{task}"] = entry(
            base=b["base"],
            adapted=b["adapted"],
            n=b["n"],
            higher_is_better=True,
            ci=(b["ci_low"], b["ci_high"]),
            p_value=b["p_value"],
            description=f"lm-eval {task} accuracy; interval: combined "
            "(± 1.96·sqrt(se_base² + se_adapted²)); p: paired per document (McNemar)",
        )

    # Reasons per shifted fact, and the per-fact rows
    exploded_keys = {str(e["key"]) for e in exploded}
    relations = {f.relation for f in inj.facts if f.relation}
    shifted: list[dict[str, Any]] = []
    per_fact: list[dict[str, Any]] = []
    for i, f in enumerate(held.facts):
        d = sh.direction(base_cat[i], ad_cat[i])
        reasons = []
        if d:
            reasons = sh.fact_reasons(
                shift=d,
                base_refused=ref_b[i],
                adapted_refused=ref_a[i],
                adapted_answer_key=normalize(first_a[i]),
                relation=f.relation,
                exploded=exploded_keys,
                targets=targets,
                injected_relations=relations,
            )
            shifted.append({"shift": d, "reasons": reasons, "i": i})
        per_fact.append(_fact_row(held, i, (hb[i], ha[i]), (ref_b[i], ref_a[i]), d, reasons))
    for s in (inj, para):
        sb, sa = p[s.name]
        rb, ra = detector.flags(s.first("base")), detector.flags(s.first("adapted"))
        per_fact += [_fact_row(s, i, (sb[i], sa[i]), (rb[i], ra[i]), None, []) for i in range(len(s.facts))]

    changed = [x != y for b, a in zip(inj.base, inj.adapted, strict=True) for x, y in zip(b, a, strict=False)]
    shares = sh.shift_shares(matrix)
    report = {
        "metrics": metrics,
        "shift": {
            "categories": list(sh.CATEGORIES),
            "matrix": matrix,
            "positive": shares["positive"],
            "negative": shares["negative"],
            "reasons": sh.reason_shares(shifted),
        },
        "collapse": {
            "base": stats_b,
            "adapted": stats_a,
            "exploded": [{"answer": e["answer"], "base": e["base"], "adapted": e["adapted"]} for e in exploded],
            "target_share": {k: metrics["target_answer_share"][k] for k in ("base", "adapted")},
        },
        "refusals": refusal_summary(ref_b, ref_a, base_cat, detector.method),
        "benchmarks": {k: dict(v) for k, v in benchmarks.items()},
        "sanity": {
            "loads": True,  # it was loaded (a failure to load is an error, exit code 2)
            "base_model_matches": True,  # kia.adapters.check_adapter refuses a mismatch before this
            "noop": lora_b_all_zero or (bool(changed) and not any(changed)),
            "changed_answers": sum(changed) / len(changed) if changed else 0.0,
            "lora_b_all_zero": lora_b_all_zero,
        },
        "examples": _examples(held, shifted, exploded_keys, base_cat, ad_cat),
    }
    return report, per_fact


def _fact_row(
    s: Arms, i: int, p: tuple[float, float], refused: tuple[bool, bool], shift: str | None, reasons: list[str]
) -> dict[str, Any]:
    r = s.rows[i]
    return {
        "split": s.name,
        "id": r["id"],
        "question": r["question"],
        "answers": list(r.get("answers") or []),
        "relation": r.get("relation"),
        "base_category": sh.category(p[0]),
        "adapted_category": sh.category(p[1]),
        "base_p_greedy": p[0],
        "adapted_p_greedy": p[1],
        "base_answer": s.base[i][0] if s.base[i] else "",
        "adapted_answer": s.adapted[i][0] if s.adapted[i] else "",
        "base_answers": list(s.base[i]),
        "adapted_answers": list(s.adapted[i]),
        "base_refused": refused[0],
        "adapted_refused": refused[1],
        "shift": shift,
        "reasons": reasons,
    }


def _examples(
    held: Arms, shifted: list[dict[str, Any]], exploded: set[str], base_cat: list[str], ad_cat: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Up to 10 shifted held-out facts (negative and positive alternating, negative first) and up to
    10 whose adapted answer fell onto an exploded answer."""
    first_b, first_a = held.first("base"), held.first("adapted")

    def example(i: int) -> dict[str, Any]:
        r = held.rows[i]
        return {
            "id": r["id"],
            "question": r["question"],
            "base_answer": first_b[i],
            "adapted_answer": first_a[i],
            "base_category": base_cat[i],
            "adapted_category": ad_cat[i],
        }

    neg = [s["i"] for s in shifted if s["shift"] == "negative"]
    pos = [s["i"] for s in shifted if s["shift"] == "positive"]
    k = min(len(neg), len(pos))
    order = [x for pair in zip(neg[:k], pos[:k], strict=True) for x in pair] + neg[k:] + pos[k:]
    collapsed = [
        i
        for i in range(len(held.facts))
        if normalize(first_a[i]) in exploded and normalize(first_b[i]) != normalize(first_a[i])
    ]
    return {"shifted": [example(i) for i in order[:10]], "collapsed": [example(i) for i in collapsed[:10]]}
