"""Training benchmark: `kia inject` against a plain TRL SFTTrainer + peft QLoRA run.

Both train the same LoRA (the chosen kia preset's rank, alpha, targets, dropout, lr, batch size
and epochs) on the same 4-bit NF4 base and the same `train.jsonl`; the baseline keeps every other
SFTTrainer default (no packing, no grouping by length, loss on the whole sequence for
conversational data, bitsandbytes' fp32 compute dtype), where kia computes in bf16 on a CPU that
has it in hardware (`--precision auto`; `--precision fp32` compares like for like). Measured: wall
time, training time, tokens per second, peak memory, and the final reliability on the injected
facts, computed the same way for both (kia's few-shot greedy probe, 3 exemplar sets). kia's wall time includes its per-epoch reliability evaluations; its
training time does not.

    python bench/bench_train.py runs/demo/build      # writes bench/results/train.json

Each side runs `--repeats` times (3), alternating, each in a fresh process, repeat i with seed
`--seed` + i; the JSON keeps every trial and reports the median times and the mean reliability.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, peak_rss_mb, write_result  # noqa: E402


def baseline(build: Path, model_id: str, hp: dict, out: Path, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from kia.artifacts import read_jsonl

    rows = [{"messages": r["messages"]} for r in read_jsonl(build / "train.jsonl")]
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    # On a GPU, what a TRL user writes there (bf16 compute, the model on the GPU); on the CPU,
    # SFTTrainer's defaults (fp32 compute).
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        model_id,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
        ),
        device_map={"": 0} if cuda else {"": "cpu"},
    )  # fmt: skip
    targets = list(hp["targets"])
    lora = LoraConfig(
        r=hp["rank"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"], use_rslora=hp["rslora"],
        target_modules=targets[0] if targets == ["all-linear"] else targets, task_type="CAUSAL_LM",
    )  # fmt: skip
    args = SFTConfig(
        output_dir=str(out),
        num_train_epochs=hp["epochs"],
        per_device_train_batch_size=hp["batch_size"],
        learning_rate=hp["lr"],
        lr_scheduler_type="linear",
        seed=seed,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        use_cpu=not cuda,
        bf16=cuda,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora
    )
    n_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    return {"model": trainer.model, "tokenizer": tokenizer, "train_seconds": seconds, "train_tokens": n_tokens}


def reliability(model, tokenizer, build: Path) -> float:
    """Mean P_greedy on the injected facts through the adapter, 3 exemplar sets, for both sides."""
    from kia.engines.hf import HFEngine
    from kia.inject.curve import load_eval_facts
    from kia.probe import greedy_reliability

    injected, _, sets = load_eval_facts(build, 0, 0)
    model.eval()
    engine = HFEngine(model, tokenizer, batch_size=64)
    scores = greedy_reliability(engine, injected, sets, n_sets=3, adapter=True)
    return round(sum(scores) / len(scores), 4)


def main() -> None:
    from kia.inject.model import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", help="a `kia build` folder")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="kia's --precision (the baseline: fp32)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each side, alternating, repeat i with seed + i: median times, mean reliability",
    )
    parser.add_argument("--only", choices=["kia", "baseline"], default=None, help="run one side (a fresh process each)")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "train.json"))
    args = parser.parse_args()

    import json
    import subprocess

    from kia.artifacts import read_manifest
    from kia.inject import InjectConfig, inject
    from kia.inject.model import compute_dtype, precision_name

    build = Path(args.build)
    config = InjectConfig(build=str(build), preset=args.preset, quant="nf4", lr=args.lr, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, precision=args.precision, overwrite=True)  # fmt: skip
    hp = config.resolved()
    model_id = str(read_manifest(build, "build")["model"])
    if args.only is None:
        # Each side in its own process, so that peak memory is its own; the sides alternate, and
        # each time is the median over the repeats (on this VM single runs vary by a quarter).
        # Repeat i trains both sides with seed + i: the reliabilities are compared as means over
        # seeds, next to their seed-to-seed spread (one seed's difference is mostly batch order).
        def command(side: str, seed: int) -> list[str]:
            cmd = [sys.executable, __file__, str(build), "--preset", args.preset, "--seed", str(seed), "--only", side]
            cmd += ["--precision", args.precision]
            for flag, value in (("--lr", args.lr), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
                if value is not None:
                    cmd += [flag, str(value)]
            return cmd

        seeds = [args.seed + i for i in range(args.repeats)]
        trials: dict[str, list[dict]] = {"baseline": [], "kia": []}
        for seed in seeds:
            for side in trials:
                out = subprocess.run(command(side, seed), check=True, capture_output=True, text=True).stdout
                trials[side].append({"seed": seed, **json.loads(out.strip().splitlines()[-1])})
        runs = {
            side: {
                **{
                    key: round(statistics.median(t[key] for t in ts), 2)
                    for key in ts[0]
                    if key not in ("seed", "reliability")
                },
                "reliability": round(statistics.mean(t["reliability"] for t in ts), 4),
                "reliability_per_seed": [t["reliability"] for t in ts],
            }
            for side, ts in trials.items()
        }
        k, b = runs["kia"], runs["baseline"]
        result = {
            "benchmark": "train",
            "machine": machine(),
            "build": str(build),
            "hyperparameters": {k2: list(v) if isinstance(v, tuple) else v for k2, v in hp.items()},
            # the dtype of kia's products (bf16 where the CPU has it in hardware); the baseline: fp32
            "kia_precision": precision_name(compute_dtype("cpu", args.precision)),
            "repeats": args.repeats,
            "seeds": seeds,
            "runs": runs,
            "trials": trials,
            "comparisons": {
                "kia_vs_baseline": {
                    "speedup": round(b["wall_seconds"] / k["wall_seconds"], 2),
                    "speedup_training_only": round(b["train_seconds"] / k["train_seconds"], 2),
                    "speedup_per_repeat": [
                        round(x["wall_seconds"] / y["wall_seconds"], 2)
                        for x, y in zip(trials["baseline"], trials["kia"], strict=True)
                    ],
                    # mean over seeds; per seed beside it
                    "reliability_difference_points": round(100 * (k["reliability"] - b["reliability"]), 1),
                    "reliability_difference_points_per_seed": [
                        round(100 * (y["reliability"] - x["reliability"]), 1)
                        for x, y in zip(trials["baseline"], trials["kia"], strict=True)
                    ],
                    "peak_rss_ratio": round(k["peak_rss_mb"] / b["peak_rss_mb"], 2),
                }
            },
        }
        write_result(args.output, result)
        return

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        if args.only == "kia":
            from peft import PeftModel

            from kia.inject.model import load_model

            inject(replace(config, output=str(Path(tmp) / "kia")))
            wall = time.perf_counter() - t
            manifest = read_manifest(Path(tmp) / "kia", "inject")
            import torch

            model, tokenizer = load_model(model_id, "nf4", "cuda" if torch.cuda.is_available() else "cpu")
            model = PeftModel.from_pretrained(model, str(Path(tmp) / "kia"))
            row = {
                "wall_seconds": round(wall, 2),
                # the Trainer's time minus the callback's per-epoch evaluations
                "train_seconds": round(manifest["train_seconds"] - manifest["eval_seconds"], 2),
                "eval_seconds": manifest["eval_seconds"],
                "tokens_per_second": manifest["tokens_per_second"],
                "reliability": reliability(model, tokenizer, build),
            }
        else:
            b = baseline(build, model_id, hp, Path(tmp) / "trl", args.seed)
            wall = time.perf_counter() - t
            rel = reliability(b["model"], b["tokenizer"], build)
            row = {
                "wall_seconds": round(wall, 2),
                "train_seconds": round(b["train_seconds"], 2),
                "tokens_per_second": round(b["train_tokens"] * hp["epochs"] / b["train_seconds"], 1),
                "reliability": rel,
            }
        row["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(row))


if __name__ == "__main__":
    main()
