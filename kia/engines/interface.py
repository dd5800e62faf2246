"""The small generation interface every stage uses, and `load_engine` to pick one by name.

An engine turns prompts into short completions: `n` per prompt, greedy or sampled (temperature,
top-k, seed), cut at a stop string, at most `max_new_tokens` long, optionally through the loaded
adapter or one of several named ones. `hf` (transformers) is the default; `vllm` is what users with
GPUs run; `scripted` is a fake for unit tests of the logic around the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from kia.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How to decode. `temperature == 0` means greedy (and then `n` must be 1)."""

    n: int = 1
    temperature: float = 0.0
    top_k: int = 0
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n != 1:
            raise ConfigError("greedy decoding (temperature 0) gives one answer per prompt: use n=1")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Prompt:
    """A prompt in two parts: `prefix` (shared by many prompts, e.g. the few-shot exemplars, so an
    engine may cache its keys and values) and `suffix`. The text the model sees is prefix + suffix;
    both parts are tokenised separately by every engine, so cached and uncached runs agree."""

    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


@dataclass(frozen=True)
class EngineConfig:
    model: str
    engine: str = "hf"
    adapter: str | None = None  # the adapter `generate(adapter=True)` uses
    # more adapters on the same base, by name: `generate(adapter=name)` (an update's audit loads
    # the production adapter beside the candidate)
    adapters: tuple[tuple[str, str], ...] = ()
    quant: str = "none"  # "none" | "nf4"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    batch_size: int = 64  # sequences per forward pass (prompts x n)
    allow_pickle: bool = False
    gpu_memory_utilization: float | None = None  # vllm only; None: 0.85 on a GPU, 0.3 of RAM on the CPU
    tensor_parallel_size: int = 1  # vllm only

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine '{self.engine}'; choose one of: {', '.join(ENGINES)}")
        if self.quant not in ("none", "nf4"):
            raise ConfigError(f"unknown quantisation '{self.quant}'; choose 'none' or 'nf4'")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"tensor_parallel_size must be at least 1, got {self.tensor_parallel_size}")
        names = [name for name, _ in self.adapters]
        if self.adapters and not self.adapter:
            raise ConfigError("named adapters load beside the main adapter: give `adapter` too")
        if len(set(names)) != len(names) or any(not n.isidentifier() or n == "default" for n in names):
            raise ConfigError(f"adapter names must be distinct identifiers other than 'default', got {names}")


@runtime_checkable
class Engine(Protocol):
    name: str
    model_id: str
    has_adapter: bool

    def generate(
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool | str = False
    ) -> list[list[str]]:
        """Return, for each prompt, `sampling.n` completions (new text only, cut at the stop):
        `adapter` False = the base model, True = the main adapter, a name = that named adapter."""
        ...

    def chat(self, messages: Sequence[dict[str, str]]) -> str | None:
        """Render messages with the model's chat template (generation prompt added), or None when
        the model has no template."""
        ...

    @property
    def bos(self) -> str: ...

    def close(self) -> None: ...


ENGINES = ("hf", "vllm", "scripted")


def prompt_token_ids(tokenizer: Any, prompt: Prompt | str) -> list[int]:
    """A prompt's token ids as every engine makes them: prefix and suffix tokenised apart, no
    special tokens added (the prompt text carries its own BOS), so cached and uncached runs agree."""
    p = prompt if isinstance(prompt, Prompt) else Prompt("", prompt)
    ids = tokenizer(p.prefix, add_special_tokens=False).input_ids if p.prefix else []
    return list(ids) + list(tokenizer(p.suffix, add_special_tokens=False).input_ids)


class PromptTokenizer:
    """The prompt side of an engine with no model behind it: the chat template, the BOS token and
    the token ids, for a process that sends token ids to engines elsewhere (Ray's vLLM stage)."""

    def __init__(self, model: str):
        from transformers import AutoTokenizer

        from kia.errors import EngineError

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except OSError as exc:
            raise EngineError(f"cannot load the tokenizer of '{model}': {exc}") from exc

    def chat(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    @property
    def bos(self) -> str:
        return self.tokenizer.bos_token or ""

    def token_ids(self, prompt: Prompt | str) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt)


def load_engine(config: EngineConfig) -> Engine:
    """Load the engine named in `config` (heavy imports happen here, not at import time)."""
    if config.engine == "hf":
        from kia.engines.hf import HFEngine

        return HFEngine.load(config)
    if config.engine == "vllm":
        from kia.engines.vllm import VLLMEngine

        return VLLMEngine.load(config)
    raise ConfigError("the scripted engine is for tests: build it with ScriptedEngine(...)")


def default_model() -> str:
    """The embedded toy model, so every command works with no download."""
    return str(Path(__file__).resolve().parents[2] / "datasets" / "toyworld" / "model")
