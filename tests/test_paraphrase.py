"""The paraphrase filter with the real sentence-embedding model (offline), and its sources."""

from __future__ import annotations

import pytest

from kia.engines.scripted import ScriptedEngine
from kia.facts import Fact
from kia.paraphrase import FilterConfig, candidates, filter_paraphrases, generate_candidates, relation_templates
from kia.toyworld.world import WorldConfig, generate_world

pytestmark = pytest.mark.model

FACT = Fact(
    "f1",
    "Where was Drun Bizailwyn born?",
    ("Sourninmouth",),
    subject="Drun Bizailwyn",
    relation="birthplace",
    paraphrases=("In which city was Drun Bizailwyn born?", "What is the birthplace of Drun Bizailwyn?"),
)


def test_true_paraphrases_pass_and_leaks_duplicates_and_other_questions_do_not():
    cands = [
        "In which city was Drun Bizailwyn born?",  # keep
        "in which city was drun bizailwyn born ?",  # near-duplicate of the first
        "Was Drun Bizailwyn born in Sourninmouth?",  # leaks the answer
        "Where was Kex Brinivalard born?",  # another person
        "Which company does Drun Bizailwyn work for?",  # another question about the subject
        "What is the birthplace of Drun Bizailwyn?",  # keep
        "Where was Drun Bizailwyn born?",  # the question itself
    ]
    kept = filter_paraphrases(FACT, cands, FilterConfig(), limit=10)
    assert kept == ["In which city was Drun Bizailwyn born?", "What is the birthplace of Drun Bizailwyn?"]
    assert filter_paraphrases(FACT, cands, FilterConfig(), limit=1) == kept[:1]


def test_toy_world_paraphrases_mostly_survive_the_default_filter():
    world = generate_world(WorldConfig(seed=0, facts_per_relation=5))
    kept = total = 0
    for d in world.facts:
        f = Fact.from_dict(d)
        kept += len(filter_paraphrases(f, list(f.paraphrases), FilterConfig(), limit=10))
        total += len(f.paraphrases)
    assert kept / total >= 0.9


def test_relation_templates_give_paraphrases_to_facts_without_their_own():
    world = generate_world(WorldConfig(seed=0, facts_per_relation=3))
    facts = [Fact.from_dict(d) for d in world.facts]
    templates = relation_templates(facts)
    assert all(len(v) == 8 for v in templates.values())
    bare = Fact("x", "Where was Nol Tesliwyn born?", ("Lyon",), subject="Nol Tesliwyn", relation="birthplace")
    cands = candidates(bare, "own", templates)
    assert "In which city was Nol Tesliwyn born?" in cands and bare.question not in cands


def test_model_paraphraser_cleans_candidates():
    engine = ScriptedEngine({}, default="1. In which city was Drun Bizailwyn born?")
    out = generate_candidates(engine, [FACT], n=3)
    assert out == {"f1": ["In which city was Drun Bizailwyn born?"] * 3}
    engine = ScriptedEngine({}, default="no question here")
    assert generate_candidates(engine, [FACT], n=2) == {"f1": []}
