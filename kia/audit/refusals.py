"""Refusals: is an answer a refusal (patterns, then sentence embeddings), and the audit's refusal section.

A fall in refusals after training means the model now answers what it used to decline: Pletenev et
al. 2025 count non-refusal as one of the reasons for negative knowledge shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kia.facts import is_refusal

DEFAULT_REFUSAL_EXAMPLES = Path(__file__).resolve().parents[2] / "probes" / "refusal_examples.txt"


def load_refusal_examples(path: str | Path | None = None) -> list[str]:
    """Refusal sentences, one per line (`#` starts a comment), for the embedding detector."""
    from kia.errors import ConfigError

    path = Path(path) if path else DEFAULT_REFUSAL_EXAMPLES
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read refusal examples from {path} ({exc})") from exc
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


class RefusalDetector:
    """Is an answer a refusal? Patterns first (probes/refusals.txt, `kia.facts.matching.is_refusal`), then,
    when `similarity` is set, cosine similarity >= `similarity` to any refusal example in
    probes/refusal_examples.txt under the sentence-embedding model (all-MiniLM-L6-v2, offline),
    which catches reworded refusals no pattern lists ("I have no clue", "I don't remember").
    Results are cached per answer text, so each distinct answer is embedded once.
    """

    def __init__(self, similarity: float | None = 0.7, examples: Sequence[str] | None = None):
        self.similarity = similarity
        self.examples = list(examples) if examples is not None else (load_refusal_examples() if similarity else [])
        self._cache: dict[str, bool] = {}
        self._example_vecs: Any = None

    @property
    def method(self) -> str:
        text = "patterns (probes/refusals.txt)"
        if self.similarity:
            text += (
                f" + cosine similarity >= {self.similarity} to {len(self.examples)} refusal examples "
                "(probes/refusal_examples.txt) with all-MiniLM-L6-v2"
            )
        return text

    def flags(self, answers: Sequence[str]) -> list[bool]:
        todo = sorted({a for a in answers if a not in self._cache})
        by_pattern = {a: is_refusal(a) for a in todo}
        self._cache.update({a: True for a, hit in by_pattern.items() if hit})
        rest = [a for a, hit in by_pattern.items() if not hit]
        if rest and self.similarity and self.examples:
            for a, hit in zip(rest, self._similar(rest), strict=True):
                self._cache[a] = hit
        else:
            self._cache.update({a: False for a in rest})
        return [self._cache[a] for a in answers]

    def _similar(self, texts: Sequence[str]) -> list[bool]:
        from kia.engines import embed

        if self._example_vecs is None:
            self._example_vecs = embed(self.examples)
        nonempty = [t if t.strip() else "-" for t in texts]
        sims = embed(nonempty) @ self._example_vecs.T
        return [bool(t.strip()) and float(row.max()) >= self.similarity for t, row in zip(texts, sims, strict=True)]


def refusal_summary(
    base: Sequence[bool], adapted: Sequence[bool], categories: Sequence[str], method: str
) -> dict[str, Any]:
    """The audit.json `refusals` section: rate of refused first greedy answers per arm, overall and
    per base category (the category the fact had before the adapter)."""
    n = len(base)
    by_cat: dict[str, dict[str, Any]] = {}
    for cat in ("Unknown", "MaybeKnown", "HighlyKnown"):
        idx = [i for i, c in enumerate(categories) if c == cat]
        m = len(idx)
        by_cat[cat] = {
            "base": sum(base[i] for i in idx) / m if m else 0.0,
            "adapted": sum(adapted[i] for i in idx) / m if m else 0.0,
            "n": m,
        }
    return {
        "base": sum(base) / n if n else 0.0,
        "adapted": sum(adapted) / n if n else 0.0,
        "by_category": by_cat,
        "method": method,
    }
