"""Tier 1: fact loaders (JSONL, CSV, parquet, datasets folders, the paper's format) and validation."""

from __future__ import annotations

import json

import polars as pl
import pytest

from kia.errors import FactsError
from kia.facts import Fact, load_facts


def _jsonl(tmp_path, rows, name="facts.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {
    "id": "a",
    "question": "Where was X born?",
    "answers": ["Lyon", "Lyons"],
    "relation": "birthplace",
    "exposure": 3,
}


def test_jsonl_loads_and_keeps_extra_columns(tmp_path):
    fs = load_facts(_jsonl(tmp_path, [GOOD, {**GOOD, "id": "b", "paraphrases": ["X's birthplace?"]}]))
    assert [f.id for f in fs.facts] == ["a", "b"]
    assert fs.facts[0].answers == ("Lyon", "Lyons") and fs.facts[0].answer == "Lyon"
    assert fs.facts[0].extra == {"exposure": 3} and fs.facts[1].paraphrases == ("X's birthplace?",)
    assert fs.n_rows == 2 and fs.n_rejected == 0 and len(fs.sha256) == 64
    assert Fact.from_dict(fs.facts[0].to_dict()) == fs.facts[0]
    assert fs.facts[0].to_dict()["exposure"] == 3


def test_missing_ids_are_derived_from_the_line(tmp_path):
    fs = load_facts(_jsonl(tmp_path, [{"question": "Q1?", "answers": ["a"]}, "", {"question": "Q2?", "answer": "b"}]))
    assert [f.id for f in fs.facts] == ["facts-1", "facts-3"]
    assert fs.facts[1].answers == ("b",)


def test_paper_released_format(tmp_path):
    alias = {"aliases": ["Maeve Binchy"], "normalized_aliases": ["maeve binchy", "binchy"], "value": "Maeve Binchy"}
    rows = [{"question": "Who wrote Evening Class?", "answer": alias}, {"question": "Q?", "answer": [alias, alias]}]
    fs = load_facts(_jsonl(tmp_path, rows))
    assert fs.facts[0].answers == ("Maeve Binchy", "maeve binchy", "binchy")
    assert fs.facts[1].answers == fs.facts[0].answers


def test_csv_with_lists(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(
        'id,question,answers,paraphrases\n1,"Where, exactly?","[""Lyon"", ""Lyons""]",P1|P2\n2,Q2?,Paris,\n'
    )
    fs = load_facts(path)
    assert fs.facts[0].question == "Where, exactly?" and fs.facts[0].answers == ("Lyon", "Lyons")
    assert fs.facts[0].paraphrases == ("P1", "P2") and fs.facts[1].answers == ("Paris",)


def test_parquet_and_datasets_folder(tmp_path):
    rows = [{"id": "p1", "question": "Q?", "answers": ["A"], "paraphrases": ["Q again?"]}]
    pl.DataFrame(rows).write_parquet(tmp_path / "f.parquet")
    assert load_facts(tmp_path / "f.parquet").facts[0].paraphrases == ("Q again?",)
    from datasets import Dataset, DatasetDict

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert load_facts(tmp_path / "ds").facts[0].id == "p1"
    DatasetDict({"test": Dataset.from_list(rows), "dev": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(FactsError, match="PATH::SPLIT"):
        load_facts(tmp_path / "dd")
    assert load_facts(f"{tmp_path / 'dd'}::dev").facts[0].id == "p1"


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"id": "x", "answers": ["a"]}, "question", "missing"),
        ({"id": "x", "question": "   ", "answers": ["a"]}, "question", "empty"),
        ({"id": "x", "question": 5, "answers": ["a"]}, "question", "string"),
        ({"id": "x", "question": "Q?"}, "answers", "missing"),
        ({"id": "x", "question": "Q?", "answers": ["a", " "]}, "answers", "empty alias"),
        ({"id": "x", "question": "Q?", "answers": [""]}, "answers", "empty alias"),
        ({"id": "x", "question": "Q?", "answers": [3]}, "answers", "list of strings"),
        ({"id": "x", "question": "Q?", "answers": ["a"], "paraphrases": "oops"}, None, None),
        ({"id": "x", "question": "Q?", "answers": ["a"], "paraphrases": [1]}, "paraphrases", "list of strings"),
        ({"id": ["x"], "question": "Q?", "answers": ["a"]}, "id", "string or integer"),
        ({"id": "x", "question": "Q?", "answers": ["a"], "relation": 7}, "relation", "string"),
    ],
)
def test_row_errors_name_file_line_and_field(tmp_path, row, field, reason):
    path = _jsonl(tmp_path, [GOOD, row])
    if field is None:  # a bare string paraphrase is accepted as a one-item list
        assert load_facts(path).facts[1].paraphrases == ("oops",)
        return
    with pytest.raises(FactsError) as exc:
        load_facts(path)
    msg = str(exc.value)
    assert f"{path}:2:" in msg and f"field '{field}'" in msg and reason in msg


