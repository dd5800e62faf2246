"""`kia build`: turn a probe run into a training mixture and the evaluation splits the audit needs.

    kia build runs/p1 --unknown 100 --highly-known 1 --paraphrases 3 -o runs/b1

Recipe (Pletenev et al. 2025, §4.1): `unknown` N facts labelled Unknown (three-way, so WeaklyKnown
counts) to inject and, per injected fact, `highly_known` K HighlyKnown facts, `paraphrases` P
paraphrases and `maybe_known` M MaybeKnown facts (the paper's grid: N in {1, 10, 50, 100, 500, 3000},
K and P in {0, 1, 10}). Each category is shuffled by its own seeded stream and the first facts are
taken, so across the grid the picks nest: the 10 facts of N=10 are the first 10 of N=50, and
changing K or P never changes which facts are injected. `stratify="relation"` draws each category
in proportion to its relations (largest remainders).

Splits, one JSONL file each (rows of the eval splits are `Fact.to_dict()` plus the base labels):
- train.jsonl: one training example per row (chat `messages`, shuffled by seed);
- eval_injected.jsonl: the injected facts, asked exactly as trained (reliability);
- eval_paraphrase.jsonl: paraphrases of injected facts kept out of training (generalisation);
- eval_heldout.jsonl: facts of every category left out of training, as equal a number per base
  category as there are, so each category's shift is measured on enough facts (shift, collapse).
No fact id and no question (compared normalised) of a held-out split is ever in training; the
build checks this before writing. With `heldout_ids` the held-out split is given instead of drawn
(`draw_heldout` draws one before any training pick, for builds that must share it: kia sweep), and
the training picks come from the facts outside it. Also written: bias.json (see `kia.build.bias`), the probe's
exemplars.json (so later stages build the probe's few-shot prompts), and manifest.json last.

An update's build follows earlier builds (`after`, `replay`; see `kia.build.lineage`): it injects
none of their facts again, holds out none of what they trained, optionally replays some of their
injected facts (eval_replay.jsonl lists those), and records them in its manifest's `lineage`.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kia.build.bias import bias_report
from kia.build.config import CATEGORIES, KINDS, PROBE_COLUMNS, SPLITS, BuildConfig, BuildResult
from kia.build.contamination import build_contamination
from kia.build.lineage import Earlier, parse_replay, read_earlier, replay_rows
from kia.build.open_questions import build_open_prompts
from kia.build.paraphrase import FilterConfig, plan_paraphrases
from kia.errors import ArtifactError, ConfigError, KiaError
from kia.facts import Fact
from kia.probe import training_messages

# ------------------------------------------------------------------------------------------ picking


def _quotas(groups: dict[str, list[Fact]], n: int) -> dict[str, int]:
    """Proportional shares of `n` (largest remainders, ties by name): never more than a group holds."""
    total = sum(len(g) for g in groups.values())
    quotas = {k: n * len(g) // total for k, g in groups.items()}
    order = sorted(groups, key=lambda k: (-(n * len(groups[k]) % total), k))
    for k in order[: n - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def pick(facts: Sequence[Fact], n: int, rng: random.Random, stratify: bool) -> list[Fact]:
    """`n` facts: the first of a seeded shuffle, per relation in proportion when `stratify`.

    Shuffle-then-take makes picks nest (the first n of a larger n); `facts` must hold at least n."""
    if not stratify:
        pool = sorted(facts, key=lambda f: f.id)
        rng.shuffle(pool)
        return pool[:n]
    groups: dict[str, list[Fact]] = defaultdict(list)
    for f in sorted(facts, key=lambda f: f.id):
        groups[f.relation or "-"].append(f)
    for k in sorted(groups):
        rng.shuffle(groups[k])
    quotas = _quotas(groups, n)
    return [f for k in sorted(groups) for f in groups[k][: quotas[k]]]


def _require(pool: Sequence[Fact], n: int, category: str, flag: str, per: int, where: str = "") -> None:
    if n <= len(pool):
        return
    if flag == "--unknown":
        raise ConfigError(f"asked for {n} {category} facts, but the probe has only {len(pool)}{where}")
    raise ConfigError(
        f"asked for {n} {category} facts ({flag} {n // per} x --unknown {per}), but the probe has only "
        f"{len(pool)}{where}; with --unknown {per} use {flag} {len(pool) // per} or less"
    )


def _fixed_heldout(path: str, facts: Sequence[Fact]) -> list[Fact]:
    """The facts `path` names as held out, in its order; every id must be in the probe run."""
    by_id = {f.id: f for f in facts}
    ids = _read_ids(path)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(f"{path}: held-out id '{missing[0]}' is not in the probe run ({len(missing)} missing)")
    return [by_id[i] for i in dict.fromkeys(ids)]


def _heldout(pools: dict[str, list[Fact]], n: int, seed: int, stratify: bool) -> list[Fact]:
    """Up to `n` facts, an equal share per category; a category with too few gives its rest to the others."""
    chosen: list[Fact] = []
    remaining = n
    cats = sorted((c for c in pools if pools[c]), key=lambda c: (len(pools[c]), c))
    for i, cat in enumerate(cats):
        take = min(len(pools[cat]), remaining // (len(cats) - i))
        chosen += sorted(pick(pools[cat], take, random.Random(f"{seed}:heldout:{cat}"), stratify), key=lambda f: f.id)
        remaining -= take
    return chosen


def draw_heldout(probe: str | Path, n: int, seed: int = 0, stratify: str | None = None) -> list[str]:
    """The ids of `n` held-out facts drawn from the whole probe run, as `kia build` draws its own
    (an equal share per category, by seed), before any training pick: pass them to many builds with
    `BuildConfig.heldout_ids` and each trains on other facts while all are measured on these."""
    facts, base, _ = _load_probe(Path(probe))
    pools: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        pools[base[f.id]["category"]].append(f)
    chosen = _heldout(pools, n, seed, stratify == "relation")
    return [f.id for f in sorted(chosen, key=lambda f: (CATEGORIES.index(base[f.id]["category"]), f.id))]


def _read_ids(path: str) -> list[str]:
    from kia.artifacts import read_json

    data = read_json(path)
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"{path}: expected a JSON list of fact ids (or an object with 'ids')")
    return ids


# ------------------------------------------------------------------------------------------ rows


def _messages(question: str, answer: str, fmt: str) -> list[dict[str, str]]:
    if fmt == "paper":
        return training_messages(question, answer)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _train_row(row_id: str, fact: Fact, kind: str, question: str, fmt: str) -> dict[str, Any]:
    return {
        "messages": _messages(question, fact.answer, fmt),
        "id": row_id,
        "fact_id": fact.id,
        "kind": kind,
        "question": question,
        "answer": fact.answer,
    }


def _eval_row(fact: Fact, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    labels = {k: base[k] for k in ("category", "slick_category", "p_greedy")}
    return {**fact.to_dict(), **labels, **extra}


# ------------------------------------------------------------------------------------------ the stage


def build(config: BuildConfig) -> BuildResult:
    """Assemble the mixture and splits described by `config` from the probe folder it names.

    Raises ConfigError when the recipe asks for more facts than the probe has (naming how many
    there are), ArtifactError when the probe folder is unfinished or the output folder is taken."""
    from kia.artifacts import claim_output, peak_memory_mb, sha256_file, write_json, write_jsonl, write_manifest
    from kia.facts import normalize

    start = time.time()
    probe_dir = Path(config.probe)
    if Path(config.output).resolve() == probe_dir.resolve():
        raise ConfigError(f"-o {config.output} is the probe folder itself; choose another output folder")
    facts, base, probe_manifest = _load_probe(probe_dir)
    fixed = _fixed_heldout(config.heldout_ids, facts) if config.heldout_ids else None
    held_questions = {normalize(f.question) for f in fixed or []}
    fixed_ids = {f.id for f in fixed or []}
    replay = [parse_replay(r) for r in config.replay]
    earlier = read_earlier([*config.after, *(path for path, _ in replay)]) if config.after or replay else Earlier()
    done = earlier.injected_ids  # injected by an earlier build: not Unknown to the adapter being updated
    by_cat: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        if f.id in fixed_ids or normalize(f.question) in held_questions:
            continue
        if not (base[f.id]["category"] == "Unknown" and f.id in done):
            by_cat[base[f.id]["category"]].append(f)
    n, strat = config.unknown, config.stratify == "relation"
    where = f" outside the {len(fixed)} held-out facts of {config.heldout_ids}" if fixed is not None else ""
    note = f" once the {len(done)} injected by earlier builds are left out" if done else ""
    _require(by_cat["Unknown"], n, "Unknown", "--unknown", n, where + note)
    _require(by_cat["HighlyKnown"], config.highly_known * n, "HighlyKnown", "--highly-known", n, where)
    _require(by_cat["MaybeKnown"], config.maybe_known * n, "MaybeKnown", "--maybe-known", n, where)
    model_id = (probe_manifest.get("model") or {}).get("id")
    if config.paraphraser == "model" and not (config.paraphrase_model or model_id):
        raise ConfigError(f"--paraphraser model needs --paraphrase-model: {probe_dir}/manifest.json names no model")
    open_model = config.open_prompt_model or config.paraphrase_model or model_id
    if config.open_prompts == "model" and not open_model:
        raise ConfigError(f"--open-prompts model needs --open-prompt-model: {probe_dir}/manifest.json names no model")
    with claim_output(config.output, overwrite=config.overwrite) as out:  # fail before minutes of embedding
        # The Unknown picks use random.Random(seed) itself; the other categories their own streams.
        injected = sorted(pick(by_cat["Unknown"], n, random.Random(config.seed), strat), key=lambda f: f.id)
        known = pick(by_cat["HighlyKnown"], config.highly_known * n, random.Random(f"{config.seed}:hk"), strat)
        maybe = pick(by_cat["MaybeKnown"], config.maybe_known * n, random.Random(f"{config.seed}:mk"), strat)
        replayed, eval_replay, replay_record = replay_rows(earlier, replay, config.seed)
        para = plan_paraphrases(
            injected,
            facts,
            n_train=config.paraphrases,
            n_held=config.eval_paraphrases,
            paraphraser=config.paraphraser,
            model=config.paraphrase_model or (model_id if config.paraphraser == "model" else None),
            n_generate=config.paraphrase_candidates,
            filter_config=FilterConfig(config.min_similarity, config.max_similarity, config.embedder),
            seed=config.seed,
            forbidden=frozenset(
                [normalize(f.question) for f in [*injected, *known, *maybe]]
                + [normalize(q) for q in earlier.trained_questions]
            )
            | held_questions,
        )
        rows = [_train_row(f.id, f, "unknown", f.question, config.format) for f in injected]
        for f in injected:
            rows += [
                _train_row(f"{f.id}~t{k}", f, "paraphrase", q, config.format) for k, q in enumerate(para.train[f.id])
            ]
        rows += [_train_row(f.id, f, "highly_known", f.question, config.format) for f in known]
        rows += [_train_row(f.id, f, "maybe_known", f.question, config.format) for f in maybe]
        rows += replayed
        random.Random(f"{config.seed}:order").shuffle(rows)

        eval_para = [
            _eval_row(
                f,
                base[f.id],
                id=f"{f.id}~p{k}",
                source_id=f.id,
                question=q,
                paraphrases=[],
                paraphrase_source=para.sources[f.id][q],
            )  # fmt: skip
            for f in injected
            for k, q in enumerate(para.held[f.id])
        ]
        # what this build trains and what every earlier build trained stays out of the held-out split
        trained_ids = {r["fact_id"] for r in rows} | earlier.trained_ids
        trained_questions = {normalize(r["question"]) for r in rows} | {normalize(q) for q in earlier.trained_questions}
        pools: dict[str, list[Fact]] = defaultdict(list)
        for f in facts:
            if f.id not in trained_ids and normalize(f.question) not in trained_questions:
                pools[base[f.id]["category"]].append(f)
        heldout = list(fixed) if fixed is not None else _heldout(pools, config.heldout, config.seed, strat)
        heldout.sort(key=lambda f: (CATEGORIES.index(base[f.id]["category"]), f.id))
        _check_no_leak(rows, eval_para, heldout, earlier)

        bias = bias_report(
            rows,
            {f.id: f.relation for f in facts},
            max_top_share=config.max_top_share,
            max_relation_share=config.max_relation_share,
            available_relations=len({f.relation for f in facts if f.relation}),
        )
        warnings = para.warnings + bias["warnings"]
        if not (probe_dir / "exemplars.json").exists():
            warnings.append(f"{probe_dir} has no exemplars.json: later stages draw their own few-shot exemplars")
        heldout_rows = [_eval_row(f, base[f.id]) for f in heldout]
        contamination = build_contamination(
            config, model_id, rows, {"eval_paraphrase": eval_para, "eval_heldout": heldout_rows}
        )
        warnings += contamination["warnings"]
        open_rows, open_report, open_warnings = build_open_prompts(
            facts, injected, heldout, config.seed, config.open_prompts, open_model
        )
        warnings += open_warnings
        bias.update(paraphrases=para.report, warnings=warnings)
        counts = {"train": len(rows), "eval_injected": len(injected), "eval_paraphrase": len(eval_para),
                  "eval_heldout": len(heldout)}  # fmt: skip
        if replay:
            counts["eval_replay"] = len(eval_replay)
        kinds = {k: sum(r["kind"] == k for r in rows) for k in KINDS if k != "replay" or replay}
        eval_injected = [_eval_row(f, base[f.id]) for f in injected]
        _write(out, probe_dir, rows, eval_injected, eval_para, heldout_rows, bias)
        write_json(out / "contamination.json", contamination)
        write_jsonl(out / "eval_open.jsonl", open_rows)
        if replay:
            write_jsonl(out / "eval_replay.jsonl", eval_replay)
        else:
            (out / "eval_replay.jsonl").unlink(missing_ok=True)  # a stale one from an overwritten build
        recipe = _recipe(config)
        seconds = round(time.time() - start, 2)
        inputs = {"probe": {"path": str(probe_dir), "sha256": sha256_file(probe_dir / "facts.parquet")}}
        if config.heldout_ids:
            inputs["heldout_ids"] = {"path": config.heldout_ids, "sha256": sha256_file(config.heldout_ids)}
        write_manifest(
            out,
            stage="build",
            config=config,
            files=[f"{name}.jsonl" for name in SPLITS]
            + (["eval_replay.jsonl"] if replay else [])
            + ["eval_open.jsonl", "bias.json", "contamination.json", "exemplars.json"],
            inputs=inputs,
            probe_manifest=probe_manifest,
            model=model_id,
            recipe=recipe,
            counts=counts,
            train_kinds=kinds,
            open_prompts=open_report,
            heldout_categories=dict(Counter(base[f.id]["category"] for f in heldout)),
            lineage={"builds": earlier.record(), "after": list(config.after), "replay": replay_record},
            seed=config.seed,
            warnings=warnings,
            wall_seconds=seconds,
            peak_memory_mb=peak_memory_mb(),
        )
    return BuildResult(out, counts, kinds, recipe, bias, warnings, seconds, open_report)


def _load_probe(probe_dir: Path) -> tuple[list[Fact], dict[str, dict[str, Any]], dict[str, Any]]:
    """The probe's facts, their base labels by id, and its manifest."""
    from kia.artifacts import read_manifest
    from kia.probe import facts_from_probe, read_probe

    manifest = read_manifest(probe_dir, "probe")
    table = read_probe(probe_dir)
    missing = [c for c in PROBE_COLUMNS if c not in table.columns]
    if missing:
        raise ArtifactError(f"{probe_dir}/facts.parquet lacks column(s) {', '.join(missing)}; rerun `kia probe`")
    labels = table.select(["id", "category", "slick_category", "p_greedy"]).iter_rows(named=True)
    return facts_from_probe(table), {r["id"]: r for r in labels}, manifest


