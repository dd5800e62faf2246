"""`kia inject`: train the (Q)LoRA adapter that carries the new facts, with a reliability curve.

QLoRA (Dettmers et al. 2023) with transformers + peft + bitsandbytes: a 4-bit NF4 base with double
quantisation (compute dtype bf16 on GPU, fp32 on CPU), LoRA adapters on top, paged 8-bit AdamW on
GPU. `quant="none"` trains plain LoRA. The transformers Trainer runs the loop; a callback measures
reliability (the paper's few-shot greedy probe on the injected facts) after every epoch.

Presets (flags override them):
- paper: rank 1, alpha 2, rsLoRA, dropout 0.1, gate/up/down projections, lr 1e-3, 10 epochs,
  batch 16, loss on the whole sequence (Pletenev et al. 2025, §4.2);
- qlora: rank 16, alpha 32, all linear layers, dropout 0.05, lr 2e-4, 10 epochs, batch 16, loss on
  the answer only.

Works unchanged under `accelerate launch --num_processes 2 -m kia inject ...` (the Trainer does DDP).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kia.artifacts import (
    FolderLock,
    prepare_output,
    read_jsonl,
    read_manifest,
    sha256_file,
    sha256_tree,
    write_manifest,
)
from kia.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"rank": 1, "alpha": 2.0, "rslora": True, "dropout": 0.1, "targets": ("gate_proj", "up_proj", "down_proj"),
              "lr": 1e-3, "epochs": 10, "batch_size": 16, "loss": "full"},
    "qlora": {"rank": 16, "alpha": 32.0, "rslora": False, "dropout": 0.05, "targets": ("all-linear",),
              "lr": 2e-4, "epochs": 10, "batch_size": 16, "loss": "answer"},
}  # fmt: skip


@dataclass(frozen=True)
class InjectConfig:
    """None means "take it from the preset"."""

    build: str
    model: str | None = None
    output: str = "runs/inject"
    preset: str = "qlora"
    quant: str = "nf4"
    rank: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    targets: tuple[str, ...] | None = None
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    loss: str | None = None
    rslora: bool | None = None
    seed: int = 0
    stop_at_reliability: float | None = None
    eval_sets: int = 3
    heldout_known: int = 50
    max_length: int = 256
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown --preset '{self.preset}'; choose one of: {', '.join(PRESETS)}")
        if self.quant not in ("nf4", "none"):
            raise ConfigError(f"unknown --quant '{self.quant}'; choose nf4 or none")
        for name in ("rank", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.stop_at_reliability is not None and not 0 < self.stop_at_reliability <= 1:
            raise ConfigError("--stop-at-reliability must be in (0, 1]")

    def resolved(self) -> dict[str, Any]:
        """The preset with every given flag applied on top."""
        hp = dict(PRESETS[self.preset])
        for key in hp:
            value = getattr(self, key)
            if value is not None:
                hp[key] = value
        hp["targets"] = tuple(hp["targets"])
        return hp


@dataclass(frozen=True)
class InjectResult:
    output: Path
    curve: list[dict[str, Any]]
    reliability: float | None
    base_reliability: float | None
    tokens_per_second: float
    seconds: float
    peak_memory_mb: float
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def _load_model(model_id: str, quant: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from kia.errors import EngineError

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {}
    if quant == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        )
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    else:
        kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except OSError as exc:
        raise EngineError(f"cannot load model '{model_id}': {exc}") from exc
    if quant == "none":
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def inject(config: InjectConfig, progress: Any = None) -> InjectResult:
    """Train the adapter described by `config` on the build folder it names."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments, set_seed

    from kia.train_callbacks import ReliabilityCallback, load_eval_facts
    from kia.train_data import PadCollator, encode_row

    start = time.time()
    build_dir = Path(config.build)
    build_manifest = read_manifest(build_dir, "build")
    model_id = config.model or build_manifest.get("model")
    if not model_id:
        raise ConfigError(f"{build_dir}/manifest.json names no base model; pass --model")
    hp = config.resolved()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(config.output)
    if config.resume and not (out / "checkpoints").exists():
        raise ConfigError(f"{out}: nothing to resume (no checkpoints/); run without --resume")
    out = prepare_output(out, overwrite=config.overwrite or config.resume)
    with FolderLock(out):
        set_seed(config.seed)
        model, tokenizer = _load_model(str(model_id), config.quant, device)
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
        rows = read_jsonl(build_dir / "train.jsonl")
        data = [encode_row(tokenizer, r["messages"], hp["loss"], config.max_length) for r in rows]
        n_tokens = sum(len(d["input_ids"]) for d in data)
        injected, known, sets = load_eval_facts(build_dir, config.heldout_known, config.seed)
        callback = ReliabilityCallback(
            model, tokenizer, injected, known, sets, out / "train_log.jsonl",
            n_sets=config.eval_sets, stop_at=config.stop_at_reliability, progress=progress,
            epochs=hp["epochs"], model_id=str(model_id),
        )  # fmt: skip
        base_rel = callback.base_reliability()
        args = TrainingArguments(
            output_dir=str(out / "checkpoints"),
            num_train_epochs=hp["epochs"],
            per_device_train_batch_size=hp["batch_size"],
            learning_rate=hp["lr"],
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            optim="paged_adamw_8bit" if device == "cuda" else "adamw_torch",
            bf16=device == "cuda",
            use_cpu=device == "cpu",
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="epoch",
            save_total_limit=1,
            seed=config.seed,
            data_seed=config.seed,
            report_to=[],
            dataloader_num_workers=0,
            disable_tqdm=True,
            train_sampling_strategy="group_by_length",
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_ListDataset(data),
            data_collator=PadCollator(tokenizer.pad_token_id),
            callbacks=[callback],
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for noisy in (PrinterCallback, ProgressCallback):  # kia prints its own per-epoch line
            trainer.remove_callback(noisy)
        train_start = time.time()
        trainer.train(resume_from_checkpoint=True if config.resume else None)
        train_seconds = time.time() - train_start
        model.save_pretrained(out, safe_serialization=True)
        _remove_checkpoints(out / "checkpoints")
        curve = callback.curve
        epochs_run = curve[-1]["epoch"] if curve else hp["epochs"]
        peak = _peak_memory(device)
        seconds = round(time.time() - start, 2)
        # Throughput of training alone: the callback's evaluation time is not training.
        tokens_per_second = round(n_tokens * epochs_run / max(train_seconds - callback.eval_seconds, 1e-9), 1)
        final = curve[-1]["reliability"] if curve else None
        write_manifest(
            out,
            stage="inject",
            config=replace(config, targets=tuple(hp["targets"])),
            model=str(model_id),
            base_model={"id": str(model_id), "sha256": sha256_tree(model_id) if Path(model_id).is_dir() else None},
            base_model_architectures=list(getattr(model.base_model.model.config, "architectures", None) or []),
            build=str(build_dir),
            inputs={
                "train": {"path": str(build_dir / "train.jsonl"), "sha256": sha256_file(build_dir / "train.jsonl")}
            },
            hyperparameters=hp,
            seed=config.seed,
            device=device,
            optimizer=args.optim if isinstance(args.optim, str) else args.optim.value,
            train_rows=len(rows),
            train_tokens=n_tokens,
            tokens_per_second=tokens_per_second,
            wall_seconds=seconds,
            peak_memory_mb=peak,
            base_reliability=base_rel,
            reliability=final,
            curve=curve,
        )
    return InjectResult(out, curve, final, base_rel, tokens_per_second, seconds, peak["rss_mb"], hp)


class _ListDataset:
    """The Trainer needs `len` and indexing; `group_by_length` reads the lengths up front."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _remove_checkpoints(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _peak_memory(device: str) -> dict[str, float]:
    import torch

    from kia.artifacts import peak_memory_mb

    peak = {"rss_mb": peak_memory_mb()}
    if device == "cuda":
        peak["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def sample_ids(ids: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample (all of them when there are fewer than `n`)."""
    return sorted(random.Random(seed).sample(ids, min(n, len(ids))))
