"""Probe benchmark: kia's prober against the paper's probing loop, same model, facts and prompts.

Baseline: a faithful re-implementation of the released probing loop of Pletenev et al. (their
`eval_slick` style): for each of the 10 exemplar sets, HF `generate` over all facts in dataset
order, batch 128, `max_new_tokens` 32, no stop at the newline, one greedy answer per fact, then 16
samples (temperature 0.5, top-k 40) for every fact and every set; the answer is the text before
the first newline. That is 170 generations of up to 32 tokens per fact.

kia: `kia.probe.probe_facts` with its defaults (lazy schedule, stop at the newline, length-sorted
batches, the few-shot prefix's KV cache computed once per batch), and the same with
`exhaustive=True` to show where the gain comes from.

`--vllm` adds kia on the vLLM engine (same schedule; engine start-up timed apart) and compares it
with kia on the hf engine; `--skip-baseline` leaves the paper's loop out (engines only).

Both use the same exemplar sets and the same prompt text (kia's PromptBuilder). Labels decided
by greedy answers (HighlyKnown, MaybeKnown: P_greedy > 0) must agree fact by fact; the rest
depend on sampling, whose random streams differ between the two implementations.

    python bench/bench_probe.py --facts 300          # writes bench/results/probe.json
    python bench/bench_probe.py --facts 300 --vllm --skip-baseline -o bench/results/probe_engines.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, peak_rss_mb, write_result  # noqa: E402


def stratified(facts: list, n: int, seed: int) -> list:
    """`n` facts spread evenly over the toy world's exposure bands (all facts when no bands)."""
    rng = random.Random(seed)
    bands: dict[str, list] = {}
    for f in facts:
        bands.setdefault(str(f.extra.get("band", "")), []).append(f)
    per = -(-n // len(bands))
    picked = [f for group in bands.values() for f in rng.sample(group, min(per, len(group)))]
    rng.shuffle(picked)
    return picked[:n]


def baseline(model, tokenizer, prompts_per_set: list[list[str]], answers: list, n_samples: int, seed: int) -> dict:
    """The paper's loop: every fact, every set, greedy then n samples, batch 128, 32 new tokens."""
    import torch

    from kia.facts.matching import extract_answer, is_correct

    tokenizer.padding_side = "left"
    n = len(answers)
    greedy_ok = [[] for _ in range(n)]
    sample_ok = [0] * n
    tokens = 0
    torch.manual_seed(seed)
    for prompts in prompts_per_set:
        for do_sample in (False, True):
            for i in range(0, n, 128):
                batch = prompts[i : i + 128]
                enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
                kw = {"do_sample": False} if not do_sample else {
                    "do_sample": True, "temperature": 0.5, "top_k": 40, "num_return_sequences": n_samples,
                }  # fmt: skip
                with torch.inference_mode():
                    out = model.generate(**enc, max_new_tokens=32, pad_token_id=tokenizer.pad_token_id, top_p=1.0, **kw)
                new = out[:, enc.input_ids.shape[1] :]
                tokens += int((new != tokenizer.pad_token_id).sum())
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                per = n_samples if do_sample else 1
                for j, text in enumerate(texts):
                    k = i + j // per
                    ok = is_correct(extract_answer(text.split("\n")[0]), answers[k], "contains")
                    if do_sample:
                        sample_ok[k] += ok
                    else:
                        greedy_ok[k].append(ok)
    labels = []
    for g, s in zip(greedy_ok, sample_ok, strict=True):
        p = sum(g) / len(g)
        labels.append("HighlyKnown" if p == 1 else "MaybeKnown" if p > 0 else "WeaklyKnown" if s else "Unknown")
    return {"labels": labels, "generated_tokens": tokens, "generations": n * len(prompts_per_set) * (1 + n_samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=300, help="facts to probe (stratified over bands)")
    parser.add_argument("--model", default=str(ROOT / "datasets" / "toyworld" / "model"))
    parser.add_argument("--facts-file", default=str(ROOT / "datasets" / "toyworld" / "facts.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-exhaustive", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true", help="engines only: no paper loop")
    parser.add_argument("--vllm", action="store_true", help="also run kia on the vLLM engine")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "probe.json"))
    args = parser.parse_args()

    from kia.engines import load_engine
    from kia.facts import load_facts
    from kia.probe import ProbeConfig, PromptBuilder, make_exemplar_sets, probe_facts
    from kia.probe.slick import _shots

    factset = load_facts(args.facts_file)
    facts = stratified(list(factset.facts), args.facts, args.seed)
    config = ProbeConfig(facts=args.facts_file, model=args.model, output="-", seed=args.seed, batch_size=256)
    sets = make_exemplar_sets(factset.facts, config.n_sets, config.shots, config.seed)
    engine = load_engine(config.engine_config())
    build = PromptBuilder(engine)
    prompts = [[build(_shots(sets.for_fact(f, s)), f.question).text for f in facts] for s in range(config.n_sets)]

    runs: dict[str, dict] = {}
    if not args.skip_baseline:
        t = time.perf_counter()
        b = baseline(engine.model, engine.tokenizer, prompts, [f.answers for f in facts], config.n_samples, args.seed)
        runs["baseline"] = {"seconds": time.perf_counter() - t, **b}
    arms = [("kia", engine, False)] + ([] if args.skip_exhaustive else [("kia_exhaustive", engine, True)])
    if args.vllm:
        t = time.perf_counter()
        vllm_engine = load_engine(replace(config, engine="vllm").engine_config())
        vllm_startup = time.perf_counter() - t
        arms.append(("kia_vllm", vllm_engine, False))
    for name, eng, exhaustive in arms:
        t = time.perf_counter()
        rows = probe_facts(eng, facts, sets, replace(config, exhaustive=exhaustive))
        runs[name] = {
            "seconds": time.perf_counter() - t,
            "labels": [r["slick_category"] for r in rows],
            "generations": sum(r["n_generations"] for r in rows),
        }
    if args.vllm:
        runs["kia_vllm"]["startup_seconds"] = round(vllm_startup, 2)

    reference = "kia" if args.skip_baseline else "baseline"
    base_labels = runs[reference]["labels"]
    greedy_decided = [i for i, lab in enumerate(base_labels) if lab in ("HighlyKnown", "MaybeKnown")]
    result = {
        "benchmark": "probe",
        "machine": machine(),
        "facts": len(facts),
        "model": args.model,
        "peak_rss_mb": peak_rss_mb(),
        "runs": {},
        "comparisons": {},
    }
    runs_labels = {name: r["labels"] for name, r in runs.items()}
    for name, r in runs.items():
        labels = r.pop("labels")
        r["seconds"] = round(r["seconds"], 2)
        r["facts_per_second"] = round(len(facts) / r["seconds"], 2)
        r["generations_per_fact"] = round(r["generations"] / len(facts), 1)
        r["label_counts"] = {k: labels.count(k) for k in sorted(set(labels))}
        if name != reference:
            same = sum(labels[i] == base_labels[i] for i in greedy_decided)
            r["greedy_decided_agreement"] = f"{same}/{len(greedy_decided)}"
            result["comparisons"][f"{name}_vs_{reference}"] = {
                "speedup": round(runs[reference]["seconds"] / r["seconds"], 2),
                "greedy_decided_labels_equal": same == len(greedy_decided),
            }
        result["runs"][name] = r
    if args.vllm:
        # what a user of the CLI pays: the engine's start-up counts
        v = runs["kia_vllm"]
        pairs = zip(runs_labels["kia_vllm"], runs_labels["kia"], strict=True)
        decided = [(a, b) for a, b in pairs if b in ("HighlyKnown", "MaybeKnown")]
        result["comparisons"]["kia_vllm_vs_kia"] = {
            "speedup": round(runs["kia"]["seconds"] / v["seconds"], 2),
            "speedup_with_startup": round(runs["kia"]["seconds"] / (v["seconds"] + v["startup_seconds"]), 2),
            "greedy_decided_agreement_with_kia": f"{sum(a == b for a, b in decided)}/{len(decided)}",
        }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
