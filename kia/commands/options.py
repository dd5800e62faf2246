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
