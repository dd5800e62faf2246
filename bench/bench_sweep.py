"""Sweep benchmark: `kia sweep` against the same points run as separate commands.

Baseline (what a user does by hand): for every point of the grid, `kia build` (with the sweep's
held-out set, `--heldout-ids`), `kia inject` and `kia audit`, one process each, with the same
settings as the sweep's defaults. kia: one `kia sweep` process for the whole grid, sharing the
libraries' import, the audit's loaded base model, the base arm's greedy answers and the base
benchmark scores. Both sides run in one invocation, alternating (ABBA over `--repeats`), so that
a change in the machine's load hits both.

Both must agree: per point, the same adapter weights and the same audit.json figures (metrics,
benchmarks, verdict). The figures go to bench/results/sweep.json.

    python bench/bench_sweep.py runs/toy-probe --unknown 10,30 --recipe K=0,P=0 --recipe K=1,P=0
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_result  # noqa: E402

KIA = [sys.executable, "-m", "kia"]
COMPARED = ("verdict", "reasons", "metrics", "benchmarks", "shift", "collapse", "refusals", "sanity")


def run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def run_sweep(probe: str, args: argparse.Namespace, out: Path) -> float:
    cmd = [*KIA, "sweep", probe, "--unknown", args.unknown, "--seeds", args.seeds, "-o", str(out),
           "--heldout", str(args.heldout), *_limit(args), *_steps(args)]  # fmt: skip
    for r in args.recipe:
        cmd += ["--recipe", r]
    t = time.perf_counter()
    run(cmd)
    return time.perf_counter() - t


def _limit(args: argparse.Namespace) -> list[str]:
    return ["--bench-limit", str(args.bench_limit)] if args.bench_limit else []


def _steps(args: argparse.Namespace) -> list[str]:
    return ["--min-steps", str(args.min_steps)] if args.min_steps is not None else []


def run_separately(
    probe: str, points: list, heldout: Path, out: Path, args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    per_point = {}
    t = time.perf_counter()
    for p in points:
        folder = out / p.name
        start = time.perf_counter()
        run([*KIA, "build", probe, "--unknown", str(p.n), "--highly-known", str(p.recipe.highly_known),
             "--paraphrases", str(p.recipe.paraphrases), "--maybe-known", str(p.recipe.maybe_known),
             "--seed", str(p.seed), "--heldout-ids", str(heldout), "-o", str(folder / "build")])  # fmt: skip
        run(
            [*KIA, "inject", str(folder / "build"), "--seed", str(p.seed), "-o", str(folder / "adapter"), *_steps(args)]
        )
        audit = [*KIA, "audit", str(folder / "adapter"), "-o", str(folder / "audit"), *_limit(args)]
        run(audit, ok=(0, 1))  # PASS or FAIL
        per_point[p.name] = round(time.perf_counter() - start, 2)
    return time.perf_counter() - t, per_point


def compare(sweep_dir: Path, separate: Path, points: list) -> list[str]:
    """Every difference between the sweep's points and the separate commands' (empty: identical)."""
    from kia.artifacts import read_json, sha256_file

    diffs = []
    for p in points:
        a, b = sweep_dir / "points" / p.name, separate / p.name
        for name in ("train.jsonl", "eval_heldout.jsonl", "eval_injected.jsonl", "eval_paraphrase.jsonl"):
            if sha256_file(a / "build" / name) != sha256_file(b / "build" / name):
                diffs.append(f"{p.name}: build/{name}")
        if sha256_file(a / "adapter" / "adapter_model.safetensors") != sha256_file(
            b / "adapter" / "adapter_model.safetensors"
        ):
            diffs.append(f"{p.name}: adapter weights")
        ja, jb = read_json(a / "audit" / "audit.json"), read_json(b / "audit" / "audit.json")
        diffs += [f"{p.name}: audit.json {k}" for k in COMPARED if ja.get(k) != jb.get(k)]
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", help="a `kia probe` folder")
    parser.add_argument("--unknown", default="10,30")
    parser.add_argument("--recipe", action="append", default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--heldout", type=int, default=300, help="the shared held-out set's size (both sides)")
    parser.add_argument("--bench-limit", type=int, default=None, help="documents per benchmark task (both sides)")
    parser.add_argument("--min-steps", type=int, default=None, help="training's step budget (both sides)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the order alternates (ABBA)")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "sweep.json"))
    args = parser.parse_args()
    args.recipe = args.recipe or ["K=0,P=0", "K=1,P=0"]

    from kia.artifacts import read_json, write_json
    from kia.build import draw_heldout
    from kia.sweep import Recipe, SweepConfig, parse_ints

    config = SweepConfig(probe=args.probe, unknown=parse_ints(args.unknown, "--unknown", least=1),
                         recipes=tuple(Recipe.parse(r) for r in args.recipe), seeds=parse_ints(args.seeds, "--seeds"),
                         heldout=args.heldout)  # fmt: skip
    points = config.points()
    rounds, diffs = [], []
    with tempfile.TemporaryDirectory(prefix="kia-bench-sweep-") as tmp:
        heldout = Path(tmp) / "heldout.json"
        write_json(heldout, {"ids": draw_heldout(args.probe, config.heldout, config.heldout_seed, config.stratify)})
        for i in range(args.repeats):
            sweep_dir, separate = Path(tmp) / f"sweep{i}", Path(tmp) / f"separate{i}"
            order = ("kia", "baseline") if i % 4 in (0, 3) else ("baseline", "kia")
            row: dict = {"order": list(order)}
            for side in order:
                if side == "kia":
                    row["kia_seconds"] = round(run_sweep(args.probe, args, sweep_dir), 2)
                else:
                    seconds, per_point = run_separately(args.probe, points, heldout, separate, args)
                    row["baseline_seconds"], row["baseline_per_point"] = round(seconds, 2), per_point
            sweep = read_json(sweep_dir / "sweep.json")
            assert read_json(sweep_dir / "heldout.json")["ids"] == read_json(heldout)["ids"]
            row["kia_per_point"] = {r["point"]: r["seconds"] for r in sweep["rows"]}
            row["kia_shared"] = sweep["shared"]
            row["speedup"] = round(row["baseline_seconds"] / row["kia_seconds"], 2)
            diffs += [f"round {i}: {d}" for d in compare(sweep_dir, separate, points)]
            rounds.append(row)
            print(f"round {i}: {row}", flush=True)
            table = [{k: r.get(k) for k in ("point", "reliability", "negative_shift", "verdict", "steps")}
                     for r in sweep["rows"]]  # fmt: skip
            # rewritten after every round: a run cut short keeps the rounds it finished
            write_result(args.output, _result(args, len(points), rounds, diffs, table, args.repeats))


def _result(args: argparse.Namespace, n_points: int, rounds: list, diffs: list, table: list, repeats: int) -> dict:
    kia_s = statistics.median(r["kia_seconds"] for r in rounds)
    base_s = statistics.median(r["baseline_seconds"] for r in rounds)
    return {
        "benchmark": "sweep",
        "machine": machine(),
        "probe": args.probe,
        "grid": {"unknown": args.unknown, "recipes": args.recipe, "seeds": args.seeds, "points": n_points},
        "settings": {"heldout": args.heldout, "bench_limit": args.bench_limit, "min_steps": args.min_steps},
        "rounds_done": f"{len(rounds)} of {repeats}",
        "rounds": rounds,
        "identical_metrics_per_point": not diffs,
        "differences": diffs,
        "points": table,
        "comparisons": {
            "sweep_vs_separate_commands": {
                "speedup": round(base_s / kia_s, 2),
                "kia_seconds": kia_s,
                "baseline_seconds": base_s,
            }
        },  # fmt: skip
    }


if __name__ == "__main__":
    main()
