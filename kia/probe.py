"""`kia probe`: which facts does the model already know? (SliCK, Gekhman et al. 2024)

For each fact, `n_sets` few-shot prompts (exemplar sets of `shots` facts of its relation) get one
greedy answer each, and facts never answered right greedily get `n_samples` sampled answers per
prompt at temperature 0.5, top-k 40. From the shares of correct answers:

    P_greedy = correct greedy answers / greedy answers
    P_sample = correct sampled answers / sampled answers
    HighlyKnown: P_greedy = 1;  MaybeKnown: 0 < P_greedy < 1;
    WeaklyKnown: P_greedy = 0 and P_sample > 0;  Unknown: both 0.

The three-way label (Pletenev et al. 2025) folds WeaklyKnown into Unknown.

The lazy schedule gives the same labels with far fewer generations: a fact's greedy passes stop
once it has one right and one wrong answer (it is MaybeKnown whatever comes next), only facts with
P_greedy = 0 are sampled, and their sampling stops at the first correct sample. Its P estimates
are therefore partial; `exhaustive=True` computes them in full.

Output folder: facts.parquet, summary.json, exemplars.json, [generations.parquet], manifest.json.
Work is written in shards as it goes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import (
    FolderLock,
    peak_memory_mb,
    prepare_output,
    read_json,
    sha256_file,
    write_json,
    write_manifest,
)
from kia.engines import Engine, EngineConfig, Sampling, load_engine
from kia.errors import ArtifactError, ConfigError
from kia.facts import Fact, FactStream
from kia.matching import extract_answer, is_correct, is_refusal
from kia.probe_io import (  # noqa: F401  (read_probe, load_exemplar_sets, ...: the stage's public API)
    CATEGORIES,
    SLICK_CATEGORIES,
    FactKey,
    chunks,
    facts_from_probe,
    join_shards,
    load_exemplar_sets,
    model_identity,
    read_probe,
    resolve_exemplars,
    shard_schemas,
    summarize,
    write_shard,
)
from kia.prompts import ExemplarSets, PromptBuilder, make_exemplar_sets

MATCH_MODES = ("contains", "exact", "paper")


@dataclass(frozen=True)
class ProbeConfig:
    facts: str
    model: str
    output: str = "runs/probe"
    engine: str = "hf"
    adapter: str | None = None
    quant: str = "none"
    exemplars: str | None = None  # another fact file to draw exemplars from; default: the facts themselves
    n_sets: int = 10
    shots: int = 4
    n_samples: int = 16
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 32
    match: str = "contains"
    exhaustive: bool = False
    limit: int | None = None
    seed: int = 0
    batch_size: int = 64
    tensor_parallel_size: int = 1  # vllm only
    gpu_memory_utilization: float | None = None  # vllm only
    shard_size: int = 256
    keep_generations: bool = False
    skip_invalid: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise ConfigError(f"unknown --match '{self.match}'; choose one of: {', '.join(MATCH_MODES)}")
        for name in ("n_sets", "n_samples", "max_new_tokens", "shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            engine=self.engine,
            adapter=self.adapter,
            quant=self.quant,
            batch_size=self.batch_size,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output: a resumed run must match them exactly."""
        d = asdict(self)
        for k in (
            "output",
            "batch_size",
            "overwrite",
            "keep_generations",
            "tensor_parallel_size",
            "gpu_memory_utilization",
        ):
            d.pop(k)
        return d


@dataclass(frozen=True)
class ProbeResult:
    output: Path
    counts: dict[str, int]
    slick_counts: dict[str, int]
    n_facts: int
    n_generations: int
    refusal_rate: float
    seconds: float
    resumed_shards: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _FactState:
    fact: Fact
    greedy: list[str] = field(default_factory=list)
    greedy_ok: list[bool] = field(default_factory=list)
    n_sample: int = 0
    n_sample_ok: int = 0

    def decided_greedy(self, lazy: bool) -> bool:
        return lazy and any(self.greedy_ok) and not all(self.greedy_ok)


def slick_label(p_greedy: float, n_greedy_full: bool, p_sample: float | None) -> str:
    """The four SliCK categories (Gekhman et al. Fig. 2a). HighlyKnown needs every greedy answer
    right, so it needs the full set of greedy passes."""
    if p_greedy == 1 and n_greedy_full:
        return "HighlyKnown"
    if p_greedy > 0:
        return "MaybeKnown"
    if p_sample:
        return "WeaklyKnown"
    return "Unknown"


