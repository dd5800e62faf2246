"""Update study: three updates in a row on the toy world, three ways to make each.

Update 1 is the same for every strategy: 40 Unknown facts (+ 1 HighlyKnown fact and 1 paraphrase
each, as `kia demo` builds them) injected from the base model. Updates 2 and 3 bring 40 new
Unknown facts each, and each strategy makes the update its own way:

- retrain: a new adapter from the base model on all facts so far (the new build replays every
  earlier fact with its trained rows: `kia build --replay PREV`, `kia inject` without
  --from-adapter);
- continue: the production adapter trained further on the new facts only (`kia build --after PREV`,
  `kia inject --from-adapter PREV_ADAPTER`);
- replay: the production adapter trained further on the new facts plus `--replay-facts` (20) of
  the earlier ones (`kia build --replay PREV:20`, `kia inject --from-adapter PREV_ADAPTER`).

Every adapter after update 1 is audited with `kia audit NEW --against PREV` (its own strategy's
previous adapter), with the default policy and the toy lm-eval tasks. Per update and strategy:
reliability on the new facts, retention of every earlier batch (share of the batch's facts the
adapter answers, right with at least half the exemplar sets), the negative shift of held-out
known facts against the base model and against production, benchmark drift against the base
model, the update's verdict, and wall time (build + inject; the audit apart). The new facts of
update k and the held-out facts are the same for the three strategies (checked).

    python bench/bench_updates.py                          # probes 480 toy facts first
    python bench/bench_updates.py --probe runs/demo/probe  # reuse `kia demo`'s probe run
    python bench/bench_updates.py --greedy-only --heldout 100  # the cheaper probe, fewer held-out facts

Writes bench/results/updates.json and prints the table the README shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, write_result  # noqa: E402

STRATEGIES = ("retrain", "continue", "replay")
BUILD = {"unknown": 40, "highly_known": 1, "paraphrases": 1, "heldout": 150}
# the demo's adapter: the paper preset, 4-bit base, lr 3e-3, 10 epochs, batch 8
INJECT = {"preset": "paper", "quant": "nf4", "lr": 3e-3, "epochs": 10, "batch_size": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", default=None, help="an existing probe run of the toy world (default: probe one)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-updates"), help="folder for every stage")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--replay-facts", type=int, default=20, help="earlier facts replayed per update (replay)")
    parser.add_argument("--heldout", type=int, default=BUILD["heldout"], help="held-out facts per build")
    parser.add_argument("--greedy-only", action="store_true", help="probe the paper's cheaper way (greedy only)")
    parser.add_argument("-o", "--output", default=str(ROOT / "bench" / "results" / "updates.json"))
    args = parser.parse_args()

    from kia.artifacts import read_json, read_jsonl
    from kia.audit import AuditConfig, audit
    from kia.build import BuildConfig, build
    from kia.demo import sample_world
    from kia.engines import default_model
    from kia.inject import InjectConfig, inject
    from kia.probe import ProbeConfig, probe

    BUILD["heldout"] = args.heldout
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.probe is None:
        facts = sample_world(work, 60, 0)
        probe(ProbeConfig(facts=str(facts), model=default_model(), output=str(work / "probe"), batch_size=256,
                          greedy_only=args.greedy_only, overwrite=True))  # fmt: skip
        probe_dir = work / "probe"
        probe_seconds = round(time.perf_counter() - t0, 1)
    else:  # a reused probe run: the time its own manifest recorded
        probe_dir = Path(args.probe)
        probe_seconds = read_json(probe_dir / "manifest.json").get("wall_seconds")

    def make(name: str, after: tuple[str, ...] = (), replay: tuple[str, ...] = (), parent: Path | None = None):
        """Build and inject one update; (adapter folder, build folder, seconds)."""
        start = time.perf_counter()
        b = work / name / "build"
        build(BuildConfig(probe=str(probe_dir), output=str(b), after=after, replay=replay, overwrite=True, **BUILD))
        a = work / name / "adapter"
        inject(InjectConfig(build=str(b), output=str(a), from_adapter=str(parent) if parent else None,
                            overwrite=True, **INJECT))  # fmt: skip
        return a, b, round(time.perf_counter() - start, 1)

    def measure(adapter: Path, against: Path | None, out: Path, batches: list[set[str]]) -> dict:
        result = audit(AuditConfig(adapter=str(adapter), against=str(against) if against else None, output=str(out),
                                   overwrite=True))  # fmt: skip
        a = read_json(out / "audit.json")
        rows = read_jsonl(out / "per_fact.jsonl")
        p = {r["id"]: r["adapted_p_greedy"] for r in rows if r["split"] in ("injected", "retention")}
        m, u = a["metrics"], a.get("update")
        return {
            "reliability_new": m["reliability"]["adapted"],
            "retention": [sum(p[i] >= 0.5 for i in batch) / len(batch) for batch in batches],
            "negative_shift_vs_base": m["negative_shift"]["adapted"],
            "negative_shift_vs_production": u["metrics"]["negative_shift"]["adapted"] if u else None,
            "retention_loss_vs_production": u["metrics"]["retention_loss"]["adapted"] if u else None,
            "lost_vs_production": len(u["lost"]) if u else None,
            "benchmark_delta_vs_base": {t: b["delta"] for t, b in a["benchmarks"].items()},
            "benchmark_ci_vs_base": {t: [b["ci_low"], b["ci_high"]] for t, b in a["benchmarks"].items()},
            "verdict": result.verdict,
            "reasons": result.reasons,
            "audit_seconds": a["provenance"]["seconds"],
            "heldout_ids": sorted(r["id"] for r in rows if r["split"] == "heldout"),
        }

    runs: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    print("update 1: the same for every strategy", flush=True)
    a1, b1, seconds = make("u1")
    batches = [{r["id"] for r in read_jsonl(b1 / "eval_injected.jsonl")}]
    first = measure(a1, None, work / "u1" / "audit", batches)
    train_rows = len(read_jsonl(b1 / "train.jsonl"))
    for s in STRATEGIES:
        runs[s].append({"update": 1, "seconds": seconds, "train_rows": train_rows, **first})
    prev = {s: (a1, b1) for s in STRATEGIES}
    same: dict[str, bool] = {}  # per update: the strategies saw the same new facts and held-out facts
    for k in range(2, args.updates + 1):
        new: set[str] | None = None
        new_same = True
        for s in STRATEGIES:  # interleaved, so that the machine's load falls on the three alike
            print(f"update {k}: {s}", flush=True)
            pa, pb = prev[s]
            if s == "retrain":
                a, b, seconds = make(f"u{k}-{s}", replay=(str(pb),))
            elif s == "continue":
                a, b, seconds = make(f"u{k}-{s}", after=(str(pb),), parent=pa)
            else:
                a, b, seconds = make(f"u{k}-{s}", replay=(f"{pb}:{args.replay_facts}",), parent=pa)
            injected = {r["id"] for r in read_jsonl(b / "eval_injected.jsonl")}
            new_same &= new is None or injected == new
            new = injected
            row = measure(a, pa, work / f"u{k}-{s}" / "audit", [*batches, injected])
            runs[s].append({"update": k, "seconds": seconds, "train_rows": len(read_jsonl(b / "train.jsonl")), **row})
            prev[s] = (a, b)
        batches.append(new)  # type: ignore[arg-type]
        held = {tuple(runs[s][-1]["heldout_ids"]) for s in STRATEGIES}
        same[f"update {k}"] = new_same and len(held) == 1
    for s in STRATEGIES:
        for row in runs[s]:
            row["heldout_facts"] = len(row.pop("heldout_ids"))
    result = {
        "benchmark": "updates",
        "machine": machine(),
        "settings": {
            "build": BUILD,
            "inject": INJECT,
            "updates": args.updates,
            "replay_facts": args.replay_facts,
            "probe": str(probe_dir),
            "greedy_only_probe": args.greedy_only,
            "probe_seconds": probe_seconds,
        },  # fmt: skip
        "same_facts_across_strategies": same,
        "strategies": runs,
        "table": table(runs),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    write_result(args.output, result)
    print(result["table"])


def table(runs: dict[str, list[dict]]) -> str:
    """The README's table: one row per update and strategy."""
    head = ("| update | strategy | rows | reliability (new) | retention of batches 1, 2, … | negative shift vs base "
            "(vs production) | toy_mc / toy_arith Δ vs base | verdict | build + inject s |")  # fmt: skip
    lines = [head, "| ---: | --- | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for s, rows in runs.items():
        for r in rows:
            if r["update"] == 1 and s != "retrain":
                continue
            ret = ", ".join(f"{x:.2f}" for x in r["retention"][:-1]) or "–"
            vs = f" ({r['negative_shift_vs_production']:.2f})" if r["negative_shift_vs_production"] is not None else ""
            bench = " / ".join(f"{d:+.3f}" for d in r["benchmark_delta_vs_base"].values())
            name = "all (from base)" if r["update"] == 1 else s
            lines.append(
                f"| {r['update']} | {name} | {r['train_rows']} | {r['reliability_new']:.2f} | {ret} | "
                f"{r['negative_shift_vs_base']:.2f}{vs} | {bench} | {r['verdict']} | {r['seconds']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
