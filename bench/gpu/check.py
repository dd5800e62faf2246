"""The GPU check: kia's CUDA path on an offline GPU machine, step by step, each within a time limit.

    bash bench/gpu/prepare.sh                                  # first, on a machine with network
    python bench/gpu/check.py --dry-run                        # the plan; needs no GPU
    python bench/gpu/check.py --out $OUT --budget 540          # on the GPU machine (bench/README.md)

Steps (`--steps`, in this order; each runs in fresh processes under its own time limit, and a step
that no longer fits the `--budget` left is skipped and says so):
- `env`: GPU, CUDA, library versions, and which of the needed packages import;
- `toy`: the toy pipeline on CUDA, against `kia demo`'s CPU run from prepare.sh: probe the same
  facts (label agreement with the CPU probe), inject 4-bit (nf4, bf16, paged 8-bit AdamW,
  padding-free batches: kia's GPU defaults, read back from the manifest) on the CPU run's build,
  audit with lm-eval on the toy tasks (`--no-refusal-embeddings`: the target lacks that model);
- `probe_bench`: `bench/bench_probe.py` (kia against the paper's probing loop) on the GPU;
- `train_1b`, `train_8b`: a Llama-3.2-1B / Llama-3.1-8B shaped model with random weights built from
  its config (`make_model.py`), then `kia inject` and TRL's SFTTrainer on it (`train_side.py`),
  training tokens per second and peak GPU memory for each.

Writes `gpu.json` (every step's figures, rewritten after each step) and `logs.tar.gz` (every
command's output) under `--out`: two files, whatever the number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
NEEDED = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "polars", "datasets", "trl", "lm_eval"]
# seconds per step (the 8B model: about 16 GB to write at bf16, then two 4-bit loads and trainings)
LIMITS = {"env": 60, "toy": 240, "probe_bench": 150, "train_1b": 240, "train_8b": 420}


def kia(*args: str) -> list[str]:
    return [PY, "-m", "kia", *args]


def plan(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """Every step's commands, named; nothing runs here (`--dry-run` prints this)."""
    cpu, toy = args.prepared / "cpu", str(ROOT / "datasets" / "toyworld" / "model")
    steps: dict[str, list[tuple[str, list[str]]]] = {"env": []}
    steps["toy"] = [
        ("probe", kia("probe", str(cpu / "facts.jsonl"), "-o", str(work / "probe"), "--batch-size", "256",
                      "--json", "--overwrite")),
        ("inject", kia("inject", str(cpu / "build"), "-o", str(work / "adapter"), "--model", toy, "--preset", "paper",
                       "--quant", "nf4", "--lr", "3e-3", "--epochs", "10", "--batch-size", "8", "--json",
                       "--overwrite")),
        ("audit", kia("audit", str(work / "adapter"), "-o", str(work / "audit"), "--model", toy, "--no-refusal-embeddings",
                      "--no-reuse-probe", "--json", "--overwrite")),
    ]  # fmt: skip
    steps["probe_bench"] = [
        ("bench_probe", [PY, str(ROOT / "bench" / "bench_probe.py"), "--facts", str(args.probe_facts),
                         "-o", str(work / "probe_bench.json")]),
    ]  # fmt: skip
    for shape in ("1b", "8b"):
        model = work / "models" / shape
        steps[f"train_{shape}"] = [
            ("make_model", [PY, str(HERE / "make_model.py"), shape, str(model)]),
            *[
                (side, [PY, str(HERE / "train_side.py"), side, str(cpu / "build"), str(model),
                        str(work / f"{side}-{shape}"), "--preset", "qlora", "--epochs", str(args.epochs)])
                for side in ("kia", "trl")
            ],
        ]  # fmt: skip
    return steps


