"""Paraphrase sources and the filter: its logic with a fake embedder, its thresholds with the real
offline all-MiniLM-L6-v2 (marked `model`)."""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import pytest

from kia.build.paraphrase import (
    FilterConfig,
    Screener,
    candidates,
    clean_generation,
    filter_paraphrases,
    generate_candidates,
    mask_subject,
    plan_paraphrases,
    relation_templates,
    source_order,
)
from kia.engines.scripted import ScriptedEngine
from kia.facts import Fact
from kia.toyworld.world import RELATIONS, WorldConfig, generate_world

FACT = Fact(
    "f1",
    "Where was Drun Bizailwyn born?",
    ("Sourninmouth",),
    subject="Drun Bizailwyn",
    relation="birthplace",
    paraphrases=("In which city was Drun Bizailwyn born?", "What is the birthplace of Drun Bizailwyn?"),
)
HAND = [
    ("In which city was Drun Bizailwyn born?", None),
    ("in which city was drun bizailwyn born ?", "duplicate"),  # same normalised text
    ("Was Drun Bizailwyn born in Sourninmouth?", "leaks_answer"),
    ("Where was Kex Brinivalard born?", "subject_missing"),  # another person
    ("Which company does Drun Bizailwyn work for?", "off_meaning"),  # another question about the subject
    ("What is the birthplace of Drun Bizailwyn?", None),
    ("Where was Drun Bizailwyn born at?", "near_duplicate"),
    ("Drun Bizailwyn was born in which city?", "near_duplicate"),  # a reordering of the first one
    ("Who founded Drun Bizailwyn?", "off_meaning"),
]


def toy_facts(per_relation: int) -> list[Fact]:
    return [Fact.from_dict(d) for d in generate_world(WorldConfig(seed=0, facts_per_relation=per_relation)).facts]


def vector_embed(vectors: dict[str, list[float]]):
    """A fake embedder from a table of (masked) texts to vectors; unknown texts get a vector of their own."""

    def embed(texts):
        out = []
        for t in texts:
            v = np.array(vectors.get(t) or [0.0, 0.0, 0.0, 1.0 + len(t)], dtype=float)
            v = np.pad(v, (0, 4 - len(v)))
            out.append(v / np.linalg.norm(v))
        return np.array(out)

    return embed


def spread_embed(texts):
    """Every two different texts at cosine 0.8 (a shared part plus one orthogonal-ish part per text)."""
    out = []
    for t in texts:
        own = np.random.default_rng(zlib.crc32(t.encode())).standard_normal(2048)
        v = np.concatenate([[np.sqrt(0.8)], np.sqrt(0.2) * own / np.linalg.norm(own)])
        out.append(v / np.linalg.norm(v))
    return np.array(out)


# ------------------------------------------------------------------------------------------ sources


def test_relation_templates_and_candidates():
    facts = toy_facts(3)
    templates = relation_templates(facts)
    assert set(templates) == {r.name for r in RELATIONS} and all(len(v) == 8 for v in templates.values())
    assert "Where was {s} born?" in templates["birthplace"]
    bare = Fact("x", "Where was Nol Tesliwyn born?", ("Lyon",), subject="Nol Tesliwyn", relation="birthplace")
    cands = candidates(bare, ("own", "templates"), templates)
    assert len(cands) == 7 and bare.question not in [t for t, _ in cands] and {s for _, s in cands} == {"templates"}
    both = candidates(FACT, ("own", "templates"), templates, seed=3)
    assert [s for _, s in both[:2]] == ["own", "own"] and len(both) == 7  # own first, repeats dropped
    orders = {tuple(t for t, _ in candidates(bare, ("templates",), templates, seed=s)) for s in range(5)}
    assert len(orders) > 1  # the seed shuffles within a source
    assert candidates(bare, ("templates",), templates, seed=1) == candidates(bare, ("templates",), templates, seed=1)


