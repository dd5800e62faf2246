"""The toy world: its generator's guarantees (tier 1) and the builder end to end on a miniature world."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from kia.toyworld.pretrain import PretrainConfig, build_toyworld, corpus_items
from kia.toyworld.world import REFUSAL, RELATIONS, WorldConfig, generate_world


def test_world_has_the_promised_shape():
    world = generate_world(WorldConfig(seed=0))
    facts = world.facts
    assert len(facts) >= 2000
    assert len({f["relation"] for f in facts}) >= 6
    assert all(len(r.templates) >= 6 for r in RELATIONS)
    assert len({f["exposure"] for f in facts}) >= 4 and min(f["exposure"] for f in facts) == 0
    assert len({f["id"] for f in facts}) == len(facts)
    for f in facts[:50]:
        assert f["question"] not in f["paraphrases"] and len(f["paraphrases"]) == 7
        assert f["answers"] == [f["object"]] and f["subject"] in f["question"]
    # Answer spaces are large, so a never-shown fact is rarely guessed right.
    per_relation = Counter(f["relation"] for f in facts)
    objects = {r: {f["object"] for f in facts if f["relation"] == r} for r in per_relation}
    assert min(len(v) for v in objects.values()) >= 100
    assert world.mc_test and world.arith_test


def test_world_is_deterministic_by_seed():
    assert generate_world(WorldConfig(seed=1)).facts == generate_world(WorldConfig(seed=1)).facts
    assert generate_world(WorldConfig(seed=1)).facts != generate_world(WorldConfig(seed=2)).facts


def test_corpus_shows_each_fact_exactly_its_exposure():
    import random

    world = generate_world(WorldConfig(seed=0, facts_per_relation=40))
    items = corpus_items(world, random.Random(0))
    answers = Counter(a for _, _, a in items)
    shown = Counter()
    for f in world.facts:
        forms = {t.format(s=f["subject"]) for t in next(r for r in RELATIONS if r.name == f["relation"]).templates}
        shown[f["id"]] = sum(1 for _, q, a in items if q in forms and a == f["object"])
        assert shown[f["id"]] == f["exposure"]
    obscure = [f for f in world.facts if f["obscure"]]
    assert obscure and answers[REFUSAL] == len(obscure) * world.config.refusal_exposure
    # Skill test items never appear in the corpus.
    questions = {q for _, q, _ in items}
    assert not any(it["question"] in questions for it in world.mc_test + world.arith_test)


@pytest.mark.model
def test_builder_end_to_end_on_a_miniature_world(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world_cfg = WorldConfig(seed=0, facts_per_relation=10, mc_train=40, mc_test=10, arithmetic_max=6)
    pre_cfg = PretrainConfig(epochs=2, hidden_size=32, intermediate_size=64, layers=1, heads=2, vocab_size=400)
    result = build_toyworld(tmp_path, world_cfg, pre_cfg, log=lambda s: None)
    assert result["facts"] == 80 and len(result["history"]) == 2
    assert result["history"][1]["loss"] < result["history"][0]["loss"]
    lines = (tmp_path / "facts.jsonl").read_text().splitlines()
    assert len(lines) == 80 and {"id", "question", "answers", "exposure", "paraphrases"} <= set(json.loads(lines[0]))
    assert (tmp_path / "tasks" / "toy_mc.yaml").exists() and (tmp_path / "tasks" / "toy_arith.jsonl").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert model.config.model_type == "llama" and (tmp_path / "model" / "model.safetensors").exists()
    text = tok.apply_chat_template([{"role": "user", "content": "Question: hi"}], tokenize=False)
    assert text.startswith(tok.bos_token) and "Question: hi\n" in text
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "toyworld" and manifest["config"]["world"]["seed"] == 0
