"""`kia audit --judge`: the two arms' free-form answers to the build's open prompts, judged pairwise.

The arms are the adapted model and the base model (or, in an update's audit, the candidate and the
production adapter), answering eval_open.jsonl's prompts greedily on the one loaded model. The
judge (`--judge`): `facts` (kia.judge.FactJudge, no model), an http(s) URL of an OpenAI-compatible
endpoint (`--judge-model` names the model it serves; the key comes from `--judge-key-env`), `base`
(the audited base model itself, adapter off), or a model name or folder loaded through kia's hf
engine. Judgments are cached in the audit folder (judgments.jsonl), which `--overwrite` keeps, so a
rerun asks the judge nothing it already answered. audit.json's `judge` holds the summary over all
prompts and per split (injected subjects, where the adapter should win; held-out subjects, where it
should not lose), each as `kia.judge.judge_pairs` returns it. With `--judge-style`, `judge.style`
holds a second pass over the same answers on style against STYLE_EXAMPLES question/answer pairs of
the build's train.jsonl (drawn by seed; the same for every pair, so the reference never differs
between the two arms): an adapter whose answers drift from what it was taught, or whose taught
style leaks into every answer, shows there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kia.artifacts import read_jsonl
from kia.audit.config import AuditConfig
from kia.judge import EngineJudge, FactJudge, HttpJudge, judge_pairs, open_answers, pairs_from

STYLE_EXAMPLES = 5


def judge_arms(
    engine: Any, build: Path, model: str, config: AuditConfig, out: Path, update: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    """audit.json's `judge` section (see the module docstring)."""
    path = build / "eval_open.jsonl"
    if not path.is_file():
        return {"skipped": f"{build} has no eval_open.jsonl (built by an older kia): rebuild to judge open answers"}
    rows = read_jsonl(path)[: config.judge_prompts]
    other = "production" if update else "base"
    say(f"open answers: {len(rows)} prompts, adapted and {other} arms")
    x = open_answers(engine, rows, adapter=True)
    y = open_answers(engine, rows, adapter="production" if update else False)
    judge, close = _judge(config, engine, model)
    say(f"judging {len(rows)} pairs in both orders with {judge.name}")
    try:
        splits = {s: [i for i, r in enumerate(rows) if r.get("split") == s] for s in ("injected", "heldout")}
        kw = dict(cache=out / "judgments.jsonl", arms=("adapted", other), n_boot=config.n_boot, seed=config.seed,
                  groups={s: ids for s, ids in splits.items() if ids})  # fmt: skip
        section = judge_pairs(pairs_from(rows, x, y), judge, **kw)
        if config.judge_style:
            if isinstance(judge, FactJudge):
                section["style"] = {"skipped": "the facts judge counts facts; style needs an LLM judge"}
            else:
                shown = style_examples(build, config.seed)
                say(f"judging {len(rows)} pairs on style against {len(shown)} training answers")
                section["style"] = judge_pairs(
                    pairs_from(rows, x, y), judge, **kw, criterion="style", style_examples=shown
                )
    finally:
        close()
    return section


def style_examples(build: Path, seed: int, k: int = STYLE_EXAMPLES) -> list[dict[str, str]]:
    """`k` question/answer pairs of the build's training split, drawn by `seed` among the rows with
    distinct answers: the assistant turn as trained (its template included), since style is form."""
    import random

    seen: dict[str, dict[str, str]] = {}
    for row in read_jsonl(build / "train.jsonl"):
        messages = row.get("messages") or []
        turns = {m.get("role"): str(m.get("content", "")) for m in messages if isinstance(m, dict)}
        question = turns.get("user", str(row.get("question", "")))
        answer = turns.get("assistant", str(row.get("answer", "")))
        if answer and answer not in seen:
            seen[answer] = {"question": question, "answer": answer}
    pool = list(seen.values())
    return random.Random(seed).sample(pool, min(k, len(pool)))


def _judge(config: AuditConfig, engine: Any, model: str) -> tuple[Any, Callable[[], None]]:
    spec = str(config.judge)
    if spec == "facts":
        return FactJudge(), lambda: None
    if spec.startswith(("http://", "https://")):
        judge = HttpJudge(spec, config.judge_model, key_env=config.judge_key_env, timeout=config.judge_timeout)
        return judge, lambda: None
    if spec == "base" or spec == model:
        return EngineJudge(engine), lambda: None
    from kia.engines import EngineConfig, load_engine

    own = load_engine(EngineConfig(spec, batch_size=config.batch_size))
    return EngineJudge(own), own.close
