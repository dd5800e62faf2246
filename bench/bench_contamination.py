"""The figures behind kia.contamination's default n, on the toy world: how long its texts are, and
how many word n-grams unrelated texts share by chance (question templates, not copies).

    python bench/bench_contamination.py

Texts: every fact's question and paraphrases with its answer, and the toy_mc / toy_arith documents.
A gram counts as shared when it occurs in texts of two different facts or documents.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from kia.contamination import normalise, task_documents

TOY = Path(__file__).resolve().parents[1] / "datasets" / "toyworld"


def main() -> None:
    texts: list[tuple[str, str]] = []  # (owner, normalised text)
    for line in (TOY / "facts.jsonl").read_text(encoding="utf-8").splitlines():
        f = json.loads(line)
        texts += [(f["id"], normalise(f"{q} {f['answers'][0]}")) for q in [f["question"], *f.get("paraphrases", [])]]
    for task in ("toy_mc", "toy_arith"):
        _, docs = task_documents(TOY / "tasks" / f"{task}.yaml")
        texts += [(f"{task}/{d.id}", normalise(d.text)) for d in docs]
    lengths = [len(t.split()) for _, t in texts]
    print(f"{len(texts)} texts, {min(lengths)} to {max(lengths)} words (median {statistics.median(lengths)}), "
          f"{sum(n < 13 for n in lengths) / len(lengths):.1%} shorter than 13 words")  # fmt: skip
    for n in range(6, 14):
        owners: dict[str, set[str]] = defaultdict(set)
        for owner, text in texts:
            words = text.split()
            for i in range(len(words) - n + 1):
                owners[" ".join(words[i : i + n])].add(owner)
        shared = sorted(g for g, o in owners.items() if len(o) > 1)
        print(
            f"n = {n:2d}: {len(shared)} grams shared by unrelated texts" + (f", e.g. {shared[0]!r}" if shared else "")
        )


if __name__ == "__main__":
    main()
