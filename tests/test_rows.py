"""Tier 1: every input row ends in exactly one of the accepted output or rejects.jsonl (issue 19).

For every input format (JSONL, CSV, parquet, a `datasets` folder), any number of passes over a
`FactStream` (complete or cut short), and the probe end to end (its three streamed passes, shards
of any size). Rows carry a `tag` column; the tags of the accepted facts and of the rejected rows
must together be every tag, each once. Before the fix, a probe with --skip-invalid dropped a
duplicate id from rejects.jsonl (a later pass rewrote the file without the duplicate check) and
probed the duplicate instead of the last valid fact.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import polars as pl
import pytest
from fuzzing import examples
from hypothesis import given
from hypothesis import strategies as st

from kia.artifacts import read_json, read_jsonl
from kia.engines.scripted import ScriptedEngine
from kia.errors import FactsError, KiaError
from kia.facts import FactStream

FORMATS = ("jsonl", "csv", "parquet", "hf")

# Few ids, so duplicates are common; "" and None get the derived "{stem}-{line}" id.
row = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "d", "", None]),
        "question": st.one_of(st.text(max_size=15), st.sampled_from(["", "  ", None])),
        "answers": st.one_of(
            st.none(), st.lists(st.one_of(st.text(min_size=1, max_size=8), st.sampled_from(["", " "])), max_size=3)
        ),
    }
)
GARBAGE = ("{", "[1, 2]", '"text"', "null", '{"question": "Q?", "answers": ["A"]')  # JSONL lines only
rows = st.lists(row, min_size=1, max_size=10)
jsonl_rows = st.lists(st.one_of(row, row, st.sampled_from(GARBAGE)), min_size=1, max_size=10)


def write_source(folder: Path, fmt: str, items: list) -> tuple[Path, dict[int, int]]:
    """Write the rows (each gets `tag` = its index) in `fmt`; returns the path and, for each row
    number a reject can name (line for text files, row for tables), the tag of the row there."""
    tagged = [{**r, "tag": i} if isinstance(r, dict) else r for i, r in enumerate(items)]
    if fmt == "jsonl":
        path = folder / "facts.jsonl"
        path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in tagged), "utf-8")
        return path, {i + 1: i for i in range(len(items))}
    if fmt == "csv":
        path = folder / "facts.csv"
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["id", "question", "answers", "tag"])
        where, line = {}, 2
        for r in tagged:
            start = buf.tell()
            writer.writerow(
                [r["id"] or "", r["question"] or "", "" if r["answers"] is None else json.dumps(r["answers"]), r["tag"]]
            )
            where[line] = r["tag"]
            line += len(io.StringIO(buf.getvalue()[start:], newline="").readlines())  # a cell may span lines
        path.write_text(buf.getvalue(), "utf-8", newline="")
        return path, where
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "facts.parquet"
        schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("answers", pa.list_(pa.string())),
                            ("tag", pa.int64())])  # fmt: skip
        pq.write_table(pa.Table.from_pylist(tagged, schema=schema), path)
        return path, {i + 1: i for i in range(len(items))}
    from datasets import Dataset, Features, Sequence, Value

    path = folder / "facts_ds"
    features = Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "answers": Sequence(Value("string")),
            "tag": Value("int64"),
        }
    )
    Dataset.from_list(tagged, features=features).save_to_disk(str(path))
    return path, {i + 1: i for i in range(len(items))}


def assert_partition(accepted_tags: list, rejects: list[dict], where: dict[int, int], n: int) -> None:
    """Accepted and rejected rows are every row, each exactly once."""
    rejected = [where[r["line"]] for r in rejects]
    assert sorted([int(t) for t in accepted_tags] + rejected) == list(range(n)), (accepted_tags, rejects)


# ------------------------------------------------------------------------------------ the stream

passes = st.lists(st.one_of(st.none(), st.integers(1, 6)), min_size=1, max_size=4)  # None: a whole pass


@pytest.mark.parametrize("fmt", FORMATS)
@given(data=st.data())
@examples(40)
def test_every_pass_accepts_and_rejects_the_same_rows(fmt, data):
    items = data.draw(jsonl_rows if fmt == "jsonl" else rows, label="rows")
    plan = data.draw(passes, label="passes") + [None]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, where = write_source(folder, fmt, items)
        rejects_path = folder / "rejects.jsonl"
        stream = FactStream(path, skip_invalid=True, rejects_path=rejects_path)
        whole: list[str] | None = None
        written: str | None = None
        for stop in plan:
            got = []
            try:
                for fact in stream:
                    got.append(fact)
                    if stop is not None and len(got) == stop:
                        break
            except FactsError as exc:  # no valid row at all: every row is a reject, every pass says so
                assert "no valid facts" in str(exc) and path.name in str(exc), str(exc)
                assert_partition([], read_jsonl(rejects_path), where, len(items))
                continue
            ids = [f.id for f in got]
            assert len(ids) == len(set(ids)), ids
            if stop is None or len(got) < stop:  # a whole pass
                assert stream.validated
                if whole is None:
                    whole, written = ids, rejects_path.read_text("utf-8")
                assert ids == whole  # every pass accepts the same rows ...
                assert rejects_path.read_text("utf-8") == written  # ... and no pass rewrites the rejects
                assert stream.n_facts + stream.n_rejected == stream.n_rows == len(items)
                assert_partition([f.extra["tag"] for f in got], read_jsonl(rejects_path), where, len(items))
            elif whole is not None:
                assert ids == whole[: len(ids)]  # a pass cut short is a prefix of a whole one


# ------------------------------------------------------------------------------------- the probe


def _probe(folder: Path, facts: Path, shard_size: int, **kw):
    from kia.probe import ProbeConfig
    from kia.probe import run as probe_run

    cfg = ProbeConfig(
        facts=str(facts), model="scripted", output=str(folder / "out"), n_sets=1, shots=0, n_samples=1,
        shard_size=shard_size, skip_invalid=True, **kw,
    )  # fmt: skip
    with mock.patch.object(probe_run, "load_engine", lambda _cfg: ScriptedEngine({})):
        return probe_run.probe(cfg)


@pytest.mark.parametrize("fmt", FORMATS)
@given(data=st.data())
@examples(25)
def test_the_probe_writes_every_row_to_exactly_one_of_facts_and_rejects(fmt, data):
    items = data.draw(jsonl_rows if fmt == "jsonl" else rows, label="rows")
    shard_size = data.draw(st.integers(1, 4), label="shard_size")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, where = write_source(folder, fmt, items)
        try:
            _probe(folder, path, shard_size)
        except FactsError as exc:
            assert "no valid facts" in str(exc), str(exc)
            assert_partition([], read_jsonl(folder / "out" / "rejects.jsonl"), where, len(items))
            return
        out = folder / "out"
        table = pl.read_parquet(out / "facts.parquet")
        assert table["id"].n_unique() == table.height
        rejects = read_jsonl(out / "rejects.jsonl")
        assert_partition([json.loads(e)["tag"] for e in table["extra"]], rejects, where, len(items))
        manifest = read_json(out / "manifest.json")
        assert (manifest["n_rows"], manifest["n_valid"], manifest["n_rejected"]) == (
            len(items),
            table.height,
            len(rejects),
        )


def test_the_issue_19_file(tmp_path):
    """The reported case: valid rows, an empty question and a repeated id, probed in shards of 1."""
    lines = [
        {"id": "a", "question": "Q1?", "answers": ["x"]},
        {"id": "b", "question": "Q2?", "answers": ["y"]},
        {"id": "a", "question": "Q3?", "answers": ["z"]},
        {"id": "c", "question": "", "answers": ["z"]},
        {"id": "d", "question": "Q5?", "answers": ["w"]},
    ]
    path, _ = write_source(tmp_path, "jsonl", lines)
    _probe(tmp_path, path, 1)
    assert pl.read_parquet(tmp_path / "out" / "facts.parquet")["id"].to_list() == ["a", "b", "d"]
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert [(r["line"], r["field"]) for r in rejects] == [(3, "id"), (4, "question")]
    assert "duplicate id 'a' (first seen at line 1)" in rejects[0]["reason"]


def test_a_file_that_changes_between_passes_is_an_error(tmp_path):
    path, _ = write_source(tmp_path, "jsonl", [{"id": "a", "question": "Q?", "answers": ["x"]}])
    stream = FactStream(path)
    assert [f.id for f in stream] == ["a"]
    path.write_text(path.read_text() + json.dumps({"id": "b", "question": "R?", "answers": ["y"]}) + "\n")
    with pytest.raises(KiaError, match=r"facts\.jsonl: changed while kia was reading it"):
        list(stream)
