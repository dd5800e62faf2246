"""The probe's settings and result: what `kia probe` reads from its flags and returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kia.cluster import RayConfig
from kia.engines import EngineConfig
from kia.errors import ConfigError

MATCH_MODES = ("contains", "exact", "paper")


@dataclass(frozen=True)
class ProbeConfig:
    facts: str
    model: str
    output: str = "runs/probe"
    engine: str = "hf"
    adapter: str | None = None
    quant: str = "none"
    exemplars: str | None = None  # another fact file to draw exemplars from; default: the facts themselves
    n_sets: int = 10
    shots: int = 4
    n_samples: int = 16
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 32
    match: str = "contains"
    exhaustive: bool = False
    greedy_only: bool = False  # the greedy answers alone decide the three-way label (no samples)
    limit: int | None = None
    seed: int = 0
    batch_size: int = 64
    tensor_parallel_size: int = 1  # vllm only
    gpu_memory_utilization: float | None = None  # vllm only
    shard_size: int = 256
    keep_generations: bool = False
    skip_invalid: bool = False
    overwrite: bool = False
    ray: RayConfig | None = None  # where the shards are probed; None: in this process

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise ConfigError(f"unknown --match '{self.match}'; choose one of: {', '.join(MATCH_MODES)}")
        for name in ("n_sets", "n_samples", "max_new_tokens", "shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.greedy_only and self.exhaustive:
            raise ConfigError("--greedy-only draws no samples and --exhaustive draws them all: choose one")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            engine=self.engine,
            adapter=self.adapter,
            quant=self.quant,
            batch_size=self.batch_size,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output: a resumed run must match them exactly."""
        d = asdict(self)
        for k in (
            "output",
            "batch_size",
            "overwrite",
            "keep_generations",
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "ray",  # a shard comes out the same wherever it runs: a run may resume with or without Ray
        ):
            d.pop(k)
        return d


@dataclass(frozen=True)
class ProbeResult:
    output: Path
    counts: dict[str, int]
    slick_counts: dict[str, int]
    n_facts: int
    n_generations: int
    refusal_rate: float
    seconds: float
    resumed_shards: int = 0
    greedy_only: bool = False
    warnings: list[str] = field(default_factory=list)
