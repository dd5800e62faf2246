"""Scale benchmark: `kia probe` on 1k, 10k and 50k facts; time per fact and peak memory.

The facts come from a toy world generated with another seed (the same relations, templates and
name shapes as the embedded one, so the toy model answers them like its own unknown facts); each
size is a prefix of the largest file. Every size runs as its own `kia probe` process, the way a
user runs it, and its manifest gives wall time and peak resident memory.

Baseline: the same probe with the whole input held in memory (`load_facts`, kia's reader before
it streamed) — its peak memory is measured by loading the file in a process of its own and adding
that to the 1k run, i.e. what the probe would need if it held every fact.

The probe settings are cut down (`--sets 1 --samples 1`): 50k facts at the full 170-generation
protocol would take hours on a CPU, and what is measured here, how time and memory grow with the
number of facts, does not depend on the generations per fact.

    python bench/bench_scale.py                      # writes bench/results/scale.json
    python bench/bench_scale.py --sizes 1000,5000    # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_result  # noqa: E402

HOLD_ALL = """
import sys
from kia.artifacts import peak_memory_mb
from kia.facts import load_facts
before = peak_memory_mb()
facts = load_facts(sys.argv[1]).facts
print(peak_memory_mb() - before)
"""


def write_facts(path: str | Path, n: int | str, seed: int | str) -> None:
    from kia.toyworld.world import WorldConfig, generate_world

    path, n, seed = Path(path), int(n), int(seed)
    world = generate_world(WorldConfig(seed=seed, facts_per_relation=-(-n // 8), mc_train=1, mc_test=1))
    rows = world.facts[:]
    random.Random(seed).shuffle(rows)  # every prefix mixes the relations (prompt lengths differ by relation)
    with path.open("w", encoding="utf-8") as f:
        for row in rows[:n]:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated fact counts")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated world (0 is the embedded one)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workdir", default=None, help="where to write the facts and probe runs (default: a temp dir)")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kia-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    full = work / f"facts-{sizes[-1]}.jsonl"
    # in a child process: the generator holds the whole world, and this process stays small
    code = "import sys; sys.path.insert(0, sys.argv[1]); import bench_scale as b; b.write_facts(*sys.argv[2:])"
    subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "bench"), str(full), str(sizes[-1]), str(args.seed)], check=True
    )
    runs: dict[str, dict] = {}
    for n in sizes:
        facts = work / f"facts-{n}.jsonl"
        if facts != full:
            with full.open(encoding="utf-8") as src, facts.open("w", encoding="utf-8") as dst:
                dst.writelines(line for _, line in zip(range(n), src, strict=False))
        out = work / f"probe-{n}"
        cmd = [sys.executable, "-m", "kia", "probe", str(facts), "-o", str(out), "--overwrite",
               "--sets", "1", "--samples", "1", "--batch-size", str(args.batch_size)]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        manifest = json.loads((out / "manifest.json").read_text())
        held = subprocess.run([sys.executable, "-c", HOLD_ALL, str(facts)], check=True, capture_output=True, text=True)
        runs[str(n)] = {
            "facts": n,
            "seconds": manifest["wall_seconds"],
            "ms_per_fact": round(1000 * manifest["wall_seconds"] / n, 2),
            "peak_rss_mb": round(manifest["peak_memory_mb"], 1),
            "facts_in_memory_mb": round(float(held.stdout.strip()), 1),
            "generations": json.loads((out / "summary.json").read_text())["n_generations"],
        }
        print(f"{n:>7} facts: {runs[str(n)]}", flush=True)
    small, large = runs[str(sizes[0])], runs[str(sizes[-1])]
    # Time per fact between consecutive sizes: the difference leaves the fixed model load out.
    marginal = {
        f"{a}_to_{b}": round(1000 * (runs[str(b)]["seconds"] - runs[str(a)]["seconds"]) / (b - a), 2)
        for a, b in zip(sizes, sizes[1:], strict=False)
    }
    result = {
        "benchmark": "scale",
        "machine": machine(),
        "settings": {"sets": 1, "samples": 1, "batch_size": args.batch_size, "seed": args.seed},
        "runs": runs,
        "comparisons": {
            f"{sizes[-1]}_vs_{sizes[0]}": {
                "peak_rss_growth": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
                "peak_rss_growth_if_held": round(
                    (small["peak_rss_mb"] + large["facts_in_memory_mb"]) / small["peak_rss_mb"], 3
                ),
                "ms_per_fact_ratio": round(large["ms_per_fact"] / small["ms_per_fact"], 3),
                "marginal_ms_per_fact": marginal,
            }
        },
    }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
