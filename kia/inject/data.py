"""Training rows to token ids and labels: the chat template, and which tokens carry the loss.

`paper` mode puts the loss on the whole sequence, as the released code of Pletenev et al. does
(labels = input ids, padding masked). `answer` mode puts it on the assistant's answer only, the
usual choice for instruction tuning: the prompt is rendered with the generation prompt and its
tokens are masked, so the model learns the answer and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kia.errors import ConfigError

IGNORE = -100
LOSS_MODES = ("full", "answer")


def render(tokenizer: Any, messages: Sequence[dict[str, str]], *, generation_prompt: bool = False) -> str:
    """Messages as text: the chat template when there is one, else plain "Q: … / A: …" lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    bos = tokenizer.bos_token or ""
    text = bos
    for m in messages:
        if m["role"] == "user":
            text += f"Q: {m['content'].removeprefix('Question: ')}\n"
        elif m["role"] == "assistant":
            text += f"A: {m['content'].removeprefix('Answer: ')}\n"
    if generation_prompt:
        text += "A:"
    return text


def encode_row(
    tokenizer: Any, messages: Sequence[dict[str, str]], loss: str, max_length: int | None = None
) -> dict[str, list[int]]:
    """`input_ids` and `labels` for one training row (see the module docstring for `loss`), cut to
    `max_length` tokens when given."""
    if loss not in LOSS_MODES:
        raise ConfigError(f"unknown loss mode '{loss}'; choose one of: {', '.join(LOSS_MODES)}")
    if not messages or messages[-1]["role"] != "assistant":
        raise ConfigError("a training row must end with the assistant's answer")
    ids = tokenizer(render(tokenizer, messages), add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None and getattr(tokenizer, "chat_template", None) is None:
        ids = ids + [tokenizer.eos_token_id]
    labels = list(ids)
    if loss == "answer":
        prompt = tokenizer(render(tokenizer, messages[:-1], generation_prompt=True), add_special_tokens=False).input_ids
        if ids[: len(prompt)] != prompt:
            raise ConfigError(
                "the chat template renders the prompt differently with and without the answer, so the "
                "answer tokens cannot be found; use --preset paper (loss on the whole sequence)"
            )
        labels[: len(prompt)] = [IGNORE] * len(prompt)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}  # [:None] keeps everything


class PadCollator:
    """Pads each batch to its own longest row (right padding), labels with -100: no fixed length."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class FlatCollator:
    """Padding-free batches: transformers' `DataCollatorWithFlattening` concatenates the rows into one
    sequence whose position ids restart at each row, and the model's mask keeps attention inside
    each row. That mask is only built without a KV cache (transformers' masking_utils), so the
    batch also turns the cache off: with it, rows would attend to the rows before them."""

    def __init__(self) -> None:
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening()

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {**self.flatten(rows), "use_cache": False}