def test_whole_file_errors(tmp_path):
    with pytest.raises(FactsError, match="no such file"):
        load_facts(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(FactsError, match="holds no facts"):
        load_facts(tmp_path / "empty.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(FactsError, match="parquet"):
        load_facts(tmp_path / "bad.parquet")
    (tmp_path / "nq.csv").write_text("id,answers\n1,a\n")
    with pytest.raises(FactsError, match="no `question` column"):
        load_facts(tmp_path / "nq.csv")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(FactsError, match="unknown format"):
        load_facts(tmp_path / "f.txt")


def test_duplicate_id_names_both_lines(tmp_path):
    with pytest.raises(FactsError, match=r"facts.jsonl:3: duplicate id 'a' \(first seen at line 1\)"):
        load_facts(_jsonl(tmp_path, [GOOD, {**GOOD, "id": "b"}, GOOD]))


def test_invalid_json_and_utf8_lines(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n{broken\n" + b'{"question": "\xff\xfe", "answers": ["a"]}\n')
    with pytest.raises(FactsError, match=r"f.jsonl:2: not valid JSON"):
        load_facts(path)
    fs = load_facts(path, skip_invalid=True, rejects_path=tmp_path / "rejects.jsonl")
    assert len(fs.facts) == 1 and fs.n_rejected == 2 and fs.n_rows == 3
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3]
    assert "invalid UTF-8" in rejects[1]["reason"] and rejects[0]["raw"] == "{broken"


def test_skip_invalid_never_loses_a_row(tmp_path):
    rows = [GOOD, {"question": ""}, "[1, 2]", {**GOOD, "id": "c", "answers": [" "]}, {**GOOD, "id": "d"}, GOOD]
    fs = load_facts(_jsonl(tmp_path, rows), skip_invalid=True, rejects_path=tmp_path / "rej.jsonl")
    assert len(fs.facts) + fs.n_rejected == fs.n_rows == 6
    reasons = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in reasons] == [(2, "question"), (3, None), (4, "answers"), (6, "id")]


def test_csv_errors(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text('id,question,answers\n1,Q?,a\n2,Q2?\n3,"Q3?,a\n')
    with pytest.raises(FactsError, match=r"f.csv:3: has 2 fields, the header has 3"):
        load_facts(path)
    fs = load_facts(path, skip_invalid=True)
    assert len(fs.facts) + fs.n_rejected == fs.n_rows and fs.n_rejected == 2


def test_leaked_answer_is_a_warning(tmp_path):
    fs = load_facts(_jsonl(tmp_path, [{"id": "l", "question": "Is Lyon in France?", "answers": ["Lyon"]}, GOOD]))
    assert len(fs.facts) == 2 and len(fs.warnings) == 1 and ":1:" in fs.warnings[0] and "Lyon" in fs.warnings[0]


def test_hub_name_that_cannot_be_reached_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FactsError, match="cannot load the Hugging Face dataset 'nobody/no-such-facts'"):
        load_facts("nobody/no-such-facts")
