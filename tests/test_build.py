"""kia build on synthetic probe folders of the toy world: recipes, determinism, no leakage, the CLI.

These tests replace the sentence-embedding model with a fake one (every two different questions at
cosine 0.8, equal ones at 1.0), so they stay fast; tests/test_paraphrase.py checks the real filter.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from kia.artifacts import write_json, write_manifest
from kia.build import BuildConfig, build
from kia.errors import ArtifactError, ConfigError
from kia.facts.matching import normalize
from kia.toyworld.world import WorldConfig, generate_world

CATEGORY = {
    "never": "Unknown",
    "rare": "MaybeKnown",
    "tail": "MaybeKnown",
    "torso": "HighlyKnown",
    "head": "HighlyKnown",
}
P_GREEDY = {"Unknown": 0.0, "MaybeKnown": 0.5, "HighlyKnown": 1.0}
SPLITS = ("train", "eval_injected", "eval_paraphrase", "eval_heldout")


def make_probe_dir(folder: Path, per_relation: int = 120, facts_file: Path | None = None) -> Path:
    """A finished probe folder of the toy world, categories given by exposure band (no model run).

    Every third never-shown fact is WeaklyKnown (P_sample > 0), which the three-way label folds into
    Unknown. With `facts_file` (the shipped world, as tests/test_inject.py uses it), the first
    `per_relation` facts of each relation are taken from it, so the labels are the toy model's truth."""
    if facts_file is not None:
        every = [json.loads(line) for line in facts_file.read_text(encoding="utf-8").splitlines()]
        facts = [f for f in every if int(f["id"].rsplit("-", 1)[1]) < per_relation]
    else:
        facts = generate_world(WorldConfig(seed=0, facts_per_relation=per_relation)).facts
    rows = []
    for i, f in enumerate(facts):
        cat = CATEGORY[f["band"]]
        slick = "WeaklyKnown" if cat == "Unknown" and i % 3 == 0 else cat
        rows.append({
            "id": f["id"], "question": f["question"], "answers": f["answers"], "subject": f["subject"],
            "relation": f["relation"], "object": f["object"], "domain": f["domain"], "paraphrases": f["paraphrases"],
            "extra": json.dumps({"exposure": f["exposure"], "band": f["band"]}), "category": cat,
            "slick_category": slick, "p_greedy": P_GREEDY[cat], "p_sample": 0.1 if slick == "WeaklyKnown" else None,
            "answer": "I don't know." if f.get("obscure") else f["object"], "refused": bool(f.get("obscure")),
        })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / "facts.parquet")
    write_json(folder / "exemplars.json", {"sets": {}, "spares": {}})
    write_manifest(folder, stage="probe", config={"seed": 0}, model={"id": "toy"})
    return folder


def fake_embed(texts, name=None):
    """Unit vectors: a shared component (cosine 0.8 between different texts) plus a per-text one."""
    out = []
    for t in texts:
        rng = np.random.default_rng(zlib.crc32(normalize(t).encode()))
        own = rng.standard_normal(512)
        v = np.concatenate([[np.sqrt(0.8)], np.sqrt(0.2) * own / np.linalg.norm(own)])
        out.append(v / np.linalg.norm(v))
    return np.array(out)


@pytest.fixture(autouse=True)
def no_real_embedder(monkeypatch, request):
    if request.node.get_closest_marker("model") is None:
        monkeypatch.setattr("kia.build.paraphrase._embed", fake_embed)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return make_probe_dir(tmp_path_factory.mktemp("probe"))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(probe_dir: Path, out: Path, **kw):
    return build(BuildConfig(probe=str(probe_dir), output=str(out), **kw))


