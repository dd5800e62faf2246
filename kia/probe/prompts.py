"""Few-shot probe prompts, as in the papers, and the exemplar sets they draw from.

With a chat template: system "Answer the following question.", then k turns of user
"Question: …" / assistant "Answer: …", then user "Question: <target>" (Pletenev et al. App. B).
Without one: plain "Q: … / A: …" lines (Gekhman et al. §3). The exemplars, identical for every
fact of a relation, form the prompt's prefix, which engines may cache.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kia.engines import Engine, Prompt
from kia.errors import ConfigError
from kia.facts import Fact

SYSTEM = "Answer the following question."
_SENTINEL = "\ue000"


def chat_messages(shots: Sequence[tuple[str, str]], question: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for q, a in shots:
        messages += [{"role": "user", "content": f"Question: {q}"}, {"role": "assistant", "content": f"Answer: {a}"}]
    messages.append({"role": "user", "content": f"Question: {question}"})
    return messages


def training_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The zero-shot training example of the paper: system, user question, assistant answer."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question: {question}"},
        {"role": "assistant", "content": f"Answer: {answer}"},
    ]


class PromptBuilder:
    """Render few-shot prompts for one engine, splitting each into a shared prefix and a suffix."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._prefix: dict[tuple[tuple[str, str], ...], str] = {}

    def __call__(self, shots: Sequence[tuple[str, str]], question: str) -> Prompt:
        key = tuple(shots)
        full = self.engine.chat(chat_messages(shots, question))
        if full is None:
            prefix = self.engine.bos + "".join(f"Q: {q}\nA: {a}\n" for q, a in shots)
            return Prompt(prefix, f"Q: {question}\nA:")
        if key not in self._prefix:
            probe = self.engine.chat(chat_messages(shots, _SENTINEL)) or ""
            cut = probe.find(f"Question: {_SENTINEL}")
            self._prefix[key] = probe[:cut] if cut > 0 else ""
        prefix = self._prefix[key]
        if not full.startswith(prefix):  # a template that renders earlier turns differently
            prefix = ""
        return Prompt(prefix, full[len(prefix) :])


@dataclass(frozen=True)
class ExemplarSets:
    """`n_sets` fixed sets of `shots` exemplars per relation (key "*" when facts have no relation)."""

    sets: dict[str, list[list[Fact]]]
    spares: dict[str, list[Fact]]

    def for_fact(self, fact: Fact, index: int) -> list[Fact]:
        """Set `index` for `fact`, with the fact itself swapped for a spare if it is an exemplar."""
        key = fact.relation if fact.relation in self.sets else "*"
        chosen = self.sets[key][index]
        if all(f.id != fact.id for f in chosen):
            return chosen
        spare = next(f for f in self.spares[key] if f.id != fact.id and f not in chosen)
        return [spare if f.id == fact.id else f for f in chosen]

    def to_json(self) -> dict[str, Any]:
        """Self-contained: later stages rebuild the very same prompts from this alone."""

        def short(f: Fact) -> dict[str, Any]:
            return {"id": f.id, "question": f.question, "answers": list(f.answers), "relation": f.relation}

        return {
            "sets": {k: [[short(f) for f in s] for s in v] for k, v in self.sets.items()},
            "spares": {k: [short(f) for f in v] for k, v in self.spares.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExemplarSets:
        def fact(d: dict[str, Any]) -> Fact:
            return Fact(id=d["id"], question=d["question"], answers=tuple(d["answers"]), relation=d.get("relation"))

        return cls(
            sets={k: [[fact(d) for d in s] for s in v] for k, v in data["sets"].items()},
            spares={k: [fact(d) for d in v] for k, v in data["spares"].items()},
        )


def make_exemplar_sets(pool: Sequence[Fact], n_sets: int, shots: int, seed: int) -> ExemplarSets:
    """Draw the exemplar sets from `pool`, per relation when there are enough facts of it.

    The sets depend on the seed and the pool only (never on which facts are probed), so a
    probe of a subset sees the same prompts as a probe of the whole set.
    """
    if shots < 0 or n_sets < 1:
        raise ConfigError(f"need n_sets >= 1 and shots >= 0, got {n_sets} and {shots}")
    by_rel: dict[str, list[Fact]] = {"*": sorted(pool, key=lambda f: f.id)}
    for f in by_rel["*"]:
        if f.relation:
            by_rel.setdefault(f.relation, []).append(f)
    if len(by_rel["*"]) < shots + 1:
        raise ConfigError(f"the exemplar pool has {len(by_rel['*'])} facts; {shots} shots need at least {shots + 1}")
    sets: dict[str, list[list[Fact]]] = {}
    spares: dict[str, list[Fact]] = {}
    for rel, facts in by_rel.items():
        if len(facts) < shots + 2 and rel != "*":
            continue  # too few of this relation: its facts use the any-relation sets
        rng = random.Random(f"{seed}:{rel}")
        sets[rel] = [rng.sample(facts, shots) for _ in range(n_sets)]
        spares[rel] = rng.sample(facts, min(len(facts), shots + 2))
    return ExemplarSets(sets, spares)
