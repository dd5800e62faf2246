"""`kia probe --ray`: facts/s on 1 and 2 Ray replicas against one process, same facts and settings.

    python bench/bench_ray.py --facts 64          # writes bench/results/ray.json

Each run is the CLI in a fresh process (a Ray instance started and stopped, replicas loading the
toy model), so the seconds include that start-up; the tables must come out equal. The paper's
21,036 facts on N replicas are extrapolated as 21,036 / (N x the measured per-replica rate): an
estimate that assumes replicas scale linearly, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_result  # noqa: E402

PAPER_FACTS = 21_036  # Pletenev et al. probed 21,036 facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=64, help="toy facts, stratified over the exposure bands")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray.json"))
    args = parser.parse_args()
    import polars as pl

    rows = [json.loads(line) for line in (ROOT / "datasets" / "toyworld" / "facts.jsonl").open(encoding="utf-8")]
    bands = sorted({r["band"] for r in rows})
    rng = random.Random(0)
    per = max(1, args.facts // len(bands))
    picked = [r for e in bands for r in rng.sample([x for x in rows if x["band"] == e], per)]
    with tempfile.TemporaryDirectory() as tmp:
        facts = Path(tmp) / "facts.jsonl"
        facts.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
        runs, tables = {}, {}
        for name, extra in (("one_process", []), ("ray_1", ["--ray", "--replicas", "1"]), ("ray_2", ["--ray", "--replicas", "2"])):  # fmt: skip
            out = Path(tmp) / name
            cmd = [sys.executable, "-m", "kia", "probe", str(facts), "-o", str(out), "--json",
                   "--shard-size", str(args.shard_size), *extra]  # fmt: skip
            start, load = time.time(), os.getloadavg()[0]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            seconds = time.time() - start
            tables[name] = pl.read_parquet(out / "facts.parquet")
            runs[name] = {
                "seconds": round(seconds, 1),
                "facts_per_s": round(len(picked) / seconds, 3),
                "load_average_1min": [round(load, 1), round(os.getloadavg()[0], 1)],  # at start, at end
            }
            print(name, runs[name], flush=True)
    equal = all(t.equals(tables["one_process"]) for t in tables.values())
    per_replica = runs["ray_1"]["facts_per_s"]  # one replica's rate, its start-up included
    result = {
        "n_facts": len(picked),
        "shard_size": args.shard_size,
        "runs": runs,
        "tables_equal": equal,
        "speedup_2_vs_1_replica": round(runs["ray_2"]["facts_per_s"] / runs["ray_1"]["facts_per_s"], 2),
        "per_replica_facts_per_s": per_replica,
        "extrapolated_paper_21036_facts_hours_on_n_replicas": {
            n: round(PAPER_FACTS / (n * per_replica) / 3600, 2) for n in (1, 2, 8, 32)
        },
        "machine": machine(),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
