"""The inject stage's settings, presets and result: what `kia inject` reads from its flags and returns.

Presets (flags override them):
- paper: rank 1, alpha 2, rsLoRA, dropout 0.1, gate/up/down projections, lr 1e-3, 10 epochs,
  batch 16, loss on the whole sequence (Pletenev et al. 2025, §4.2);
- qlora: rank 16, alpha 32, all linear layers, dropout 0.05, lr 2e-4, 10 epochs, batch 16, loss on
  the answer only.

Unless `--epochs` is given, training runs at least `min_steps` optimizer steps and then on until
the reliability curve reaches a target, up to a cap (see `training_schedule`): a preset's 10
epochs are 4 steps an epoch on a 60-row mixture, too few to learn it, and on a 1,000-fact
mixture they end with the learning rate decayed to zero before the facts are in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.errors import ConfigError
from kia.inject.model import PRECISIONS

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"rank": 1, "alpha": 2.0, "rslora": True, "dropout": 0.1, "targets": ("gate_proj", "up_proj", "down_proj"),
              "lr": 1e-3, "epochs": 10, "batch_size": 16, "loss": "full"},
    "qlora": {"rank": 16, "alpha": 32.0, "rslora": False, "dropout": 0.05, "targets": ("all-linear",),
              "lr": 2e-4, "epochs": 10, "batch_size": 16, "loss": "answer"},
}  # fmt: skip

# The step budget of the default schedule. Measured on the toy world, qlora preset, the curve's
# reliability (one exemplar set): 30 Unknown + 30 HighlyKnown facts (4 steps an epoch) reach 0.30
# after 40 steps (10 epochs), 0.93 after 100, 1.0 after 200 and 400; 10 Unknown facts alone 0.1
# after 10 steps, 0.9 after 40. A large mixture already gets hundreds of steps from its epochs
# (300 + 300 facts: 380 steps, 0.70). 400 leaves room for the audit's ten exemplar sets.
DEFAULT_MIN_STEPS = 400
# After that budget, training goes on until the curve's reliability reaches DEFAULT_TARGET, for at
# most DEFAULT_CAP times the budget's epochs; the learning rate decays linearly over the cap.
# Measured on the toy world (qlora preset, 300 held-out facts): with the budget alone (linear decay
# to zero at its end) 300 Unknown + 300 HighlyKnown facts stopped at reliability 0.65-0.70 after 11
# epochs, 1,000 Unknown facts at 0.53 after 10 with the loss still falling; with the decay spread
# over 40 epochs the same mixtures reached 0.97 after 10 and 14 epochs.
DEFAULT_TARGET = 0.95
DEFAULT_CAP = 4
# At most this many evaluated epochs on the curve (and epoch checkpoints): a long schedule on a
# tiny mixture (400 epochs of one step) would otherwise spend more time evaluating than training.
MAX_CURVE_POINTS = 20


@dataclass(frozen=True)
class InjectConfig:
    """None means "take it from the preset"."""

    build: str
    model: str | None = None
    output: str = "runs/inject"
    # an adapter to continue (an update of the one in production): same base, rank and targets
    from_adapter: str | None = None
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
    # Train at least this many optimizer steps: the epochs grow to ceil(min_steps / steps per
    # epoch) when the preset's epochs are fewer. None: DEFAULT_MIN_STEPS when `epochs` is not
    # given, 0 when it is (an explicit --epochs trains exactly that many epochs).
    min_steps: int | None = None
    stop_at_reliability: float | None = None
    # The per-epoch curve watches training; the audit measures reliability in full. Evaluating
    # every injected fact with 3 sets cost the toy runs 4x the training time itself.
    eval_sets: int = 1
    eval_facts: int | None = None  # None: auto_eval_facts(training rows); 0: all injected facts
    heldout_known: int = 20
    max_length: int = 256
    # Flatten each batch into one sequence (position ids restart per row; no padding computed).
    # None: on a GPU only. On the CPU the packed mask makes sdpa attend over the whole flattened
    # batch, and the toy benchmark trained slower (12.5 s vs 8.3 s) than with padded, length-grouped
    # batches.
    padding_free: bool | None = None
    precision: str = "auto"  # see kia.inject.model.compute_dtype
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown --preset '{self.preset}'; choose one of: {', '.join(PRESETS)}")
        if self.quant not in ("nf4", "none"):
            raise ConfigError(f"unknown --quant '{self.quant}'; choose nf4 or none")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        for name in ("rank", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.min_steps is not None and self.min_steps < 0:
            raise ConfigError(f"--min-steps must be 0 or more, got {self.min_steps}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.stop_at_reliability is not None and not 0 < self.stop_at_reliability <= 1:
            raise ConfigError("--stop-at-reliability must be in (0, 1]")
        if self.loss is not None and self.loss not in ("full", "answer"):
            raise ConfigError(f"unknown --loss '{self.loss}'; choose full or answer")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.eval_sets < 1 or self.heldout_known < 0 or (self.eval_facts or 0) < 0:
            raise ConfigError("--eval-sets must be at least 1, --eval-facts and --heldout-known at least 0")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues a run and --overwrite starts over: pass one of them")

    def resolved(self) -> dict[str, Any]:
        """The preset with every given flag applied on top."""
        hp = dict(PRESETS[self.preset])
        for key in hp:
            value = getattr(self, key)
            if value is not None:
                hp[key] = value
        hp["targets"] = tuple(hp["targets"])
        return hp


def training_schedule(config: InjectConfig, preset_epochs: int, rows: int, batch_size: int) -> dict[str, Any]:
    """How long training runs: epochs, steps, and the rule that chose them (for the manifest).

    budget = max(E, ceil(S / steps per epoch)) epochs, where E is the preset's (or --epochs')
    epochs, S is `min_steps` and steps per epoch = ceil(rows / batch size). Why a step budget: the
    preset's fixed epochs give a 60-row mixture 40 steps and a 6,000-row one 3,750, so small
    mixtures stopped long before their facts were learnt (reliability 0.23 on the toy world).
    Without --epochs, training runs the budget and then until the curve's reliability reaches
    `stop_at` (--stop-at-reliability, default DEFAULT_TARGET), for at most `epochs` = DEFAULT_CAP x
    budget: a fixed budget with the learning rate decayed to zero at its end left large mixtures
    half learnt (see DEFAULT_CAP), and a target stops each mixture when its facts are in. With
    --epochs, exactly that many (or fewer, once --stop-at-reliability is reached). `curve_every`:
    the reliability curve (and the epoch checkpoints) every k epochs, so that at most
    MAX_CURVE_POINTS epochs are evaluated, and always the last one."""
    explicit = config.epochs is not None
    min_steps = config.min_steps if config.min_steps is not None else (0 if explicit else DEFAULT_MIN_STEPS)
    per_epoch = max(1, math.ceil(rows / batch_size))
    budget = max(preset_epochs, math.ceil(min_steps / per_epoch))
    rule = f"max({preset_epochs}, ceil({min_steps} min steps / {per_epoch} steps per epoch)) = {budget} epochs"
    if explicit:
        epochs, stop_at, stop_after = budget, config.stop_at_reliability, 0
        rule = f"epochs = {rule}" + (f", or fewer once reliability >= {stop_at}" if stop_at is not None else "")
    else:
        epochs = budget * DEFAULT_CAP
        stop_at = config.stop_at_reliability if config.stop_at_reliability is not None else DEFAULT_TARGET
        stop_after = budget
        rule = f"at least {rule}, then until reliability >= {stop_at}, at most {epochs} epochs ({DEFAULT_CAP} x)"
    every = max(1, math.ceil(epochs / MAX_CURVE_POINTS))
    return {
        "epochs": epochs,
        "preset_epochs": preset_epochs,
        "min_steps": min_steps,
        "budget_epochs": budget,
        "stop_at": stop_at,
        "stop_after": stop_after,
        "steps_per_epoch": per_epoch,
        "steps": epochs * per_epoch,
        "curve_every": every,
        "rule": rule,
    }


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
    precision: str = "fp32"  # the dtype the products ran in: bf16 or fp32
    schedule: dict[str, Any] = field(default_factory=dict)  # see training_schedule
    adapter_id: str | None = None  # sha256 of the adapter's weights (kia.engines.adapter_id)
    parent: str | None = None  # the adapter continued (--from-adapter), if any
