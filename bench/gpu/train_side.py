"""One side of the GPU training check, in a process of its own: `kia inject` or TRL's SFTTrainer.

    python bench/gpu/train_side.py kia BUILD MODEL_DIR OUT [--preset qlora] [--epochs 1]
    python bench/gpu/train_side.py trl BUILD MODEL_DIR OUT [--preset qlora] [--epochs 1]

Both sides train the same LoRA (the kia preset's rank, alpha, dropout, targets, rsLoRA, lr and batch
size) on the same 4-bit NF4 (double-quantised) base in bf16, on the same `train.jsonl`. TRL keeps the
rest of its defaults, as a TRL user writes it (AdamW in fp32 states, padded batches); kia runs its
own GPU defaults (paged 8-bit AdamW, padding-free batches). Prints one JSON line: training tokens
per second (the tokens of the training rows times the epochs, over the training time, kia's
per-epoch evaluations left out) and the process's peak GPU memory (`max_memory_allocated` and
`max_memory_reserved`, model load included, measured the same way on both sides).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def kia_side(build: Path, model: str, out: Path, preset: str, epochs: int) -> dict[str, Any]:
    from kia.artifacts import read_manifest
    from kia.inject import InjectConfig, inject

    # eval_facts=8: the per-epoch reliability (random weights answer nothing right) stays short
    config = InjectConfig(build=str(build), model=model, output=str(out), preset=preset, quant="nf4",
                          epochs=epochs, eval_facts=8, heldout_known=0, overwrite=True)  # fmt: skip
    t = time.perf_counter()
    inject(config)
    wall = time.perf_counter() - t
    m = read_manifest(out, "inject")
    return {
        "wall_s": round(wall, 2),
        "train_s": round(m["train_seconds"] - m["eval_seconds"], 2),
        "tokens": m["train_tokens"] * m["epochs_run"],
        "tokens_per_s": m["tokens_per_second"],
        "optimizer": m["optimizer"],
        "padding_free": m["padding_free"],
        "precision": m["precision"],
        "kia_peak_memory": m["peak_memory_mb"],
        "hp": {k: m["hyperparameters"][k] for k in ("rank", "alpha", "lr", "batch_size", "epochs")},
    }


def trl_side(build: Path, model_id: str, out: Path, preset: str, epochs: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from kia.artifacts import read_jsonl
    from kia.inject import InjectConfig

    hp = InjectConfig(build=str(build), preset=preset, epochs=epochs).resolved()
    rows = [{"messages": r["messages"]} for r in read_jsonl(build / "train.jsonl")]
    tok = AutoTokenizer.from_pretrained(model_id)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    t0 = time.perf_counter()
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(
        model_id, quantization_config=bnb, device_map={"": 0}, dtype=torch.bfloat16
    )
    wall0 = time.perf_counter()
    targets = list(hp["targets"])
    lora = LoraConfig(r=hp["rank"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"], use_rslora=hp["rslora"],
                      target_modules=targets[0] if targets == ["all-linear"] else targets, task_type="CAUSAL_LM")  # fmt: skip
    args = SFTConfig(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=hp["batch_size"],
                     learning_rate=hp["lr"], bf16=True, report_to=[], save_strategy="no", logging_steps=1000,
                     disable_tqdm=True, seed=0, max_length=256)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora)  # fmt: skip
    n_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * epochs
    t = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    return {
        "load_s": round(wall0 - t0, 2),
        "train_s": round(s, 2),
        "tokens": n_tokens,
        "tokens_per_s": round(n_tokens / s, 1),
        "optimizer": str(args.optim),
        "padding_free": False,
        "precision": "bf16",
        "hp": {k: hp[k] for k in ("rank", "alpha", "lr", "batch_size")} | {"epochs": epochs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("side", choices=["kia", "trl"])
    parser.add_argument("build", type=Path)
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="qlora")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("train_side.py measures GPU memory: it needs CUDA")
    run = kia_side if args.side == "kia" else trl_side
    row = run(args.build, args.model, args.out, args.preset, args.epochs)
    row.update(
        side=args.side,
        model=args.model,
        peak_cuda_allocated_mb=round(torch.cuda.max_memory_allocated() / 2**20),
        peak_cuda_reserved_mb=round(torch.cuda.max_memory_reserved() / 2**20),
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
