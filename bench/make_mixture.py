"""A training mixture larger than the demo's, for `bench_train.py`: fixed costs (imports, the 4-bit
load) weigh less the longer the training, so the wall-time ratio moves towards the training one.

Samples `--unknown-pool` never-shown facts and `--known-pool` often-shown ones from the embedded
toy world (seeded), probes them with kia, and builds U Unknown + U HighlyKnown + U paraphrases:

    python bench/make_mixture.py -o runs/bench-mixture                 # 750 rows, about 5 minutes
    python bench/bench_train.py runs/bench-mixture/build --lr 3e-3 --batch-size 8 -o bench/results/train_large.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="runs/bench-mixture")
    parser.add_argument("--unknown", type=int, default=250, help="Unknown facts to inject (U)")
    parser.add_argument("--unknown-pool", type=int, default=400, help="never-shown facts to probe")
    parser.add_argument("--known-pool", type=int, default=320, help="often-shown facts to probe")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    from kia.build import BuildConfig, build
    from kia.probe import ProbeConfig, probe

    world = ROOT / "datasets" / "toyworld"
    rows = [json.loads(line) for line in (world / "facts.jsonl").read_text().splitlines()]
    rng = random.Random(args.seed)
    picked = rng.sample([r for r in rows if r["exposure"] == 0], args.unknown_pool)
    picked += rng.sample([r for r in rows if r["exposure"] >= 4], args.known_pool)
    rng.shuffle(picked)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    facts = out / "facts.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in picked))
    probed = probe(
        ProbeConfig(
            facts=str(facts), model=str(world / "model"), output=str(out / "probe"), batch_size=256, overwrite=True
        )
    )
    print(f"probed {len(picked)} facts in {probed.seconds:.0f} s")
    result = build(
        BuildConfig(
            probe=str(out / "probe"),
            unknown=args.unknown,
            highly_known=1,
            paraphrases=1,
            heldout=60,
            output=str(out / "build"),
            overwrite=True,
        )
    )
    print(f"wrote {result.output}")


if __name__ == "__main__":
    main()
