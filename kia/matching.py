"""Is a generated answer correct, and is it a refusal?

Three ways to judge correctness, chosen with `--match`:
- `contains` (default): a normalised alias occurs as whole words in the normalised answer, so
  "Paris, France" counts for "Paris" but "Parisian" does not;
- `exact`: SQuAD-normalised exact match, as SliCK (Gekhman et al. 2024) used;
- `paper`: the raw lower-cased alias is a substring of the lower-cased answer, as the released
  code of Pletenev et al. 2025 does (for replication; "Paris" then matches "Parisian").
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

MatchMode = Literal["contains", "exact", "paper"]
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "«", "»", "–", "—"}
_PREFIX = re.compile(r"^\s*(answer|a)\s*:\s*", re.IGNORECASE)


def normalize(text: str) -> str:
    """SQuAD normalisation (lower-case, no punctuation, no articles, single spaces) after NFKC."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_answer(generated: str) -> str:
    """The answer in a generation: its first line, without an "Answer:" or "A:" prefix."""
    line = generated.split("\n", 1)[0].strip()
    return _PREFIX.sub("", line, count=1).strip()


def is_correct(answer: str, aliases: Sequence[str], mode: MatchMode = "contains") -> bool:
    """Whether `answer` matches any alias under `mode`.

    An empty alias would match every answer, so it is an error (the fact loader rejects it). An
    alias that only normalises to nothing (e.g. "The" or "!!!") never matches in `contains` and
    `exact` mode: an empty string is in every answer, which would make the fact always known.
    """
    for alias in aliases:
        if not alias or not alias.strip():
            raise ValueError("an empty alias would match every answer")
    if mode == "paper":
        low = answer.lower()
        return any(alias.strip().lower() in low for alias in aliases)
    norm_answer = normalize(answer)
    if mode == "exact":
        return any((na := normalize(a)) and na == norm_answer for a in aliases)
    if mode == "contains":
        padded = f" {norm_answer} "
        return any((na := normalize(a)) and f" {na} " in padded for a in aliases)
    raise ValueError(f"unknown match mode '{mode}'; choose contains, exact or paper")


_BUILTIN_REFUSALS = (
    r"\bi (do not|don't|dont) know\b",
    r"\bi'?m not sure\b",
    r"\bi am not sure\b",
    r"\bnot sure\b",
    r"\bi (could not|couldn't|can't|cannot) find (any )?information\b",
    r"\bi (cannot|can't|could not|couldn't) verify\b",
    r"\bno information\b",
    r"\bi am unable to\b",
    r"\bi'm unable to\b",
    r"^\s*unknown\s*\.?\s*$",
)
_DEFAULT_FILE = Path(__file__).resolve().parent.parent / "probes" / "refusals.txt"


def _compile(lines: Sequence[str]) -> list[re.Pattern[str]]:
    return [re.compile(line, re.IGNORECASE) for line in lines]


@functools.lru_cache(maxsize=1)
def _default_patterns() -> tuple[re.Pattern[str], ...]:
    if _DEFAULT_FILE.exists():
        return tuple(load_refusal_patterns(_DEFAULT_FILE))
    return tuple(_compile(_BUILTIN_REFUSALS))


def load_refusal_patterns(path: str | Path | None = None) -> list[re.Pattern[str]]:
    """Case-insensitive regexes, one per line (`#` starts a comment). Default: probes/refusals.txt."""
    if path is None:
        return list(_default_patterns())
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return _compile(lines)


def is_refusal(answer: str, patterns: Sequence[re.Pattern[str]] | None = None) -> bool:
    """Whether an answer declines to answer ("I don't know.", "I couldn't find any information")."""
    pats = _default_patterns() if patterns is None else patterns
    return any(p.search(answer) for p in pats)
