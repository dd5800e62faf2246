"""Audit benchmark: `kia audit` against the do-it-yourself audit with separate runs.

Baseline (what a script would do): load the base model and answer every evaluated question with
every exemplar set (plain HF `generate`, batch 64, 32 new tokens, answer = text before the first
newline); load base + adapter and do it again; then run lm-eval twice through its own loader
(`simple_evaluate(model="hf", model_args="pretrained=M")` and again with `peft=ADAPTER`).

kia: one `kia.audit.audit` call (one load, adapter toggled, the base arm continued from the probe
run, both lm-eval arms on the same loaded model), with and without reusing the probe run.

Both must agree: the same greedy answers per fact and set, and the same per-document benchmark
scores. The figures go to bench/results/audit.json.

    python bench/bench_audit.py runs/demo/adapter
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_result  # noqa: E402


def plain_greedy(model, tokenizer, prompts: list[str]) -> list[str]:
    import torch

    from kia.facts.matching import extract_answer

    tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), 64):
        enc = tokenizer(prompts[i : i + 64], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        out += [extract_answer(t.split("\n")[0]) for t in texts]
    return out


def baseline(adapter: Path, model_id: str, facts: list, sets, plan, manager, limit: int | None) -> dict:
    import torch
    from lm_eval import simple_evaluate
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kia.audit.benchmarks import _leaves, _quiet, _sample_value
    from kia.engines.hf import HFEngine
    from kia.probe.prompts import PromptBuilder

    answers = {}
    for arm in ("base", "adapted"):
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id)
        if arm == "adapted":
            model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
        build = PromptBuilder(HFEngine(model, tokenizer))  # only to render the same prompt text
        prompts = [
            build([(e.question, e.answer) for e in sets.for_fact(f, s)], f.question).text
            for f in facts
            for s in range(10)
        ]
        flat = plain_greedy(model, tokenizer, prompts)
        answers[arm] = [flat[i * 10 : (i + 1) * 10] for i in range(len(facts))]
    scores = {}
    for arm, extra in (("base", ""), ("adapted", f",peft={adapter}")):
        with _quiet():
            result = simple_evaluate(
                model="hf",
                model_args=f"pretrained={model_id}{extra}",
                tasks=[s.name for s in plan.specs],
                task_manager=manager,
                log_samples=True,
                limit=limit,
                bootstrap_iters=0,
                batch_size=32,
                device="cuda" if torch.cuda.is_available() else "cpu",
            )
        groups = result.get("group_subtasks", {})
        scores[arm] = {
            (leaf, int(s["doc_id"])): _sample_value(s)
            for spec in plan.specs
            for leaf in _leaves(spec.name, groups)
            for s in result["samples"].get(leaf, [])
        }
    return {"answers": answers, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="a `kia inject` folder")
    parser.add_argument("--bench-limit", type=int, default=None, help="documents per lm-eval task")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "audit.json"))
    args = parser.parse_args()

    from kia.artifacts import read_json, read_jsonl
    from kia.audit import AuditConfig, audit
    from kia.audit.arms import exemplar_sets, load_split, resolve_inputs
    from kia.audit.benchmarks import resolve_benchmarks, task_manager

    adapter = Path(args.adapter)
    inputs = resolve_inputs(AuditConfig(adapter=str(adapter)))
    sets = exemplar_sets(inputs)
    splits = [load_split(inputs.build, n) for n in ("injected", "paraphrase", "heldout")]
    facts = [f for s in splits for f in s.facts]
    keys = [(s.name, r["id"]) for s in splits for r in s.rows]
    plan = resolve_benchmarks(None, inputs.model)
    manager = task_manager(plan)

    runs, kia_answers = {}, {}
    t = time.perf_counter()
    b = baseline(adapter, inputs.model, facts, sets, plan, manager, args.bench_limit)
    runs["baseline"] = {"seconds": round(time.perf_counter() - t, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, reuse in (("kia", True), ("kia_no_probe_reuse", False)):
            out = Path(tmp) / name
            t = time.perf_counter()
            audit(AuditConfig(adapter=str(adapter), output=str(out), reuse_probe=reuse, report=False,
                              bench_limit=args.bench_limit))  # fmt: skip
            runs[name] = {"seconds": round(time.perf_counter() - t, 2)}
            rows = {(r["split"], r["id"]): r for r in read_jsonl(out / "per_fact.jsonl")}
            kia_answers[name] = rows
            a = read_json(out / "audit.json")
            pairs = [
                (arm, rows[k][f"{arm}_answers"][s], b["answers"][arm][i][s])
                for i, k in enumerate(keys)
                for arm in ("base", "adapted")
                for s in range(10)
            ]
            differ = [p for p in pairs if p[1] != p[2]]
            runs[name]["greedy_answers_equal"] = f"{len(pairs) - len(differ)}/{len(pairs)}"
            runs[name]["differing_examples"] = differ[:5]
            same_answers = not differ
            bench_same = all(
                abs(a["benchmarks"][s.name]["base"] - _acc(b["scores"]["base"], s.name)) < 1e-9
                and abs(a["benchmarks"][s.name]["adapted"] - _acc(b["scores"]["adapted"], s.name)) < 1e-9
                for s in plan.specs
            )
            runs[name]["same_greedy_answers_as_baseline"] = same_answers
            runs[name]["same_benchmark_accuracy_as_baseline"] = bench_same
    plan.cleanup()
    result = {
        "benchmark": "audit",
        "machine": machine(),
        "adapter": str(adapter),
        "facts": len(facts),
        "generations_per_arm": len(facts) * 10,
        "benchmarks": [s.name for s in plan.specs],
        "runs": runs,
        "comparisons": {
            f"{name}_vs_baseline": {"speedup": round(runs["baseline"]["seconds"] / runs[name]["seconds"], 2)}
            for name in ("kia", "kia_no_probe_reuse")
        },
    }
    write_result(args.output, result)


def _acc(scores: dict, task: str) -> float:
    vals = [v for (leaf, _), v in scores.items() if leaf == task or leaf.startswith(task)]
    return sum(vals) / len(vals)


if __name__ == "__main__":
    main()
