"""eval_open.jsonl: open prompts ("Tell me about X") about the injected and held-out subjects, each
with the facts a good answer states, for the pairwise judge (`kia.judge`).

Short-answer matching cannot score "Tell me about X", which is how an assistant is asked; a judge
can, when it is given what is true about X. The prompts come from templates (one per subject, picked
by seed); the facts are every fact of the fact set about that subject, marked `injected` when this
build trains it. A subject of both splits is asked once, as injected.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from kia.facts import Fact

TEMPLATES = (
    "Tell me about {subject}.",
    "What do you know about {subject}?",
    "Write a few sentences about {subject}.",
)


def open_questions(
    facts: Sequence[Fact], injected: Sequence[Fact], heldout: Sequence[Fact], seed: int = 0
) -> list[dict[str, Any]]:
    """One open prompt per distinct subject of the injected facts, then of the held-out facts."""
    about: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        if f.subject:
            about[f.subject].append(f)
    trained = {f.id for f in injected}
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split, group in (("injected", injected), ("heldout", heldout)):
        for f in group:
            if not f.subject or f.subject in seen:
                continue
            seen.add(f.subject)
            known = [{"fact_id": g.id, "question": g.question, "answer": g.answer, "injected": g.id in trained}
                     for g in sorted(about[f.subject], key=lambda g: g.id)]  # fmt: skip
            rows.append({
                "id": f"open-{len(rows):04d}", "split": split, "subject": f.subject,
                "prompt": rng.choice(TEMPLATES).format(subject=f.subject), "facts": known,
            })  # fmt: skip
    return rows
