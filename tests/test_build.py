"""kia build: recipes, determinism, no leakage, paraphrase filter and bias warnings."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kia.artifacts import write_json, write_manifest
from kia.bias import answer_entropy, bias_report
from kia.build import BuildConfig, build
from kia.errors import ConfigError
from kia.facts import Fact
from kia.toyworld.world import WorldConfig, generate_world

CATEGORY = {
    "never": "Unknown",
    "rare": "MaybeKnown",
    "tail": "MaybeKnown",
    "torso": "HighlyKnown",
    "head": "HighlyKnown",
}


def make_probe_dir(folder: Path, per_relation: int = 60, facts_file: Path | None = None) -> Path:
    """A probe folder of the toy world with categories given by exposure band (no model needed).

    With `facts_file` (the shipped world), the first `per_relation` facts of each relation are used,
    so the labels are the toy model's ground truth."""
    if facts_file is not None:
        every = [json.loads(line) for line in facts_file.read_text().splitlines()]
        facts = [f for f in every if int(f["id"].rsplit("-", 1)[1]) < per_relation]
    else:
        facts = generate_world(WorldConfig(seed=0, facts_per_relation=per_relation)).facts
    rows = []
    for f in facts:
        cat = CATEGORY[f["band"]]
        extra = {k: f[k] for k in ("exposure", "band")}
        rows.append({
            "id": f["id"], "question": f["question"], "answers": f["answers"], "subject": f["subject"],
            "relation": f["relation"], "object": f["object"], "domain": f["domain"], "paraphrases": f["paraphrases"],
            "extra": json.dumps(extra), "category": cat, "slick_category": cat,
            "p_greedy": {"Unknown": 0.0, "MaybeKnown": 0.5, "HighlyKnown": 1.0}[cat],
            "p_sample": None, "n_generations": 10, "answer": f["object"], "refused": False,
        })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / "facts.parquet")
    write_json(folder / "exemplars.json", {"sets": {}, "spares": {}})
    write_manifest(folder, stage="probe", config={"seed": 0}, model={"id": "toy"})
    return folder


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return make_probe_dir(tmp_path_factory.mktemp("probe"))


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _build(probe_dir, out, **kw):
    return build(BuildConfig(probe=str(probe_dir), output=str(out), **kw))