def three_way(slick: str) -> str:
    """Pletenev et al. use greedy answers only, so SliCK's WeaklyKnown is their Unknown."""
    return "Unknown" if slick == "WeaklyKnown" else slick


def probe_facts(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    config: ProbeConfig,
    *,
    adapter: bool = False,
    generations: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Probe `facts` with `engine` and return one row per fact (the facts.parquet schema)."""
    lazy = not config.exhaustive
    build = PromptBuilder(engine)
    states = [_FactState(f) for f in facts]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)
    for s in range(config.n_sets):
        todo = [st for st in states if not st.decided_greedy(lazy)]
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in todo]
        for st, outs in zip(todo, engine.generate(prompts, greedy, adapter=adapter), strict=True):
            answer = extract_answer(outs[0])
            ok = is_correct(answer, st.fact.answers, config.match)
            st.greedy.append(answer)
            st.greedy_ok.append(ok)
            if generations is not None:
                generations.append({"id": st.fact.id, "set": s, "kind": "greedy", "text": answer, "correct": ok})
    for s in range(config.n_sets):
        todo = [st for st in states if (not any(st.greedy_ok) or not lazy) and not (lazy and st.n_sample_ok)]
        if not todo:
            break
        sampling = Sampling(
            n=config.n_samples,
            temperature=config.temperature,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            seed=config.seed * 1000 + s + 1,
        )
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in todo]
        for st, outs in zip(todo, engine.generate(prompts, sampling, adapter=adapter), strict=True):
            for text in outs:
                answer = extract_answer(text)
                ok = is_correct(answer, st.fact.answers, config.match)
                st.n_sample += 1
                st.n_sample_ok += ok
                if generations is not None:
                    generations.append({"id": st.fact.id, "set": s, "kind": "sample", "text": answer, "correct": ok})
                if ok and lazy:
                    break  # the first correct sample decides WeaklyKnown
    return [_row(st, config) for st in states]


def _shots(exemplars: Sequence[Fact]) -> list[tuple[str, str]]:
    return [(f.question, f.answer) for f in exemplars]


def _row(st: _FactState, config: ProbeConfig) -> dict[str, Any]:
    n_greedy = len(st.greedy)
    p_greedy = sum(st.greedy_ok) / n_greedy
    p_sample = st.n_sample_ok / st.n_sample if st.n_sample else None
    slick = slick_label(p_greedy, n_greedy == config.n_sets, p_sample)
    refusals = [is_refusal(a) for a in st.greedy]
    f = st.fact
    return {
        "id": f.id,
        "question": f.question,
        "answers": list(f.answers),
        "subject": f.subject,
        "relation": f.relation,
        "object": f.object,
        "domain": f.domain,
        "paraphrases": list(f.paraphrases),
        "extra": json.dumps(dict(f.extra), ensure_ascii=False, sort_keys=True),
        "category": three_way(slick),
        "slick_category": slick,
        "p_greedy": p_greedy,
        "p_sample": p_sample,
        "n_greedy": n_greedy,
        "n_sample": st.n_sample,
        "n_generations": n_greedy + st.n_sample,
        "answer": st.greedy[0],
        "greedy_answers": st.greedy,
        "refused": refusals[0],
        "refusal_share": sum(refusals) / n_greedy,
    }


def probe(config: ProbeConfig, progress: Callable[[int, int], None] | None = None) -> ProbeResult:
    """Run the probe described by `config`, resuming a killed run in the same folder."""
    import polars as pl

    start = time.time()
    # Three streamed passes, so memory does not grow with the number of facts: validate and index,
    # fetch the chosen exemplars, then probe shard by shard.
    stream = FactStream(
        config.facts, skip_invalid=config.skip_invalid, rejects_path=Path(config.output) / "rejects.jsonl"
    )
    keys = [FactKey(f.id, f.relation) for f in stream]
    n_facts = min(len(keys), config.limit or len(keys))
    if config.exemplars:
        pool = FactStream(config.exemplars)
        sets = resolve_exemplars(
            make_exemplar_sets([FactKey(f.id, f.relation) for f in pool], config.n_sets, config.shots, config.seed),
            pool,
        )
    else:
        sets = resolve_exemplars(make_exemplar_sets(keys, config.n_sets, config.shots, config.seed), stream)
    del keys
    out = prepare_output(config.output, overwrite=config.overwrite)
    shard_dir = out / "shards"
    with FolderLock(out):
        identity = {"config": config.identity(), "facts_sha256": stream.sha256}
        state_path = out / "run.json"
        if state_path.exists() and not config.overwrite:
            if read_json(state_path) != json.loads(json.dumps(identity)):
                raise ArtifactError(
                    f"{out}: holds an unfinished probe with other settings or facts; "
                    "pass --overwrite to start again, or choose another -o"
                )
        elif shard_dir.exists():
            for stale in shard_dir.glob("*.parquet"):
                stale.unlink()
        write_json(state_path, identity)
        write_json(out / "exemplars.json", sets.to_json())
        n_chunks = -(-n_facts // config.shard_size)
        done = 0
        resumed = 0
        engine: Engine | None = None
        for i, chunk in enumerate(chunks(stream, config.shard_size, n_facts)):
            path = shard_dir / f"facts-{i:05d}.parquet"
            if path.exists():
                resumed += 1
            else:
                engine = engine or load_engine(config.engine_config())
                gens: list[dict[str, Any]] | None = [] if config.keep_generations else None
                rows = probe_facts(engine, chunk, sets, config, generations=gens)
                if gens is not None:
                    write_shard(shard_dir / f"generations-{i:05d}.parquet", gens, shard_schemas()[1])
                write_shard(path, rows, shard_schemas()[0])
            done += len(chunk)
            if progress:
                progress(done, n_facts)
        if engine is not None:
            engine.close()
        join_shards(out / "facts.parquet", [shard_dir / f"facts-{i:05d}.parquet" for i in range(n_chunks)])
        if config.keep_generations:
            gen_paths = [shard_dir / f"generations-{i:05d}.parquet" for i in range(n_chunks)]
            join_shards(out / "generations.parquet", [p for p in gen_paths if p.exists()])
        summary = summarize(pl.scan_parquet(out / "facts.parquet"))
        write_json(out / "summary.json", summary)
        seconds = round(time.time() - start, 2)
        write_manifest(
            out,
            stage="probe",
            config=config,
            inputs={"facts": {"path": str(config.facts), "sha256": stream.sha256}}
            | (
                {"exemplars": {"path": config.exemplars, "sha256": sha256_file(config.exemplars)}}
                if config.exemplars
                else {}
            ),
            model=model_identity(config.model),
            seed=config.seed,
            counts=summary["counts"],
            n_facts=n_facts,
            n_rejected=stream.n_rejected,
            wall_seconds=seconds,
            peak_memory_mb=peak_memory_mb(),
        )
    return ProbeResult(
        output=out,
        counts=summary["counts"],
        slick_counts=summary["slick_counts"],
        n_facts=n_facts,
        n_generations=summary["n_generations"],
        refusal_rate=summary["refusal_rate"],
        seconds=seconds,
        resumed_shards=resumed,
        warnings=stream.warnings,
    )


def greedy_reliability(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    *,
    n_sets: int = 10,
    match: str = "contains",
    max_new_tokens: int = 32,
    adapter: bool = False,
    seed: int = 0,
) -> list[float]:
    """Per fact, the share of the `n_sets` few-shot greedy answers that are correct (P_greedy):
    the paper's "reliability" when the facts are the injected ones. Runs every greedy pass."""
    config = ProbeConfig(
        facts="-",
        model=engine.model_id,
        n_sets=n_sets,
        match=match,
        max_new_tokens=max_new_tokens,
        exhaustive=True,
        n_samples=1,
        seed=seed,
    )
    states = [_FactState(f) for f in facts]
    build = PromptBuilder(engine)
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=seed)
    for s in range(n_sets):
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in states]
        for st, outs in zip(states, engine.generate(prompts, greedy, adapter=adapter), strict=True):
            st.greedy_ok.append(is_correct(extract_answer(outs[0]), st.fact.answers, match))
    return [sum(st.greedy_ok) / len(st.greedy_ok) for st in states]
