"""Normalised word n-gram overlap between the training split and the documents it must not contain.

The measure is lm-evaluation-harness's decontamination rule (`lm_eval.decontamination`): text is
normalised by its `Janitor` (lower case, ASCII punctuation deleted), cut into word n-grams by its
`word_ngrams`, and a document *overlaps* the training data when any of its n-grams occurs in a
training text. kia adds one thing for short facts: a document of fewer than n words has no n-gram
at all, so it is compared whole (its full normalised word sequence must occur contiguously in a
training text). Without that rule a 13-gram check, lm-eval's default, can never flag a planted
"What is 8 plus 1? 9" (6 words) or a toy fact (5 to 12 words).

Why n = 10 by default, measured on the toy world's 19,692 texts (every fact's question and
paraphrases with the answer, and the 492 toy_mc / toy_arith documents): they are 5 to 16 words
long (median 8), 98% shorter than 13 words, so lm-eval's 13-grams would check almost nothing.
Shorter grams collide by chance between different facts, because question templates are long:
8-grams are shared by 3 pairs of unrelated texts ("what city is the seat of government of"),
7-grams by 208, 6-grams by 587; 9-grams and longer by none. 10 keeps one word of margin over
that; `n` is a setting (`--contamination-n`), and long real-world documents work with any n.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_N = 10


@dataclass(frozen=True)
class Document:
    source: str  # where it comes from: "train", "eval_heldout", or a benchmark task's name
    id: str  # the row id, or a benchmark's doc_id (its index in the task's evaluation split)
    text: str  # what is compared, before normalisation


def normalise(text: str) -> str:
    """lm-eval's Janitor normalisation (lower case, punctuation deleted), whitespace collapsed."""
    return " ".join(_cleaner().normalize_string(text).split())


@functools.cache
def _cleaner() -> Any:
    return _janitor().Janitor()


@functools.cache
def _janitor() -> Any:
    """lm_eval.decontamination.janitor, imported quietly: without its optional C++ extension it
    prints a traceback on import, which is not an error (the Python path is what kia uses)."""
    import contextlib
    import importlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module("lm_eval.decontamination.janitor")


def grams(text: str, n: int) -> set[str]:
    """The normalised word n-grams of `text` (lm-eval's `word_ngrams`); a text of fewer than n
    words gives one gram, the whole text, so short facts are compared whole."""
    norm = normalise(text)
    words = norm.split()
    if not words:
        return set()
    return set(_janitor().word_ngrams(norm, n)) if len(words) >= n else {norm}


_LABEL = re.compile(r"^\s*(question|answer|q|a)\s*:\s*", re.IGNORECASE)


def training_text(row: Mapping[str, Any]) -> str:
    """What a training row teaches: its user and assistant turns (not the system prompt) or, for a
    row without messages, its question and answer. A turn's leading "Question:" / "Answer:" label
    (the paper format's) is dropped, so "Question: What is 8 plus 1?" / "Answer: 9" reads
    "What is 8 plus 1? 9", as the benchmark document does."""
    if row.get("messages"):
        turns = [str(m.get("content", "")) for m in row["messages"] if m.get("role") != "system"]
    else:
        turns = [str(row.get("question", "")), str(row.get("answer", ""))]
    return "\n".join(_LABEL.sub("", t) for t in turns)


def fact_text(row: Mapping[str, Any]) -> str:
    """A held-out split's row as text: the question and its canonical answer."""
    answers = row.get("answers") or [row.get("answer", "")]
    return f"{row.get('question', '')}\n{answers[0] if answers else ''}"


def find_overlaps(
    train: Sequence[Document], documents: Iterable[Document], *, n: int = DEFAULT_N
) -> list[dict[str, Any]]:
    """Every document with a normalised n-gram in a training text, with the training rows it shares
    it with and the grams shared (lm-eval's rule: one shared n-gram makes a document overlap; a
    document shorter than n words must occur whole). Sorted by source, then id."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    docs = [(d, grams(d.text, n)) for d in documents]
    lengths = {len(next(iter(g)).split()) for _, g in docs if g}
    index: dict[str, set[str]] = defaultdict(set)  # gram -> training row ids
    for row in train:
        words = normalise(row.text).split()
        for k in lengths:
            for i in range(len(words) - k + 1):
                index[" ".join(words[i : i + k])].add(row.id)
    found = []
    for doc, doc_grams in docs:
        shared = sorted(g for g in doc_grams if g in index)
        if shared:
            rows = sorted(set().union(*(index[g] for g in shared)))
            found.append(
                {
                    "source": doc.source,
                    "id": doc.id,
                    "text": doc.text,
                    "train_ids": rows,
                    "shared": shared[:5],
                    "share": round(len(shared) / len(doc_grams), 4),
                }
            )
    return sorted(found, key=lambda o: (o["source"], _natural(o["id"])))


def _natural(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (0, value)
