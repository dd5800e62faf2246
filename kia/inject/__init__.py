"""`kia inject`: train the (Q)LoRA adapter that carries the new facts, with a reliability curve.

- `config`: `InjectConfig`, `InjectResult`, the `paper` and `qlora` presets;
- `run`: `inject()`, the stage (output folder, resume, manifest);
- `model`: loading the (4-bit) base for training and the compute dtype; `data`: chat rows to token
  ids and the collators; `trainer`: the Trainer subclass and the CPU speed-ups; `curve`: the
  per-epoch reliability callback; `resume`: checkpoints and what a resumed run must match.
Only `config` and `run` are imported here; the rest bring torch and load when training starts.
"""

from kia.inject.config import (
    DEFAULT_CAP,
    DEFAULT_MIN_STEPS,
    DEFAULT_TARGET,
    PRESETS,
    InjectConfig,
    InjectResult,
    training_schedule,
)
from kia.inject.model import PRECISIONS
from kia.inject.run import inject

__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_MIN_STEPS",
    "DEFAULT_TARGET",
    "PRECISIONS",
    "PRESETS",
    "InjectConfig",
    "InjectResult",
    "inject",
    "training_schedule",
]
