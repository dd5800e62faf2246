"""Options and helpers that several commands share: `--json`, the vLLM engine's settings, a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")(f)


def vllm_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The vLLM engine's own settings, shared by every command that generates."""
    f = click.option(
        "--gpu-memory-utilization",
        type=click.FloatRange(0, 1, min_open=True),
        default=None,
        help="vllm: share of GPU memory (of RAM on the CPU) for weights and KV cache. Default: 0.85 GPU, 0.3 CPU.",
    )(f)
    return click.option(
        "--tensor-parallel-size", default=1, show_default=True, help="vllm: GPUs to shard the model over."
    )(f)


def ray_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--ray [ADDRESS]` and the replicas' resources, shared by every command that generates."""
    f = click.option(
        "--replica-gpus", type=click.FloatRange(0), default=None,
        help="ray: GPUs per replica. Default: 1 (x --tensor-parallel-size) when the cluster has GPUs, else 0.",
    )(f)  # fmt: skip
    f = click.option(
        "--replica-cpus", type=click.FloatRange(0), default=None,
        help="ray: CPUs per replica. Default: 1 with a GPU; without one, the machine's CPUs shared out.",
    )(f)  # fmt: skip
    f = click.option(
        "--replicas", type=click.IntRange(1), default=None, help="ray: engine replicas (one per worker). Default: 1."
    )(f)
    return click.option(
        "--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
        help="Generate on a Ray cluster (Ray Data, one engine replica per worker): alone, a Ray instance "
        "on this machine (or RAY_ADDRESS); or 'auto', 'ray://head:10001'. Needs: pip install \"kia[ray]\".",
    )(f)  # fmt: skip


def ray_config(kw: dict[str, Any]) -> Any:
    """Pop the Ray options out of a command's keyword arguments: a RayConfig, or None without --ray."""
    from kia.cluster import RayConfig
    from kia.errors import ConfigError

    address, replicas = kw.pop("ray_address"), kw.pop("replicas")
    cpus, gpus = kw.pop("replica_cpus"), kw.pop("replica_gpus")
    if address is None:
        if replicas is not None or cpus is not None or gpus is not None:
            raise ConfigError("--replicas, --replica-cpus and --replica-gpus need --ray")
        return None
    return RayConfig(address=address, replicas=replicas or 1, cpus=cpus, gpus=gpus)


def progress_bar(label: str) -> Any:
    """A rich progress bar on stderr; the returned callback takes (done, total)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
        disable=not sys.stderr.isatty() and not os.environ.get("KIA_PROGRESS"),
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update
