"""Fact files: load JSONL, CSV, parquet, `datasets` folders or hub names, and validate every row.

One row per question: `id`, `question`, `answers` (the first is canonical), optional `subject`,
`relation`, `object`, `paraphrases`, `domain`; every other column is kept in `extra`. The released
format of Pletenev et al. (`answer` as a dict with `aliases` / `normalized_aliases`, or a list of such
dicts of which the first is used, as their code does) loads too.

A bad row is an error naming file, line (or row, for parquet and `datasets`) and field, or, with
`skip_invalid`, a line in `rejects.jsonl` with its reason: accepted + rejected always equals the rows
read. An answer that occurs in its own question is a warning, not an error. Readers live in
`kia.facts.formats`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import write_jsonl
from kia.errors import FactsError
from kia.facts.formats import RowError, open_source

__all__ = ["Fact", "FactSet", "FactStream", "load_facts", "validate_fact_dict"]

NAMED = ("id", "question", "answers", "subject", "relation", "object", "paraphrases", "domain")
EMPTY_ALIAS = "an empty alias would match every answer"


@dataclass(frozen=True)
class Fact:
    id: str
    question: str
    answers: tuple[str, ...]  # accepted strings, the first is canonical
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    paraphrases: tuple[str, ...] = ()
    domain: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # other columns, JSON-able

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict: the named fields (lists, not tuples), then the extra columns."""
        d: dict[str, Any] = {k: getattr(self, k) for k in NAMED}
        d["answers"], d["paraphrases"] = list(self.answers), list(self.paraphrases)
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fact:
        """The inverse of `to_dict` (unknown keys go to `extra`); no validation."""
        answers = d["answers"]
        paraphrases = d.get("paraphrases") or ()
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answers=(answers,) if isinstance(answers, str) else tuple(answers),
            subject=d.get("subject"),
            relation=d.get("relation"),
            object=d.get("object"),
            paraphrases=(paraphrases,) if isinstance(paraphrases, str) else tuple(paraphrases),
            domain=d.get("domain"),
            extra={k: v for k, v in d.items() if k not in NAMED},
        )


@dataclass(frozen=True)
class FactSet:
    facts: list[Fact]
    path: str  # the source as given
    sha256: str  # content hash of the file (of the folder for a `datasets` folder; of the rows for a hub name)
    n_rows: int  # rows read (blank lines are not rows)
    n_rejected: int
    warnings: list[str]


# ------------------------------------------------------------------------------------------ values


def _plain(value: Any) -> Any:
    """A JSON-able copy: lists for tuples and arrays, None for NaN, ISO text for dates, str otherwise."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _str_list(value: Any, name: str) -> list[str]:
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise RowError(f"expected a list of strings, got {type(value).__name__}", name)
    for item in value:
        if not isinstance(item, str):
            raise RowError(f"expected a list of strings, found an item of type {type(item).__name__}", name)
    return list(value)


def _cell_structure(text: str, name: str, *, strict: bool) -> Any:
    """A CSV cell holding a JSON (or Python-literal) list or dict; with `strict`, failing to parse is an error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            return ast.literal_eval(text)  # the paper's flattened CSVs hold Python reprs
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            if strict:
                raise RowError(f"not a valid JSON list ({exc.msg})", name) from None
            return text


def _cell_list(text: str, name: str) -> Any:
    """A CSV `answers` / `paraphrases` cell: a JSON list, or items separated by `|`."""
    text = text.strip()
    if text.startswith("["):
        return _cell_structure(text, name, strict=True)
    return [part.strip() for part in text.split("|")]


def _aliases(items: list[str], name: str) -> list[str]:
    out: list[str] = []
    for alias in items:
        if not alias.strip():
            raise RowError(EMPTY_ALIAS, name)
        if alias.strip() not in out:
            out.append(alias.strip())
    return out


