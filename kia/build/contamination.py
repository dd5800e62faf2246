"""The build's contamination check: which benchmarks to read, then `kia.contamination`."""

from __future__ import annotations

from typing import Any

from kia.build.config import BuildConfig
from kia.contamination import check_contamination, default_task_files


def build_contamination(
    config: BuildConfig,
    model: str | None,
    train: list[dict[str, Any]],
    heldout: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """contamination.json for a build: its training rows against the benchmark documents (the
    `benchmarks` task files and lm-eval names, or the toy tasks beside a toy-world model) and its
    held-out splits. A benchmark whose documents cannot be read (an lm-eval name whose dataset is
    not reachable, an unknown name) is listed as not checked, with the reason."""
    items = config.benchmarks if config.benchmarks is not None else [str(p) for p in default_task_files(model)]
    items = [i for i in items if i != "none"]
    return check_contamination(train, heldout=heldout, benchmarks=items, n=config.contamination_n)
