"""Benchmark drift with and without the documents the training data overlaps.

A benchmark document whose n-grams occur in the training split (`kia.contamination`) can move
because the adapter memorised it, not because the adapter changed what the model knows, so each
benchmark's entry in audit.json (a local task file, an lm-eval task, or a group through its
subtasks' documents) gains `contamination`: how many of its documents overlap
(and their doc_ids), and `without`, the same paired comparison (`kia.audit.benchmarks.compare`)
on the documents that do not. audit.json's top-level `contamination` keeps the full check (texts,
the training rows each document shares n-grams with, and the build's held-out rows that overlap
training), as the build's contamination.json does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from kia.artifacts import read_jsonl
from kia.audit.benchmarks import BenchmarkPlan, compare
from kia.contamination import DEFAULT_N, HELDOUT_SPLITS, check_contamination, overlapping_docs

Scores = Mapping[str, Mapping[tuple[str, int], float]]  # task -> (leaf task, doc_id) -> score


def benchmark_contamination(
    plan: BenchmarkPlan,
    train: Sequence[Mapping[str, Any]],
    build: Path,
    manager: Any = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The training rows against every benchmark of the plan and the build's held-out splits.
    `manager` is the audit's lm-eval TaskManager (its wrappers of the local files included), so
    the documents are the ones lm-eval evaluates; without it the local files are read themselves
    and names from lm-eval's registry. n is the build's (its contamination.json), else
    `kia.contamination.DEFAULT_N`."""
    n = DEFAULT_N
    if (build / "contamination.json").is_file():
        n = int(json.loads((build / "contamination.json").read_text(encoding="utf-8")).get("n", DEFAULT_N))
    # through the audit's manager every benchmark is a name it knows; without one a local file is
    # read from its path (lm-eval resolves its relative data files against the working directory)
    items = [s.name if manager is not None or s.source == "lm-eval" else s.source for s in plan.specs]
    heldout = {s: read_jsonl(build / f"{s}.jsonl") for s in HELDOUT_SPLITS if (build / f"{s}.jsonl").is_file()}
    return check_contamination(train, heldout=heldout, benchmarks=items, manager=manager, n=n, say=say)


def add_without_overlap(
    bench: MutableMapping[str, dict[str, Any]],
    base: Scores,
    adapted: Scores,
    report: Mapping[str, Any],
    *,
    n_boot: int,
    seed: int,
) -> None:
    """Give each checked task's entry its `contamination` section: overlapping doc_ids (within the
    documents lm-eval ran, `--bench-limit` applied) and `without`, base vs adapted on the others
    (None when nothing overlaps, so `without` equals the entry, or when every document does).
    A group's entry is checked when its subtasks were; its doc_ids are then "subtask/doc_id"."""
    dirty = overlapping_docs(report)
    for task, entry in bench.items():
        ran = set(base[task]) & set(adapted[task])
        leaves = {k[0] for k in ran}
        if not leaves or not leaves <= set(dirty):
            continue  # not checked (unreadable), or only some subtasks were: no clean figure to give
        out = {k for k in ran if k[1] in dirty[k[0]]}
        keep = sorted(ran - out)
        without = None
        if out and keep:
            without = compare(
                {k: base[task][k] for k in keep}, {k: adapted[task][k] for k in keep}, n_boot=n_boot, seed=seed
            )
        ids: list[Any] = sorted(k[1] for k in out) if leaves == {task} else [f"{t}/{i}" for t, i in sorted(out)]
        entry["contamination"] = {"overlapping": len(out), "doc_ids": ids, "without": without}