def test_source_order_falls_back_down_the_list():
    assert source_order("own", with_model=False) == ("own", "templates")
    assert source_order("own", with_model=True) == ("own", "templates", "model")
    assert source_order("templates", with_model=True) == ("templates", "model")


def test_clean_generation():
    assert clean_generation("1. Rewritten question: In which city was X born?") == "In which city was X born?"
    assert clean_generation('Answer: "Where is X from?"\nmore') == "Where is X from?"
    assert clean_generation("- Paraphrase: Who made X?") == "Who made X?"
    assert clean_generation("no") is None


def test_model_paraphraser_samples_and_cleans():
    engine = ScriptedEngine({FACT.question: ["1. In which city was Drun Bizailwyn born?", "ok", FACT.question]})
    out = generate_candidates(engine, [FACT], n=6)
    assert out == {"f1": ["In which city was Drun Bizailwyn born?"]}  # repeats, junk and the question dropped
    assert engine.n_generated == 6


def test_mask_subject():
    assert mask_subject("Where was drun bizailwyn born?", "Drun Bizailwyn") == "Where was X born?"
    assert mask_subject("Who (really) wrote it?", "(really)") == "Who X wrote it?"
    assert mask_subject("Who wrote it?", None) == "Who wrote it?"


# ------------------------------------------------------------------------------------------ filter logic


def test_screener_logic_with_a_fake_embedder():
    vectors = {
        "Where was X born?": [1, 0, 0],
        "P1 X?": [0.9, 0.436, 0],  # cosine 0.90 to the question
        "P2 X?": [0.85, -0.527, 0],  # 0.85 to the question, 0.54 to P1
        "Near X?": [0.89, 0.456, 0],  # 1.00 to P1
        "Far X?": [0.5, 0, 0.866],  # 0.50 to the question
        "Copy X?": [0.99, 0.141, 0],  # 0.99 to the question
        "Where was it born?": [1, 0, 0],
        "Where is he born?": [0.9, 0, 0.436],
    }
    screener = Screener(FilterConfig(0.7, 0.97), embed=vector_embed(vectors))
    fact = Fact("g", "Where was Zed born?", ("Paris",), subject="Zed")
    cands = ["P1 Zed?", "Far Zed?", "Near Zed?", "Paris Zed?", "p1 zed", "Where is he born?", "Copy Zed?", "P2 Zed?"]
    [r] = screener.screen([(fact, [*cands, "P3 Zed?"], 2)])
    assert r.kept == ["P1 Zed?", "P2 Zed?"]  # and P3 is never looked at: the limit is reached
    assert r.dropped == {"off_meaning": 1, "near_duplicate": 2, "leaks_answer": 1, "duplicate": 1, "subject_missing": 1}
    [r] = screener.screen([(fact, ["P1 Zed?", "P2 Zed?"], 5)], forbidden=frozenset({"p1 zed"}))
    assert r.kept == ["P2 Zed?"] and r.dropped == {"duplicate": 1}  # a trained question is never kept again
    no_subject = Fact("n", "Where was it born?", ("Paris",))
    [r] = screener.screen([(no_subject, ["Where is he born?"], 5)])
    assert r.kept == ["Where is he born?"]  # no subject, no subject check: the raw texts are compared


