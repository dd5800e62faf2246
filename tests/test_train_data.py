"""Tier 1/2: loss masks (exact), padding, presets; uses the toy tokenizer (no model weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kia.engines import default_model
from kia.errors import ConfigError
from kia.prompts import training_messages
from kia.train import PRESETS, InjectConfig
from kia.train_data import IGNORE, PadCollator, encode_row, render

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
