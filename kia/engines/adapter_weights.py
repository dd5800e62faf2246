"""What an adapter folder must be before peft loads it: a LoRA config with every key peft wrote and
none it does not know, a safetensors file that is whole, LoRA matrices of the config's rank on
modules the config targets (and, given the base model, modules it has, of their sizes), and no NaN
or infinite weight. Each failure is one line naming the file and what is wrong.
"""

from __future__ import annotations

import enum
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

from kia.errors import AdapterError

REQUIRED = ("peft_type", "r", "lora_alpha", "target_modules")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_LORA_KEY = re.compile(r"base_model\.model\.(.+)\.(lora_A|lora_B)\.weight")
# every dtype the safetensors format defines (safetensors 0.8); anything else is a damaged header
SAFETENSORS_DTYPES = frozenset(
    "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 U32 F32 "
    "C64 F64 I64 U64".split()
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value can be what peft's type hint asks (peft itself checks few of its settings,
    and a wrong one fails only when the adapter is put on the model, deep inside peft)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:  # a `[...]` in a choice stands for a family of names (pissa_niter_[n])
        return value in args or (isinstance(value, str) and any("[" in str(a) for a in args))
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return _number(value)
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return isinstance(value, str)
    if hint is list or origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if hint is tuple or origin is tuple:
        return isinstance(value, list | tuple) and (not args or len(value) == len(args))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # peft's nested config classes: peft reads their JSON itself


def _shown(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_config(path: Path, config: dict[str, Any]) -> Any:
    """The peft `LoraConfig` of an adapter_config.json, or AdapterError naming the key at fault."""
    import dataclasses

    import peft
    from peft import LoraConfig

    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise AdapterError(
            f"{path}: missing key(s) {', '.join(missing)}; peft writes them all, so the file was edited "
            "or is not a LoRA adapter's (peft would fill in defaults that do not fit the weights)"
        )
    if config["peft_type"] != "LORA":
        raise AdapterError(f"{path}: peft_type is {config['peft_type']!r}; kia audits LoRA adapters only")
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(LoraConfig)})
    if unknown:
        raise AdapterError(
            f"{path}: unknown key(s) {', '.join(unknown)} (not settings of peft {peft.__version__}'s LoraConfig): "
            "the file was edited or written by another peft; remove them, or load it with the peft that wrote it"
        )
    hints = typing.get_type_hints(LoraConfig)
    for name, value in config.items():
        if not _fits(value, hints.get(name, Any)):
            raise AdapterError(f"{path}: key '{name}' is {value!r}, which peft cannot use as {_shown(hints[name])}")
    r, targets = config["r"], config["target_modules"]
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise AdapterError(f"{path}: key 'r' must be a whole number >= 1, got {r!r}")
    if not _number(config["lora_alpha"]):
        raise AdapterError(f"{path}: key 'lora_alpha' must be a number, got {config['lora_alpha']!r}")
    if not (isinstance(targets, str) and targets) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    ):
        raise AdapterError(f"{path}: key 'target_modules' must be a module name or a list of them, got {targets!r}")
    if isinstance(targets, str):
        try:
            re.compile(targets)  # a string is a regular expression to peft, a list holds names
        except re.error as exc:
            raise AdapterError(f"{path}: key 'target_modules' is not a valid regular expression ({exc})") from None
    dropout = config.get("lora_dropout", 0.0)
    if not _number(dropout) or not 0 <= dropout < 1:  # torch's Dropout raises past peft's checks
        raise AdapterError(f"{path}: key 'lora_dropout' must be a number in [0, 1), got {dropout!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key, {})  # None is no mapping: peft calls .keys() on it
        if not isinstance(pattern, dict) or not all(_number(v) for v in pattern.values()):
            raise AdapterError(f"{path}: key '{key}' must map module names to numbers, got {pattern!r}")
    try:
        return LoraConfig(**config)
    except Exception as exc:  # peft validates in __post_init__ with ValueError, TypeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdapterError(f"{path}: peft refuses this LoRA config ({first})") from exc


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor in a safetensors file, once the file is known whole."""

    def bad(why: str) -> AdapterError:
        return AdapterError(f"{path}: {why}")

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, too short for a safetensors file: truncated")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise bad(f"its header claims {n} bytes, the file has {size}: truncated, or not a safetensors file")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad("its header is not JSON: damaged, or not a safetensors file") from None
    if not isinstance(header, dict):
        raise bad("its header is not a mapping of tensor names: damaged, or not a safetensors file")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (low, high) = info["dtype"], info["shape"], info["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in (*shape, low, high)) or low > high:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise bad(f"the header entry of tensor {name} is malformed: damaged file") from None
        if (
            not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES
        ):  # safetensors itself fails on it later, with a page of text
            raise bad(f"tensor {name} has dtype {dtype!r}, which safetensors does not know: damaged file")
        if dtype in DTYPE_BYTES and high - low != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise bad(f"tensor {name} ({dtype} {list(shape)}) needs {math.prod(shape) * DTYPE_BYTES[dtype]} bytes, "
                      f"its offsets give {high - low}: damaged file")  # fmt: skip
        out[name], end = (dtype, tuple(shape)), max(end, high)
    if 8 + n + end > size:
        raise bad(f"truncated: its tensors end at byte {8 + n + end}, the file has {size}")
    if 8 + n + end < size:
        raise bad(f"{size - 8 - n - end} bytes follow its last tensor: damaged, or two files joined")
    return out


def _rank(lora: Any, module: str) -> int:
    """The rank peft gives `module`: its `rank_pattern` entry (peft's own matching), else `r`."""
    for key, rank in (lora.rank_pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return int(rank)
    return int(lora.r)


def check_weights(path: Path, lora: Any, model: Any = None) -> None:
    """AdapterError unless the weights fit `lora` (and `model`, when given) and are all finite."""
    from peft.tuners.tuners_utils import check_target_module_exists

    header = read_header(path)
    pairs: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for name, (_, shape) in header.items():
        if m := _LORA_KEY.fullmatch(name):
            pairs.setdefault(m[1], {})[m[2]] = (name, shape)
    if not pairs:
        raise AdapterError(f"{path}: holds no LoRA matrices (no tensor named like ….lora_A.weight)")
    config_path = path.parent / "adapter_config.json"
    base = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "the base model")
    for module, ab in sorted(pairs.items()):
        if len(ab) != 2:
            raise AdapterError(f"{path}: {module} has {next(iter(ab))} but not its partner matrix")
        (a_key, a), (b_key, b) = ab["lora_A"], ab["lora_B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise AdapterError(
                f"{path}: {a_key} {list(a)} and {b_key} {list(b)} are not the two factors of a LoRA update"
            )
        if a[0] != (want := _rank(lora, module)):
            raise AdapterError(
                f"{config_path}: says rank {want} for {module}, but {path.name} holds rank-{a[0]} matrices "
                f"({a_key} is {list(a)}): the config and the weights are not of one adapter"
            )
        if not check_target_module_exists(lora, module):
            named = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
            raise AdapterError(
                f"{path}: holds weights for {module}, which target_modules {named!r} of {config_path.name} "
                "does not name: peft would ignore them and load a no-op"
            )
        if model is None:
            continue
        try:
            layer = model.get_submodule(module)
        except AttributeError:
            raise AdapterError(f"{path}: holds weights for {module}, which {base} does not have") from None
        size = (getattr(layer, "in_features", None), getattr(layer, "out_features", None))
        if None not in size and (a[1], b[0]) != size:
            raise AdapterError(
                f"{path}: {module} maps {size[0]} -> {size[1]} features in {base}, but its LoRA matrices "
                f"are {list(a)} and {list(b)}: the adapter was made for another model size"
            )
    if model is not None:
        _check_targets(config_path, lora, model, base)
    _check_finite(path)


def _check_targets(config_path: Path, lora: Any, model: Any, base: str) -> None:
    """Every name in target_modules matches a module of the base model (peft's own rule)."""
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(lora.target_modules, str):
        found = {lora.target_modules: any(re.fullmatch(lora.target_modules, n) for n in names)}
    else:
        found = {t: any(n == t or n.endswith(f".{t}") for n in names) for t in sorted(lora.target_modules)}
    for target, hit in found.items():
        if not hit:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "in_features")})
            raise AdapterError(
                f"{config_path}: target module '{target}' is not in {base} (its linear layers: {', '.join(linear)})"
            )


def _check_finite(path: Path) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            t = fh.get_tensor(key)
            if not t.is_floating_point():
                continue
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if nan or inf:
                raise AdapterError(
                    f"{path}: tensor {key} holds {nan} NaN and {inf} infinite value(s) of {t.numel()}: training "
                    "diverged or the file is damaged; retrain (a lower --lr) or restore the file"
                )
