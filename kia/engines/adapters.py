"""Adapter safety: safetensors only, only on the base model it was trained for, and only weights
that can be what their config says.

A pickled adapter can run arbitrary code when loaded, so `.bin` weights are refused unless the user
passes `--allow-pickle`. An adapter loaded onto another base model gives confident nonsense rather
than an error, so a mismatch of architecture or base model name is refused with both names. And an
adapter folder is checked before peft sees it (`adapter_weights`): peft loads a config with unknown
keys or without `target_modules` and then ignores the weights it does not expect (a silent no-op),
prints a size mismatch as a page of text, and loads NaN weights without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kia.errors import AdapterError

SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


def read_adapter_config(adapter: str | Path) -> dict[str, Any]:
    path = Path(adapter) / "adapter_config.json"
    if not path.exists():
        raise AdapterError(f"{adapter}: no adapter_config.json, so this is not a peft adapter folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: not a peft adapter config (a JSON object), got {type(config).__name__}")
    return config


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return False


def check_adapter(adapter: str | Path, model: Any = None, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Raise AdapterError unless the adapter folder is safe to load onto `model`; return its config."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise AdapterError(f"{adapter}: no such adapter folder")
    config = read_adapter_config(folder)
    has_safe = (folder / SAFE_WEIGHTS).exists()
    pickled = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
    if not has_safe and pickled and not allow_pickle:
        raise AdapterError(
            f"{adapter}: weights are pickled ({pickled[0]}), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if not has_safe and not pickled:
        raise AdapterError(f"{adapter}: no adapter weights ({SAFE_WEIGHTS}) in the folder")
    from kia.engines.adapter_weights import check_config, check_weights

    lora = check_config(folder / "adapter_config.json", config)
    if model is not None:
        base_cfg = getattr(model, "config", None)
        base_name = str(getattr(base_cfg, "_name_or_path", "") or "")
        wanted = str(config.get("base_model_name_or_path") or "")
        if wanted and base_name and not _same_model(wanted, base_name):
            raise AdapterError(
                f"{folder / 'adapter_config.json'}: was trained on base model '{wanted}', but the model loaded is '{base_name}'; "
                "pass the adapter's own base model with --model"
            )
        arch = _manifest_architecture(folder)
        have = list(getattr(base_cfg, "architectures", None) or [])
        if arch and have and arch != have:
            raise AdapterError(
                f"{adapter}: was trained on architecture {arch}, but the model loaded is {have} ('{base_name}')"
            )
    if has_safe:
        check_weights(folder / SAFE_WEIGHTS, lora, model)
    return config


def _manifest_architecture(folder: Path) -> list[str] | None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    arch = data.get("base_model_architectures")
    return list(arch) if arch else None
