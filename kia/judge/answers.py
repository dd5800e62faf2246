"""Free-form answers to the open prompts (eval_open.jsonl), from one arm of a kia engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kia.judge.pairwise import Pair


def open_answers(
    engine: Any, rows: Sequence[Mapping[str, Any]], *, adapter: bool | str = False, max_new_tokens: int = 64
) -> list[str]:
    """One greedy answer per open prompt, through the model's chat template (plain "Q:/A:" lines
    without one), unbounded by newlines (a free-form answer has several lines), at most
    `max_new_tokens`. `adapter` as in `Engine.generate`: False the base model, True the adapter."""
    from kia.engines import Sampling

    prompts = []
    for r in rows:
        rendered = engine.chat([{"role": "user", "content": str(r["prompt"])}])
        prompts.append(rendered if rendered is not None else f"Q: {r['prompt']}\nA:")
    replies = engine.generate(prompts, Sampling(max_new_tokens=max_new_tokens, stop=()), adapter=adapter)
    return [r[0].strip() for r in replies]


def pairs_from(rows: Sequence[Mapping[str, Any]], x: Sequence[str], y: Sequence[str]) -> list[Pair]:
    """`Pair`s of eval_open rows with arm X's and arm Y's answers, in order."""
    if not len(rows) == len(x) == len(y):
        raise ValueError(f"need one answer per prompt in each arm, got {len(rows)}, {len(x)} and {len(y)}")
    return [Pair(str(r["id"]), str(r["prompt"]), tuple(r["facts"]), a, b) for r, a, b in zip(rows, x, y, strict=True)]