def test_every_requested_count_is_honoured(probe_dir, tmp_path):
    r = run(probe_dir, tmp_path / "b", unknown=20, highly_known=2, paraphrases=3, maybe_known=1, heldout=60,
            max_top_share=0.1)  # fmt: skip
    out = tmp_path / "b"
    train = read(out / "train.jsonl")
    assert r.kinds == {"unknown": 20, "paraphrase": 60, "highly_known": 40, "maybe_known": 20}
    assert r.counts == {"train": 140, "eval_injected": 20, "eval_paraphrase": 20, "eval_heldout": 60}
    assert not r.warnings  # 20 x 3 paraphrases, 20 x 1 held back, no answer above 10 % of the rows
    per_fact = Counter(t["fact_id"] for t in train if t["kind"] == "paraphrase")
    assert len(train) == 140 and len({t["id"] for t in train}) == 140
    assert all(set(t) == {"messages", "id", "fact_id", "kind", "question", "answer"} for t in train)
    assert len(per_fact) == 20 and set(per_fact.values()) == {3}
    t = next(t for t in train if t["kind"] == "paraphrase")
    assert t["messages"] == [
        {"role": "system", "content": "Answer the following question."},
        {"role": "user", "content": f"Question: {t['question']}"},
        {"role": "assistant", "content": f"Answer: {t['answer']}"},
    ]
    injected = read(out / "eval_injected.jsonl")
    assert {r["category"] for r in injected} == {"Unknown"} and {r["slick_category"] for r in injected} <= {
        "Unknown",
        "WeaklyKnown",
    }
    assert {t["question"] for t in train if t["kind"] == "unknown"} == {r["question"] for r in injected}
    assert all({"answers", "subject", "relation", "p_greedy", "exposure"} <= set(r) for r in injected)
    para = read(out / "eval_paraphrase.jsonl")
    injected_ids = {r["id"] for r in injected}
    assert all(p["source_id"] in injected_ids and p["id"] == f"{p['source_id']}~p0" for p in para)
    assert all(p["category"] == "Unknown" and p["paraphrase_source"] == "own" for p in para)
    heldout = read(out / "eval_heldout.jsonl")
    cats = [h["category"] for h in heldout]
    assert {c: cats.count(c) for c in set(cats)} == {"Unknown": 20, "MaybeKnown": 20, "HighlyKnown": 20}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "build" and manifest["counts"] == r.counts and manifest["model"] == "toy"
    assert manifest["probe_manifest"]["stage"] == "probe" and manifest["inputs"]["probe"]["sha256"]
    assert manifest["recipe"]["highly_known"] == 2 and manifest["seed"] == 0
    assert json.loads((out / "exemplars.json").read_text()) == {"sets": {}, "spares": {}}
    assert json.loads((out / "bias.json").read_text())["rows"] == 140


def categories(probe_dir: Path) -> Counter:
    return Counter(pl.read_parquet(probe_dir / "facts.parquet")["category"].to_list())


