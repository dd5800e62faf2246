"""Engines: the generation interface every stage uses, and what the model side needs besides.

- `interface`: `Sampling`, `Prompt`, `EngineConfig`, the `Engine` protocol, `load_engine` by name
  (`hf`, `vllm`, `scripted`), `default_model` (the embedded toy model), and `PromptTokenizer` /
  `prompt_token_ids`, a prompt's token ids as every engine makes them;
- `hf` (transformers + peft), `vllm` (per-request LoRA), `scripted` (canned answers for logic tests):
  imported only when loaded, since they bring torch or vLLM;
- `adapters`: the safety checks before an adapter is loaded and `adapter_id`, the hash of its weights
  that names it everywhere; `embeddings`: the sentence-embedding model.
"""

from kia.engines.adapters import adapter_id, check_adapter, lora_request_key, read_adapter_config, short_id
from kia.engines.embeddings import DEFAULT_EMBEDDER, embed, load_embedder
from kia.engines.interface import (
    ENGINES,
    Engine,
    EngineConfig,
    Prompt,
    PromptTokenizer,
    Sampling,
    default_model,
    load_engine,
    prompt_token_ids,
)

__all__ = [
    "DEFAULT_EMBEDDER",
    "ENGINES",
    "Engine",
    "EngineConfig",
    "Prompt",
    "PromptTokenizer",
    "Sampling",
    "adapter_id",
    "check_adapter",
    "default_model",
    "embed",
    "load_embedder",
    "load_engine",
    "lora_request_key",
    "prompt_token_ids",
    "read_adapter_config",
    "short_id",
]
