"""`kia sweep`: how many facts fit in this adapter before it harms the model?

    kia sweep runs/p1 --unknown 10,30,100 --recipe "K=0,P=0" --recipe "K=1,P=0" --seeds 0,1 -o runs/sweep

Runs the paper's grid (Pletenev et al. 2025: N Unknown facts; K HighlyKnown facts and P
paraphrases per fact; seeds) as build -> inject -> audit points that share what repeats:
- one probe run, and one held-out set drawn from it before the grid (`kia.sweep.grid`);
- one process, so the libraries load once; one loaded base model for every audit, each point's
  adapter attached and taken off (`kia.sweep.shared.AuditEngine`; training loads its 4-bit base
  per point, as `kia inject` does, so that a point trains exactly as the command would);
- the audits' base arm: greedy adapter-off calls made before are answered from a cache, and the
  benchmarks' base arm runs once (`kia.sweep.shared`).
Each point is a folder points/<name>/ with build/, adapter/, audit/ and its own manifest.json,
written last: a killed sweep reruns and skips the finished points (and resumes a killed training
from its last epoch checkpoint). At the end: sweep.parquet and sweep.json (one row per point),
capacity.html (the curves and the recommendation) and manifest.json, last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kia.errors import ArtifactError, ConfigError
from kia.sweep.config import Point, SweepConfig, SweepResult
from kia.sweep.findings import findings
from kia.sweep.grid import HELDOUT_FILE, check_grid, heldout_set, pools
from kia.sweep.shared import AuditEngine, ScoreStore
from kia.sweep.table import benchmark_tasks, point_row, recommend, write_parquet

Progress = Callable[[str], None]
RUN_FILE = "run.json"  # what a rerun must match to resume this folder
OUTPUTS = ("points", "shared", HELDOUT_FILE, RUN_FILE, "sweep.parquet", "sweep.json", "capacity.html")


def sweep(config: SweepConfig, progress: Progress | None = None) -> SweepResult:
    """Run (or resume) every point of the grid and write the sweep's table, page and manifest.

    Raises ConfigError before any work when a point needs more facts than the probe has outside
    the held-out set, ArtifactError when the folder holds a sweep made with other settings."""
    from kia.artifacts import MANIFEST, FolderLock, read_json, read_manifest, write_json, write_manifest
    from kia.audit import load_policy

    start = time.time()
    say = progress or (lambda _msg: None)
    probe_manifest = read_manifest(config.probe, "probe")
    model_id = str((probe_manifest.get("model") or {}).get("id") or "")
    if not model_id:
        raise ArtifactError(f"{config.probe}/manifest.json names no model")
    policy = load_policy(config.policy)  # a bad policy fails before any work
    out = Path(config.output)
    if out.resolve() == Path(config.probe).resolve():
        raise ConfigError(f"-o {config.output} is the probe folder itself; choose another output folder")
    heldout = heldout_set(config, out)
    left = pools(config, heldout["ids"])
    unfit = check_grid(config, left, len(heldout["ids"]))  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        identity = {**config.identity(), "model": model_id, "probe_sha256": heldout["probe_sha256"]}
        if config.overwrite:
            _clear(out)
        elif (out / RUN_FILE).exists():
            before = read_json(out / RUN_FILE)
            changed = sorted(k for k in identity if before.get(k) != identity[k])
            if changed:
                raise ArtifactError(
                    f"{out}: holds a sweep made with other settings ({', '.join(changed)}); pass --overwrite "
                    "to start over or choose another -o"
                )
        (out / MANIFEST).unlink(missing_ok=True)  # the table is rewritten at the end
        heldout_path = out / HELDOUT_FILE
        if not heldout_path.exists() or read_json(heldout_path) != heldout:
            write_json(heldout_path, heldout)
        write_json(out / RUN_FILE, identity)
        out_of_reach = {(u["n"], u["recipe"]) for u in unfit}
        points = [p for p in config.points() if (p.n, p.recipe.label) not in out_of_reach]
        say(
            f"sweep of {len(points)} points ({len(config.unknown)} N x {len(config.recipes)} recipes x "
            f"{len(config.seeds)} seeds) on {model_id}; {len(heldout['ids'])} held-out facts shared by every point"
        )
        for u in unfit:
            say(f"not run (--skip-unfit): N={u['n']} {u['recipe']} x {len(config.seeds)} seed(s): {u['reason']}")
        shared = _Shared(config, model_id, out / "shared")
        rows, skipped = [], 0
        for i, point in enumerate(points, 1):
            folder = out / "points" / point.name
            if (folder / MANIFEST).exists():
                # re-read from the point's folders, so the table always has this version's columns
                row = point_row(point, folder, read_manifest(folder, "sweep-point")["row"]["seconds"])
                skipped += 1
                say(f"[{i}/{len(points)}] {_describe(point)}: {row['verdict']} (finished earlier) {_summary(row)}")
            else:
                t = time.time()
                _run_point(config, point, folder, heldout_path, shared, say)
                row = point_row(point, folder, time.time() - t)
                write_manifest(folder, stage="sweep-point", config=asdict(point), row=row, model=model_id)
                say(
                    f"[{i}/{len(points)}] {_describe(point)}: {row['verdict']} {_summary(row)} ({row['seconds']:.0f} s)"
                )
            rows.append(row)
        recommendation = recommend(rows, config.recipes, config.unknown, unfit)
        found = findings(rows)
        seconds = round(time.time() - start, 2)
        counts = {c: 0 for c in ("Unknown", "MaybeKnown", "HighlyKnown")}
        counts.update(_heldout_counts(config, heldout["ids"]))
        result = {
            "model": model_id,
            "probe": str(config.probe),
            "grid": {
                "unknown": sorted(config.unknown),
                "recipes": [r.label for r in config.recipes],
                "seeds": list(config.seeds),
            },  # fmt: skip
            "heldout": {
                "n": len(heldout["ids"]),
                "seed": config.heldout_seed,
                "categories": counts,
                "training_pools": left,
            },  # fmt: skip
            "policy": policy.thresholds(),
            "benchmarks": benchmark_tasks(rows),
            "rows": rows,
            "unfit": unfit,
            "recommendation": recommendation,
            "findings": found,
            "shared": shared.stats(),
            "config": asdict(config),
            "seconds": seconds,
            "skipped": skipped,
        }
        write_parquet(out / "sweep.parquet", rows)
        write_json(out / "sweep.json", result)
        page = _page(out)
        write_manifest(
            out,
            stage="sweep",
            config=config,
            model=model_id,
            points=len(points),
            skipped=skipped,
            recommendation=recommendation["text"],
            outputs=["sweep.parquet", "sweep.json"] + (["capacity.html"] if page else []),
            shared=shared.stats(),
            wall_seconds=seconds,
            peak_memory_mb=_peak(),
        )
        shared.close()
    return SweepResult(out, rows, recommendation, found, page, seconds, skipped)


class _Shared:
    """The one audit engine and the base-arm stores, made when the first audit needs them."""

    def __init__(self, config: SweepConfig, model_id: str, folder: Path):
        self.config, self.model_id, self.folder = config, model_id, folder
        self.engine: AuditEngine | None = None
        self.scores = ScoreStore(folder / "benchmarks")
        (folder / "benchmarks").mkdir(parents=True, exist_ok=True)
        (folder / "base_arm").mkdir(parents=True, exist_ok=True)
        self.loads = 0

    def audit_engine(self) -> AuditEngine:
        if self.engine is None:
            c = self.config
            self.engine = AuditEngine(self.model_id, c.audit_quant, c.audit_batch_size, self.folder / "base_arm")
            self.loads += 1
        return self.engine

    def stats(self) -> dict[str, Any]:
        cache = self.engine.cached if self.engine else None
        return {
            "audit_model_loads": self.loads,
            "base_arm_prompts_from_cache": cache.hits if cache else 0,
            "base_arm_prompts_generated": cache.misses if cache else 0,
            "base_benchmark_reused": self.scores.reused,
        }

    def close(self) -> None:
        if self.engine is not None:
            self.engine.engine.close()
            self.engine = None


def _run_point(config: SweepConfig, point: Point, folder: Path, heldout: Path, shared: _Shared, say: Progress) -> None:
    from kia.artifacts import MANIFEST
    from kia.audit import AuditConfig, audit
    from kia.build import BuildConfig, build
    from kia.inject import InjectConfig, inject

    r = point.recipe
    if not (folder / "build" / MANIFEST).exists():
        build(BuildConfig(probe=config.probe, output=str(folder / "build"), unknown=point.n, highly_known=r.highly_known,
                          paraphrases=r.paraphrases, maybe_known=r.maybe_known, stratify=config.stratify,
                          seed=point.seed, heldout_ids=str(heldout)))  # fmt: skip
    adapter = folder / "adapter"
    if not (adapter / MANIFEST).exists():
        resume = _resumable(adapter)
        inject(InjectConfig(build=str(folder / "build"), output=str(adapter), preset=config.preset, quant=config.quant,
                            lr=config.lr, epochs=config.epochs, min_steps=config.min_steps,
                            stop_at_reliability=config.stop_at_reliability, batch_size=config.batch_size, rank=config.rank, seed=point.seed, resume=resume,
                            overwrite=not resume))  # fmt: skip
    if not (folder / "audit" / MANIFEST).exists():
        engine = shared.audit_engine()
        ac = AuditConfig(adapter=str(adapter), output=str(folder / "audit"), policy=config.policy,
                         benchmarks=config.benchmarks, bench_limit=config.bench_limit, quant=config.audit_quant,
                         batch_size=config.audit_batch_size, n_boot=config.n_boot, report=config.report)  # fmt: skip
        with engine.attached(adapter) as e:
            audit(ac, engine=e, base_benchmarks=shared.scores)


def _resumable(adapter: Path) -> bool:
    """Whether a killed training left a complete epoch checkpoint to resume from."""
    import json

    for state in (adapter / "checkpoints").glob("checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text(encoding="utf-8"))
            return True
        except (OSError, ValueError):
            continue
    return False


def _clear(out: Path) -> None:
    """--overwrite: remove what an earlier sweep wrote here (its own names only)."""
    from kia.artifacts import MANIFEST

    for name in (*OUTPUTS, MANIFEST):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _heldout_counts(config: SweepConfig, ids: list[str]) -> dict[str, int]:
    from collections import Counter

    from kia.probe import read_probe

    held = set(ids)
    table = read_probe(config.probe).select(["id", "category"])
    return dict(Counter(r["category"] for r in table.iter_rows(named=True) if r["id"] in held))


def _describe(point: Point) -> str:
    return f"N={point.n} {point.recipe.label} seed {point.seed}"


def _summary(row: dict[str, Any]) -> str:
    def f(key: str) -> str:
        v = row.get(key)
        return "-" if v is None else f"{v:.2f}"

    text = (
        f"reliability {f('reliability')}, shift +{f('positive_shift')}/-{f('negative_shift')}, refusals "
        f"{f('refusal_rate_base')}->{f('refusal_rate')}, exploded {row.get('exploded_answers') or 0:.0f}, "
        f"{row.get('epochs')} epochs / {row.get('steps')} steps"
    )
    if row.get("failed_rules"):
        text += f"; fails {', '.join(row['failed_rules'])}"
    return text


def _page(out: Path) -> Path | None:
    from kia.sweep.page import render_capacity

    return render_capacity(out)


def _peak() -> float:
    from kia.artifacts import peak_memory_mb

    return peak_memory_mb()
