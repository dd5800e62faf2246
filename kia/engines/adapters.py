"""Adapter safety and identity: safetensors only, only on the base model it was trained for, only
weights that can be what their config says, and known everywhere by a hash of its weights.

A pickled adapter can run arbitrary code when loaded, so `.bin` weights are refused unless the user
passes `--allow-pickle`. An adapter loaded onto another base model gives confident nonsense rather
than an error, so a mismatch of architecture or base model name is refused with both names. And an
adapter folder is checked before peft sees it (`adapter_weights`): peft loads a config with unknown
keys or without `target_modules` and then ignores the weights it does not expect (a silent no-op),
prints a size mismatch as a page of text, and loads NaN weights without a word.

`adapter_id` names an adapter by what it computes, not by where it lies: a folder copied or
renamed keeps its id, and an update retrained into the same folder gets a new one. The audit, the
report and the vLLM engine's LoRA name and integer id all use it (vLLM has cached keys and values
under a LoRA name across two different adapters: vllm#30931, #42125).
"""

from __future__ import annotations

import hashlib
import json
import struct
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
    if hasattr(model, "get_base_model"):  # a further named adapter: its weights are keyed by the bare model's modules
        model = model.get_base_model()
    if model is not None:
        base_cfg = getattr(model, "config", None)
        base_name = str(getattr(base_cfg, "_name_or_path", "") or "")
        wanted = str(config.get("base_model_name_or_path") or "")
        if wanted and base_name and not _same_model(wanted, base_name):
            raise AdapterError(
                f"{folder / 'adapter_config.json'}: was trained on base model {wanted!r}, but the model loaded is {base_name!r}; "
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


# adapter_config.json fields that change what the same tensors compute (the scale alpha / r or
# alpha / sqrt(r), which modules they apply to, DoRA); paths and bookkeeping are left out, so a
# moved base model does not change an adapter's id.
_IDENTITY_FIELDS = ("peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "target_modules", "rank_pattern",
                    "alpha_pattern", "fan_in_fan_out", "modules_to_save")  # fmt: skip


def adapter_id(adapter: str | Path) -> str:
    """sha256 (hex) of an adapter's weights: every tensor of adapter_model.safetensors in name order
    (name, dtype, shape, raw bytes) and the adapter_config.json fields that scale or place them.

    The tensors are read from the safetensors layout itself (an 8-byte header length, a JSON
    header of dtype / shape / byte offsets, then the data), so the id does not depend on the file's
    metadata or on how a writer ordered the tensors, and nothing is unpickled. A pickled adapter
    (`--allow-pickle`) is hashed by its file's bytes."""
    folder = Path(adapter)
    config = read_adapter_config(folder)
    h = hashlib.sha256(b"kia-adapter-v1\0")
    fields = {k: config.get(k) for k in _IDENTITY_FIELDS}
    if isinstance(fields["target_modules"], list):
        fields["target_modules"] = sorted(fields["target_modules"])
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    path = folder / SAFE_WEIGHTS
    if not path.exists():
        pickled = next((folder / n for n in PICKLE_WEIGHTS if (folder / n).exists()), None)
        if pickled is None:
            raise AdapterError(f"{adapter}: no adapter weights ({SAFE_WEIGHTS}) in the folder")
        with open(pickled, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
            start = 8 + size
            for name in sorted(k for k in header if k != "__metadata__"):
                t = header[name]
                begin, end = t["data_offsets"]
                h.update(f"{name}\0{t['dtype']}\0{t['shape']}\0".encode())
                fh.seek(start + begin)
                h.update(fh.read(end - begin))
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from exc
    return h.hexdigest()


def short_id(full: str) -> str:
    """The first 12 hex digits of an adapter id, as messages and the report show it."""
    return full[:12]


def lora_request_key(full: str) -> tuple[str, int]:
    """(LoRA name, positive integer id) for vLLM, both from the adapter id: one adapter keeps one
    name and one id, two different adapters never share either (28 bits of the hash)."""
    return f"kia-{full[:16]}", int(full[:7], 16) + 1
