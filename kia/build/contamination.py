"""The build's contamination check: which task files to read, then `kia.contamination`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kia.build.config import BuildConfig
from kia.contamination import check_contamination, default_task_files


def build_contamination(
    config: BuildConfig, model: str | None, train: list[dict[str, Any]], heldout: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """contamination.json for a build: its training rows against the benchmark documents (the
    `benchmarks` task files, or the toy tasks beside a toy-world model) and its held-out splits.
    A benchmark that is not a local file (an lm-eval name) is listed as not checked."""
    items = config.benchmarks if config.benchmarks is not None else [str(p) for p in default_task_files(model)]
    items = [i for i in items if i != "none"]
    files = [i for i in items if Path(i).is_file()]
    unchecked = [i for i in items if not Path(i).is_file()]
    return check_contamination(train, heldout=heldout, task_files=files, unchecked=unchecked, n=config.contamination_n)