def _answers(row: Mapping[str, Any], csv_cells: bool, notes: list[str]) -> list[str]:
    if row.get("answers") is not None:
        value = row["answers"]
        if csv_cells and isinstance(value, str):
            value = _cell_list(value, "answers")
        elif isinstance(value, str):
            raise RowError("expected a list of strings, got str (use `answer` for a single string)", "answers")
        return _aliases(_str_list(value, "answers"), "answers")
    value = row.get("answer")
    if value is None:
        raise RowError("missing: give `answers` (a list of strings) or `answer`", "answers")
    if csv_cells and isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        value = _cell_structure(value.strip(), "answer", strict=False)
    if isinstance(value, str):
        return _aliases([value], "answer")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
        value = value[0]  # the paper's rows repeat one alias dict per prompt; its code uses answer[0]
    if not isinstance(value, Mapping):
        return _aliases(_str_list(value, "answer"), "answer")
    found: list[str] = []
    dropped = 0
    keys = ("aliases", "normalized_aliases")
    if not any(value.get(k) for k in keys):
        keys = ("value", "normalized_value")  # a TriviaQA-style dict without alias lists
    for key in keys:
        items = value.get(key)
        if items is None:
            continue
        items = [items] if isinstance(items, str) else _str_list(items, f"answer.{key}")
        for alias in items:
            if not alias.strip():
                dropped += 1  # released data holds some; the paper's notebook drops them too
            elif alias.strip() not in found:
                found.append(alias.strip())
    if not found:
        raise RowError("has no non-empty `aliases` or `normalized_aliases`", "answer")
    if dropped:
        notes.append(f"dropped {dropped} empty alias(es) from `answer` ({EMPTY_ALIAS})")
    return found


def _optional_str(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, str):
        raise RowError(f"expected a string, got {type(value).__name__}", name)
    return value.strip() or None


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _check_row(row: Any, *, default_id: str, csv_cells: bool = False) -> tuple[Fact, list[str]]:
    """Validate one row and build its Fact; returns (fact, warnings) or raises RowError."""
    if not isinstance(row, Mapping):
        raise RowError(f"a row must be an object with a `question`, got {type(row).__name__}")
    question = row.get("question")
    if question is None:
        raise RowError("missing", "question")
    if not isinstance(question, str):
        raise RowError(f"expected a string, got {type(question).__name__}", "question")
    if not question.strip():
        raise RowError("is empty", "question")
    notes: list[str] = []
    answers = _answers(row, csv_cells, notes)
    if not answers:
        raise RowError("no accepted answer (an empty list)", "answers")
    raw_id = row.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        fact_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise RowError(f"expected a string or integer, got {type(raw_id).__name__}", "id")
    else:
        fact_id = str(raw_id).strip()
    paraphrases = row.get("paraphrases")
    if paraphrases is None:
        paraphrases = []
    elif csv_cells and isinstance(paraphrases, str):
        paraphrases = _cell_list(paraphrases, "paraphrases")
    paraphrases = [p.strip() for p in _str_list(paraphrases, "paraphrases") if p.strip()]
    skip = set(NAMED) | ({"answer"} if row.get("answers") is None else set())
    fact = Fact(
        id=fact_id,
        question=question.strip(),
        answers=tuple(answers),
        subject=_optional_str(row, "subject"),
        relation=_optional_str(row, "relation"),
        object=_optional_str(row, "object"),
        paraphrases=tuple(dict.fromkeys(paraphrases)),
        domain=_optional_str(row, "domain"),
        extra={str(k): _plain(v) for k, v in row.items() if k not in skip},
    )
    question_words = f" {_words(fact.question)} "
    leaked = [a for a in fact.answers if _words(a) and f" {_words(a)} " in question_words]
    if leaked:
        notes.append(f"answer '{leaked[0]}' occurs in its own question (id {fact.id})")
    return fact, notes


def _located(exc: RowError, path: str, number: int, unit: str) -> FactsError:
    if unit == "line":
        return FactsError(str(exc), path=path, line=number, field=exc.field)
    err = FactsError(f"row {number}: {exc}", path=path, field=exc.field)
    err.line, err.reason = number, str(exc)
    return err


def validate_fact_dict(
    d: Any,
    *,
    path: str | Path,
    line: int,
    default_id: str | None = None,
    unit: str = "line",
    csv_cells: bool = False,
) -> Fact:
    """Validate one row (a mapping) and build its Fact; raises FactsError naming path, line and field.

    Without an `id` the fact gets `default_id`, by default "{file stem}-{line}". `unit="row"` words the
    location as a row (tabular sources); `csv_cells=True` parses list cells the way CSV files write them.
    """
    default_id = default_id or f"{Path(str(path).split('::')[0]).stem}-{line}"
    try:
        return _check_row(d, default_id=default_id, csv_cells=csv_cells)[0]
    except RowError as exc:
        raise _located(exc, str(path), line, unit) from None


MAX_WARNINGS = 200  # kept per pass; a million-row file with a leaked answer in every row stays small


