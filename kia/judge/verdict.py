"""The judge's prompt and the parsing of its verdict.

The judge sees the open prompt, the reference facts a good answer states, and two answers labelled
A and B, and is asked which one is more accurate against the facts (criterion "accuracy"), or, for
criterion "style", the prompt, examples of the training answers and the two answers, and is asked
which one is closer to the training answers in form, length and tone (the QLoRA interview study's
second axis: an adapter can state the facts and still answer unlike what it was taught, or teach a
style that leaks into every answer). It must reply with a line
"Winner: A", "Winner: B" or "Winner: tie" and a "Reason: ..." line; a JSON object
{"winner": ..., "reason": ...} is accepted too: `VERDICT_SCHEMA` is its JSON schema, which an HTTP
judge sends as the OpenAI `response_format` so that a server with guided decoding (vLLM) can only
produce a verdict. Anything else is not a verdict (`JudgeError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kia.errors import JudgeError

SYSTEM = (
    "You compare two answers to the same request for factual accuracy. The reference facts are true. "
    "An answer is better when it states more of the reference facts and contradicts fewer of them; "
    "length, style and the order of the answers do not matter."
)
STYLE_SYSTEM = (
    "You compare two answers to the same request for style only: which one is closer to the example "
    "answers in form, length and tone. Whether the answers are true does not matter here, nor does the "
    "order of the answers."
)
CRITERIA = ("accuracy", "style")
# The reason is bounded: a weak judge under guided decoding otherwise writes one unterminated string
# until max_tokens (no verdict at all); 150 characters stay below HttpJudge's 200 tokens even at one
# character per token, and a backend that ignores maxLength is no worse off than without it.
REASON_MAX_CHARS = 150
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
    },
    "required": ["winner", "reason"],
    "additionalProperties": False,
}
_WINNER = re.compile(r"winner\s*[:=]\s*\**\s*(a|b|tie)\b", re.IGNORECASE)
_REASON = re.compile(r"reason\s*[:=]\s*(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    winner: str  # "A", "B" or "tie": by position in the prompt, not by arm
    reason: str


def judge_messages(
    prompt: str,
    facts: Sequence[Mapping[str, Any]],
    first: str,
    second: str,
    *,
    criterion: str = "accuracy",
    examples: Sequence[Mapping[str, str]] = (),
) -> list[dict[str, str]]:
    """The chat messages for one judgment: `first` is shown as answer A, `second` as B. `examples`
    ({"question", "answer"} each, from the training split) are the style criterion's reference."""
    answers = f"Answer A:\n{first.strip() or '(empty)'}\n\nAnswer B:\n{second.strip() or '(empty)'}\n\n"
    reply = (
        'Reply with one line "Winner: A", "Winner: B" or "Winner: tie", then one line "Reason: " and a short reason.'
    )
    if criterion == "style":
        shown = "\n".join(f"- Q: {e['question']}\n  A: {e['answer']}" for e in examples) or "- (none)"
        user = (
            f"Request: {prompt}\n\nExample answers (the style to match):\n{shown}\n\n{answers}"
            f"Which answer is closer in style to the example answers? {reply}"
        )
        return [{"role": "system", "content": STYLE_SYSTEM}, {"role": "user", "content": user}]
    if criterion != "accuracy":
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    listed = "\n".join(f"- {f['question']} {f['answer']}" for f in facts) or "- (none)"
    user = f"Request: {prompt}\n\nReference facts:\n{listed}\n\n{answers}Which answer is more accurate? {reply}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Verdict:
    """A `Verdict` from the judge's reply; `JudgeError` (with the start of the reply) if there is none."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and str(obj.get("winner", "")).strip().lower() in ("a", "b", "tie"):
            w = str(obj["winner"]).strip().lower()
            return Verdict("tie" if w == "tie" else w.upper(), str(obj.get("reason", "")))
    match = _WINNER.search(text)
    if not match:
        raise JudgeError(f"the judge's reply is not a verdict: {stripped[:120]!r}")
    w = match.group(1).lower()
    reason = _REASON.search(text)
    return Verdict("tie" if w == "tie" else w.upper(), reason.group(1).strip() if reason else "")
