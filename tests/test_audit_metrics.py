"""Tier 1: every audit metric on small hand-computed cases (no model).

The `WORLD` below is a Table-4/5-style case worked out by hand: 12 held-out facts (4 per base
category), 3 exemplar sets each, with known transitions, refusals, an exploded answer ("Zed", also
a training target) and known reasons for every shifted fact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kia.audit import assemble as asm
from kia.audit import collapse as col
from kia.audit import metrics as met
from kia.audit import refusals
from kia.audit import shift as sh
from kia.audit.policy import Policy
from kia.facts import Fact

IDK = "I don't know."


def fact(i: str, rel: str) -> Fact:
    return Fact(id=i, question=f"Question about {i}?", answers=(f"A-{i}",), relation=rel)


def heldout_world() -> met.Arms:
    """Base and adapted greedy answers (3 sets) of 12 held-out facts; see the module docstring."""
    right = lambda i: f"A-{i}"  # noqa: E731
    spec = {
        # id: (relation, base answers, adapted answers)
        "h0": ("r1", [right("h0")] * 3, [right("h0")] * 3),  # HK -> HK
        "h1": ("r1", [right("h1")] * 3, ["Zed"] * 3),  # HK -> UK: explosion, target, same relation
        "h2": ("r2", [right("h2")] * 3, [right("h2")] * 2 + ["Nowhere"]),  # HK -> MK: unexplained
        "h3": ("r2", [right("h3")] * 3, [right("h3")] * 3),  # HK -> HK
        "m0": ("r2", [right("m0"), "Nowhere", "Nowhere"], [right("m0")] * 3),  # MK -> HK: unexplained
        "m1": ("r2", [right("m1"), "Nowhere", "Nowhere"], [right("m1"), "Nowhere", "Nowhere"]),  # MK -> MK
        "m2": ("r2", [right("m2"), "Nowhere", "Nowhere"], ["Zed"] * 3),  # MK -> UK: explosion, target
        "m3": ("r2", [right("m3"), "Nowhere", "Nowhere"], [right("m3"), "Nowhere", "Nowhere"]),  # MK -> MK
        "u0": ("r1", [IDK] * 3, [right("u0")] * 3),  # UK -> HK: non-refusal, same relation
        "u1": ("r2", [IDK] * 3, ["Zed"] * 3),  # UK -> UK
        "u2": ("r2", ["Nowhere"] * 3, [right("u2"), "Nowhere", "Nowhere"]),  # UK -> MK: unexplained
        "u3": ("r2", ["Nowhere"] * 3, ["Nowhere"] * 3),  # UK -> UK
    }
    facts = [fact(i, rel) for i, (rel, _, _) in spec.items()]
    rows = [f.to_dict() for f in facts]
    return met.Arms("heldout", rows, facts, [s[1] for s in spec.values()], [s[2] for s in spec.values()])


def injected_world() -> tuple[met.Arms, met.Arms, list[str]]:
    answers = ["Zed", "Ione", "Itwo", "Ithree"]
    facts = [Fact(id=f"i{k}", question=f"Injected {k}?", answers=(a,), relation="r1") for k, a in enumerate(answers)]
    inj = met.Arms("injected", [f.to_dict() for f in facts], facts, [[IDK] * 3] * 4, [[a] * 3 for a in answers])
    para_facts = [
        Fact(id=f"i{k}", question=f"Reworded {k}?", answers=(a,), relation="r1") for k, a in enumerate(answers)
    ]
    para_rows = [{**f.to_dict(), "id": f"i{k}~p0", "source_id": f"i{k}"} for k, f in enumerate(para_facts)]
    para_adapted = [[answers[0]] * 3, [answers[1]] * 3, ["Nowhere"] * 3, ["Nowhere"] * 3]
    para = met.Arms("paraphrase", para_rows, para_facts, [[IDK] * 3] * 4, para_adapted)
    return inj, para, answers


def assemble(**kw):
    inj, para, targets = injected_world()
    args = {
        "train_answers": targets,
        "benchmarks": {},
        "match": "contains",
        "policy": Policy(explosion_floor=3, explosion_factor=3.0),
        "detector": refusals.RefusalDetector(similarity=None),
        "lora_b_all_zero": False,
        "n_boot": 500,
        "seed": 0,
    } | kw
    return asm.assemble({"injected": inj, "paraphrase": para, "heldout": heldout_world()}, **args)


# ------------------------------------------------------------------------------------------- shift


def test_category_and_direction():
    assert [sh.category(p) for p in (0.0, 0.1, 0.9, 1.0)] == ["Unknown", "MaybeKnown", "MaybeKnown", "HighlyKnown"]
    assert sh.direction("Unknown", "HighlyKnown") == "positive"
    assert sh.direction("MaybeKnown", "Unknown") == "negative"
    assert sh.direction("MaybeKnown", "MaybeKnown") is None


def test_transition_matrix_shares_and_totals_by_hand():
    base = ["Unknown"] * 10 + ["MaybeKnown"] * 5 + ["HighlyKnown"] * 20
    adapted = (
        ["Unknown"] * 6
        + ["MaybeKnown"] * 3
        + ["HighlyKnown"]  # UK row: 6, 3, 1
        + ["Unknown"] * 2
        + ["MaybeKnown"] * 2
        + ["HighlyKnown"]  # MK row: 2, 2, 1
        + ["Unknown"] * 4
        + ["MaybeKnown"] * 1
        + ["HighlyKnown"] * 15  # HK row: 4, 1, 15
    )
    m = sh.transition_matrix(base, adapted)
    assert m == [[6, 3, 1], [2, 2, 1], [4, 1, 15]]
    shares = sh.shift_shares(m)
    assert shares["positive"] == {
        "Unknown->MaybeKnown": 0.3,
        "Unknown->HighlyKnown": 0.1,
        "MaybeKnown->HighlyKnown": 0.2,
    }
    assert shares["negative"] == {
        "HighlyKnown->MaybeKnown": 0.05,
        "HighlyKnown->Unknown": 0.2,
        "MaybeKnown->Unknown": 0.4,
    }
    totals = sh.shift_totals(m)
    assert totals["positive"] == (3 + 1 + 1, 10 + 5)
    assert totals["negative"] == (1 + 4 + 2, 20 + 5)


def test_empty_source_category_gives_zero_share():
    m = sh.transition_matrix(["HighlyKnown"], ["HighlyKnown"])
    assert sh.shift_shares(m)["positive"]["Unknown->HighlyKnown"] == 0.0
    assert sh.shift_totals(m)["positive"] == (0, 0)
    with pytest.raises(ValueError):
        sh.transition_matrix(["Unknown"], [])


def test_reasons_per_fact_and_table5_style_shares():
    common = {"exploded": {"zed"}, "targets": {"zed", "ione"}, "injected_relations": {"r1"}}
    r = sh.fact_reasons(
        shift="positive", base_refused=True, adapted_refused=False, adapted_answer_key="paris", relation="r1", **common
    )
    assert r == ["non_refusal", "same_relation"]
    r = sh.fact_reasons(
        shift="negative", base_refused=True, adapted_refused=False, adapted_answer_key="zed", relation="r2", **common
    )
    assert r == ["explosion", "target_based"]  # non-refusal counts for positive shifts only
    r = sh.fact_reasons(
        shift="positive", base_refused=False, adapted_refused=False, adapted_answer_key="ione", relation=None, **common
    )
    assert r == ["target_based"]
    # The paper's notebook cross-check (1 UK + 10 HK): 45 UK->HK, 9 refusal-related, 3 target,
    # 4 domain, 13 explained; 153 HK->UK, 1 explosion, 0 target, 3 domain, 4 explained.
    pos = [["non_refusal"]] * 9 + [["target_based"]] * 3 + [["same_relation"]] + [[]] * 32
    pos[0] = ["non_refusal", "same_relation"]
    pos[1] = ["non_refusal", "same_relation"]
    pos[2] = ["non_refusal", "same_relation"]  # 4 domain in total, 13 explained
    neg = [["explosion"]] + [["same_relation"]] * 3 + [[]] * 149
    shares = sh.reason_shares(
        [{"shift": "positive", "reasons": x} for x in pos] + [{"shift": "negative", "reasons": x} for x in neg]
    )
    assert shares["positive"]["n"] == 45
    assert shares["positive"]["non_refusal"] == pytest.approx(9 / 45)  # 0.20 in Table 5
    assert shares["positive"]["target_based"] == pytest.approx(3 / 45)  # 0.07
    assert shares["positive"]["same_relation"] == pytest.approx(4 / 45)  # 0.09
    assert shares["positive"]["explained"] == pytest.approx(13 / 45)  # 0.29
    assert shares["negative"]["n"] == 153
    assert shares["negative"]["explosion"] == pytest.approx(1 / 153)  # 0.01
    assert shares["negative"]["same_relation"] == pytest.approx(3 / 153)  # 0.02
    assert shares["negative"]["explained"] == pytest.approx(4 / 153)  # 0.03
    assert "non_refusal" not in shares["negative"]
    assert sh.reason_shares([])["positive"] == {
        "n": 0,
        "non_refusal": 0.0,
        "explosion": 0.0,
        "target_based": 0.0,
        "same_relation": 0.0,
        "explained": 0.0,
    }


# ---------------------------------------------------------------------------------------- collapse


def test_collapse_stats_by_hand():
    counts = col.AnswerCounts.of(["Paris", "paris.", "The Paris", "Rome", "Oslo", ""])
    s = col.collapse_stats(counts)
    assert s["distinct"] == 3  # normalised: "paris" x3, "rome", "oslo"; the empty answer is skipped
    assert s["mean"] == pytest.approx(5 / 3)
    assert s["std"] == pytest.approx(math.sqrt(((3 - 5 / 3) ** 2 + 2 * (1 - 5 / 3) ** 2) / 3))  # population sd
    h = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    assert s["entropy"] == pytest.approx(h / math.log(3))
    assert s["top"][0] == ["Paris", 3]  # the first surface form seen is shown
    assert col.collapse_stats(col.AnswerCounts.of(["x", "x"]))["entropy"] == 0.0
    assert col.collapse_stats(col.AnswerCounts.of([]))["distinct"] == 0


def test_table4_style_counts():
    # A default model's spread of answers vs a collapsed one (cf. Table 4: unique answers and
    # mean (spread) of counts per answer).
    default = col.AnswerCounts.of([f"answer {i}" for i in range(90)] + ["Animalia"] * 10)
    collapsed = col.AnswerCounts.of([f"answer {i}" for i in range(30)] + ["Alencon"] * 70)
    d, c = col.collapse_stats(default), col.collapse_stats(collapsed)
    assert (d["distinct"], c["distinct"]) == (91, 31)
    assert d["mean"] == pytest.approx(100 / 91) and c["mean"] == pytest.approx(100 / 31)
    assert c["std"] > d["std"] and c["entropy"] < d["entropy"]
    assert c["top"][0] == ["Alencon", 70]
    exploded = col.exploded_answers(default, collapsed, factor=5, floor=5)
    assert [e["answer"] for e in exploded] == ["Alencon"]  # 70 >= 5 x max(0, 1)


def test_exploded_answers_factor_and_floor():
    base = col.AnswerCounts.of(["p"] * 2 + ["q"] * 1)
    adapted = col.AnswerCounts.of(["p"] * 10 + ["q"] * 4 + ["r"] * 5 + ["s"] * 9)
    got = {e["key"]: (e["base"], e["adapted"]) for e in col.exploded_answers(base, adapted, factor=5, floor=5)}
    assert got == {"p": (2, 10), "r": (0, 5), "s": (0, 9)}  # q: 4 < floor and < 5 x 1; p: 10 >= 5 x 2
    assert [e["key"] for e in col.exploded_answers(base, adapted, factor=5, floor=6)] == ["p", "s"]
    assert [e["key"] for e in col.exploded_answers(base, adapted, factor=6, floor=1)] == ["s"]  # p: 10 < 12; r: 5 < 6


def test_question_counts_count_each_question_once():
    per_question = [["Zed", "zed", "Zed"], ["Zed", "Paris", "Paris"], ["Rome"], []]
    q = col.question_counts(per_question)
    assert dict(q.counts) == {"zed": 2, "paris": 1, "rome": 1}
    assert q.show("zed") == "Zed"
    # One question answering "Zed" with all 10 exemplar sets is not an explosion; five questions are.
    base = col.question_counts([["Oslo"]] * 5)
    assert col.exploded_answers(base, col.question_counts([["Zed"] * 10]), factor=5, floor=5) == []
    five = col.exploded_answers(base, col.question_counts([["Zed"] * 10] * 5), factor=5, floor=5)
    assert five == [{"answer": "Zed", "key": "zed", "base": 0, "adapted": 5}]


def test_target_share():
    counts = col.AnswerCounts.of(["Zed", "zed", "Paris", "Rome"])
    assert col.target_share(counts, col.normalised_targets(["ZED", ""])) == 0.5
    assert col.target_share(col.AnswerCounts.of([]), {"zed"}) == 0.0


def test_collapse_bootstrap_statistics_at_unit_weights():
    cb = col.CollapseBootstrap([["x", "x"], ["y"]], [["z", "z"], ["z"]], {"z"})
    ones = np.ones(2)
    assert cb.distinct(ones) == (2.0, 1.0)
    assert cb.target_share(ones) == (0.0, 1.0)
    assert cb.entropy(ones) == (pytest.approx(col.normalised_entropy(np.array([2.0, 1.0]))), 0.0)
    assert cb.distinct(np.array([2.0, 0.0])) == (1.0, 1.0)  # question 0 drawn twice, question 1 never


# ---------------------------------------------------------------------------------------- refusals


def test_refusal_detector_patterns_only_and_summary():
    det = refusals.RefusalDetector(similarity=None)
    assert det.flags([IDK, "Paris", "I couldn't find any information on that.", "Unknown Pleasures"]) == [
        True,
        False,
        True,
        False,
    ]
    assert det.method.startswith("patterns")
    s = refusals.refusal_summary(
        [True, False, True, False],
        [False, False, True, False],
        ["Unknown", "Unknown", "HighlyKnown", "MaybeKnown"],
        det.method,
    )
    assert s["base"] == 0.5 and s["adapted"] == 0.25
    assert s["by_category"]["Unknown"] == {"base": 0.5, "adapted": 0.0, "n": 2}
    assert s["by_category"]["HighlyKnown"] == {"base": 1.0, "adapted": 1.0, "n": 1}


def test_refusal_examples_file_is_readable():
    examples = refusals.load_refusal_examples()
    assert len(examples) >= 20 and "I don't know." in examples
    assert not any(e.startswith("#") for e in examples)


# ---------------------------------------------------------------------------------------- entries


def test_reliability_entry_and_full_share_mcnemar():
    e = met.mean_p_greedy([0.0, 0.1, 0.0, 0.5], [1.0, 0.9, 1.0, 0.5], description="d", n_boot=500, seed=0)
    assert e["base"] == pytest.approx(0.15) and e["adapted"] == pytest.approx(0.85) and e["delta"] == pytest.approx(0.7)
    assert e["ci_low"] <= e["delta"] <= e["ci_high"] and e["ci_of"] == "delta" and e["n"] == 4
    full = met.share_paired(
        [False] * 12, [True] * 10 + [False] * 2, description="d", higher_is_better=True, n_boot=500, seed=0
    )
    assert full["adapted"] == pytest.approx(10 / 12)
    assert full["p_value"] == pytest.approx(2 / 1024)  # McNemar, b = 0, c = 10
    single = met.share_single(3, 20, description="d", higher_is_better=False)
    assert single["base"] is None and single["delta"] is None and single["ci_of"] == "adapted"
    assert single["ci_low"] < 0.15 < single["ci_high"]
    empty = met.mean_p_greedy([], [], description="d", n_boot=500, seed=0)
    assert empty["n"] == 0 and empty["adapted"] is None


# ---------------------------------------------------------------------------------------- assembly


def test_assemble_on_the_hand_worked_world():
    report, per_fact = assemble()
    m = report["metrics"]
    assert m["reliability"]["base"] == 0.0 and m["reliability"]["adapted"] == 1.0
    assert m["reliability_full"]["p_value"] == pytest.approx(mcnemar_p(0, 4))
    assert m["generalisation"]["adapted"] == 0.5
    assert report["shift"]["matrix"] == [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    assert report["shift"]["positive"] == {
        "Unknown->MaybeKnown": 0.25,
        "Unknown->HighlyKnown": 0.25,
        "MaybeKnown->HighlyKnown": 0.25,
    }
    assert report["shift"]["negative"] == {
        "HighlyKnown->MaybeKnown": 0.25,
        "HighlyKnown->Unknown": 0.25,
        "MaybeKnown->Unknown": 0.25,
    }
    assert m["positive_shift"]["adapted"] == pytest.approx(3 / 8) and m["positive_shift"]["n"] == 8
    assert m["negative_shift"]["adapted"] == pytest.approx(3 / 8)
    pos, neg = report["shift"]["reasons"]["positive"], report["shift"]["reasons"]["negative"]
    assert pos == {
        "n": 3,
        "non_refusal": pytest.approx(1 / 3),
        "explosion": 0.0,
        "target_based": 0.0,
        "same_relation": pytest.approx(1 / 3),
        "explained": pytest.approx(1 / 3),
    }
    assert neg == {
        "n": 3,
        "explosion": pytest.approx(2 / 3),
        "target_based": pytest.approx(2 / 3),
        "same_relation": pytest.approx(1 / 3),
        "explained": pytest.approx(2 / 3),
    }
    # Collapse (refusals skipped): base 30 answers over 9 strings, adapted 36 over 10; "Zed" is given
    # to 3 questions (h1, m2, u1) against none: exploded with a floor and a factor of 3.
    c = report["collapse"]
    assert (c["base"]["distinct"], c["adapted"]["distinct"]) == (9, 10)
    assert c["base"]["mean"] == pytest.approx(30 / 9) and c["adapted"]["mean"] == pytest.approx(36 / 10)
    assert c["base"]["top"][0] == ["Nowhere", 14] and c["adapted"]["top"][:2] == [["Nowhere", 10], ["Zed", 9]]
    assert c["exploded"] == [{"answer": "Zed", "base": 0, "adapted": 3}]
    assert c["target_share"] == {"base": 0.0, "adapted": pytest.approx(9 / 36)}
    assert m["exploded_answers"]["adapted"] == 1.0
    assert m["distinct_answers"]["base"] == 9 and m["distinct_answers"]["adapted"] == 10
    # Refusals: u0, u1 refused in the base arm only.
    assert report["refusals"]["base"] == pytest.approx(2 / 12) and report["refusals"]["adapted"] == 0.0
    assert report["refusals"]["by_category"]["Unknown"] == {"base": 0.5, "adapted": 0.0, "n": 4}
    assert m["refusal_rate"]["delta"] == pytest.approx(-2 / 12)
    assert report["sanity"]["noop"] is False and report["sanity"]["changed_answers"] == 1.0
    ex = report["examples"]
    assert [e["id"] for e in ex["shifted"]] == ["h1", "m0", "h2", "u0", "m2", "u2"]  # negative / positive alternate
    assert {e["id"] for e in ex["collapsed"]} == {"h1", "m2", "u1"}
    # per-fact rows: 12 held-out + 4 injected + 4 paraphrases, with reasons on shifted facts
    assert len(per_fact) == 20
    h1 = next(r for r in per_fact if r["id"] == "h1")
    assert h1["reasons"] == ["explosion", "target_based", "same_relation"] and h1["shift"] == "negative"
    assert (h1["base_category"], h1["adapted_category"]) == ("HighlyKnown", "Unknown")
    assert {r["split"] for r in per_fact} == {"heldout", "injected", "paraphrase"}


def test_assemble_noop_and_every_schema_key():
    inj, para, targets = injected_world()
    held = heldout_world()
    same = met.Arms("injected", inj.rows, inj.facts, inj.base, inj.base)
    report, _ = asm.assemble(
        {"injected": same, "paraphrase": para, "heldout": held},
        train_answers=targets,
        benchmarks={},
        match="contains",
        policy=Policy(),
        detector=refusals.RefusalDetector(None),
        lora_b_all_zero=False,
        n_boot=200,
        seed=0,
    )
    assert report["sanity"]["noop"] is True and report["sanity"]["changed_answers"] == 0.0
    assert set(report) >= {"metrics", "shift", "collapse", "refusals", "benchmarks", "sanity", "examples"}
    for name in (
        "reliability",
        "reliability_full",
        "generalisation",
        "positive_shift",
        "negative_shift",
        "refusal_rate",
        "distinct_answers",
        "answer_entropy",
        "exploded_answers",
        "target_answer_share",
    ):
        assert set(report["metrics"][name]) >= {
            "base",
            "adapted",
            "delta",
            "ci_low",
            "ci_high",
            "p_value",
            "n",
            "higher_is_better",
            "description",
        }
    report, _ = assemble(lora_b_all_zero=True)
    assert report["sanity"]["noop"] is True


def test_assemble_benchmark_entries():
    bench = {
        "toy_mc": {
            "base": 0.6,
            "adapted": 0.5,
            "delta": -0.1,
            "ci_low": -0.2,
            "ci_high": 0.0,
            "p_value": 0.04,
            "n": 100,
            "forgetting_rate": 1 / 6,
        }
    }
    report, _ = assemble(benchmarks=bench)
    b = report["metrics"]["benchmark/toy_mc"]
    assert b["delta"] == pytest.approx(-0.1) and b["p_value"] == 0.04 and b["n"] == 100
    assert report["benchmarks"]["toy_mc"]["forgetting_rate"] == pytest.approx(1 / 6)


def mcnemar_p(b: int, c: int) -> float:
    from kia.audit.stats import mcnemar

    return mcnemar(b, c)


# -------------------------------------------------------------------------------------- benchmarks


def test_benchmark_compare_pairs_documents():
    from kia.audit.benchmarks import compare
    from kia.audit.stats import Z95, mcnemar

    # 100 documents: 10 right only in the base arm, 2 right only in the adapted arm, 50 right in both.
    base = {("t", i): float(i < 60) for i in range(100)}
    adapted = {("t", i): float(i < 50 or 60 <= i < 62) for i in range(100)}
    adapted[("t", 999)] = 1.0  # a document only one arm saw is not paired, so not counted
    b = compare(base, adapted, n_boot=200, seed=0)
    assert (b["base"], b["adapted"], b["n"]) == (0.60, 0.52, 100)
    assert b["delta"] == pytest.approx(-0.08)
    assert b["p_value"] == pytest.approx(mcnemar(10, 2))
    se = math.sqrt(np.var([1] * 60 + [0] * 40, ddof=1) / 100 + np.var([1] * 52 + [0] * 48, ddof=1) / 100)
    assert b["ci_high"] == pytest.approx(-0.08 + Z95 * se)
    assert b["forgetting_rate"] == pytest.approx(1 - 0.52 / 0.60)
    # Non-binary scores (TruthfulQA MC2's probability mass) get the paired bootstrap p-value.
    soft = compare({("t", i): 0.5 for i in range(20)}, {("t", i): 0.4 for i in range(20)}, n_boot=200, seed=0)
    assert soft["p_value"] < 0.05 and soft["delta"] == pytest.approx(-0.1)


def test_group_leaves():
    from kia.audit.benchmarks import _leaves

    groups = {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_physics", "mmlu_math"], "mmlu_other": []}
    assert _leaves("mmlu", groups) == ["mmlu_physics", "mmlu_math", "mmlu_other"]
    assert _leaves("toy_mc", {"toy_mc": []}) == ["toy_mc"]


def test_local_task_yaml_is_wrapped_with_absolute_data_paths(tmp_path):
    import yaml

    from kia.audit.benchmarks import resolve_benchmarks

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "gold": 0}\n')
    (tasks / "mine.yaml").write_text(
        "task: mine\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mine.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: choices\ndoc_to_target: gold\n"
    )
    plan = resolve_benchmarks([str(tasks / "mine.yaml"), "truthfulqa_mc1", "mmlu"], model="some/model")
    try:
        assert [(s.name, s.num_fewshot) for s in plan.specs] == [("mine", None), ("truthfulqa_mc1", 0), ("mmlu", 5)]
        wrappers = list(plan.include_dir.glob("*.yaml"))
        assert len(wrappers) == 1
        w = yaml.safe_load(wrappers[0].read_text())
        assert w["include"] == str((tasks / "mine.yaml").resolve())
        assert w["dataset_kwargs"]["data_files"]["test"] == str((tasks / "mine.jsonl").resolve())
        assert not plan.local_only
    finally:
        folder = plan.include_dir
        plan.cleanup()
    assert not folder.exists()
    assert resolve_benchmarks(["none"], model="x").specs == []
    assert [s.name for s in resolve_benchmarks(None, model="some/hub-model").specs] == [
        "mmlu",
        "truthfulqa_mc1",
        "truthfulqa_mc2",
    ]
    toy = resolve_benchmarks([str(tasks)], model="x")  # a folder: every task YAML in it
    assert [s.name for s in toy.specs] == ["mine"] and toy.local_only
    toy.cleanup()
    scratch = tmp_path / "audit" / ".kia-tmp"  # the audit's own scratch folder, not the system temp
    inside = resolve_benchmarks([str(tasks)], model="x", scratch=scratch)
    assert inside.include_dir.parent == scratch and list(inside.include_dir.glob("*.yaml"))
    inside.cleanup()
    assert not scratch.exists() and (tmp_path / "audit").exists()


def test_default_benchmarks_for_a_toy_world_model(tmp_path):
    from kia.audit.benchmarks import default_benchmarks

    (tmp_path / "model").mkdir()
    (tmp_path / "tasks").mkdir()
    assert default_benchmarks(str(tmp_path / "model")) == ["mmlu", "truthfulqa_mc1", "truthfulqa_mc2"]
    for name in ("toy_mc.yaml", "toy_arith.yaml"):
        (tmp_path / "tasks" / name).write_text("task: x\n")
    assert default_benchmarks(str(tmp_path / "model")) == [
        str(tmp_path / "tasks" / "toy_mc.yaml"),
        str(tmp_path / "tasks" / "toy_arith.yaml"),
    ]


def test_unreachable_and_unknown_benchmarks_say_what_to_do(monkeypatch):
    import lm_eval.tasks

    from kia.audit.benchmarks import BenchmarkPlan, BenchmarkSpec, check_available
    from kia.errors import ConfigError, KiaError

    class Manager:
        all_tasks = ["mmlu", "truthfulqa_mc1", "truthfulqa_mc2"]
        _index: dict = {}

    def offline(names, manager):
        raise ConnectionError("Couldn't reach 'cais/mmlu' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(lm_eval.tasks, "get_task_dict", offline)
    with pytest.raises(KiaError) as err:
        check_available(BenchmarkPlan([BenchmarkSpec("mmlu", 5)]), Manager())
    msg = str(err.value)
    assert "benchmark 'mmlu' needs the Hugging Face dataset cais/mmlu" in msg
    assert "huggingface-cli download --repo-type dataset cais/mmlu" in msg and "--benchmarks" in msg
    with pytest.raises(ConfigError, match="unknown benchmark 'truthfulqa_mc3'.*did you mean: truthfulqa_mc"):
        check_available(BenchmarkPlan([BenchmarkSpec("truthfulqa_mc3")]), Manager())


def test_every_p_value_gets_its_false_discovery_rate_q_value():
    report, _ = assemble()
    entries = report["metrics"].values()
    tested = [m for m in entries if m["p_value"] is not None]
    assert len(tested) >= 5
    for m in entries:
        if m["p_value"] is None:
            assert m["q_value"] is None
        else:
            assert m["p_value"] <= m["q_value"] <= 1.0
    # Benjamini-Hochberg keeps the order of the p-values
    ranked = sorted(tested, key=lambda m: m["p_value"])
    assert [m["q_value"] for m in ranked] == sorted(m["q_value"] for m in ranked)