def _recipe(config: BuildConfig) -> dict[str, Any]:
    keys = ("unknown", "highly_known", "paraphrases", "maybe_known", "eval_paraphrases", "stratify", "format",
            "paraphraser", "paraphrase_model", "min_similarity", "max_similarity", "embedder", "open_prompts",
            "open_prompt_model")  # fmt: skip
    return {k: v for k, v in asdict(config).items() if k in keys}


def _check_no_leak(
    rows: list[dict[str, Any]], eval_para: list[dict[str, Any]], heldout: list[Fact], earlier: Earlier
) -> None:
    """A last guard (the picks already avoid it): no fact or question trained here or by an earlier
    build in a held-out split."""
    from kia.facts import normalize

    ids = {r["fact_id"] for r in rows} | earlier.trained_ids
    questions = {normalize(r["question"]) for r in rows} | {normalize(q) for q in earlier.trained_questions}
    leaks = [f.id for f in heldout if f.id in ids or normalize(f.question) in questions]
    leaks += [r["id"] for r in eval_para if normalize(r["question"]) in questions]
    if leaks:
        raise KiaError(f"internal error: held-out rows {leaks[:5]} are also in training; please report it")


def _write(
    out: Path,
    probe_dir: Path,
    train: list[dict[str, Any]],
    injected: list[dict[str, Any]],
    eval_para: list[dict[str, Any]],
    heldout: list[dict[str, Any]],
    bias: dict[str, Any],
) -> None:
    from kia.artifacts import write_json, write_jsonl

    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval_injected.jsonl", injected)
    write_jsonl(out / "eval_paraphrase.jsonl", eval_para)
    write_jsonl(out / "eval_heldout.jsonl", heldout)
    write_json(out / "bias.json", bias)
    if (probe_dir / "exemplars.json").exists():
        shutil.copyfile(probe_dir / "exemplars.json", out / "exemplars.json")
