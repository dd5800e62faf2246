"""What lets `kia inject --resume` continue a killed run: the output folder's checks, the last
complete checkpoint, and the identity a resumed run must match."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kia.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from kia.inject.config import InjectConfig


RUN_FILE = "run.json"  # in checkpoints/: what a --resume must match


def checkpoints(ckpt_dir: Path) -> tuple[Path | None, list[Path]]:
    """(the newest complete checkpoint, the partial ones newer than it).

    The Trainer writes a checkpoint's trainer_state.json last, so a checkpoint is complete when that
    file reads as JSON; a run killed while saving leaves a newer, partial folder that the
    Trainer's own `get_last_checkpoint` would pick, and fail to resume from."""
    import json
    import re

    numbered = sorted(
        (
            (int(m.group(1)), d)
            for d in ckpt_dir.glob("checkpoint-*")
            if (m := re.fullmatch(r"checkpoint-(\d+)", d.name))
        ),
        reverse=True,
    )
    partial: list[Path] = []
    for _, d in numbered:
        try:
            json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            partial.append(d)
            continue
        return d, partial
    return None, partial


def check_output(out: Path, config: InjectConfig) -> Path | None:
    """Read-only checks on the output folder (every process runs them); the checkpoint to resume."""
    from kia.artifacts import MANIFEST

    ckpt_dir = out / "checkpoints"
    last = checkpoints(ckpt_dir)[0] if ckpt_dir.is_dir() else None
    if config.resume:
        if last is None:
            raise ConfigError(
                f"{out}: no checkpoint to resume from (no complete {ckpt_dir.name}/checkpoint-*); run without --resume"
            )
        return last
    if (out / MANIFEST).exists() and not config.overwrite:
        raise ArtifactError(f"{out}: already holds a finished run; pass --overwrite or choose another -o")
    if last is not None and not config.overwrite:
        raise ArtifactError(
            f"{out}: holds the checkpoints of an interrupted run; pass --resume to continue it "
            "or --overwrite to start over"
        )
    return None


def run_identity(
    config: InjectConfig, hp: dict[str, Any], model_id: str, train_sha: str, parent_id: str | None = None
) -> dict[str, Any]:
    """Everything that must be the same for a resumed run to continue the interrupted one."""
    return {
        "model": model_id,
        "from_adapter": parent_id,
        "train_sha256": train_sha,
        "quant": config.quant,
        "seed": config.seed,
        "max_length": config.max_length,
        "padding_free": config.padding_free,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
    }