class FactStream:
    """Validated facts read lazily, for sources too large to hold: each iteration re-reads the source,
    so memory stays flat whatever its size.

    The first complete pass validates everything, duplicate ids included, and decides once which
    rows are rejected; it writes `rejects_path` (when given) and nothing else ever does. Later passes
    take their verdicts from it: a rejected row is skipped, every other row is yielded, and a row
    that no longer validates, or a source whose hash or row count moved, is an error (the file
    changed while kia read it). So in every pass, accepted + rejected = the rows read, and an id
    check that only the first pass can afford (it holds every id) still holds for all of them.
    After that pass, `n_rows`, `n_facts`, `n_rejected`, `rejects`, `warnings` and `sha256`
    describe the source (see `load_facts`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        skip_invalid: bool = False,
        rejects_path: str | Path | None = None,
        fmt: str | None = None,
    ):
        self.path, self.skip_invalid, self.rejects_path, self.fmt = str(path), skip_invalid, rejects_path, fmt
        self.n_rows = self.n_facts = self.n_rejected = 0
        self.warnings: list[str] = []
        self.rejects: list[dict[str, Any]] = []
        self.sha256 = ""
        self._rejected: frozenset[int] | None = None  # row numbers, once a complete pass has decided

    @property
    def validated(self) -> bool:
        """Whether a complete pass has decided every row's fate."""
        return self._rejected is not None

    def _changed(self, what: str) -> FactsError:
        return FactsError(f"changed while kia was reading it ({what}); rerun once the file is final", path=self.path)

    def __iter__(self) -> Iterator[Fact]:
        spec = self.path
        source = open_source(spec, self.fmt)
        decided = self._rejected
        rejects: list[dict[str, Any]] = []
        warnings: list[str] = []
        n_warnings = 0
        # ids only, a few dozen bytes per fact, and only until a pass has decided: later passes
        # skip the rows it rejected, and a long probe should not hold every id while it works
        first_seen: dict[str, int] | None = {} if decided is None else None
        n_rows = n_facts = 0
        for number, row, error, raw in source.rows:
            n_rows += 1
            if decided is not None and number in decided:
                continue
            try:
                if error is not None:
                    raise error
                fact, notes = _check_row(row, default_id=f"{source.stem}-{number}", csv_cells=source.kind == "csv")
                if first_seen is not None and fact.id in first_seen:
                    raise RowError(
                        f"duplicate id '{fact.id}' (first seen at {source.unit} {first_seen[fact.id]})", "id"
                    )
            except RowError as exc:
                if decided is not None:
                    raise self._changed(f"{source.unit} {number} was valid before: {exc}") from None
                if not self.skip_invalid:
                    raise _located(exc, spec, number, source.unit) from None
                rejects.append({"line": number, "field": exc.field, "reason": str(exc), "raw": _plain(raw)})
                continue
            if first_seen is not None:
                first_seen[fact.id] = number
            n_facts += 1
            if notes and decided is None:
                where = f"{spec}:{number}" if source.unit == "line" else f"{spec}: row {number}"
                n_warnings += len(notes)
                warnings += [f"{where}: {note}" for note in notes][: max(0, MAX_WARNINGS - len(warnings))]
            yield fact
        if decided is not None:
            if n_rows != self.n_rows or n_facts != self.n_facts:
                raise self._changed(f"{n_rows} rows now, {self.n_rows} before")
            if source.sha256() != self.sha256:
                raise self._changed("its content hash moved")
            if n_facts:
                return
        if n_rows == 0:
            raise FactsError("holds no facts (no rows)", path=spec)
        if n_warnings > len(warnings):
            warnings.append(f"{spec}: … and {n_warnings - len(warnings)} more warnings")
        if decided is None:
            self.n_rows, self.n_facts, self.n_rejected, self.warnings = n_rows, n_facts, len(rejects), warnings
            self.rejects, self.sha256 = rejects, source.sha256()
            self._rejected = frozenset(r["line"] for r in rejects)
            if self.skip_invalid and self.rejects_path is not None:
                write_jsonl(self.rejects_path, rejects)
        if not n_facts:
            where = f"; reasons in {self.rejects_path}" if self.rejects_path is not None else ""
            raise FactsError(f"no valid facts: all {n_rows} rows were rejected{where}", path=spec)


def load_facts(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    fmt: str | None = None,
) -> FactSet:
    """Load and validate a fact source (see the module docstring).

    Without `skip_invalid` the first bad row raises FactsError. With it, bad rows are counted and,
    when `rejects_path` is given, written there (always rewritten, so an old file never lingers).
    A source with no rows, or with no valid row, raises FactsError (after writing the rejects).
    `FactStream` reads the same source without holding it.
    """
    stream = FactStream(path, skip_invalid=skip_invalid, rejects_path=rejects_path, fmt=fmt)
    facts = list(stream)
    return FactSet(facts, stream.path, stream.sha256, stream.n_rows, stream.n_rejected, stream.warnings)
