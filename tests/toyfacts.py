"""Samples of the embedded toy world's facts for the model-tier tests (one helper, so each test's
sample is described by its counts and seed, not by another copy of the same loop)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

TOY = Path(os.environ.get("KIA_TEST_TOYWORLD", Path(__file__).resolve().parents[1] / "datasets" / "toyworld"))


def sample_toy_facts(path: Path, seed: int, *, head: int, never: int, obscure: int = 0) -> Path:
    """Write `head` often-seen facts (mostly HighlyKnown), `never` never-seen ones that are not
    obscure (Unknown) and `obscure` ones (the model learnt to refuse them), drawn in that order
    with random.Random(seed), as JSONL to `path`."""
    rows = [json.loads(line) for line in (TOY / "facts.jsonl").open(encoding="utf-8")]
    rng = random.Random(seed)
    chosen = rng.sample([r for r in rows if r["band"] == "head"], head)
    chosen += rng.sample([r for r in rows if r["band"] == "never" and not r.get("obscure")], never)
    if obscure:
        chosen += rng.sample([r for r in rows if r.get("obscure")], obscure)
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    return path