def test_plan_holds_back_first_and_reports_shortfalls():
    other = Fact("f2", "Where was Ola Brin born?", ("Lyon",), subject="Ola Brin", relation="birthplace")
    facts = [FACT, other]
    plan = plan_paraphrases([FACT], facts, n_train=1, n_held=1, embed=spread_embed)
    assert len(plan.held["f1"]) == 1 and len(plan.train["f1"]) == 1 and not plan.warnings
    assert set(plan.held["f1"] + plan.train["f1"]) == set(FACT.paraphrases)
    assert set(plan.sources["f1"].values()) == {"own"}
    # templates learnt from both facts: 3 forms of "born" questions, so each fact has 2 paraphrases
    plan = plan_paraphrases(facts, facts, n_train=3, n_held=1, embed=spread_embed)
    assert plan.report["short"] == {"f1": 2, "f2": 2} and plan.report["kept_by_source"] == {"own": 2, "templates": 2}
    [warning] = plan.warnings
    assert "2 of 2 injected facts have fewer usable paraphrases than the 4 asked (3 for training + 1 held" in warning
    assert "training gets 2 of 6 paraphrases, eval_paraphrase 2 of 2" in warning
    assert all(len(plan.held[f.id]) == 1 for f in facts)
    empty = plan_paraphrases(facts, facts, n_train=0, n_held=0, embed=spread_embed)
    assert empty.train == {"f1": [], "f2": []} and empty.warnings == []


# ------------------------------------------------------------------------------------------ real embedder


@pytest.mark.model
def test_filter_keeps_true_paraphrases_and_drops_leaks_duplicates_and_other_questions():
    screener = Screener(FilterConfig())
    [r] = screener.screen([(FACT, [c for c, _ in HAND], 10)])
    assert r.kept == [c for c, reason in HAND if reason is None]
    assert r.dropped == Counter(reason for _, reason in HAND if reason)
    # the reasons that do not depend on the other candidates hold for each candidate alone
    for cand, reason in HAND[2:5] + HAND[6:7] + HAND[8:]:
        assert screener.screen([(FACT, [cand], 5)])[0].dropped == {reason: 1}, cand
    kept = filter_paraphrases(FACT, [c for c, _ in HAND], limit=10)
    assert kept == r.kept
    assert filter_paraphrases(FACT, [c for c, _ in HAND], limit=1) == kept[:1]


@pytest.mark.model
def test_filter_on_hand_written_real_world_questions():
    cases = {
        Fact("h", "Who wrote Hamlet?", ("William Shakespeare", "Shakespeare"), subject="Hamlet"): (
            ["Who is the author of Hamlet?", "Hamlet was written by whom?"],
            ["Where is Hamlet set?", "How long is Hamlet?", "Was Hamlet written by Shakespeare?", "Who wrote Hamlet??"],
        ),
        Fact("c", "What is the capital of France?", ("Paris",), subject="France"): (
            ["Which city is the capital of France?", "Name the capital of France."],
            [
                "How many people live in France?",
                "Who is the president of France?",
                "What's the capital of France?",
                "What is the capital of France, please?",
            ],
        ),  # fmt: skip
        Fact("m", "Where was Marie Curie born?", ("Warsaw",), subject="Marie Curie"): (
            ["What was Marie Curie's place of birth?"],
            ["Which prize did Marie Curie win?", "Where was Marie Curie born at?", "Was Marie Curie born in Warsaw?"],
        ),
    }
    for fact, (good, bad) in cases.items():
        assert filter_paraphrases(fact, good + bad, limit=10) == good, fact.question


@pytest.mark.model
def test_toy_world_paraphrases_survive_and_other_relations_mostly_do_not():
    facts = toy_facts(5)
    screener = Screener(FilterConfig())
    results = screener.screen([(f, list(f.paraphrases), 10) for f in facts])
    kept = [len(r.kept) for r in results]
    assert sum(kept) / sum(len(f.paraphrases) for f in facts) >= 0.8 and min(kept) >= 4
    kinds = {r.name: r for r in RELATIONS}
    other = [
        (f, [t.replace("{s}", f.subject) for r in RELATIONS if r.name != f.relation
             and r.subject_kind == kinds[f.relation].subject_kind for t in r.templates], 100)
        for f in facts
    ]  # fmt: skip
    results = screener.screen(other)
    passed = sum(len(r.kept) for r in results) / sum(len(c) for _, c, _ in other)
    assert passed <= 0.3  # 0.20 measured; unmasked cosines would let about 0.60 through
