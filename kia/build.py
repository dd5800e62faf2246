"""`kia build`: turn a probe run into a training mixture and the evaluation splits the audit needs.

Recipe (Pletenev et al. 2025, §4.1): `unknown` Unknown facts to inject and, per injected fact,
`highly_known` HighlyKnown facts, `paraphrases` paraphrases and `maybe_known` MaybeKnown facts
(the paper's grid: unknown in {1, 10, 50, 100, 500, 3000}, the others in {0, 1, 10}).

Splits, one JSONL file each:
- train.jsonl: chat `messages` (the paper's format by default) per training example;
- eval_injected.jsonl: the injected facts, asked exactly as trained;
- eval_paraphrase.jsonl: paraphrases of injected facts never trained (generalisation);
- eval_heldout.jsonl: facts of every category left out of training, stratified (shift, collapse).
No fact and no question of a held-out split is ever in training.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import (
    FolderLock,
    prepare_output,
    read_manifest,
    sha256_file,
    write_json,
    write_jsonl,
    write_manifest,
)
from kia.bias import bias_report
from kia.errors import ConfigError
from kia.facts import Fact
from kia.paraphrase import MAX_SIMILARITY, MIN_SIMILARITY, SOURCES, FilterConfig, candidates, filter_paraphrases
from kia.prompts import SYSTEM, training_messages

FORMATS = ("paper", "bare")


@dataclass(frozen=True)
class BuildConfig:
    probe: str
    output: str = "runs/build"
    unknown: int = 100
    highly_known: int = 0
    paraphrases: int = 0
    maybe_known: int = 0
    stratify: str | None = None  # None | "relation"
    seed: int = 0
    format: str = "paper"
    paraphraser: str = "own"
    paraphrase_model: str | None = None
    eval_paraphrases: int = 1
    heldout: int = 300
    min_similarity: float = MIN_SIMILARITY
    max_similarity: float = MAX_SIMILARITY
    max_top_share: float = 0.05
    max_relation_share: float = 0.5
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.unknown < 1:
            raise ConfigError(f"--unknown must be at least 1, got {self.unknown}")
        for name in ("highly_known", "paraphrases", "maybe_known", "eval_paraphrases", "heldout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.stratify not in (None, "relation"):
            raise ConfigError(f"--stratify takes 'relation', got '{self.stratify}'")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown --format '{self.format}'; choose one of: {', '.join(FORMATS)}")
        if self.paraphraser not in SOURCES:
            raise ConfigError(f"unknown --paraphraser '{self.paraphraser}'; choose one of: {', '.join(SOURCES)}")
        if self.paraphraser == "model" and not self.paraphrase_model:
            raise ConfigError("--paraphraser model needs --paraphrase-model (a model folder or hub id)")
        if not 0 <= self.min_similarity < self.max_similarity <= 1:
            raise ConfigError("need 0 <= --min-similarity < --max-similarity <= 1")


@dataclass(frozen=True)
class BuildResult:
    output: Path
    counts: dict[str, int]
    bias: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _pick(facts: list[Fact], n: int, rng: random.Random, stratify: bool, what: str) -> list[Fact]:
    """`n` facts at random; with `stratify`, each relation gets its proportional share."""
    if n > len(facts):
        raise ConfigError(f"asked for {n} {what} facts, but the probe has only {len(facts)}")
    if not stratify:
        return rng.sample(facts, n)
    groups: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        groups[f.relation or "-"].append(f)
    quotas = {k: n * len(v) // len(facts) for k, v in groups.items()}
    # Largest remainders get the leftover places, ties broken by name so it is deterministic.
    rest = sorted(groups, key=lambda k: (-(n * len(groups[k]) % len(facts)), k))
    for k in rest[: n - sum(quotas.values())]:
        quotas[k] += 1
    return [f for k in sorted(groups) for f in rng.sample(groups[k], quotas[k])]


def _messages(question: str, answer: str, fmt: str) -> list[dict[str, str]]:
    if fmt == "paper":
        return training_messages(question, answer)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
            {"role": "assistant", "content": answer}]  # fmt: skip


def _eval_row(f: Fact, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**f.to_dict(), "category": base["category"], "slick_category": base["slick_category"],
            "p_greedy": base["p_greedy"], **extra}  # fmt: skip


def build(config: BuildConfig) -> BuildResult:
    """Assemble the mixture and splits described by `config` from the probe folder it names."""
    from kia.probe import facts_from_probe, read_probe

    start = time.time()
    probe_dir = Path(config.probe)
    probe_manifest = read_manifest(probe_dir, "probe")
    table = read_probe(probe_dir)
    facts = facts_from_probe(table)
    base = {r["id"]: r for r in table.select(["id", "category", "slick_category", "p_greedy"]).iter_rows(named=True)}
    by_cat: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        by_cat[base[f.id]["category"]].append(f)
    rng = random.Random(config.seed)
    strat = config.stratify == "relation"
    injected = _pick(by_cat["Unknown"], config.unknown, rng, strat, "Unknown")
    known = _pick(by_cat["HighlyKnown"], config.highly_known * config.unknown, rng, strat, "HighlyKnown")
    maybe = _pick(by_cat["MaybeKnown"], config.maybe_known * config.unknown, rng, strat, "MaybeKnown")

    warnings: list[str] = []
    para_train, para_eval = _paraphrases(injected, facts, config, warnings)
    rows: list[dict[str, Any]] = []
    for f in injected:
        rows.append({"id": f.id, "fact_id": f.id, "kind": "unknown", "question": f.question, "answer": f.answer})
        for k, q in enumerate(para_train[f.id]):
            rows.append(
                {"id": f"{f.id}~t{k}", "fact_id": f.id, "kind": "paraphrase", "question": q, "answer": f.answer}
            )
    for kind, group in (("highly_known", known), ("maybe_known", maybe)):
        rows += [{"id": f.id, "fact_id": f.id, "kind": kind, "question": f.question, "answer": f.answer} for f in group]
    rng.shuffle(rows)
    train = [{"messages": _messages(r["question"], r["answer"], config.format), **r} for r in rows]

    trained_ids = {r["fact_id"] for r in rows}
    trained_questions = {r["question"] for r in rows}
    eval_para = [
        _eval_row(f, base[f.id], id=f"{f.id}~p{k}", source_id=f.id, question=q, paraphrases=[])
        for f in injected
        for k, q in enumerate(para_eval[f.id])
        if q not in trained_questions
    ]
    heldout = _heldout(facts, base, trained_ids, trained_questions, config.heldout, rng)

    out = prepare_output(config.output, overwrite=config.overwrite)
    with FolderLock(out):
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "eval_injected.jsonl", [_eval_row(f, base[f.id]) for f in injected])
        write_jsonl(out / "eval_paraphrase.jsonl", eval_para)
        write_jsonl(out / "eval_heldout.jsonl", [_eval_row(f, base[f.id]) for f in heldout])
        shutil.copyfile(probe_dir / "exemplars.json", out / "exemplars.json")
        bias = bias_report(rows, {f.id: f for f in facts}, config.max_top_share, config.max_relation_share)
        bias["paraphrase_shortfall"] = [w for w in warnings if "paraphrase" in w]
        write_json(out / "bias.json", bias)
        counts = {
            "train": len(train),
            "unknown": len(injected),
            "paraphrase": sum(len(v) for v in para_train.values()),
            "highly_known": len(known),
            "maybe_known": len(maybe),
            "eval_injected": len(injected),
            "eval_paraphrase": len(eval_para),
            "eval_heldout": len(heldout),
        }
        seconds = round(time.time() - start, 2)
        write_manifest(
            out,
            stage="build",
            config=config,
            inputs={"probe": {"path": str(probe_dir), "sha256": sha256_file(probe_dir / "facts.parquet")}},
            model=probe_manifest.get("model", {}).get("id"),
            probe_config=probe_manifest.get("config"),
            recipe={k: getattr(config, k) for k in ("unknown", "highly_known", "paraphrases", "maybe_known")},
            counts=counts,
            seed=config.seed,
            warnings=warnings + bias["warnings"],
            wall_seconds=seconds,
        )
    return BuildResult(out, counts, bias, warnings + bias["warnings"], seconds)


def _paraphrases(
    injected: Sequence[Fact], facts: Sequence[Fact], config: BuildConfig, warnings: list[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Training and held-back paraphrases per injected fact, filtered; shortfalls are reported."""
    from kia.paraphrase import generate_candidates, relation_templates

    want = config.paraphrases + config.eval_paraphrases
    train: dict[str, list[str]] = {f.id: [] for f in injected}
    held: dict[str, list[str]] = {f.id: [] for f in injected}
    if want == 0:
        return train, held
    templates = relation_templates(facts)
    generated: dict[str, list[str]] = {}
    if config.paraphraser == "model":
        from kia.engines import EngineConfig, load_engine

        engine = load_engine(EngineConfig(model=config.paraphrase_model or ""))
        generated = generate_candidates(engine, injected, n=max(8, 2 * want), seed=config.seed)
        engine.close()
    filt = FilterConfig(config.min_similarity, config.max_similarity)
    short = []
    for f in injected:
        cands = generated.get(f.id, []) + candidates(f, config.paraphraser, templates)
        kept = filter_paraphrases(f, cands, filt, want)
        # Evaluation paraphrases are taken first, so generalisation is always measurable.
        held[f.id] = kept[: config.eval_paraphrases]
        train[f.id] = kept[config.eval_paraphrases :]
        if len(kept) < want:
            short.append((f.id, len(kept)))
    if short:
        warnings.append(
            f"{len(short)} of {len(injected)} injected facts have fewer usable paraphrases than the "
            f"{want} asked ({config.paraphrases} for training + {config.eval_paraphrases} for evaluation); "
            f"e.g. {', '.join(f'{i}: {n}' for i, n in short[:5])}"
        )
    return train, held


def _heldout(
    facts: Sequence[Fact],
    base: dict[str, dict[str, Any]],
    trained_ids: set[str],
    trained_questions: set[str],
    n: int,
    rng: random.Random,
) -> list[Fact]:
    """Up to `n` untrained facts, as equal a share of each base category as there are."""
    pools: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        if f.id not in trained_ids and f.question not in trained_questions:
            pools[base[f.id]["category"]].append(f)
    cats = sorted(pools)
    chosen: list[Fact] = []
    remaining = n
    for i, cat in enumerate(sorted(cats, key=lambda c: len(pools[c]))):
        take = min(len(pools[cat]), remaining // (len(cats) - i))
        chosen += rng.sample(pools[cat], take)
        remaining -= take
    return chosen
