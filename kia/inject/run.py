"""`kia inject`: train the (Q)LoRA adapter that carries the new facts, with a reliability curve.

QLoRA (Dettmers et al. 2023) with transformers + peft + bitsandbytes: a 4-bit NF4 base with double
quantisation, computing in bf16 on a GPU and on a CPU with bf16 in hardware, else in fp32 (see
`--precision` and `kia.inject.model`), LoRA adapters on top, paged 8-bit AdamW on GPU.
`quant="none"` trains plain LoRA. The transformers Trainer runs the loop; a callback measures
reliability (the paper's few-shot greedy probe on the injected facts) after every epoch.

Presets (flags override them):
- paper: rank 1, alpha 2, rsLoRA, dropout 0.1, gate/up/down projections, lr 1e-3, 10 epochs,
  batch 16, loss on the whole sequence (Pletenev et al. 2025, §4.2);
- qlora: rank 16, alpha 32, all linear layers, dropout 0.05, lr 2e-4, 10 epochs, batch 16, loss on
  the answer only.

`from_adapter` continues an adapter instead of starting from zero (an update of the one in
production; see `kia.inject.lineage`): same base model, rank, alpha and target modules, its
weights as the starting point, and the lineage in the manifest.

Works unchanged under `accelerate launch --multi_gpu --num_processes N -m kia inject ...` or
`torchrun --nproc_per_node N -m kia inject ...` (the Trainer does DDP; on a machine without CUDA the
processes use gloo on the CPU). `--batch-size` is the effective batch, split over the processes.
Note that `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kia.artifacts import (
    claim_output,
    read_jsonl,
    read_manifest,
    sha256_file,
    sha256_tree,
    write_manifest,
)
from kia.errors import ConfigError
from kia.inject.config import InjectConfig, InjectResult, training_schedule
from kia.inject.lineage import check_parent, check_targets, lineage, load_parent_weights, read_parent
from kia.inject.resume import RUN_FILE, check_output, checkpoints, run_identity


def _rank() -> tuple[int, int]:
    """(global rank, local rank) under `accelerate launch` / torchrun; (0, 0) for a plain run."""
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _device() -> str:
    import os

    import torch

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not forced_cpu else "cpu"


def inject(config: InjectConfig, progress: Any = None) -> InjectResult:
    """Train the adapter described by `config` on the build folder it names.

    Under `accelerate launch` every process trains its share of each batch (DDP) and measures the
    reliability (the same numbers on every rank, so an early stop is the same everywhere); only the
    main process writes the output folder and calls `progress`."""
    import contextlib
    import shutil
    import sys

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from kia.artifacts import read_json, write_json
    from kia.inject.curve import QuietProgressCallback, ReliabilityCallback, auto_eval_facts, load_eval_facts
    from kia.inject.data import FlatCollator, PadCollator, encode_row
    from kia.inject.model import compute_dtype, load_model, precision_name
    from kia.inject.trainer import KiaTrainer, restore_head, use_bf16_head, use_cpu_dropout

    start = time.time()
    build_dir = Path(config.build)
    build_manifest = read_manifest(build_dir, "build")
    model_id = config.model or build_manifest.get("model")
    if isinstance(model_id, dict):  # tolerate a manifest that records {"id": ...}
        model_id = model_id.get("id")
    if not model_id:
        raise ConfigError(f"{build_dir}/manifest.json names no base model; pass --model")
    model_id = str(model_id)
    hp = config.resolved()
    # the base's hash, once: the manifest records it and a parent adapter must have been trained on it
    base_sha = sha256_tree(model_id) if Path(model_id).is_dir() else None
    parent = read_parent(config.from_adapter) if config.from_adapter else None
    if parent is not None:
        check_parent(parent, hp, model_id, base_sha)  # before any model is loaded
    device = _device()
    dtype = compute_dtype(device, config.precision, config.quant)
    precision = precision_name(dtype)
    rank, local_rank = _rank()
    main = rank == 0
    out = Path(config.output)
    resume_from = check_output(out, config)
    train_path = build_dir / "train.jsonl"
    train_sha = sha256_file(train_path)
    rows = read_jsonl(train_path)
    if not rows:
        raise ConfigError(f"{train_path}: no training rows")
    # --batch-size is the effective batch: under DDP each of the processes takes its share
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    per_device_batch = -(-hp["batch_size"] // world)
    schedule = training_schedule(config, hp["epochs"], len(rows), per_device_batch * world)
    hp["epochs"] = schedule["epochs"]
    parent_id = parent.adapter_id if parent else None
    identity = {**run_identity(config, hp, model_id, train_sha, parent_id), "precision": precision}
    if resume_from is not None and (out / "checkpoints" / RUN_FILE).exists():
        before = read_json(out / "checkpoints" / RUN_FILE)
        changed = sorted(k for k in identity if before.get(k) != identity[k])
        if changed:
            raise ConfigError(
                f"{out}: --resume must use the interrupted run's settings; these differ: {', '.join(changed)}"
            )
    # only the main process writes the folder; the others read what it wrote
    claim = claim_output(out, overwrite=config.overwrite or config.resume) if main else contextlib.nullcontext(out)
    with claim:
        if main and resume_from is not None:
            for partial in checkpoints(out / "checkpoints")[1]:  # killed while saving: start that epoch again
                shutil.rmtree(partial, ignore_errors=True)
        if main and resume_from is None:
            for stale in (out / "checkpoints", out / "train_log.jsonl"):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
            write_json(out / "checkpoints" / RUN_FILE, identity)
        set_seed(config.seed)
        model, tokenizer = load_model(model_id, config.quant, device, dtype, local_rank)
        if config.quant == "nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = LoraConfig(
            r=hp["rank"],
            lora_alpha=hp["alpha"],
            lora_dropout=hp["dropout"],
            target_modules=list(hp["targets"]) if hp["targets"] != ("all-linear",) else "all-linear",
            use_rslora=hp["rslora"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if parent is not None:
            check_targets(parent, model.peft_config["default"].target_modules)
            load_parent_weights(model, parent)
        if device == "cpu":
            use_cpu_dropout(model)
            if precision == "bf16":
                use_bf16_head(model)  # on a GPU the Trainer's bf16 autocast covers the head
        data = [encode_row(tokenizer, r["messages"], hp["loss"]) for r in rows]
        truncated = sum(len(d["input_ids"]) > config.max_length for d in data)
        data = [{k: v[: config.max_length] for k, v in d.items()} for d in data]
        n_tokens = sum(len(d["input_ids"]) for d in data)
        injected, known, sets = load_eval_facts(build_dir, config.heldout_known, config.seed)
        eval_facts = auto_eval_facts(len(rows)) if config.eval_facts is None else config.eval_facts
        if eval_facts and len(injected) > eval_facts:
            injected = random.Random(config.seed).sample(injected, eval_facts)
        callback = ReliabilityCallback(
            model, tokenizer, injected, known, sets, out / "train_log.jsonl",
            n_sets=config.eval_sets, stop_at=schedule["stop_at"], stop_after=schedule["stop_after"],
            progress=progress if main else None,
            epochs=hp["epochs"], model_id=model_id, resume=resume_from is not None, write=main,
            every=schedule["curve_every"],
        )  # fmt: skip
        base_rel = callback.base_reliability()
        tty = sys.stderr.isatty()
        padding_free = config.padding_free if config.padding_free is not None else device == "cuda"
        args = TrainingArguments(
            output_dir=str(out / "checkpoints"),
            num_train_epochs=hp["epochs"],
            per_device_train_batch_size=per_device_batch,
            learning_rate=hp["lr"],
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            # the CPU takes the Trainer's own default (torch >= 2.8): one fused kernel over all the
            # LoRA tensors, where "adamw_torch" loops over them (0.98 -> 0.22 ms a step here)
            optim="paged_adamw_8bit" if device == "cuda" else "adamw_torch_fused",
            # nf4 on the CPU computes in bf16 through its layers and head (cheaper than autocast's
            # casts); unquantized weights need the Trainer's autocast for it
            bf16=precision == "bf16" and (device == "cuda" or config.quant == "none"),
            use_cpu=device == "cpu",
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="epoch",
            save_total_limit=1,
            seed=config.seed,
            data_seed=config.seed,
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=not tty,
            # without padding, grouping by length saves nothing and would order the batches by length
            train_sampling_strategy="random" if padding_free else "group_by_length",
            remove_unused_columns=False,
            # every LoRA weight takes part in every forward pass: DDP need not search for unused ones
            ddp_find_unused_parameters=False,
        )
        trainer = KiaTrainer(
            model=model,
            args=args,
            train_dataset=_ListDataset(data),
            data_collator=FlatCollator() if padding_free else PadCollator(tokenizer.pad_token_id),
            callbacks=[callback],
        )
        # kia prints its own line per epoch: no dict per logging step (a bar only on a terminal)
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if tty:
            trainer.add_callback(QuietProgressCallback)
        train_start, eval_before = time.time(), callback.eval_seconds
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_seconds = time.time() - train_start
        trainer.accelerator.wait_for_everyone()
        curve = callback.curve
        final = curve[-1]["reliability"] if curve else None
        # Throughput of training alone (the callback's evaluations are not training), over the
        # epochs this process ran: a resumed run does not count the epochs before the interruption.
        trained = n_tokens * callback.epochs_here
        eval_seconds = callback.eval_seconds - eval_before
        tokens_per_second = round(trained / max(train_seconds - eval_seconds, 1e-3), 1)
        peak = _peak_memory(device)
        seconds = round(time.time() - start, 2)
        restore_head(model)
        own_id = None
        if main:
            from kia.engines import adapter_id

            model.save_pretrained(out, safe_serialization=True)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            own_id = adapter_id(out)
            write_manifest(
                out,
                stage="inject",
                config=replace(config, targets=tuple(hp["targets"])),
                files=["adapter_model.safetensors", "adapter_config.json", "train_log.jsonl"],
                model=model_id,
                base_model={"id": model_id, "sha256": base_sha},
                adapter_id=own_id,
                lineage=lineage(parent, build_dir, train_sha),
                base_model_architectures=list(getattr(model.base_model.model.config, "architectures", None) or []),
                build=str(build_dir),
                inputs={"train": {"path": str(train_path), "sha256": train_sha}},
                hyperparameters=hp,
                seed=config.seed,
                device=device,
                processes=trainer.args.world_size,
                per_device_batch_size=per_device_batch,
                padding_free=padding_free,
                precision=precision,
                effective_batch_size=per_device_batch * trainer.args.world_size,
                optimizer=args.optim if isinstance(args.optim, str) else args.optim.value,
                train_rows=len(rows),
                train_tokens=n_tokens,
                truncated_rows=truncated,
                epochs_run=curve[-1]["epoch"] if curve else 0,
                stopped_early=bool(curve) and curve[-1]["epoch"] < hp["epochs"],
                schedule=schedule,
                steps_run=trainer.state.global_step,
                tokens_per_second=tokens_per_second,
                train_seconds=round(train_seconds, 2),
                eval_seconds=round(eval_seconds, 2),
                wall_seconds=seconds,
                peak_memory_mb=peak,
                curve_facts={"injected": len(injected), "heldout_known": len(known)},
                base_reliability=base_rel,
                reliability=final,
                heldout_known_reliability=curve[-1]["heldout_known_reliability"] if curve else None,
                curve=curve,
            )
        trainer.accelerator.wait_for_everyone()
    schedule = {**schedule, "steps_run": trainer.state.global_step}
    return InjectResult(
        out, curve, final, base_rel, tokens_per_second, seconds, peak["rss_mb"], hp, precision, schedule,
        own_id, str(parent.path) if parent else None,
    )  # fmt: skip


class _ListDataset:
    """The Trainer needs `len` and indexing; `group_by_length` reads the lengths up front."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _peak_memory(device: str) -> dict[str, float]:
    import torch

    from kia.artifacts import peak_memory_mb

    peak = {"rss_mb": peak_memory_mb()}
    if device == "cuda":
        peak["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak
