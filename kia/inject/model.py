"""The base model for training: 4-bit NF4 or full weights, and the dtype its products run in.

QLoRA computes in bf16 on a GPU. A CPU with bf16 in hardware (AVX512-BF16, AMX) multiplies bf16
about twice as fast as fp32 (this project's Zen 4 machine: 330-420 GFLOP/s against 165-185 on the
toy model's shapes); elsewhere oneDNN emulates bf16 and fp32 is faster. `compute_dtype` picks.
"""

from __future__ import annotations

from typing import Any

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - a torch without the probes
        return False


def compute_dtype(device: str, precision: str, quant: str = "nf4") -> Any:
    """The torch dtype of the training's matrix products: `precision` unless "auto".

    auto means bf16 on a GPU, and on a CPU with bf16 in hardware for 4-bit weights, whose layers
    dequantize straight to bf16; fp32 otherwise. Full fp32 weights on the CPU would go through
    autocast, which casts every weight at every step: two epochs of the 750-row bench mixture took
    9.6-10.7 s against 8.8-9.2 s in fp32, with 150 MB more peak memory."""
    import torch

    if precision == "auto":
        fast = device == "cuda" or (quant == "nf4" and cpu_has_bf16())
        return torch.bfloat16 if fast else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def precision_name(dtype: Any) -> str:
    """ "bf16" or "fp32", as the manifest and the CLI name a `compute_dtype`."""
    import torch

    return "bf16" if dtype == torch.bfloat16 else "fp32"


def load_model(model_id: str, quant: str, device: str, dtype: Any = None, local_rank: int = 0) -> tuple[Any, Any]:
    """Tokenizer and model for training: the engine's loader (`dtype` is the 4-bit layers' compute
    dtype), 4-bit layers kept differentiable, and a pad token for the batches."""
    from kia.engines.hf import load_pretrained

    model, tokenizer = load_pretrained(model_id, quant, device, dtype, local_rank)
    if quant != "none":
        keep_4bit_differentiable(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def keep_4bit_differentiable(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during the evaluations.

    On a CPU with AVX512-BF16, a `Linear4bit` in eval mode converts its weight in place to an
    inference-only layout whose kernel has no backward; back in train mode the gradients that must
    flow through the frozen base layers are then silently wrong (bitsandbytes 0.50). The per-epoch
    reliability runs in eval mode, so the conversion is switched off for the whole run."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # pragma: no cover - nf4 needs bitsandbytes anyway
        return
    for module in model.modules():
        if isinstance(module, Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
