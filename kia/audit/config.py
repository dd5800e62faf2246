"""The audit's settings and result: what `kia audit` reads from its flags and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.cluster import RayConfig
from kia.errors import ConfigError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditConfig:
    """None means "take it from the stage manifests" (model, build, probe) or the default."""

    adapter: str
    against: str | None = None  # the production adapter an update (`adapter`) would replace
    model: str | None = None
    build: str | None = None
    probe: str | None = None
    policy: str | None = None  # TOML file; default probes/policy.toml
    benchmarks: tuple[str, ...] | None = None  # names, YAML files or folders; None: default; ("none",): skip
    output: str = "runs/audit"
    engine: str = "hf"
    quant: str = "none"  # "nf4": audit on the 4-bit base the adapter was trained on (QLoRA)
    batch_size: int = 64
    tensor_parallel_size: int = 1  # vllm only
    gpu_memory_utilization: float | None = None  # vllm only
    bench_batch_size: int = 32
    bench_limit: int | None = None  # documents per benchmark task (quick checks only)
    refusal_embeddings: bool = True  # also detect refusals by embedding similarity
    parity_prompts: int = 64  # --engine vllm: prompts re-asked through peft to check the engine (0: skip)
    reuse_probe: bool = True
    n_boot: int = 2000
    seed: int = 0
    allow_pickle: bool = False
    report: bool = True
    # --judge (kia.audit.judging): "facts", an OpenAI-compatible URL, "base", or a model; None: no judging
    judge: str | None = None
    judge_model: str = "default"  # the model name sent to a --judge URL
    judge_key_env: str = "KIA_JUDGE_API_KEY"  # the environment variable holding the URL's key
    judge_prompts: int = 100  # open prompts judged (the first of eval_open.jsonl)
    judge_timeout: float = 60.0  # seconds per request to a --judge URL (2 retries)
    judge_style: bool = False  # also judge style against the training answers (a second pass)
    overwrite: bool = False
    shard_size: int = 256  # facts per chunk of generation work (a Ray unit); results do not depend on Ray
    ray: RayConfig | None = None  # where the arms are generated; None: in this process

    def __post_init__(self) -> None:
        if self.engine not in ("hf", "vllm"):
            raise ConfigError(f"unknown --engine '{self.engine}'; choose hf or vllm")
        if self.quant not in ("none", "nf4"):
            raise ConfigError(f"unknown --quant '{self.quant}'; choose none or nf4")
        for name in ("batch_size", "bench_batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bench_limit is not None and self.bench_limit < 1:
            raise ConfigError(f"--bench-limit must be at least 1, got {self.bench_limit}")
        if self.judge_prompts < 1 or self.judge_timeout <= 0:
            raise ConfigError("--judge-prompts must be at least 1 and --judge-timeout above 0")
        if self.judge_style and not self.judge:
            raise ConfigError("--judge-style needs a judge: pass --judge URL|base|MODEL as well")
        if self.parity_prompts < 0:
            raise ConfigError(f"--parity-prompts must be 0 or more, got {self.parity_prompts}")
        if self.against is not None and Path(self.against).resolve() == Path(self.adapter).resolve():
            raise ConfigError(f"--against {self.against} is the adapter audited itself; name the production adapter")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot must be at least 100 for a usable interval, got {self.n_boot}")


@dataclass(frozen=True)
class AuditResult:
    output: Path
    verdict: str
    reasons: list[str]
    metrics: dict[str, dict[str, Any]]
    report: Path | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # an update's audit: audit.json's `update` section (candidate vs production, the lost facts)
    update: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "PASS" else 1