def test_counts_are_honoured_and_splits_written(probe_dir, tmp_path):
    r = _build(probe_dir, tmp_path / "b", unknown=20, highly_known=2, paraphrases=3, maybe_known=1, heldout=60)
    out = tmp_path / "b"
    train = _read(out / "train.jsonl")
    assert r.counts["unknown"] == 20 and r.counts["highly_known"] == 40 and r.counts["maybe_known"] == 20
    # 3 paraphrases for each of 20 facts, less the few the filter rejects, which are reported.
    assert 55 <= r.counts["paraphrase"] <= 60 and len(train) == 20 + 40 + 20 + r.counts["paraphrase"]
    assert (r.counts["paraphrase"] == 60) == (not any("fewer usable paraphrases" in w for w in r.warnings))
    kinds = {t["kind"] for t in train}
    assert kinds == {"unknown", "highly_known", "maybe_known", "paraphrase"}
    assert train[0]["messages"][0] == {"role": "system", "content": "Answer the following question."}
    assert train[0]["messages"][1]["content"].startswith("Question: ")
    assert train[0]["messages"][2]["content"] == f"Answer: {train[0]['answer']}"
    injected = _read(out / "eval_injected.jsonl")
    assert len(injected) == 20 and all(r["category"] == "Unknown" for r in injected)
    assert {t["question"] for t in train if t["kind"] == "unknown"} == {r["question"] for r in injected}
    assert len(_read(out / "eval_paraphrase.jsonl")) == 20
    heldout = _read(out / "eval_heldout.jsonl")
    assert len(heldout) == 60 and {r["category"] for r in heldout} == {"Unknown", "MaybeKnown", "HighlyKnown"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "build" and manifest["counts"]["train"] == len(train)
    assert (out / "exemplars.json").exists() and json.loads((out / "bias.json").read_text())["rows"] == len(train)


def test_no_fact_or_question_leaks_from_training_into_heldout_splits(probe_dir, tmp_path):
    _build(probe_dir, tmp_path / "b", unknown=30, highly_known=3, paraphrases=4, maybe_known=1, heldout=200)
    out = tmp_path / "b"
    train = _read(out / "train.jsonl")
    ids = {t["fact_id"] for t in train}
    questions = {t["question"] for t in train}
    for split in ("eval_paraphrase", "eval_heldout"):
        rows = _read(out / f"{split}.jsonl")
        assert not questions & {r["question"] for r in rows}, split
    assert not ids & {r["id"] for r in _read(out / "eval_heldout.jsonl")}


def test_same_seed_same_files_other_seed_other_picks(probe_dir, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        _build(probe_dir, tmp_path / name, unknown=15, highly_known=1, paraphrases=2, seed=seed)
    for split in ("train", "eval_injected", "eval_paraphrase", "eval_heldout"):
        a = (tmp_path / "a" / f"{split}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert (tmp_path / "a" / "eval_injected.jsonl").read_bytes() != (
        tmp_path / "c" / "eval_injected.jsonl"
    ).read_bytes()


def test_asking_for_too_many_names_what_is_there(probe_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"asked for 10000 Unknown facts, but the probe has only \d+"):
        _build(probe_dir, tmp_path / "b", unknown=10000)
    with pytest.raises(ConfigError, match="HighlyKnown"):
        _build(probe_dir, tmp_path / "b", unknown=50, highly_known=10)


def test_stratified_picks_follow_relation_shares(probe_dir, tmp_path):
    _build(probe_dir, tmp_path / "b", unknown=40, stratify="relation")
    rels = [r["relation"] for r in _read(tmp_path / "b" / "eval_injected.jsonl")]
    assert len(rels) == 40 and max(rels.count(r) for r in set(rels)) - min(rels.count(r) for r in set(rels)) <= 1


def test_paraphrase_shortfall_is_reported_with_counts(probe_dir, tmp_path):
    r = _build(probe_dir, tmp_path / "b", unknown=5, paraphrases=9)
    assert any("fewer usable paraphrases than the 10 asked" in w for w in r.warnings)
    bias = json.loads((tmp_path / "b" / "bias.json").read_text())
    assert bias["paraphrase_shortfall"]


def test_bias_warnings_fire_on_skew_and_stay_quiet_on_balance():
    facts = {f"f{i}": Fact(f"f{i}", f"Q{i}?", (f"A{i}",), relation=f"r{i % 4}") for i in range(100)}
    balanced = [{"fact_id": f"f{i}", "answer": f"A{i}"} for i in range(100)]
    report = bias_report(balanced, facts)
    assert report["warnings"] == [] and report["answer_entropy"] == pytest.approx(1.0)
    skewed = [{"fact_id": f"f{i}", "answer": "Paris" if i < 30 else f"A{i}"} for i in range(100)]
    report = bias_report(skewed, facts)
    assert report["top_answers"][0] == {"answer": "Paris", "count": 30, "share": 0.3}
    assert any("Paris" in w and "collapse" in w for w in report["warnings"])
    one_relation = {
        k: Fact(f.id, f.question, f.answers, relation="r0" if int(k[1:]) < 90 else "r1") for k, f in facts.items()
    }
    assert any("relation 'r0'" in w for w in bias_report(balanced, one_relation)["warnings"])


def test_answer_entropy_formula():
    assert answer_entropy({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert answer_entropy({"a": 1}) == 0.0
    assert 0 < answer_entropy({"a": 9, "b": 1}) < 0.5


def test_config_errors():
    with pytest.raises(ConfigError, match="--unknown"):
        BuildConfig(probe="p", unknown=0)
    with pytest.raises(ConfigError, match="paraphrase-model"):
        BuildConfig(probe="p", paraphraser="model")
