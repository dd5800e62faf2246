"""Tier 1: fact loaders (JSONL, CSV, parquet, datasets folders, the paper's format) and validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kia.errors import FactsError, KiaError
from kia.facts import Fact, FactSet, load_facts, validate_fact_dict

DATA = Path(__file__).parent / "data" / "facts"

GOOD = {
    "id": "a",
    "question": "Where was Xavier born?",
    "answers": ["Lyon", "Lyons"],
    "relation": "birthPlace",
    "exposure": 3,
}


def _jsonl(tmp_path: Path, rows: list, name: str = "facts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _error(path, **kw) -> str:
    with pytest.raises(FactsError) as exc:
        load_facts(path, **kw)
    return str(exc.value)


# ---------------------------------------------------------------------------------------------- model


def test_fact_dict_round_trip_and_answer():
    fact = Fact("x", "Q?", ("A", "B"), relation="r", paraphrases=("Q2?",), extra={"exposure": 2, "tags": ["t"]})
    d = fact.to_dict()
    assert d == {
        "id": "x",
        "question": "Q?",
        "answers": ["A", "B"],
        "subject": None,
        "relation": "r",
        "object": None,
        "paraphrases": ["Q2?"],
        "domain": None,
        "exposure": 2,
        "tags": ["t"],
    }
    assert json.loads(json.dumps(d)) == d
    assert Fact.from_dict(d) == fact and fact.answer == "A"
    assert Fact.from_dict({"id": 5, "question": "Q?", "answers": ["A"]}).id == "5"
    assert hash(fact) == hash(Fact.from_dict(d))  # hashable although `extra` is a dict


def test_importing_facts_does_not_import_heavy_libraries():
    code = (
        "import sys, kia.facts, kia.facts.matching; print(sorted({'polars', 'pyarrow', 'datasets'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -------------------------------------------------------------------------------------------- loaders


def test_jsonl_fixture_loads_with_extras_and_derived_ids():
    fs = load_facts(DATA / "good.jsonl")
    assert isinstance(fs, FactSet) and fs.path == str(DATA / "good.jsonl")
    assert [f.id for f in fs.facts] == ["lyon", "7", "good-5"]  # blank lines 2 and 4 are not rows
    first = fs.facts[0]
    assert first.answers == ("Lyon", "Lyons") and first.answer == "Lyon"
    assert (first.subject, first.relation, first.object, first.domain) == (
        "Xavier Dupont",
        "birthPlace",
        "Lyon",
        "Person",
    )
    assert first.paraphrases == ("What is Xavier Dupont's birthplace?",)
    assert first.extra == {"exposure": 3, "obscure": True}
    assert fs.facts[1].answers == ("Maeve Binchy",) and fs.facts[1].extra == {}
    assert fs.n_rows == 3 and fs.n_rejected == 0 and fs.warnings == []
    assert len(fs.sha256) == 64 and fs.sha256 == load_facts(DATA / "good.jsonl").sha256


def test_jsonl_with_bom_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + json.dumps({**GOOD, "id": "b"}).encode())
    assert [f.id for f in load_facts(path).facts] == ["a", "b"]


def test_json_array_file(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "id": "b"}], indent=2))
    fs = load_facts(path)
    assert [f.id for f in fs.facts] == ["a", "b"] and fs.n_rows == 2
    path.write_text(json.dumps([GOOD, {**GOOD, "id": "b", "question": ""}], indent=2))
    msg = _error(path)
    assert "facts.json: row 2: is empty (field 'question')" in msg


def test_paper_released_format():
    fs = load_facts(DATA / "paper_released.jsonl")
    binchy, barlow = fs.facts
    # aliases first, then normalized_aliases, de-duplicated; the empty normalised alias is dropped with a warning
    assert binchy.answers == ("Maeve Binchy", "Binchy", "maeve binchy", "binchy")
    assert barlow.answers == ("Matthew Barlow", "matthew barlow", "matt barlow")  # answer[0] of the list
    assert binchy.id == "paper_released-1" and barlow.id == "paper_released-2"
    assert binchy.extra["Category"] == "HighlyKnown" and "answer" not in binchy.extra
    assert barlow.extra["greedy_ans"] == ["I don't know."] * 10
    assert len(fs.warnings) == 1 and "paper_released.jsonl:1:" in fs.warnings[0] and "empty alias" in fs.warnings[0]


def test_paper_answer_dict_without_any_alias_is_an_error(tmp_path):
    path = _jsonl(tmp_path, [{"question": "Q?", "answer": {"aliases": [], "normalized_aliases": [" "]}}])
    assert "facts.jsonl:1: has no non-empty `aliases` or `normalized_aliases` (field 'answer')" in _error(path)
    path = _jsonl(tmp_path, [{"question": "Q?", "answer": {"aliases": ["A", 3]}}])
    assert "facts.jsonl:1:" in (msg := _error(path)) and "field 'answer.aliases'" in msg


def test_csv_fixture_lists_quotes_and_multiline_cells():
    fs = load_facts(DATA / "good.csv")
    c1, c2, c3 = fs.facts
    assert c1.question == "Where, exactly, was Xavier born?" and c1.answers == ("Lyon", "Lyons")
    assert c1.paraphrases == ("Xavier's birthplace?", "Birthplace of Xavier?")
    assert c1.relation == "birthPlace" and c1.extra == {"exposure": "3"}
    assert c2.answers == ("Bizail",) and c2.paraphrases == () and c2.relation is None and c2.extra == {"exposure": None}
    # the third row starts on line 4 and spans two physical lines; its id comes from that line
    assert c3.id == "good-4" and c3.question == "A question\nover two lines?"
    assert c3.answers == ("Two", "Deux") and c3.paraphrases == ("Second line?",)
    assert fs.n_rows == 3


def test_csv_python_literal_answer_cell(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text(
        "question,answer\n"
        "\"Who wrote it?\",\"{'aliases': ['Maeve Binchy'], 'normalized_aliases': ['maeve binchy']}\"\n"
        "Where?,[not a list]\n"
    )
    a, b = load_facts(path).facts
    assert a.answers == ("Maeve Binchy", "maeve binchy")
    assert b.answers == ("[not a list]",)  # `answer` that does not parse is kept as a plain string


def test_parquet(tmp_path):
    import polars as pl

    rows = [
        {"id": "p1", "question": "Q1?", "answers": ["A", "B"], "paraphrases": ["Q one?"], "exposure": 1.5},
        {"id": "p2", "question": "Q2?", "answers": ["C"], "paraphrases": [], "exposure": float("nan")},
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "f.parquet")
    fs = load_facts(tmp_path / "f.parquet")
    assert [f.answers for f in fs.facts] == [("A", "B"), ("C",)]
    assert fs.facts[0].paraphrases == ("Q one?",) and fs.facts[0].extra == {"exposure": 1.5}
    assert fs.facts[1].extra == {"exposure": None}  # NaN is not JSON
    bad = [{"id": "p1", "question": "Q1?", "answers": ["A"]}, {"id": "p2", "question": "Q2?", "answers": [""]}]
    pl.DataFrame(bad).write_parquet(tmp_path / "bad.parquet")
    msg = _error(tmp_path / "bad.parquet")
    assert "bad.parquet: row 2: an empty alias would match every answer (field 'answers')" in msg


def test_parquet_paper_struct_answer(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    alias = {"aliases": ["Turin", "Torino"], "normalized_aliases": ["turin", "torino"]}
    table = pa.Table.from_pylist([{"question": "Where is the MiTo assembled?", "answer": [alias, alias]}])
    pq.write_table(table, tmp_path / "paper.parquet")
    assert load_facts(tmp_path / "paper.parquet").facts[0].answers == ("Turin", "Torino", "turin", "torino")


def test_datasets_folder_and_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"id": "h1", "question": "Q?", "answers": ["A"], "paraphrases": ["Q again?"]}]
    other = [{"id": "h2", "question": "Q2?", "answers": ["B"], "paraphrases": []}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    fs = load_facts(tmp_path / "ds")
    assert fs.facts[0].id == "h1" and fs.facts[0].paraphrases == ("Q again?",) and len(fs.sha256) == 64

    DatasetDict({"train": Dataset.from_list(rows), "dev": Dataset.from_list(other)}).save_to_disk(str(tmp_path / "dd"))
    assert load_facts(tmp_path / "dd").facts[0].id == "h1"  # "train" by default
    assert load_facts(f"{tmp_path / 'dd'}::dev").facts[0].id == "h2"
    assert "has no split 'test'" in _error(f"{tmp_path / 'dd'}::test")

    DatasetDict({"test": Dataset.from_list(rows), "dev": Dataset.from_list(other)}).save_to_disk(str(tmp_path / "d2"))
    assert "PATH::SPLIT" in _error(tmp_path / "d2")
    DatasetDict({"only": Dataset.from_list(other)}).save_to_disk(str(tmp_path / "d1"))
    assert load_facts(tmp_path / "d1").facts[0].id == "h2"  # the only split

    (tmp_path / "plain").mkdir()
    assert "not one saved by `datasets`" in _error(tmp_path / "plain")


def test_datasets_folder_row_errors_say_row(tmp_path):
    from datasets import Dataset

    rows = [{"id": "h1", "question": "Q?", "answers": ["A"]}, {"id": "h1", "question": "Q2?", "answers": ["B"]}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    msg = _error(tmp_path / "ds")
    assert f"{tmp_path / 'ds'}: row 2: duplicate id 'h1' (first seen at row 1) (field 'id')" in msg


def test_forced_format(tmp_path):
    path = tmp_path / "facts.txt"
    path.write_text(json.dumps(GOOD) + "\n")
    assert "unknown format '.txt'" in _error(path)
    assert load_facts(path, fmt="jsonl").facts[0].id == "a"
    assert "unknown format 'xml'" in _error(path, fmt="xml")


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"id": "x", "answers": ["a"]}, "question", "missing"),
        ({"id": "x", "question": "   ", "answers": ["a"]}, "question", "is empty"),
        ({"id": "x", "question": 5, "answers": ["a"]}, "question", "expected a string, got int"),
        ({"id": "x", "question": "Q?"}, "answers", "missing"),
        ({"id": "x", "question": "Q?", "answers": []}, "answers", "no accepted answer"),
        ({"id": "x", "question": "Q?", "answers": ["a", " "]}, "answers", "an empty alias would match every answer"),
        ({"id": "x", "question": "Q?", "answers": [""]}, "answers", "an empty alias would match every answer"),
        ({"id": "x", "question": "Q?", "answer": "  "}, "answer", "an empty alias would match every answer"),
        ({"id": "x", "question": "Q?", "answers": [3]}, "answers", "expected a list of strings"),
        ({"id": "x", "question": "Q?", "answers": "Lyon"}, "answers", "use `answer` for a single string"),
        ({"id": "x", "question": "Q?", "answer": 1969}, "answer", "expected a list of strings, got int"),
        ({"id": "x", "question": "Q?", "answers": ["a"], "paraphrases": "oops"}, "paraphrases", "list of strings"),
        ({"id": "x", "question": "Q?", "answers": ["a"], "paraphrases": [1]}, "paraphrases", "list of strings"),
        ({"id": ["x"], "question": "Q?", "answers": ["a"]}, "id", "expected a string or integer"),
        ({"id": True, "question": "Q?", "answers": ["a"]}, "id", "expected a string or integer"),
        ({"id": "x", "question": "Q?", "answers": ["a"], "relation": 7}, "relation", "expected a string"),
        ({"id": "a", "question": "Q?", "answers": ["a"]}, "id", "duplicate id 'a' (first seen at line 1)"),
    ],
)
def test_row_errors_name_file_line_and_field(tmp_path, row, field, reason):
    path = _jsonl(tmp_path, [GOOD, "", row])
    msg = _error(path)
    assert msg.startswith(f"{path}:3: ") and f"(field '{field}')" in msg and reason in msg
    with pytest.raises(FactsError) as exc:
        load_facts(path)
    assert (exc.value.path, exc.value.line, exc.value.field) == (str(path), 3, field)
    assert isinstance(exc.value, KiaError)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"question": "Q?", "answers": ["a"]', "not valid JSON"),
        ('["Q?", "a"]', "a row must be an object"),
        ("42", "a row must be an object with a `question`, got int"),
    ],
)
def test_unparsable_lines(tmp_path, line, reason):
    path = _jsonl(tmp_path, [GOOD, line])
    msg = _error(path)
    assert msg.startswith(f"{path}:2: ") and reason in msg


def test_validate_fact_dict_directly():
    fact = validate_fact_dict({"question": " Q? ", "answers": [" A ", "A", "B"]}, path="x/my.jsonl", line=4)
    assert fact.id == "my-4" and fact.question == "Q?" and fact.answers == ("A", "B")
    with pytest.raises(FactsError, match=r"^my\.jsonl:9: missing \(field 'question'\)$"):
        validate_fact_dict({"answers": ["A"]}, path="my.jsonl", line=9)
    with pytest.raises(FactsError, match=r"^t\.parquet: row 2: missing"):
        validate_fact_dict({"answers": ["A"]}, path="t.parquet", line=2, unit="row")


def test_whole_file_errors(tmp_path):
    msg = _error(tmp_path / "missing.jsonl")
    assert str(tmp_path / "missing.jsonl") in msg and "no such file or folder" in msg
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    assert "empty.jsonl: holds no facts" in _error(tmp_path / "empty.jsonl")
    (tmp_path / "zero.jsonl").write_bytes(b"")
    assert "zero.jsonl: holds no facts" in _error(tmp_path / "zero.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    assert "bad.parquet: not a readable parquet file" in _error(tmp_path / "bad.parquet")
    (tmp_path / "nq.csv").write_text("id,answers\n1,a\n")
    assert "nq.csv:1: no `question` column (columns: id, answers)" in _error(tmp_path / "nq.csv")
    (tmp_path / "e.csv").write_text("")
    assert "e.csv: empty file" in _error(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("question\n")
    assert "h.csv: holds no facts" in _error(tmp_path / "h.csv")
    (tmp_path / "dup.csv").write_text("question,answers,answers\nQ?,a,b\n")
    assert "dup.csv:1: repeated column(s) answers" in _error(tmp_path / "dup.csv")
    assert "'::SPLIT' only applies" in _error(f"{DATA / 'good.jsonl'}::train")


def test_missing_local_path_without_suffix_is_tried_as_a_hub_name(monkeypatch):
    import datasets

    def offline(name, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (offline)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = _error("nobody/no-such-facts")
    assert msg.startswith("nobody/no-such-facts: no such local file or folder")
    assert "cannot load the Hugging Face dataset 'nobody/no-such-facts' (ConnectionError: Couldn't reach" in msg
    assert "more detail" not in msg


def test_hub_name_rows_are_loaded_and_hashed(monkeypatch):
    import datasets

    rows = [{"question": "Q?", "answers": ["A"]}]
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, **kw: datasets.DatasetDict(train=datasets.Dataset.from_list(rows))
    )
    fs = load_facts("someone/facts")
    assert fs.facts[0].id == "facts-1" and len(fs.sha256) == 64


def test_duplicate_id_names_both_lines(tmp_path):
    path = _jsonl(tmp_path, [GOOD, {**GOOD, "id": "b"}, {**GOOD, "question": "Other?"}])
    assert f"{path}:3: duplicate id 'a' (first seen at line 1) (field 'id')" in _error(path)
    # integer and string ids collide once converted
    path = _jsonl(tmp_path, [{**GOOD, "id": 1}, {**GOOD, "id": "1"}], name="ints.jsonl")
    assert "ints.jsonl:2: duplicate id '1' (first seen at line 1)" in _error(path)


def test_leaked_answer_is_a_warning_not_an_error(tmp_path):
    rows = [GOOD, {"id": "l", "question": "Is LYON in France?", "answers": ["Paris", "Lyon"]}, {**GOOD, "id": "m"}]
    rows.append({"id": "n", "question": "Is Lyonnais a word?", "answers": ["Lyon"]})  # not as a whole word
    fs = load_facts(_jsonl(tmp_path, rows))
    assert len(fs.facts) == 4 and fs.n_rejected == 0
    assert fs.warnings == [f"{tmp_path / 'facts.jsonl'}:2: answer 'Lyon' occurs in its own question (id l)"]


# -------------------------------------------------------------------------------------- bad rows, skip


def test_bad_rows_fixture_without_skip_stops_at_the_first():
    msg = _error(DATA / "bad_rows.jsonl")
    assert msg.startswith(f"{DATA / 'bad_rows.jsonl'}:2: invalid UTF-8 (byte 36 of the line)")


def test_skip_invalid_writes_every_reject(tmp_path):
    rejects = tmp_path / "out" / "rejects.jsonl"
    fs = load_facts(DATA / "bad_rows.jsonl", skip_invalid=True, rejects_path=rejects)
    assert [f.id for f in fs.facts] == ["ok1", "ok2"]
    assert fs.n_rows == 7 and fs.n_rejected == 5 and len(fs.facts) + fs.n_rejected == fs.n_rows
    got = _rejects(rejects)
    assert [(r["line"], r["field"]) for r in got] == [(2, None), (3, None), (4, None), (6, "answers"), (7, "id")]
    assert got[0]["reason"].startswith("invalid UTF-8") and got[0]["raw"].startswith('{"id": "bad-utf8"')
    assert "\ufffd" in got[0]["raw"]  # the bad byte, replaced
    assert got[1]["reason"].startswith("not valid JSON") and got[1]["raw"] == '{"id": "broken", "question": '
    assert got[2]["reason"].startswith("a row must be an object") and got[2]["raw"] == '["not", "an", "object"]'
    assert got[3]["reason"] == "an empty alias would match every answer"
    assert got[4]["reason"] == "duplicate id 'ok1' (first seen at line 1)"


def test_skip_invalid_without_rejects_path_still_counts(tmp_path):
    fs = load_facts(DATA / "bad_rows.jsonl", skip_invalid=True)
    assert fs.n_rejected == 5 and len(fs.facts) == 2 and not list(tmp_path.iterdir())


def test_skip_invalid_rewrites_a_stale_rejects_file(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text('{"old": 1}\n')
    fs = load_facts(DATA / "good.jsonl", skip_invalid=True, rejects_path=rejects)
    assert fs.n_rejected == 0 and rejects.read_text() == ""


def test_all_rows_rejected_is_an_error_after_writing_rejects(tmp_path):
    path = _jsonl(tmp_path, [{"question": ""}, {"answers": ["a"]}])
    rejects = tmp_path / "rejects.jsonl"
    msg = _error(path, skip_invalid=True, rejects_path=rejects)
    assert "no valid facts: all 2 rows were rejected" in msg and str(rejects) in msg
    assert [r["field"] for r in _rejects(rejects)] == ["question", "question"]


def test_skip_invalid_parquet_keeps_the_row_dict(tmp_path):
    import polars as pl

    rows = [{"id": "p1", "question": "Q?", "answers": ["A"]}, {"id": "p2", "question": " ", "answers": ["B"]}]
    pl.DataFrame(rows).write_parquet(tmp_path / "f.parquet")
    fs = load_facts(tmp_path / "f.parquet", skip_invalid=True, rejects_path=tmp_path / "rej.jsonl")
    assert len(fs.facts) == 1 and fs.n_rejected == 1
    assert _rejects(tmp_path / "rej.jsonl") == [
        {"line": 2, "field": "question", "reason": "is empty", "raw": {"id": "p2", "question": " ", "answers": ["B"]}}
    ]


# -------------------------------------------------------------------------------------------------- CSV


def test_csv_quoting_and_field_count_errors():
    path = DATA / "quoting.csv"
    assert _error(path).startswith(f"{path}:3: CSV quoting error (',' expected after '\"')")


def test_csv_skip_invalid_resumes_after_a_broken_row(tmp_path):
    fs = load_facts(DATA / "quoting.csv", skip_invalid=True, rejects_path=tmp_path / "rej.jsonl")
    assert [f.id for f in fs.facts] == ["q1", "q3", "q5"]
    assert fs.n_rows == 5 and fs.n_rejected == 2
    got = _rejects(tmp_path / "rej.jsonl")
    assert [r["line"] for r in got] == [3, 5]
    assert got[0]["raw"] == 'q2,"Who rules Drun?"x,Queen Ila'
    assert got[1]["reason"] == "has 4 fields, the header has 3" and got[1]["raw"] == "q4,Too many,fields,here"


def test_csv_unclosed_quote_is_one_reported_row(tmp_path):
    path = tmp_path / "open.csv"
    path.write_text('id,question,answers\nq1,Q?,a\nq2,"Q2?,b\nq3,Q3?,c\n')
    msg = _error(path)
    assert msg.startswith(f"{path}:3: CSV quoting error") and "lines 3-4 were read as one row" in msg
    fs = load_facts(path, skip_invalid=True)
    assert len(fs.facts) == 1 and fs.n_rejected == 1 and fs.n_rows == 2


def test_csv_invalid_utf8_rejects_only_its_row(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"id,question,answers\nq1,Caf\xe9?,a\r\nq2,Q2?,b\r\n")
    assert _error(path) == f"{path}:2: invalid UTF-8 (field 'question')"
    fs = load_facts(path, skip_invalid=True, rejects_path=tmp_path / "rej.jsonl")
    assert [f.id for f in fs.facts] == ["q2"]
    assert _rejects(tmp_path / "rej.jsonl")[0]["raw"] == "q1,Caf\ufffd?,a"


def test_csv_bad_json_list_cell(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text('question,answers\nQ?,"[""a"", "\nQ2?,Paris|\nQ3?,Rome\n')
    assert _error(path).startswith(f"{path}:2: not a valid JSON list")
    fs = load_facts(path, skip_invalid=True, rejects_path=tmp_path / "rej.jsonl")
    assert fs.n_rejected == 2  # the trailing `|` makes an empty alias
    assert _rejects(tmp_path / "rej.jsonl")[1]["reason"] == "an empty alias would match every answer"


def test_every_fixture_copy_loads_identically(tmp_path):
    """The hash is of content, not of the path."""
    copy = tmp_path / "good.jsonl"
    shutil.copy(DATA / "good.jsonl", copy)
    assert load_facts(copy).sha256 == load_facts(DATA / "good.jsonl").sha256
    copy.write_text(copy.read_text() + json.dumps({"question": "More?", "answers": ["x"]}) + "\n")
    assert load_facts(copy).sha256 != load_facts(DATA / "good.jsonl").sha256


def test_fact_stream_rereads_and_caps_warnings(tmp_path, monkeypatch):
    from kia.facts import FactStream
    from kia.facts import load as facts_module

    monkeypatch.setattr(facts_module, "MAX_WARNINGS", 3)
    rows = [{"id": str(i), "question": f"Is Lyon {i} in Lyon?", "answers": ["Lyon"]} for i in range(10)]
    stream = FactStream(_jsonl(tmp_path, rows))
    first, second = [f.id for f in stream], [f.id for f in stream]
    assert first == second == [str(i) for i in range(10)]
    assert stream.n_facts == 10 and stream.n_rows == 10 and len(stream.sha256) == 64
    assert len(stream.warnings) == 4 and "7 more warnings" in stream.warnings[-1]
    assert load_facts(_jsonl(tmp_path, rows)).warnings == stream.warnings
