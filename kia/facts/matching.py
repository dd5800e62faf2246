"""Is a generated answer correct, and is it a refusal?

Three ways to judge correctness, chosen with `--match`:
- `contains` (default): a normalised alias occurs as whole words in the normalised answer, so
  "Paris, France" counts for "Paris" but "Parisian" does not;
- `exact`: the normalised answer equals a normalised alias (SQuAD-style exact match, as SliCK,
  Gekhman et al. 2024, used);
- `paper`: the raw lower-cased alias is a substring of the lower-cased answer, as the released code
  of Pletenev et al. 2025 does (for replication; "Paris" then matches "Parisian").

Normalisation is SQuAD's (lower-case, punctuation removed, articles a/an/the dropped, whitespace
collapsed) after Unicode NFKC, with every Unicode punctuation mark counted as punctuation (so "’" goes
like "'"). `contains` and `exact` compare two forms and accept a match in either: SQuAD's, where
punctuation is deleted ("U.S." = "US", "AC/DC" = "ACDC"), and one where punctuation reads as a space
("Port-au-Prince" = "Port au Prince", "Paris's" contains "Paris").
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kia.errors import ConfigError

MatchMode = Literal["contains", "exact", "paper"]
MODES = ("contains", "exact", "paper")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class _PunctuationTable(dict):
    """A `str.translate` table mapping ASCII and Unicode punctuation to `replacement`, filled lazily."""

    def __init__(self, replacement: str | None):
        super().__init__()
        self.replacement = replacement

    def __missing__(self, code: int) -> str | int | None:
        ch = chr(code)
        punct = ch in string.punctuation or unicodedata.category(ch).startswith("P")
        value = self.replacement if punct else code
        self[code] = value
        return value


_DELETE = _PunctuationTable(None)
_SPACE = _PunctuationTable(" ")
_PREFIX = re.compile(r"^(answer|a)\s*:", re.IGNORECASE)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})


def _normalize(text: str, table: _PunctuationTable) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(table)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize(text: str) -> str:
    """SQuAD normalisation after NFKC: lower-case, punctuation removed, no articles, single spaces."""
    return _normalize(text, _DELETE)


def _forms(text: str) -> tuple[str, str]:
    return _normalize(text, _DELETE), _normalize(text, _SPACE)


def extract_answer(generated: str) -> str:
    """The answer in a generation: its first line, stripped, without an "Answer:" or "A:" prefix."""
    line = generated.split("\n", 1)[0].strip()
    return _PREFIX.sub("", line, count=1).strip()


def is_correct(answer: str, aliases: Sequence[str], mode: MatchMode = "contains") -> bool:
    """Whether `answer` matches any alias under `mode` (see the module docstring).

    An empty or whitespace-only alias raises ValueError: it would match every answer (the fact loader
    rejects such aliases). An alias that normalises to nothing (e.g. "The" or "!!!") never matches in
    `contains` or `exact` mode: the empty string occurs in every answer, so it would make every fact
    look known; in `paper` mode it is compared raw, as the paper's code does.
    """
    if mode not in MODES:
        raise ValueError(f"unknown match mode '{mode}'; choose contains, exact or paper")
    if isinstance(aliases, str):
        aliases = [aliases]
    for alias in aliases:
        if not isinstance(alias, str) or not alias.strip():
            raise ValueError(f"an empty alias would match every answer (got {alias!r})")
    if mode == "paper":
        low = answer.lower()
        return any(alias.strip().lower() in low for alias in aliases)
    answer_forms = _forms(answer)
    padded = tuple(f" {form} " for form in answer_forms)
    for alias in aliases:
        for alias_form, answer_form, padded_answer in zip(_forms(alias), answer_forms, padded, strict=True):
            if not alias_form:
                continue
            hit = alias_form == answer_form if mode == "exact" else f" {alias_form} " in padded_answer
            if hit:
                return True
    return False


# Keep in step with probes/refusals.txt (a test checks they are the same).
_BUILTIN_REFUSALS = (
    r"\bi (do not|don't|dont|did not|didn't) know\b",
    r"\bi'?m not (sure|certain|aware)\b",
    r"\bi am not (sure|certain|aware)\b",
    r"\bnot sure\b",
    r"\bi have no idea\b",
    r"\bi (could not|couldn't|cannot|can't|was unable to|am unable to) (find|locate)\b",
    r"\bi (cannot|can't|could not|couldn't|am unable to|was unable to) (verify|confirm)\b",
    r"\bno (\w+ ){0,2}information\b",
    r"\bi (do not|don't) have (any |enough |specific |reliable |the )*(information|knowledge|data)\b",
    r"\bi am unable to\b",
    r"\bi'm unable to\b",
    r"\b(i'm|i am) sorry,? but\b",
    r"\bi apologi[sz]e,? but\b",
    r"^\W*unknown\W*$",
)
DEFAULT_REFUSALS = Path(__file__).resolve().parents[2] / "probes" / "refusals.txt"


def _compile(lines: Sequence[tuple[int, str]], where: str) -> list[re.Pattern[str]]:
    patterns = []
    for lineno, text in lines:
        try:
            patterns.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(f"{where}:{lineno}: invalid refusal pattern {text!r} ({exc})") from exc
    return patterns


@functools.lru_cache(maxsize=1)
def _default_patterns() -> tuple[re.Pattern[str], ...]:
    if DEFAULT_REFUSALS.is_file():
        return tuple(load_refusal_patterns(DEFAULT_REFUSALS))
    return tuple(_compile(list(enumerate(_BUILTIN_REFUSALS, 1)), "built-in refusal patterns"))


def load_refusal_patterns(path: str | Path | None = None) -> list[re.Pattern[str]]:
    """Case-insensitive regexes, one per line (lines starting with `#` are comments).

    Default: the repository's probes/refusals.txt (cached), or a built-in copy when it is missing.
    """
    if path is None:
        return list(_default_patterns())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read refusal patterns from {path} ({exc})") from exc
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), 1)]
    return _compile([(n, line) for n, line in lines if line and not line.startswith("#")], str(path))


def is_refusal(answer: str, patterns: Sequence[re.Pattern[str]] | None = None) -> bool:
    """Whether an answer declines to answer ("I don't know.", "I couldn't find any information ...")."""
    pats = _default_patterns() if patterns is None else patterns
    text = unicodedata.normalize("NFKC", answer).translate(_QUOTES)
    return any(p.search(text) for p in pats)
