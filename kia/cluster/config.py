"""Where the generation passes run when they leave this process: a Ray cluster, how many engine
replicas, and what each replica holds."""

from __future__ import annotations

from dataclasses import dataclass

from kia.errors import ConfigError

RAY_EXTRA = 'pip install "kia[ray]"'
LOCAL = "local"  # `--ray` without an address: start a Ray instance here (or join RAY_ADDRESS)


@dataclass(frozen=True)
class RayConfig:
    """`address`: "local" (a Ray instance on this machine, or the cluster RAY_ADDRESS names),
    "auto" (the running cluster this machine belongs to) or "ray://head:10001".
    `cpus` / `gpus` per replica; None: every CPU of the machine shared out between the replicas
    when they have no GPU, and one GPU (times the tensor-parallel size) each when the cluster has
    GPUs."""

    address: str = LOCAL
    replicas: int = 1
    cpus: float | None = None
    gpus: float | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"--replicas must be at least 1, got {self.replicas}")
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--replica-{name} must be >= 0, got {value}")
        if self.cpus == 0 and not self.gpus:
            raise ConfigError("a replica needs a CPU or a GPU: --replica-cpus 0 needs --replica-gpus")
