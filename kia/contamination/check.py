"""The contamination check `kia build` and `kia audit` run: the training split against benchmark
documents and against the held-out splits, written as contamination.json.

Two questions, one measure (`kia.contamination.overlap`):
- benchmark overlap: a benchmark document whose n-grams occur in training makes that benchmark's
  drift figure partly a memorisation figure, so the audit also reports it without those documents;
- held-out overlap: a held-out fact (eval_heldout, eval_paraphrase) whose text occurs in training
  is not held out, and its shift or generalisation figure is measured on trained data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kia.contamination.overlap import DEFAULT_N, Document, fact_text, find_overlaps, training_text
from kia.contamination.tasks import benchmark_documents, is_task_file

HELDOUT_SPLITS = ("eval_paraphrase", "eval_heldout")


def check_contamination(
    train: Sequence[Mapping[str, Any]],
    *,
    heldout: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    benchmarks: Sequence[str | Path] = (),
    unchecked: Mapping[str, str] | None = None,
    manager: Any = None,
    include_path: str | Path | None = None,
    n: int = DEFAULT_N,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """contamination.json's content: every benchmark document and held-out row that overlaps the
    training rows, with its source, id, text and the training row ids it shares n-grams with.

    `benchmarks` are local lm-eval task YAMLs and lm-eval names (tasks, groups: a group is checked
    as its subtasks, each under its own name), read through lm-eval (`kia.contamination.tasks`;
    `manager` / `include_path` as there). Those that cannot be read go to `unchecked`
    (name -> one-line reason, with the caller's own `unchecked`), listed so that nobody mistakes
    them for clean."""
    rows = [Document("train", str(r.get("id", i)), training_text(r)) for i, r in enumerate(train)]
    documents: list[Document] = []
    read, origin, unread = benchmark_documents(benchmarks, manager=manager, include_path=include_path, say=say)
    unread = {**(unchecked or {}), **unread}
    tasks: dict[str, dict[str, Any]] = {}
    for name, docs in read.items():
        source = origin[name]
        tasks[name] = {"file" if is_task_file(source) else "benchmark": source, "documents": len(docs)}
        documents += docs
    splits = {}
    for split, split_rows in (heldout or {}).items():
        splits[split] = len(split_rows)
        documents += [Document(split, str(r.get("id", i)), fact_text(r)) for i, r in enumerate(split_rows)]
    overlaps = find_overlaps(rows, documents, n=n)
    for name, info in tasks.items():
        info["overlapping"] = sum(o["source"] == name for o in overlaps)
    warnings = []
    bench = [o for o in overlaps if o["source"] in tasks]
    held = [o for o in overlaps if o["source"] not in tasks]
    if bench:
        named = ", ".join(f"{name} ({info['overlapping']})" for name, info in tasks.items() if info["overlapping"])
        warnings.append(
            f"{len(bench)} benchmark document(s) overlap the training data by {n}-grams: {named}; "
            "see contamination.json (the audit reports those benchmarks with and without them)"
        )
    if held:
        warnings.append(f"{len(held)} held-out row(s) overlap the training data by {n}-grams: see contamination.json")
    if unread:
        named = "; ".join(f"{name} ({reason})" for name, reason in unread.items())
        warnings.append(f"benchmarks not checked for contamination (their documents could not be read): {named}")
    return {
        "n": n,
        "rule": "normalised word n-grams (lm_eval.decontamination Janitor + word_ngrams); a document overlaps "
        "when one of its n-grams occurs in a training row; a document shorter than n words must occur whole",
        "train_rows": len(rows),
        "tasks": tasks,
        "heldout_splits": splits,
        "unchecked": unread,
        "overlaps": overlaps,
        "counts": {"benchmark": len(bench), "heldout": len(held)},
        "warnings": warnings,
    }


def overlapping_docs(report: Mapping[str, Any]) -> dict[str, set[int]]:
    """Per benchmark task, the doc_ids (lm-eval's) of its documents that overlap the training data."""
    out: dict[str, set[int]] = {name: set() for name in report.get("tasks", {})}
    for o in report.get("overlaps", []):
        if o["source"] in out:
            out[o["source"]].add(int(o["id"]))
    return out