def env_step() -> dict[str, Any]:
    import importlib
    import platform

    out: dict[str, Any] = {"python": platform.python_version(), "imports": {}}
    for name in NEEDED:
        try:
            mod = importlib.import_module(name)
            out["imports"][name] = getattr(mod, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - a report of what is missing, not an error
            out["imports"][name] = f"missing: {type(exc).__name__}: {str(exc)[:200]}"
    import torch

    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if out["gpu"]:
        out["gpu_memory_mb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**20)
        out["bf16"] = torch.cuda.is_bf16_supported()
    return out


def last_json(text: str) -> Any:
    """The last line of `text` that parses as JSON (the commands print one), else None."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def toy_figures(args: argparse.Namespace, work: Path, outs: dict[str, Any]) -> dict[str, Any]:
    """Label agreement of the CUDA probe with the CPU one, and the CUDA run's manifests' key fields."""
    import polars as pl

    from kia.artifacts import read_json

    cpu = args.prepared / "cpu"
    got: dict[str, Any] = {}
    if (work / "probe" / "facts.parquet").exists():
        a = pl.read_parquet(work / "probe" / "facts.parquet").select("id", "category")
        b = pl.read_parquet(cpu / "probe" / "facts.parquet").select("id", "category")
        both = a.join(b, on="id", suffix="_cpu")
        got["probe_label_agreement"] = {
            "facts": both.height,
            "same": int((both["category"] == both["category_cpu"]).sum()),
            "counts_cuda": outs.get("probe", {}).get("counts"),
        }
    if (work / "adapter" / "manifest.json").exists():
        m = read_json(work / "adapter" / "manifest.json")
        keys = ("device", "optimizer", "padding_free", "precision", "tokens_per_second", "train_seconds",
                "peak_memory_mb", "base_reliability", "reliability")  # fmt: skip
        got["inject"] = {k: m.get(k) for k in keys}
        got["inject"]["cpu_reliability"] = read_json(cpu / "adapter" / "manifest.json").get("reliability")
    if (work / "audit" / "audit.json").exists():
        a, c = read_json(work / "audit" / "audit.json"), read_json(cpu / "audit" / "audit.json")
        got["audit"] = {"verdict": a.get("verdict"), "verdict_cpu": c.get("verdict"),
                        "benchmarks": a.get("benchmarks"), "benchmarks_cpu": c.get("benchmarks")}  # fmt: skip
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results" / "gpu"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/kia-gpu"), help="models, runs and logs")
    parser.add_argument("--prepared", type=Path, default=HERE / "prepared", help="prepare.sh's output")
    parser.add_argument("--steps", default=",".join(LIMITS), help=f"comma-separated, of: {', '.join(LIMITS)}")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all the steps together")
    parser.add_argument("--probe-facts", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the real-size models")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    args = parser.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := [s for s in steps if s not in LIMITS]:
        parser.error(f"unknown steps: {', '.join(unknown)}; choose from {', '.join(LIMITS)}")
    commands = plan(args, args.work)
    if args.dry_run:
        shown = {s: {"limit_s": LIMITS[s], "commands": [" ".join(c) for _, c in commands[s]]} for s in steps}
        print(json.dumps(shown, indent=1))
        return
    if not (args.prepared / "cpu" / "build").exists() and {"toy", "train_1b", "train_8b"} & set(steps):
        raise SystemExit(f"{args.prepared}/cpu is missing: run bench/gpu/prepare.sh first (bench/README.md)")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}
    t0 = time.time()
    for step in steps:
        left = args.budget - (time.time() - t0)
        if left < LIMITS[step] * 0.5:
            report["steps"][step] = {"status": f"skipped: {left:.0f} s left of the budget, limit {LIMITS[step]} s"}
            continue
        limit, start = min(LIMITS[step], left), time.time()
        entry: dict[str, Any] = {"status": "ok", "outputs": {}}
        if step == "env":
            entry["outputs"] = env_step()
        for name, cmd in commands[step]:
            remaining = limit - (time.time() - start)
            log = logs / f"{step}-{name}.log"
            try:
                with log.open("w") as fh:
                    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=fh, text=True,
                                          timeout=max(remaining, 1))  # fmt: skip
                fh_text = done.stdout
                log.with_suffix(".out").write_text(fh_text)
                entry["outputs"][name] = last_json(fh_text)
                if done.returncode not in (0, 1):  # 1: an audit's FAIL verdict, not an error
                    entry["status"] = f"{name} exited {done.returncode}"
                    break
            except subprocess.TimeoutExpired:
                entry["status"] = f"{name} passed the step's {limit:.0f} s"
                break
        if step == "toy":
            try:
                entry["figures"] = toy_figures(args, args.work, entry["outputs"])
            except Exception as exc:  # noqa: BLE001 - keep the other steps' figures
                entry["figures"] = f"failed: {type(exc).__name__}: {exc}"
        if step == "probe_bench" and (args.work / "probe_bench.json").exists():
            entry["outputs"]["bench_probe"] = json.loads((args.work / "probe_bench.json").read_text())
        entry["seconds"] = round(time.time() - start, 1)
        report["steps"][step] = entry
        report["seconds"] = round(time.time() - t0, 1)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
        with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(logs, arcname="logs")
        print(f"{step}: {entry['status']} ({entry['seconds']} s)", flush=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'gpu.json'}")


if __name__ == "__main__":
    main()
