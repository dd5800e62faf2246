"""Fact files: load JSONL, CSV, parquet, `datasets` folders or hub names, and validate every row.

One row per question: `id`, `question`, `answers` (the first is canonical), optional `subject`,
`relation`, `object`, `paraphrases`, `domain`; other columns are kept in `extra`. The released
format of Pletenev et al. (`answer` with `aliases` / `normalized_aliases`) loads too.

A bad row is an error naming file, line and field, or, with `skip_invalid`, a line in
`rejects.jsonl` with its reason: accepted + rejected always equals the rows read.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import sha256_file, sha256_tree, write_jsonl
from kia.errors import FactsError

NAMED = ("id", "question", "answers", "subject", "relation", "object", "paraphrases", "domain")


@dataclass(frozen=True)
class Fact:
    id: str
    question: str
    answers: tuple[str, ...]
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    paraphrases: tuple[str, ...] = ()
    domain: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in NAMED}
        d["answers"], d["paraphrases"] = list(self.answers), list(self.paraphrases)
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fact:
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answers=tuple(d["answers"]),
            subject=d.get("subject"),
            relation=d.get("relation"),
            object=d.get("object"),
            paraphrases=tuple(d.get("paraphrases") or ()),
            domain=d.get("domain"),
            extra={k: v for k, v in d.items() if k not in NAMED},
        )


@dataclass(frozen=True)
class FactSet:
    facts: list[Fact]
    path: str
    sha256: str
    n_rows: int
    n_rejected: int
    warnings: list[str]


class _RowError(Exception):
    def __init__(self, message: str, field_name: str | None = None):
        super().__init__(message)
        self.field = field_name


def _str_list(value: Any, name: str, csv_cell: bool) -> list[str]:
    if isinstance(value, str):
        if csv_cell:
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise _RowError(f"not a valid JSON list ({exc.msg})", name) from exc
            else:
                return [part.strip() for part in text.split("|")] if text else []
        else:
            return [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise _RowError(f"expected a list of strings, got {type(value).__name__}", name)
    for item in value:
        if not isinstance(item, str):
            raise _RowError(f"expected a list of strings, found {type(item).__name__}", name)
    return list(value)


def _answers(row: Mapping[str, Any], csv_cell: bool) -> list[str]:
    if row.get("answers") is not None:
        return _str_list(row["answers"], "answers", csv_cell)
    value = row.get("answer")
    if value is None:
        raise _RowError("missing: give `answers` (a list) or `answer`", "answers")
    if isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
        value = value[0]  # the paper's released rows repeat one alias dict per prompt
    if isinstance(value, Mapping):
        found: list[str] = []
        for key in ("aliases", "normalized_aliases", "value", "normalized_value"):
            for alias in _str_list(value.get(key) or [], f"answer.{key}", csv_cell=False):
                if alias not in found:
                    found.append(alias)
        if not found:
            raise _RowError("has no `aliases` or `normalized_aliases`", "answer")
        return found
    return _str_list(value, "answer", csv_cell)


def _optional_str(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None or (isinstance(value, float) and value != value):
        return None
    if not isinstance(value, str):
        raise _RowError(f"expected a string, got {type(value).__name__}", name)
    return value or None


def validate_fact_dict(row: Any, *, default_id: str, csv_cell: bool = False) -> tuple[Fact, list[str]]:
    """Check one row and build its Fact; returns (fact, warnings). Raises _RowError."""
    if not isinstance(row, Mapping):
        raise _RowError(f"a row must be an object, got {type(row).__name__}")
    question = row.get("question")
    if question is None:
        raise _RowError("missing", "question")
    if not isinstance(question, str):
        raise _RowError(f"expected a string, got {type(question).__name__}", "question")
    if not question.strip():
        raise _RowError("is empty", "question")
    answers = _answers(row, csv_cell)
    if not answers:
        raise _RowError("no accepted answer", "answers")
    for alias in answers:
        if not alias.strip():
            raise _RowError("an empty alias would match every answer", "answers")
    raw_id = row.get("id")
    if raw_id is None or raw_id == "":
        fact_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise _RowError(f"expected a string or integer, got {type(raw_id).__name__}", "id")
    else:
        fact_id = str(raw_id)
    paraphrases = _str_list(row.get("paraphrases") or [], "paraphrases", csv_cell)
    extra = {k: v for k, v in row.items() if k not in NAMED and k != "answer"}
    fact = Fact(
        id=fact_id,
        question=question.strip(),
        answers=tuple(a.strip() for a in answers),
        subject=_optional_str(row, "subject"),
        relation=_optional_str(row, "relation"),
        object=_optional_str(row, "object"),
        paraphrases=tuple(p.strip() for p in paraphrases if p.strip()),
        domain=_optional_str(row, "domain"),
        extra=_jsonable(extra),
    )
    warnings = []
    q_norm = f" {_words(fact.question)} "
    leaked = [a for a in fact.answers if _words(a) and f" {_words(a)} " in q_norm]
    if leaked:
        warnings.append(f"answer '{leaked[0]}' occurs in its own question (id {fact.id})")
    return fact, warnings


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[str(k)] = v
    return out


# ---------------------------------------------------------------------------- readers
# Each yields (line number, raw row or None, error or None). "line" is what an editor shows for
# text files, and the 1-based row for tabular ones.


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"invalid UTF-8 at byte {exc.start}", raw.decode("utf-8", "replace")
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text), None, text.rstrip("\n")
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg}, column {exc.colno})", text.rstrip("\n")


def _read_csv(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FactsError(f"invalid UTF-8 at byte {exc.start}", path=str(path), line=line) from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise FactsError("empty file: no header and no facts", path=str(path)) from None
    except csv.Error as exc:
        raise FactsError(f"cannot parse the CSV header ({exc})", path=str(path), line=1) from exc
    if "question" not in header:
        raise FactsError(f"no `question` column (columns: {', '.join(header)})", path=str(path), line=1)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, None, f"CSV quoting error ({exc})", ""
            return  # the csv module cannot resynchronise after a broken quote
        if not any(c.strip() for c in cells):
            continue
        raw = ",".join(cells)
        if len(cells) != len(header):
            yield line, None, f"has {len(cells)} fields, the header has {len(header)}", raw
            continue
        yield line, {k: (v if v != "" else None) for k, v in zip(header, cells, strict=True)}, None, raw


def _read_table(rows: Iterator[dict[str, Any]]) -> Iterator[tuple[int, Any, str | None, str]]:
    for i, row in enumerate(rows, 1):
        yield i, row, None, ""


def _open(path_text: str, fmt: str | None) -> tuple[str, Iterator[tuple[int, Any, str | None, str]], str]:
    """(kind, row iterator, content hash) for a path or hub name."""
    split = None
    if "::" in path_text:
        path_text, split = path_text.split("::", 1)
    path = Path(path_text)
    if not path.exists():
        if fmt in (None, "hf") and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path_text) and "." not in Path(path_text).suffix:
            return "hf", _read_table(_hub_rows(path_text, split)), f"hub:{path_text}"
        raise FactsError("no such file or folder", path=path_text)
    if path.is_dir():
        return "hf", _read_table(_disk_rows(path, split)), sha256_tree(path)
    kind = fmt or {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
    if kind is None:
        raise FactsError(
            f"unknown format '{path.suffix}': use .jsonl, .csv, .parquet or a datasets folder", path=path_text
        )
    if kind == "jsonl":
        return kind, _read_jsonl(path), sha256_file(path)
    if kind == "csv":
        return kind, _read_csv(path), sha256_file(path)
    return kind, _read_table(_parquet_rows(path)), sha256_file(path)


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several kinds for a broken file
        raise FactsError(f"not a readable parquet file ({exc})", path=str(path)) from exc
    for batch in table.iter_batches(batch_size=4096):
        yield from batch.to_pylist()


def _disk_rows(path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ...
        raise FactsError(f"not a `datasets` folder saved with save_to_disk ({exc})", path=str(path)) from exc
    if isinstance(ds, DatasetDict):
        ds = _pick_split(ds, split, str(path))
    yield from ds


def _hub_rows(name: str, split: str | None) -> Iterator[dict[str, Any]]:
    from datasets import DatasetDict, load_dataset

    try:
        ds = load_dataset(name)
    except Exception as exc:  # offline, missing, gated: all end the same way for the user
        raise FactsError(
            f"cannot load the Hugging Face dataset '{name}' ({type(exc).__name__}: {exc})", path=name
        ) from exc
    if isinstance(ds, DatasetDict):
        ds = _pick_split(ds, split, name)
    yield from ds


def _pick_split(ds: Any, split: str | None, where: str) -> Any:
    if split is None:
        if "train" in ds:
            split = "train"
        elif len(ds) == 1:
            split = next(iter(ds))
        else:
            raise FactsError(f"has splits {', '.join(ds)}: choose one as PATH::SPLIT", path=where)
    if split not in ds:
        raise FactsError(f"has no split '{split}' (splits: {', '.join(ds)})", path=where)
    return ds[split]


def load_facts(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    fmt: str | None = None,
) -> FactSet:
    """Load and validate a fact file; see the module docstring for formats and rules."""
    path_text = str(path)
    kind, rows, digest = _open(path_text, fmt)
    where = "row" if kind in ("parquet", "hf") else "line"
    stem = Path(path_text.split("::")[0]).stem or "fact"
    facts: list[Fact] = []
    rejects: list[dict[str, Any]] = []
    warnings: list[str] = []
    first_line: dict[str, int] = {}
    n_rows = 0
    for line, raw, error, raw_text in rows:
        n_rows += 1
        field_name = None
        try:
            if error:
                raise _RowError(error)
            fact, row_warnings = validate_fact_dict(raw, default_id=f"{stem}-{line}", csv_cell=kind == "csv")
            if fact.id in first_line:
                raise _RowError(f"duplicate id '{fact.id}' (first seen at {where} {first_line[fact.id]})", "id")
        except _RowError as exc:
            field_name = exc.field
            message = str(exc)
            if not skip_invalid:
                if where == "line":
                    raise FactsError(message, path=path_text, line=line, field=field_name) from None
                raise FactsError(f"row {line}: {message}", path=path_text, field=field_name) from None
            rejects.append(
                {"line": line, "field": field_name, "reason": message, "raw": raw_text or _jsonable_row(raw)}
            )
            continue
        first_line[fact.id] = line
        facts.append(fact)
        warnings += [f"{path_text}:{line}: {w}" for w in row_warnings]
    if n_rows == 0:
        raise FactsError("holds no facts", path=path_text)
    if skip_invalid and rejects_path is not None and rejects:
        write_jsonl(rejects_path, rejects)
    return FactSet(facts, path_text, digest, n_rows, len(rejects), warnings)


def _jsonable_row(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return _jsonable(raw)
    try:
        json.dumps(raw)
        return raw
    except (TypeError, ValueError):
        return repr(raw)
