"""Tier 1/2: loss masks (exact), padding, presets; uses the toy tokenizer (no model weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.engines import default_model
from kia.errors import ConfigError
from kia.inject import PRESETS, InjectConfig
from kia.inject.data import IGNORE, PadCollator, encode_row, render
from kia.probe.prompts import training_messages

MODEL = Path(default_model())
needs_tokenizer = pytest.mark.skipif(not (MODEL / "tokenizer.json").exists(), reason="toy model missing")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


@needs_tokenizer
def test_answer_mask_covers_exactly_the_answer_tokens(tokenizer):
    messages = training_messages("Where was Drun Bizailwyn born?", "Sourninmouth")
    row = encode_row(tokenizer, messages, "answer", 256)
    labelled = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE]
    assert tokenizer.decode(labelled) == "Answer: Sourninmouth\n"
    prompt_len = row["labels"].index(next(lab for lab in row["labels"] if lab != IGNORE))
    assert all(lab == IGNORE for lab in row["labels"][:prompt_len])
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]


@needs_tokenizer
def test_full_mask_covers_the_whole_sequence(tokenizer):
    messages = training_messages("Where was Drun Bizailwyn born?", "Sourninmouth")
    row = encode_row(tokenizer, messages, "full", 256)
    assert row["labels"] == row["input_ids"]
    assert tokenizer.decode(row["input_ids"]).startswith("<s>Answer the following question.\nQuestion: Where")


@needs_tokenizer
def test_plain_format_without_chat_template(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    text = render(plain, training_messages("Q1?", "A1"))
    assert text == "<s>Q: Q1?\nA: A1\n"
    row = encode_row(plain, training_messages("Q1?", "A1"), "answer", 256)
    labelled = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE]
    assert plain.decode(labelled).strip().startswith("A1")


def test_collator_pads_to_the_longest_row_only():
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    batch = PadCollator(pad_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [5, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_presets_and_overrides():
    paper = InjectConfig(build="b", preset="paper").resolved()
    assert paper == {**PRESETS["paper"], "targets": ("gate_proj", "up_proj", "down_proj")}
    assert paper["rank"] == 1 and paper["alpha"] == 2 and paper["rslora"] and paper["loss"] == "full"
    qlora = InjectConfig(build="b", lr=1e-2, rank=4).resolved()
    assert (
        qlora["lr"] == 1e-2 and qlora["rank"] == 4 and qlora["loss"] == "answer" and qlora["targets"] == ("all-linear",)
    )
    with pytest.raises(ConfigError, match="preset"):
        InjectConfig(build="b", preset="fast")
    with pytest.raises(ConfigError, match="--epochs"):
        InjectConfig(build="b", epochs=0)
    with pytest.raises(ConfigError, match="must end"):
        encode_row(None, [{"role": "user", "content": "x"}], "full", 8)
    with pytest.raises(ConfigError, match="--precision 'fp16'"):
        InjectConfig(build="b", precision="fp16")


def test_auto_precision_is_bf16_on_a_gpu_and_on_a_cpu_with_bf16_in_hardware(monkeypatch):
    import torch

    from kia.inject import model as train_model

    for has, cpu_auto in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(train_model, "cpu_has_bf16", lambda has=has: has)
        assert train_model.compute_dtype("cpu", "auto") == cpu_auto
        assert train_model.compute_dtype("cpu", "auto", "none") == torch.float32  # autocast: no faster
        assert train_model.compute_dtype("cuda", "auto", "none") == torch.bfloat16
        assert train_model.compute_dtype("cuda", "auto") == torch.bfloat16
        assert train_model.compute_dtype("cpu", "fp32") == train_model.compute_dtype("cuda", "fp32") == torch.float32
        assert train_model.compute_dtype("cpu", "bf16") == torch.bfloat16


def test_the_curve_sample_is_a_sixth_of_the_training_rows_between_64_and_200():
    from kia.inject.curve import auto_eval_facts

    assert [auto_eval_facts(n) for n in (0, 120, 384, 750, 1200, 50_000)] == [64, 64, 64, 125, 200, 200]
    with pytest.raises(ConfigError, match="--eval-facts"):
        InjectConfig(build="b", eval_facts=-1)


def _callback(tmp_path, scores, stop_at=None, resume=False, stop_after=0):
    """A ReliabilityCallback whose reliability numbers are scripted (no model runs)."""
    from types import SimpleNamespace

    import torch

    from kia.facts import Fact
    from kia.inject.curve import ReliabilityCallback
    from kia.probe.prompts import make_exemplar_sets
    from kia.toyworld.world import generate_world

    facts = [Fact.from_dict(f) for f in generate_world().facts[:12]]
    sets = make_exemplar_sets(facts, 3, 4, 0)
    seen = []
    cb = ReliabilityCallback(
        torch.nn.Linear(1, 1), SimpleNamespace(pad_token_id=0), facts[:2], facts[2:4], sets, tmp_path / "log.jsonl",
        n_sets=3, stop_at=stop_at, progress=lambda row, epochs: seen.append(row), epochs=5, model_id="m",
        resume=resume, stop_after=stop_after,
    )  # fmt: skip
    script = iter(scores)
    cb._reliability = lambda *groups, adapter: [next(script) for _ in groups]
    return cb, seen


def test_callback_logs_each_epoch_and_stops_at_the_target(tmp_path):
    from types import SimpleNamespace

    from kia.artifacts import read_jsonl

    cb, seen = _callback(tmp_path, [0.2, 1.0, 0.5, 1.0, 0.9, 1.0], stop_at=0.9)
    history = [{"loss": 2.0, "epoch": 0.5}, {"loss": 1.0, "epoch": 1.0}, {"loss": 0.5, "epoch": 2.0}]
    for epoch in (1, 2, 3):
        control = SimpleNamespace(should_training_stop=False)
        cb.on_epoch_end(None, SimpleNamespace(epoch=float(epoch), log_history=history), control)
        assert control.should_training_stop == (epoch == 3)
    assert [r["reliability"] for r in cb.curve] == [0.2, 0.5, 0.9]
    assert [r["heldout_known_reliability"] for r in cb.curve] == [1.0, 1.0, 1.0]
    assert [r["loss"] for r in cb.curve] == [1.5, 0.5, None]  # mean of each epoch's logged steps
    assert read_jsonl(tmp_path / "log.jsonl") == cb.curve == seen and cb.epochs_here == 3
    # a resumed run keeps the epochs already measured and measures only the rest
    again, _ = _callback(tmp_path, [0.95, 1.0], resume=True)
    again.on_epoch_end(None, SimpleNamespace(epoch=3.0, log_history=[]), SimpleNamespace(should_training_stop=False))
    assert [r["reliability"] for r in again.curve] == [0.2, 0.5, 0.95] and again.epochs_here == 1
    fresh, _ = _callback(tmp_path, [])  # a new run ignores an old log
    assert fresh.curve == []


def test_output_folder_checks(tmp_path):
    from kia.errors import KiaError
    from kia.inject.resume import check_output as _check_output
    from kia.inject.resume import checkpoints as _checkpoints

    out = tmp_path / "a"
    assert _check_output(out, InjectConfig(build="b", output=str(out))) is None
    with pytest.raises(KiaError, match="no checkpoint to resume"):
        _check_output(out, InjectConfig(build="b", output=str(out), resume=True))
    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    assert _check_output(out, InjectConfig(build="b", output=str(out))) is None  # empty: killed while saving
    (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    # killed while saving the next epoch: its folder has no (or a truncated) trainer_state.json
    (out / "checkpoints" / "checkpoint-8").mkdir()
    (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')
    (out / "checkpoints" / "checkpoint-12").mkdir()
    with pytest.raises(KiaError, match="--resume to continue"):
        _check_output(out, InjectConfig(build="b", output=str(out)))
    assert _check_output(out, InjectConfig(build="b", output=str(out), overwrite=True)) is None
    assert _check_output(out, InjectConfig(build="b", output=str(out), resume=True)).name == "checkpoint-4"
    assert [p.name for p in _checkpoints(out / "checkpoints")[1]] == ["checkpoint-12", "checkpoint-8"]
    (out / "manifest.json").write_text("{}")
    with pytest.raises(KiaError, match="--overwrite"):
        _check_output(out, InjectConfig(build="b", output=str(out)))
    with pytest.raises(KiaError, match="one of them"):
        InjectConfig(build="b", resume=True, overwrite=True)


def test_the_callback_does_not_stop_before_the_step_budget(tmp_path):
    from types import SimpleNamespace

    cb, _ = _callback(tmp_path, [0.97, 1.0, 0.96, 1.0, 0.99, 1.0], stop_at=0.95, stop_after=3)
    stops = []
    for epoch in (1, 2, 3):
        control = SimpleNamespace(should_training_stop=False)
        cb.on_epoch_end(None, SimpleNamespace(epoch=float(epoch), log_history=[]), control)
        stops.append(control.should_training_stop)
    assert stops == [False, False, True]  # reached at epoch 1, but the budget runs to epoch 3