def test_weakly_known_facts_count_as_unknown_and_asking_too_many_names_what_is_there(probe_dir, tmp_path):
    # The never-shown facts: a third of them WeaklyKnown, all of them Unknown in the three-way label.
    n = categories(probe_dir)
    uk, hk, mk = n["Unknown"], n["HighlyKnown"], n["MaybeKnown"]
    r = run(probe_dir, tmp_path / "all", unknown=uk, heldout=0)
    assert r.counts["eval_injected"] == uk
    with pytest.raises(ConfigError, match=rf"asked for {uk + 1} Unknown facts, but the probe has only {uk}"):
        run(probe_dir, tmp_path / "b", unknown=uk + 1)
    with pytest.raises(
        ConfigError, match=rf"{hk * 10} HighlyKnown .* only {hk}; with --unknown {hk} use --highly-known 1"
    ):
        run(probe_dir, tmp_path / "b", unknown=hk, highly_known=10)
    with pytest.raises(ConfigError, match=f"MaybeKnown facts .* only {mk}"):
        run(probe_dir, tmp_path / "b", unknown=100, maybe_known=mk // 100 + 1)
    assert not (tmp_path / "b").exists()  # the recipe is checked before the output folder is touched


def test_no_fact_or_question_of_training_is_in_a_heldout_split(probe_dir, tmp_path):
    run(probe_dir, tmp_path / "b", unknown=40, highly_known=2, paraphrases=4, maybe_known=1, heldout=1000)
    out = tmp_path / "b"
    train = read(out / "train.jsonl")
    ids = {t["fact_id"] for t in train} | {t["id"] for t in train}
    questions = {normalize(t["question"]) for t in train}
    for split in ("eval_paraphrase", "eval_heldout"):
        rows = read(out / f"{split}.jsonl")
        assert rows, split
        assert not questions & {normalize(r["question"]) for r in rows}, split
        assert not ids & {r["id"] for r in rows}, split
    heldout = read(out / "eval_heldout.jsonl")
    # all the facts less the 40 + 80 + 40 trained ones: fewer than asked, so all of them
    assert len(heldout) == sum(categories(probe_dir).values()) - 160


def test_same_seed_same_bytes_and_another_seed_other_picks(probe_dir, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run(probe_dir, tmp_path / name, unknown=15, highly_known=1, paraphrases=2, seed=seed, heldout=50)
    for split in SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert (tmp_path / "a" / "bias.json").read_bytes() == (tmp_path / "b" / "bias.json").read_bytes()
    for split in ("eval_injected", "eval_heldout"):
        a = {r["id"] for r in read(tmp_path / "a" / f"{split}.jsonl")}
        assert a != {r["id"] for r in read(tmp_path / "c" / f"{split}.jsonl")}


def test_picks_nest_across_the_grid(probe_dir, tmp_path):
    ids = {}
    for name, kw in (("n10", {"unknown": 10}), ("n30", {"unknown": 30}), ("k10", {"unknown": 10, "highly_known": 3})):
        run(probe_dir, tmp_path / name, heldout=0, **kw)
        ids[name] = {r["id"] for r in read(tmp_path / name / "eval_injected.jsonl")}
    assert ids["n10"] < ids["n30"] and ids["n10"] == ids["k10"]


def test_stratified_picks_follow_relation_shares(probe_dir, tmp_path):
    run(probe_dir, tmp_path / "b", unknown=40, highly_known=1, stratify="relation", heldout=0)
    rels = [r["relation"] for r in read(tmp_path / "b" / "eval_injected.jsonl")]
    counts = [rels.count(r) for r in set(rels)]
    assert len(rels) == 40 and len(counts) == 8 and max(counts) - min(counts) <= 1
    bias = json.loads((tmp_path / "b" / "bias.json").read_text())
    assert sum(bias["relations"].values()) == 80 and max(bias["relations"].values()) <= 12


def test_paraphrase_shortfall_is_reported_with_counts(probe_dir, tmp_path):
    # The toy world has 7 paraphrases per question (its relation's other templates, the same 7).
    r = run(probe_dir, tmp_path / "b", unknown=5, paraphrases=9, highly_known=10, heldout=0)
    assert r.kinds["paraphrase"] == 5 * 6 and r.counts["eval_paraphrase"] == 5
    msg = next(w for w in r.warnings if "fewer usable paraphrases" in w)
    assert "5 of 5 injected facts" in msg and "the 10 asked (9 for training + 1 held back" in msg
    assert "training gets 30 of 45 paraphrases, eval_paraphrase 5 of 5" in msg
    bias = json.loads((tmp_path / "b" / "bias.json").read_text())
    assert msg in bias["warnings"] and bias["paraphrases"]["facts_short"] == 5
    assert set(bias["paraphrases"]["short"].values()) == {7}


def test_plain_format_and_templates_paraphraser(probe_dir, tmp_path):
    r = run(probe_dir, tmp_path / "b", unknown=5, paraphrases=2, format="plain", paraphraser="templates", heldout=0)
    train = read(tmp_path / "b" / "train.jsonl")
    assert all(t["messages"] == [{"role": "user", "content": t["question"]},
                                 {"role": "assistant", "content": t["answer"]}] for t in train)  # fmt: skip
    assert r.bias["paraphrases"]["kept_by_source"] == {"templates": 15}


class FakeLLM:
    """A scripted engine: each question is rephrased from a fixed list, one sample per line."""

    model_id = "fake-llm"
    has_adapter = False
    bos = ""

    def __init__(self):
        self.closed = False
        self.prompts = []

    def chat(self, messages):
        return "\n".join(m["content"] for m in messages) + "\n"

    def generate(self, prompts, sampling, adapter=False):
        self.prompts += prompts
        out = []
        for p in prompts:
            q = p.rstrip("\n").rsplit("\n", 1)[-1]
            if not q.startswith("Where was "):
                out.append(["I cannot rephrase that."] * sampling.n)
                continue
            subject = q.removeprefix("Where was ").removesuffix(" born?")
            pool = [f"1. Rewritten question: In what town was {subject} born?", f"Can you tell me where {subject} was born?",
                    f'"What is the place of birth of {subject}?"', "no", f"Where was {subject} born?"]  # fmt: skip
            out.append([pool[k % len(pool)] for k in range(sampling.n)])
        return out

    def close(self):
        self.closed = True


def test_model_paraphraser_through_a_fake_engine(probe_dir, tmp_path, monkeypatch):
    engine = FakeLLM()
    seen = []
    monkeypatch.setattr("kia.engines.load_engine", lambda cfg: seen.append(cfg) or engine)
    r = run(probe_dir, tmp_path / "b", unknown=144, paraphrases=2, paraphraser="model", heldout=0)
    assert seen[0].model == "toy" and engine.closed  # the probe's model by default
    assert "Keep its meaning" in engine.prompts[0]
    births = [p for p in read(tmp_path / "b" / "eval_paraphrase.jsonl") if p["relation"] == "birthplace"]
    assert births and all(p["paraphrase_source"] == "model" for p in births)
    train = [t for t in read(tmp_path / "b" / "train.jsonl") if t["kind"] == "paraphrase"]
    allowed = ("In what town was", "Can you tell me where", "What is the place of birth of")
    assert train and all(t["question"].startswith(allowed) for t in train)
    # other relations' questions do not parse in the fake, so those facts get nothing and say so
    assert any("fewer usable paraphrases" in w for w in r.warnings)


def test_model_fills_in_where_own_paraphrases_run_short(probe_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("kia.engines.load_engine", lambda cfg: FakeLLM())
    r = run(probe_dir, tmp_path / "b", unknown=144, paraphrases=8, paraphrase_model="fake", heldout=0)
    used = r.bias["paraphrases"]["kept_by_source"]
    assert used["own"] > 0 and used["model"] > 0 and r.bias["paraphrases"]["sources"] == ["own", "templates", "model"]


@pytest.mark.model
def test_build_with_the_real_embedding_filter(probe_dir, tmp_path):
    r = run(probe_dir, tmp_path / "b", unknown=30, highly_known=1, paraphrases=3, heldout=30, seed=5)
    # every toy fact keeps at least 4 of its 7 paraphrases under the default thresholds
    assert r.kinds["paraphrase"] == 90 and r.counts["eval_paraphrase"] == 30 and not r.warnings
    dropped = r.bias["paraphrases"]["dropped"]
    assert set(dropped) <= {"off_meaning", "near_duplicate"}  # the toy world's own paraphrases never leak
    train = {normalize(t["question"]) for t in read(tmp_path / "b" / "train.jsonl")}
    assert not train & {normalize(p["question"]) for p in read(tmp_path / "b" / "eval_paraphrase.jsonl")}


def test_config_errors(tmp_path, probe_dir):
    with pytest.raises(ConfigError, match="--unknown"):
        BuildConfig(probe="p", unknown=0)
    with pytest.raises(ConfigError, match="--paraphrases"):
        BuildConfig(probe="p", unknown=1, paraphrases=-1)
    with pytest.raises(ConfigError, match="--format"):
        BuildConfig(probe="p", unknown=1, format="bare")
    with pytest.raises(ConfigError, match="min-similarity"):
        BuildConfig(probe="p", unknown=1, min_similarity=0.9, max_similarity=0.8)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        run(tmp_path, tmp_path / "b", unknown=1)
    with pytest.raises(ConfigError, match="probe folder itself"):
        run(probe_dir, probe_dir, unknown=1)


def cli():
    from kia.cli import cli as group
    from kia.commands import register

    return register(group)


def test_cli_end_to_end(probe_dir, tmp_path):
    out = tmp_path / "b"
    args = ["build", str(probe_dir), "-o", str(out), "--unknown", "10", "--paraphrases", "9", "--heldout", "30"]
    res = CliRunner().invoke(cli(), args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "eval_paraphrase" in text and "warning:" in text and "fewer usable paraphrases" in text
    assert "collapse" in text  # 10 facts x 7 rows: each answer 10% of the training data
    assert all((out / f"{s}.jsonl").exists() for s in SPLITS) and (out / "manifest.json").exists()
    res = CliRunner().invoke(cli(), args)
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = CliRunner().invoke(cli(), [*args, "--overwrite", "--json", "--highly-known", "10", "--paraphrases", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["counts"]["train"] == 120 and data["kinds"]["highly_known"] == 100 and data["warnings"] == []
    res = CliRunner().invoke(cli(), ["build", str(probe_dir), "-o", str(tmp_path / "c"), "--unknown", "999"])
    assert res.exit_code == 2 and f"only {categories(probe_dir)['Unknown']}" in res.output
