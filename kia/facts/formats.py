"""Readers behind `kia.facts.load_facts`: JSONL (or a JSON array), CSV, parquet, `datasets` folders, hub names.

Each reader yields `(number, row, error, raw)` per row: `number` is the 1-based physical line for text
files (what an editor shows) and the 1-based row for tabular ones; `row` is the parsed mapping (or
whatever the line held) or None; `error` is a `RowError` when the row could not even be parsed; `raw`
is the row's text (lines) or the row itself, kept for `rejects.jsonl`. Blank lines are not rows.

Heavy libraries (pyarrow, datasets) are imported only inside the readers that need them.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kia.artifacts import sha256_file, sha256_tree
from kia.errors import FactsError

FORMATS = {"jsonl": "jsonl", "json": "jsonl", "csv": "csv", "parquet": "parquet", "hf": "hf", "datasets": "hf"}
SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


class RowError(Exception):
    """One row is invalid; `field` names the column when one is to blame."""

    def __init__(self, message: str, field_name: str | None = None):
        super().__init__(message)
        self.field = field_name


Row = tuple[int, Any, "RowError | None", Any]


@dataclass
class Source:
    kind: str  # jsonl, json-array, csv, parquet, hf-disk, hf-hub
    unit: str  # "line" for text files, "row" for tabular ones
    rows: Iterator[Row]
    sha256: Callable[[], str]  # call once the rows are consumed (a hub dataset is hashed as it is read)
    stem: str  # for derived ids: "{stem}-{number}"


def open_source(spec: str, fmt: str | None = None) -> Source:
    """Resolve a path (`PATH::SPLIT` for a DatasetDict), a forced format, or a hub name to a row source."""
    if fmt is not None and fmt not in FORMATS:
        raise FactsError(f"unknown format '{fmt}' (use jsonl, csv, parquet or hf)", path=spec)
    kind = FORMATS.get(fmt or "")
    path_text, split = spec.rsplit("::", 1) if "::" in spec else (spec, None)
    path = Path(path_text)
    stem = path.stem or path.name or "fact"
    if not path.exists():
        if kind in (None, "hf") and path.suffix.lower() not in SUFFIXES and _HUB_NAME.fullmatch(path_text):
            hasher = hashlib.sha256()
            return Source("hf-hub", "row", _hub_rows(path_text, split, hasher), hasher.hexdigest, stem)
        raise FactsError("no such file or folder", path=spec)
    if path.is_dir():
        if kind not in (None, "hf"):
            raise FactsError(f"is a folder, not a {fmt} file", path=spec)
        rows = _disk_rows(path, split, spec)
        return Source("hf-disk", "row", rows, lambda: sha256_tree(path), stem)
    if split is not None:
        raise FactsError("'::SPLIT' only applies to a `datasets` folder or a hub name", path=spec)
    kind = kind or SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise FactsError(
            f"unknown format '{path.suffix}': use .jsonl, .json, .csv, .parquet, a `datasets` folder, or --format",
            path=spec,
        )
    if kind == "hf":
        raise FactsError("is a file, not a `datasets` folder", path=spec)
    digest = lambda: sha256_file(path)  # noqa: E731
    if kind == "jsonl":
        array = _json_array(path) if path.suffix.lower() == ".json" or fmt == "json" else None
        if array is not None:
            return Source("json-array", "row", ((i, r, None, r) for i, r in enumerate(array, 1)), digest, stem)
        return Source("jsonl", "line", _jsonl_rows(path), digest, stem)
    if kind == "csv":
        return Source("csv", "line", _csv_rows(path), digest, stem)
    return Source("parquet", "row", _parquet_rows(path), digest, stem)


# ---------------------------------------------------------------------------------------------- JSON


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = raw.decode("utf-8", "replace").rstrip("\r\n")
                yield lineno, None, RowError(f"invalid UTF-8 (byte {exc.start + 1} of the line)"), shown
                continue
            if not text.strip():
                continue
            text = text.rstrip("\r\n")
            try:
                yield lineno, json.loads(text), None, text
            except json.JSONDecodeError as exc:
                yield lineno, None, RowError(f"not valid JSON ({exc.msg}, column {exc.colno})"), text


def _json_array(path: Path) -> list[Any] | None:
    """A `.json` file holding one JSON array of rows, or None to read it as JSON lines."""
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"["):
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # one array per line, or broken: the line reader reports where
    return data if isinstance(data, list) else None


# ----------------------------------------------------------------------------------------------- CSV


def _csv_rows(path: Path) -> Iterator[Row]:
    # surrogateescape keeps undecodable bytes, so a bad byte spoils its own row only, not the file.
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    def take_raw() -> str:
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    reader = csv.reader(lines(), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise FactsError("empty file: no header and no facts", path=str(path)) from None
    except csv.Error as exc:
        raise FactsError(f"cannot parse the CSV header ({exc})", path=str(path), line=1) from exc
    if any(_SURROGATE.search(h) for h in header):
        raise FactsError("invalid UTF-8 in the header", path=str(path), line=1)
    if "question" not in header:
        raise FactsError(f"no `question` column (columns: {', '.join(header)})", path=str(path), line=1)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise FactsError(f"repeated column(s) {', '.join(dupes)} in the header", path=str(path), line=1)
    consumed.clear()
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader resumes at the next physical line
            end = reader.line_num
            span = f"; lines {start}-{end} were read as one row (an unclosed quote?)" if end > start else ""
            yield start, None, RowError(f"CSV quoting error ({exc}){span}"), take_raw()
            continue
        raw = take_raw()
        if not any(c.strip() for c in cells):
            continue  # a blank line (or only separators) holds no data: not a row
        bad = next((i for i, c in enumerate(cells) if _SURROGATE.search(c)), None)
        if bad is not None:
            name = header[bad] if bad < len(header) else None
            yield start, None, RowError("invalid UTF-8", name), raw
            continue
        if len(cells) != len(header):
            yield start, None, RowError(f"has {len(cells)} fields, the header has {len(header)}"), raw
            continue
        yield start, {k: (v if v.strip() else None) for k, v in zip(header, cells, strict=True)}, None, raw


# ------------------------------------------------------------------------------ parquet and datasets


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield number, row, None, row
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FactsError(f"not a readable parquet file ({exc})", path=str(path)) from exc


def _disk_rows(path: Path, split: str | None, spec: str) -> Iterator[Row]:
    if not any((path / marker).exists() for marker in HF_MARKERS):
        raise FactsError(
            f"is a folder, but not one saved by `datasets` save_to_disk (none of {', '.join(HF_MARKERS)})", path=spec
        )
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        raise FactsError(f"cannot read the `datasets` folder ({type(exc).__name__}: {exc})", path=spec) from exc
    if isinstance(ds, DatasetDict):
        ds = _pick_split(ds, split, spec)
    elif split is not None:
        raise FactsError("holds a single Dataset without splits: drop '::SPLIT'", path=spec)
    for number, row in enumerate(ds, 1):
        yield number, row, None, row


def _hub_rows(name: str, split: str | None, hasher: Any) -> Iterator[Row]:
    try:
        from datasets import DatasetDict, load_dataset

        ds = load_dataset(name) if split is None else load_dataset(name, split=split)
    except Exception as exc:  # offline, missing, gated, no such split: all end the same way for the user
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise FactsError(
            f"no such local file or folder, and cannot load the Hugging Face dataset '{name}' "
            f"({type(exc).__name__}: {detail})",
            path=name,
        ) from exc
    if isinstance(ds, DatasetDict):
        ds = _pick_split(ds, split, name)
    hasher.update(name.encode())
    for number, row in enumerate(ds, 1):
        hasher.update(json.dumps(row, sort_keys=True, default=str).encode())
        yield number, row, None, row


def _pick_split(ds: Any, split: str | None, where: str) -> Any:
    if split is None:
        if "train" in ds:
            split = "train"
        elif len(ds) == 1:
            split = next(iter(ds))
        else:
            raise FactsError(f"has splits {', '.join(ds)} and none is 'train': choose one as PATH::SPLIT", path=where)
    if split not in ds:
        raise FactsError(f"has no split '{split}' (splits: {', '.join(ds)})", path=where)
    return ds[split]
