"""A randomly initialised Llama of a real model's shape, with the toy tokenizer, for throughput checks.

    python bench/gpu/make_model.py 8b /tmp/models/8b              # on the GPU (bf16)
    python bench/gpu/make_model.py tiny /tmp/models/tiny --device cpu   # what the tests build

The shapes are Llama-3.2-1B's and Llama-3.1-8B's (vocabulary 128,256; ids the toy tokenizer lacks
decode to nothing). The weights are random, so generation never stops at a newline: every answer
runs to `max_new_tokens`, a fixed answer length, which is what a throughput check wants. Training
throughput does not depend on the weights at all.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

TOY_MODEL = Path(__file__).resolve().parents[2] / "datasets" / "toyworld" / "model"
VOCAB = 128_256
SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    # the tests' size: the same code path in seconds on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}  # fmt: skip


def llama_config(shape: str, tokenizer_dir: Path = TOY_MODEL) -> Any:
    """The LlamaConfig of `shape`, with the special token ids of the tokenizer in `tokenizer_dir`."""
    from transformers import LlamaConfig

    if shape not in SHAPES:
        raise SystemExit(f"unknown shape '{shape}'; choose one of: {', '.join(SHAPES)}")
    base = json.loads((tokenizer_dir / "config.json").read_text())
    return LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=500_000.0,
        bos_token_id=base.get("bos_token_id"), eos_token_id=base.get("eos_token_id"),
        pad_token_id=base.get("pad_token_id"), **SHAPES[shape],
    )  # fmt: skip


def make_model(shape: str, dst: Path, device: str = "cuda", src: Path = TOY_MODEL) -> dict[str, Any]:
    """Write the model of `shape` (bf16, seed 0) and the toy tokenizer's files to `dst`."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = llama_config(shape, src)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, safe_serialization=True)
    del model
    for f in src.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, dst / f.name)
    return {"shape": shape, "params": n, "path": str(dst)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("dst", type=Path)
    parser.add_argument("--device", default="cuda", help="where the weights are initialised (cuda: fast)")
    args = parser.parse_args()
    print(json.dumps(make_model(args.shape, args.dst, args.device)))


if __name__ == "__main__":
    main()
