"""Shared by the benchmarks: the machine's description and an atomic JSON writer."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, torch threads, GPU if any, library versions."""
    import torch

    from kia.artifacts import versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions(),
    }


def peak_rss_mb() -> float:
    from kia.artifacts import peak_memory_mb

    return peak_memory_mb()


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write `result` atomically and print its comparisons as a short table."""
    import json

    from kia.artifacts import write_json

    write_json(Path(path), result)
    print(json.dumps(result.get("comparisons", {}), indent=2))
    for name, run in result.get("runs", {}).items():
        shown = {k: v for k, v in run.items() if not isinstance(v, (dict, list))}
        print(f"{name:>16}: {shown}")
    print(f"wrote {path}")
