"""audit.json's measured sections (metrics, shift, collapse, refusals, benchmarks, sanity, examples)
from the arms' answers, and one per_fact.jsonl row per evaluated fact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kia.audit import collapse as col
from kia.audit import shift as sh
from kia.audit.metrics import Arms, entry, full_share, mean_p_greedy, share_paired, share_single
from kia.audit.policy import Policy
from kia.audit.refusals import RefusalDetector, refusal_summary
from kia.audit.stats import cluster_bootstrap, fdr
from kia.facts import normalize


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

    # An audit runs a dozen or more paired tests: at p < 0.05 one metric in twenty that did not move
    # would look significant, so each p-value also gets its false-discovery-rate adjusted q-value.
    for m, q in zip(metrics.values(), fdr([m["p_value"] for m in metrics.values()]), strict=True):
        m["q_value"] = q

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
        per_fact.append(fact_row(held, i, (hb[i], ha[i]), (ref_b[i], ref_a[i]), d, reasons))
    for s in (inj, para):
        sb, sa = p[s.name]
        rb, ra = detector.flags(s.first("base")), detector.flags(s.first("adapted"))
        per_fact += [fact_row(s, i, (sb[i], sa[i]), (rb[i], ra[i]), None, []) for i in range(len(s.facts))]

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
            "base_model_matches": True,  # kia.engines.adapters.check_adapter refuses a mismatch before this
            "noop": lora_b_all_zero or (bool(changed) and not any(changed)),
            "changed_answers": sum(changed) / len(changed) if changed else 0.0,
            "lora_b_all_zero": lora_b_all_zero,
        },
        "examples": _examples(held, shifted, exploded_keys, base_cat, ad_cat),
    }
    return report, per_fact


def fact_row(
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
