"""Tier 1: the SliCK rules, the lazy schedule and resume, with a scripted engine (no model)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from kia.engines import Sampling
from kia.engines.scripted import ScriptedEngine
from kia.errors import ArtifactError, ConfigError
from kia.facts import Fact
from kia.probe import ProbeConfig, probe_facts, slick_label, three_way
from kia.probe.prompts import PromptBuilder, make_exemplar_sets


@pytest.mark.parametrize(
    ("p_greedy", "full", "p_sample", "slick", "three"),
    [
        (1.0, True, None, "HighlyKnown", "HighlyKnown"),
        (0.5, True, None, "MaybeKnown", "MaybeKnown"),
        (0.1, True, 0.9, "MaybeKnown", "MaybeKnown"),
        (1.0, False, None, "MaybeKnown", "MaybeKnown"),  # right so far, but not every pass was run
        (0.0, True, 0.01, "WeaklyKnown", "Unknown"),
        (0.0, True, 0.0, "Unknown", "Unknown"),
        (0.0, True, None, "Unknown", "Unknown"),
    ],
)
def test_category_rules(p_greedy, full, p_sample, slick, three):
    assert slick_label(p_greedy, full, p_sample) == slick
    assert three_way(slick) == three


def _facts(n: int = 12) -> list[Fact]:
    return [Fact(id=f"f{i}", question=f"Where is thing {i}?", answers=(f"Place{i}",), relation="r") for i in range(n)]


def _config(**kw) -> ProbeConfig:
    return ProbeConfig(facts="-", model="scripted", **kw)


def _script(facts):
    """f0,f1: always right (HK); f2,f3: right on odd calls (MK); f4: greedy wrong, samples sometimes
    right (WK); the rest: always wrong (Unknown)."""
    script = {}
    for i, f in enumerate(facts):
        if i < 2:
            script[f.question] = f.answer
        elif i < 4:
            script[f.question] = lambda q, call, k, a=f.answer: a if call % 2 else "Nowhere"
        elif i == 4:
            script[f.question] = lambda q, call, k, a=f.answer: a if (call >= 10 and k == 3) else "Nowhere"
        else:
            script[f.question] = "Nowhere"
    return script


def test_lazy_and_exhaustive_agree_on_labels_and_lazy_is_cheaper():
    facts = _facts()
    sets = make_exemplar_sets(facts, n_sets=10, shots=4, seed=0)
    lazy_engine = ScriptedEngine(_script(facts))
    lazy = probe_facts(lazy_engine, facts, sets, _config())
    full_engine = ScriptedEngine(_script(facts))
    full = probe_facts(full_engine, facts, sets, _config(exhaustive=True))
    assert [r["slick_category"] for r in lazy] == [r["slick_category"] for r in full]
    assert [r["slick_category"] for r in full][:6] == [
        "HighlyKnown",
        "HighlyKnown",
        "MaybeKnown",
        "MaybeKnown",
        "WeaklyKnown",
        "Unknown",
    ]
    assert lazy_engine.n_generated < full_engine.n_generated
    # Exhaustive: 10 greedy + 160 samples for every fact.
    assert all(r["n_generations"] == 170 for r in full)
    # Lazy: MaybeKnown stops after its second greedy pass; known facts are never sampled.
    assert lazy[2]["n_greedy"] == 2 and lazy[2]["n_sample"] == 0
    assert lazy[0]["n_sample"] == 0 and lazy[0]["p_greedy"] == 1.0
    # Lazy sampling stops at the first correct sample; Unknown facts draw all 160.
    assert lazy[4]["n_sample"] == 4 and lazy[4]["p_sample"] == 0.25
    assert lazy[6]["n_sample"] == 160 and lazy[6]["p_sample"] == 0.0
    assert full[2]["p_greedy"] == 0.5


def test_exemplar_sets_never_contain_the_probed_fact_and_are_fixed_by_seed():
    facts = _facts(20)
    sets = make_exemplar_sets(facts, n_sets=10, shots=4, seed=3)
    again = make_exemplar_sets(list(reversed(facts)), n_sets=10, shots=4, seed=3)
    assert sets.to_json() == again.to_json()
    assert sets.to_json() != make_exemplar_sets(facts, n_sets=10, shots=4, seed=4).to_json()
    for f in facts:
        for s in range(10):
            chosen = sets.for_fact(f, s)
            assert len(chosen) == 4 and f.id not in {c.id for c in chosen}
            assert len({c.id for c in chosen}) == 4


def test_prompts_use_chat_template_or_plain_lines():
    shots = [("Where is A?", "X"), ("Where is B?", "Y")]
    chat = PromptBuilder(ScriptedEngine({}))(shots, "Where is C?")
    assert chat.text == (
        "Answer the following question.\nQuestion: Where is A?\nAnswer: X\nQuestion: Where is B?\nAnswer: Y\n"
        "Question: Where is C?\n"
    )
    assert chat.suffix == "Question: Where is C?\n"
    plain = PromptBuilder(ScriptedEngine({}, chat_template=False))(shots, "Where is C?")
    assert plain.text == "Q: Where is A?\nA: X\nQ: Where is B?\nA: Y\nQ: Where is C?\nA:"


def test_refusal_flag_comes_from_the_first_greedy_answer():
    facts = _facts(6)
    sets = make_exemplar_sets(facts, n_sets=3, shots=2, seed=0)
    engine = ScriptedEngine({facts[0].question: "I don't know."}, default="Nowhere")
    rows = probe_facts(engine, facts, sets, _config(n_sets=3, n_samples=2))
    assert rows[0]["refused"] is True and rows[0]["refusal_share"] == 1.0
    assert rows[1]["refused"] is False


def test_config_validation():
    with pytest.raises(ConfigError, match="match"):
        _config(match="fuzzy")
    with pytest.raises(ConfigError, match="n_sets"):
        _config(n_sets=0)
    with pytest.raises(ConfigError, match="greedy"):
        Sampling(n=2, temperature=0.0)


def _run(tmp_path, monkeypatch, engine_factory, **kw):
    from kia.probe import run as probe_mod

    monkeypatch.setattr(probe_mod, "load_engine", lambda cfg: engine_factory())
    tmp_path.mkdir(parents=True, exist_ok=True)
    facts_path = tmp_path / "facts.jsonl"
    if not facts_path.exists():
        facts_path.write_text("".join(json.dumps(f.to_dict()) + "\n" for f in _facts(12)))
    cfg = ProbeConfig(facts=str(facts_path), model="scripted", output=str(tmp_path / "out"), shard_size=5, **kw)
    return probe_mod.probe(cfg)


def test_probe_folder_contents_and_summary(tmp_path, monkeypatch):
    facts = _facts(12)
    result = _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)))
    out = tmp_path / "out"
    table = pl.read_parquet(out / "facts.parquet")
    assert table["id"].to_list() == [f.id for f in facts]
    for col in ("id", "category", "slick_category", "p_greedy", "p_sample", "n_generations", "answer", "refused"):
        assert col in table.columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"Unknown": 8, "MaybeKnown": 2, "HighlyKnown": 2}
    assert summary["slick_counts"]["WeaklyKnown"] == 1
    assert result.counts == summary["counts"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "probe" and manifest["counts"] == summary["counts"]


def test_killed_probe_resumes_with_nothing_lost_or_duplicated(tmp_path, monkeypatch):
    facts = _facts(12)
    reference = _run(tmp_path / "ref", monkeypatch, lambda: ScriptedEngine(_script(facts)))

    class Boom(RuntimeError):
        pass

    class Dying(ScriptedEngine):
        def generate(self, prompts, sampling, *, adapter=False):
            if self.n_generated > 200:  # dies inside the second shard
                raise Boom("killed")
            return super().generate(prompts, sampling, adapter=adapter)

    with pytest.raises(Boom):
        _run(tmp_path / "run", monkeypatch, lambda: Dying(_script(facts)))
    out = tmp_path / "run" / "out"
    assert not (out / "manifest.json").exists()
    assert len(list((out / "shards").glob("facts-*.parquet"))) == 1
    resumed = _run(tmp_path / "run", monkeypatch, lambda: ScriptedEngine(_script(facts)))
    assert resumed.resumed_shards == 1
    a = pl.read_parquet(tmp_path / "ref" / "out" / "facts.parquet")
    b = pl.read_parquet(out / "facts.parquet")
    assert a.equals(b)
    assert reference.counts == resumed.counts


def test_finished_folder_is_not_overwritten_silently(tmp_path, monkeypatch):
    facts = _facts(12)
    _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)))
    with pytest.raises(ArtifactError, match="--overwrite"):
        _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)))
    _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)), overwrite=True)


def test_unfinished_folder_with_other_settings_is_refused(tmp_path, monkeypatch):
    facts = _facts(12)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": {"seed": 99}, "facts_sha256": "x"}))
    with pytest.raises(ArtifactError, match="other settings"):
        _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)))


def test_vllm_engine_without_vllm_is_a_clear_error():
    import importlib.util

    from kia.engines import EngineConfig, load_engine
    from kia.errors import EngineError

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(EngineError, match="pip install"):
        load_engine(EngineConfig(model="x", engine="vllm"))


def test_cli_help_is_fast_and_lists_every_stage():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kia", "--help"], capture_output=True, text=True, check=True
    )
    assert "probe" in out.stdout and "build" in out.stdout and "inject" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformers", "polars", "datasets"} & imported


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    from click.testing import CliRunner

    from kia.cli import cli
    from kia.commands import register

    register(cli)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "Q?", "answers": [""]}\n')
    res = CliRunner().invoke(cli, ["probe", str(bad), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and f"{bad}:1:" in res.output and "answers" in res.output


def test_streamed_probe_draws_the_exemplar_sets_of_the_whole_pool(tmp_path, monkeypatch):
    """The probe reads its input in streamed passes; its exemplar sets must be the ones drawn from
    the facts held in memory (what every later stage rebuilds prompts from)."""
    from kia.probe import load_exemplar_sets

    facts = _facts(12)
    _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(facts)))
    streamed = load_exemplar_sets(tmp_path / "out").to_json()
    assert streamed == make_exemplar_sets(facts, 10, 4, 0).to_json()


def test_summarize_reads_a_scanned_file_like_a_loaded_one(tmp_path, monkeypatch):
    from kia.probe import summarize

    _run(tmp_path, monkeypatch, lambda: ScriptedEngine(_script(_facts(12))))
    path = tmp_path / "out" / "facts.parquet"
    assert summarize(pl.scan_parquet(path)) == summarize(pl.read_parquet(path))
    assert summarize(pl.read_parquet(path).head(0))["n_facts"] == 0


def test_greedy_only_labels_from_the_greedy_answers_alone():
    """Pletenev et al.'s released probe: every greedy pass, no sample; the three-way label as the
    full probe's, WeaklyKnown left undecided (slick_category null) where no greedy answer is right."""
    from kia.probe.slick import greedy_rows

    facts = _facts()
    sets = make_exemplar_sets(facts, n_sets=10, shots=4, seed=0)
    engine = ScriptedEngine(_script(facts))
    rows = probe_facts(engine, facts, sets, _config(greedy_only=True))
    full = probe_facts(ScriptedEngine(_script(facts)), facts, sets, _config(exhaustive=True))
    assert [r["category"] for r in rows] == [r["category"] for r in full]
    assert [r["category"] for r in rows][:5] == ["HighlyKnown"] * 2 + ["MaybeKnown"] * 2 + ["Unknown"]
    assert all(r["n_generations"] == 10 and r["n_sample"] == 0 and r["p_sample"] is None for r in rows)
    assert engine.n_generated == 10 * len(facts)  # not one sample drawn
    assert [r["slick_category"] for r in rows][:5] == ["HighlyKnown"] * 2 + ["MaybeKnown"] * 2 + [None]
    assert all((r["slick_category"] is None) == (r["p_greedy"] == 0) for r in rows)
    # the same rows from the same greedy answers generated elsewhere (Ray's vLLM stage)
    answers = [r["greedy_answers"] for r in rows]
    assert greedy_rows(facts, answers, _config(greedy_only=True)) == rows
    with pytest.raises(ValueError):
        greedy_rows(facts, answers, _config())


def test_greedy_only_and_exhaustive_do_not_combine():
    with pytest.raises(ConfigError, match="greedy-only"):
        _config(greedy_only=True, exhaustive=True)
