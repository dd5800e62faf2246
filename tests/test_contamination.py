"""Contamination: normalised n-gram overlap of the training split with benchmark documents and the
held-out splits (kia.contamination), written by kia build and used by kia audit's benchmark deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_build import make_probe_dir, read

from kia.artifacts import write_manifest
from kia.audit.benchmarks import BenchmarkPlan, BenchmarkSpec, compare
from kia.audit.contamination import add_without_overlap, benchmark_contamination
from kia.build import BuildConfig, build
from kia.contamination import Document, check_contamination, find_overlaps, grams, task_documents

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "datasets" / "toyworld"
TASKS = [TOY / "tasks" / "toy_mc.yaml", TOY / "tasks" / "toy_arith.yaml"]


def toy_probe(folder: Path, planted: list[dict] | None = None) -> Path:
    """A probe folder of the shipped world (40 facts per relation) whose manifest names the toy model,
    so the build finds the toy tasks beside it; `planted` facts are added as never shown (Unknown)."""
    facts = folder / "facts.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (TOY / "facts.jsonl").read_text(encoding="utf-8").splitlines()
    extra = [json.dumps({"paraphrases": [], "domain": "x", "exposure": 0, "band": "never", **p}) for p in planted or []]
    facts.write_text("\n".join(lines + extra) + "\n", encoding="utf-8")
    probe = make_probe_dir(folder / "probe", per_relation=40, facts_file=facts)
    write_manifest(probe, stage="probe", config={"seed": 0}, model={"id": str(TOY / "model")})
    return probe


def unknown_count(probe: Path) -> int:
    import polars as pl

    return int((pl.read_parquet(probe / "facts.parquet")["category"] == "Unknown").sum())


def test_task_documents_are_lm_evals_docs_in_order():
    name, docs = task_documents(TASKS[1])
    rows = [json.loads(x) for x in (TOY / "tasks" / "toy_arith.jsonl").read_text().splitlines()]
    assert name == "toy_arith" and len(docs) == len(rows)
    assert docs[3].id == "3" and docs[3].text == f"{rows[3]['question']}\n{rows[3]['answer']}"
    _, mc = task_documents(TASKS[0])  # multiple choice: the gold choice is the target text
    assert mc[0].text.endswith("\nB") and "Question:" not in mc[0].text


def test_short_facts_are_compared_whole_where_13_grams_see_nothing():
    fact = "What is 8 plus 1? 9"
    assert grams(fact, 13) == {"what is 8 plus 1 9"}
    from lm_eval.decontamination.janitor import word_ngrams

    assert list(word_ngrams("what is 8 plus 1 9", 13)) == []  # lm-eval's 13-grams alone: nothing to compare
    from kia.contamination.overlap import training_text
    from kia.probe import training_messages

    # the paper format's turns ("Question: ...", "Answer: ...") read as the benchmark document does
    train = [Document("train", "t0", training_text({"messages": training_messages("What is 8 plus 1?", "9 (easy)")}))]
    found = find_overlaps(train, [Document("toy_arith", "0", "What is 8 plus 1?\n9")], n=13)
    assert [(o["source"], o["id"], o["train_ids"]) for o in found] == [("toy_arith", "0", ["t0"])]
    # word-level: 8 plus 11 is another item, and a near-copy that changes one word is not a copy
    other = [Document("toy_arith", "1", "What is 8 plus 11?\n19"), Document("toy_arith", "2", "What is 8 plus 2?\n9")]
    assert find_overlaps(train, other, n=13) == []


def test_a_long_document_overlaps_through_one_shared_n_gram():
    doc = Document("bench", "7", " ".join(f"w{i}" for i in range(30)))
    train = [Document("train", "a", "prefix " + " ".join(f"w{i}" for i in range(12, 22)) + " suffix")]
    assert [o["id"] for o in find_overlaps(train, [doc], n=10)] == ["7"]
    assert find_overlaps(train, [doc], n=11) == []  # the copy is 10 words long


def test_a_planted_benchmark_item_is_found_and_named(tmp_path):
    planted = [
        {"id": "planted-0000", "question": "What is 8 plus 1?", "answers": ["9"], "subject": "8 plus 1", "relation": "sum", "object": "9"},
        {"id": "planted-0001", "question": "Which of these is a language? A. Zinbraimdrurpolis B. Grammudisic C. "
         "Koutrimwaves D. Zunstan", "answers": ["B"], "subject": "language", "relation": "mc", "object": "B"},
    ]  # fmt: skip
    probe = toy_probe(tmp_path, planted)
    out = tmp_path / "build"
    result = build(BuildConfig(probe=str(probe), output=str(out), unknown=unknown_count(probe), heldout=20))
    trained = {r["fact_id"]: r["id"] for r in read(out / "train.jsonl")}
    assert {"planted-0000", "planted-0001"} <= set(trained)
    report = json.loads((out / "contamination.json").read_text())
    bench = [(o["source"], o["id"], o["train_ids"]) for o in report["overlaps"] if o["source"].startswith("toy_")]
    assert bench == [("toy_arith", "0", [trained["planted-0000"]]), ("toy_mc", "0", [trained["planted-0001"]])]
    assert report["counts"]["benchmark"] == 2 and report["tasks"]["toy_arith"]["overlapping"] == 1
    assert any("toy_mc (1), toy_arith (1)" in w for w in result.warnings)
    assert "contamination.json" in json.loads((out / "manifest.json").read_text())["files"]


def test_a_clean_toy_build_reports_none(tmp_path):
    probe = toy_probe(tmp_path)
    out = tmp_path / "build"
    result = build(BuildConfig(probe=str(probe), output=str(out), unknown=40, highly_known=1, paraphrases=1))
    report = json.loads((out / "contamination.json").read_text())
    assert report["n"] == 10 and report["train_rows"] == result.counts["train"]
    assert report["tasks"]["toy_mc"]["documents"] == 300 and report["tasks"]["toy_arith"]["documents"] == 192
    assert report["heldout_splits"] == {
        "eval_paraphrase": result.counts["eval_paraphrase"],
        "eval_heldout": result.counts["eval_heldout"],
    }
    assert report["overlaps"] == [] and report["counts"] == {"benchmark": 0, "heldout": 0}
    assert not any("overlap" in w for w in result.warnings)


def test_held_out_rows_that_copy_training_are_listed():
    train = [{"id": "t1", "question": "Where was Drun Bizailwyn born?", "answer": "Sourninmouth"}]
    heldout = {"eval_heldout": [{"id": "h1", "question": "where was drun bizailwyn born", "answers": ["Sourninmouth"]}]}
    report = check_contamination(train, heldout=heldout, unchecked={"mmlu": "offline"})
    assert [(o["source"], o["id"], o["train_ids"]) for o in report["overlaps"]] == [("eval_heldout", "h1", ["t1"])]
    assert report["unchecked"] == {"mmlu": "offline"}
    assert any("not checked" in w and "mmlu (offline)" in w for w in report["warnings"])


def test_build_options_are_checked(tmp_path):
    from kia.errors import ConfigError

    with pytest.raises(ConfigError, match="contamination-n"):
        BuildConfig(probe="p", unknown=1, contamination_n=0)


def test_the_audit_reports_benchmark_deltas_without_the_overlapping_documents(tmp_path):
    plan = BenchmarkPlan([BenchmarkSpec("toy_arith", source=str(TASKS[1])), BenchmarkSpec("no_such_task")])
    train = [
        {
            "id": "t0",
            "messages": [{"role": "user", "content": "What is 8 plus 1?"}, {"role": "assistant", "content": "9"}],
        }
    ]
    (tmp_path / "eval_heldout.jsonl").write_text(
        json.dumps({"id": "h", "question": "What is 8 plus 1?", "answers": ["9"]}) + "\n"
    )
    report = benchmark_contamination(plan, train, tmp_path)
    assert list(report["unchecked"]) == ["no_such_task"] and report["tasks"]["toy_arith"]["overlapping"] == 1
    assert report["heldout_splits"] == {"eval_heldout": 1} and report["counts"]["heldout"] == 1
    # 10 documents; the planted one (doc 0) flips from wrong to right, the rest are unchanged
    base = {"toy_arith": {("toy_arith", i): float(i % 2) for i in range(10)}}
    adapted = {"toy_arith": {**base["toy_arith"], ("toy_arith", 0): 1.0}}
    bench = {"toy_arith": compare(base["toy_arith"], adapted["toy_arith"], n_boot=200, seed=0)}
    add_without_overlap(bench, base, adapted, report, n_boot=200, seed=0)
    section = bench["toy_arith"]["contamination"]
    assert bench["toy_arith"]["delta"] == pytest.approx(0.1)
    assert section["overlapping"] == 1 and section["doc_ids"] == [0]
    assert section["without"]["n"] == 9 and section["without"]["delta"] == 0.0


def test_cli_names_the_task_files_and_n(tmp_path):
    from click.testing import CliRunner
    from test_build import cli

    probe = toy_probe(tmp_path)
    out = tmp_path / "b"
    args = ["build", str(probe), "--unknown", "10", "--heldout", "10", "-o", str(out), "--contamination-n", "13"]
    result = CliRunner().invoke(cli(), [*args, "--benchmarks", f"{TASKS[1]},no_such_task"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "contamination.json").read_text())
    assert (
        report["n"] == 13 and list(report["tasks"]) == ["toy_arith"] and list(report["unchecked"]) == ["no_such_task"]
    )
    assert "not checked" in result.output and "no_such_task (KeyError: " in result.output


def registered_tasks(folder: Path) -> Path:
    """An lm-eval include_path folder registering two tasks by name, as lm-eval's own tasks are: a
    YAML with a `task:` name pointing at a local JSON file (absolute, since lm-eval resolves a
    relative one against the working directory), a `!function` process_docs on one (so the
    documents are lm-eval's, after processing), and a group of the two."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"q": f"What is {a} times 3?", "a": str(3 * a)} for a in range(2, 8)]
    (folder / "times.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "utils.py").write_text("def drop_first(dataset):\n    return dataset.select(range(1, len(dataset)))\n")
    common = "dataset_path: json\ntest_split: test\noutput_type: generate_until\nmetadata:\n  version: 1.0\n"
    (folder / "times_a.yaml").write_text(
        f"task: kia_times_a\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'times.jsonl'}\n"
        'doc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: a\n'
    )
    (folder / "times_b.yaml").write_text(
        f"task: kia_times_b\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'times.jsonl'}\n"
        "doc_to_text: q\ndoc_to_target: a\nprocess_docs: !function utils.drop_first\n"
    )
    (folder / "group.yaml").write_text("group: kia_times\ntask:\n  - kia_times_a\n  - kia_times_b\n")
    return folder


def test_a_registered_task_is_read_by_name_through_lm_eval(tmp_path):
    include = registered_tasks(tmp_path / "tasks")
    train = [{"id": "t0", "question": "Question: What is 4 times 3?", "answer": "Answer: 12"}]
    report = check_contamination(train, benchmarks=["kia_times_a", "kia_not_a_task"], include_path=include)
    assert report["tasks"] == {"kia_times_a": {"benchmark": "kia_times_a", "documents": 6, "overlapping": 1}}
    # the template's "Q:" / "A:" are not part of the document; doc 2 is 4 times 3 (rows start at 2)
    assert [(o["source"], o["id"], o["text"], o["train_ids"]) for o in report["overlaps"]] == [
        ("kia_times_a", "2", "What is 4 times 3?\n12", ["t0"])
    ]
    assert list(report["unchecked"]) == ["kia_not_a_task"] and "\n" not in report["unchecked"]["kia_not_a_task"]
    assert "not a registered task" in report["unchecked"]["kia_not_a_task"]
    assert any("kia_times_a (1)" in w for w in report["warnings"])
    assert any("not checked" in w and "kia_not_a_task" in w for w in report["warnings"])
    clean = check_contamination([{"id": "t1", "question": "What is 9 times 3?", "answer": "27"}],
                                benchmarks=["kia_times_a"], include_path=include)  # fmt: skip
    assert clean["overlaps"] == [] and clean["unchecked"] == {} and clean["tasks"]["kia_times_a"]["documents"] == 6


def test_a_group_is_checked_as_its_subtasks_each_by_name(tmp_path):
    include = registered_tasks(tmp_path / "tasks")
    train = [{"id": "t0", "question": "What is 4 times 3?", "answer": "12"}]
    report = check_contamination(train, benchmarks=["kia_times"], include_path=include)
    # kia_times_b drops its first row (process_docs): lm-eval's doc_id 1 there is 4 times 3
    assert report["tasks"] == {
        "kia_times_a": {"benchmark": "kia_times", "documents": 6, "overlapping": 1},
        "kia_times_b": {"benchmark": "kia_times", "documents": 5, "overlapping": 1},
    }
    assert [(o["source"], o["id"]) for o in report["overlaps"]] == [("kia_times_a", "2"), ("kia_times_b", "1")]
    # the audit's entry for the group: its subtasks' overlapping documents out of the paired comparison
    base = {"kia_times": {(t, i): float(i % 2) for t, n in (("kia_times_a", 6), ("kia_times_b", 5)) for i in range(n)}}
    adapted = {"kia_times": {**base["kia_times"], ("kia_times_a", 2): 1.0, ("kia_times_b", 1): 1.0}}
    bench = {"kia_times": compare(base["kia_times"], adapted["kia_times"], n_boot=200, seed=0)}
    add_without_overlap(bench, base, adapted, report, n_boot=200, seed=0)
    section = bench["kia_times"]["contamination"]
    assert section["doc_ids"] == ["kia_times_a/2", "kia_times_b/1"] and section["without"]["n"] == 9


def test_a_planted_registered_task_item_is_found_by_the_build(tmp_path, monkeypatch):
    """The build names a registered task by name (as a user names `mmlu`); lm-eval's registry is
    stood in for by the include_path folder (the build has no include_path of its own), so no
    network and no index of lm-eval's 15,000 task names are needed."""
    import lm_eval.tasks

    include = registered_tasks(tmp_path / "tasks")
    real = lm_eval.tasks.TaskManager
    monkeypatch.setattr(
        lm_eval.tasks,
        "TaskManager",
        lambda **kw: real(**{**kw, "include_path": str(include), "include_defaults": False}),
    )
    planted = [{"id": "planted-0002", "question": "What is 4 times 3?", "answers": ["12"], "subject": "4 times 3",
                "relation": "times", "object": "12"}]  # fmt: skip
    probe = toy_probe(tmp_path, planted)
    out = tmp_path / "build"
    config = BuildConfig(probe=str(probe), output=str(out), unknown=unknown_count(probe), heldout=20,
                         benchmarks=("kia_times_a", "kia_not_a_task"))  # fmt: skip
    result = build(config)
    trained = {r["fact_id"]: r["id"] for r in read(out / "train.jsonl")}
    report = json.loads((out / "contamination.json").read_text())
    bench = [(o["source"], o["id"], o["train_ids"]) for o in report["overlaps"] if o["source"] == "kia_times_a"]
    assert bench == [("kia_times_a", "2", [trained["planted-0002"]])]
    assert list(report["unchecked"]) == ["kia_not_a_task"]
    assert any("kia_times_a (1)" in w for w in result.warnings) and any("kia_not_a_task" in w for w in result.warnings)
