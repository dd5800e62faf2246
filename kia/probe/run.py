"""`kia probe`, the stage: stream the facts, probe them shard by shard, write the probe folder.

Output folder: facts.parquet, summary.json, exemplars.json, [generations.parquet], manifest.json.
Work is written in shards as it goes, so a killed run resumes where it stopped. The SliCK labels
themselves come from `kia.probe.slick`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kia.artifacts import (
    claim_output,
    peak_memory_mb,
    read_json,
    write_json,
    write_manifest,
)
from kia.engines import Engine, load_engine
from kia.errors import ArtifactError
from kia.facts import Fact, FactStream
from kia.probe.config import ProbeConfig, ProbeResult
from kia.probe.prompts import ExemplarSets, make_exemplar_sets
from kia.probe.shards import (
    FactKey,
    chunks,
    join_shards,
    model_identity,
    resolve_exemplars,
    shard_schemas,
    summarize,
    write_shard,
)
from kia.probe.slick import probe_facts


def probe(config: ProbeConfig, progress: Callable[[int, int], None] | None = None) -> ProbeResult:
    """Run the probe described by `config`, resuming a killed run in the same folder."""
    import polars as pl

    if config.ray is not None:
        from kia.cluster import require_ray

        require_ray()  # before any work: without the extra, one line naming it
    start = time.time()
    # The folder is locked before the facts are read: the first pass writes rejects.jsonl, and a
    # second probe into a folder in use must change nothing there.
    with claim_output(config.output, overwrite=config.overwrite) as out:
        # Three streamed passes, so memory does not grow with the number of facts: validate and
        # index (the one pass that decides, and writes, the rejects), fetch the chosen exemplars,
        # then probe shard by shard.
        if not config.skip_invalid:
            (out / "rejects.jsonl").unlink(missing_ok=True)  # an earlier run's: every row must be valid now
        stream = FactStream(config.facts, skip_invalid=config.skip_invalid, rejects_path=out / "rejects.jsonl")
        keys = [FactKey(f.id, f.relation) for f in stream]
        n_facts = min(len(keys), config.limit or len(keys))
        inputs = {"facts": {"path": str(config.facts), "sha256": stream.sha256}}
        if config.exemplars:
            pool = FactStream(config.exemplars)
            sets = resolve_exemplars(
                make_exemplar_sets([FactKey(f.id, f.relation) for f in pool], config.n_sets, config.shots, config.seed),
                pool,
            )
            inputs["exemplars"] = {"path": str(config.exemplars), "sha256": pool.sha256}  # a file or a folder
        else:
            sets = resolve_exemplars(make_exemplar_sets(keys, config.n_sets, config.shots, config.seed), stream)
        del keys
        shard_dir = out / "shards"
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
        pending: list[tuple[int, list[Fact]]] = []

        def finished(i: int, result: tuple[list[dict[str, Any]], list[dict[str, Any]] | None]) -> None:
            nonlocal done
            rows, gens = result
            if gens is not None:
                write_shard(shard_dir / f"generations-{i:05d}.parquet", gens, shard_schemas()[1])
            write_shard(shard_dir / f"facts-{i:05d}.parquet", rows, shard_schemas()[0])
            done += len(rows)
            if progress:
                progress(done, n_facts)

        for i, chunk in enumerate(chunks(stream, config.shard_size, n_facts)):
            if (shard_dir / f"facts-{i:05d}.parquet").exists():
                resumed += 1
                done += len(chunk)
                if progress:
                    progress(done, n_facts)
            elif config.ray is not None:
                pending.append((i, chunk))  # the facts of the shards left to probe, for Ray
            else:
                engine = engine or load_engine(config.engine_config())
                finished(i, probe_shard(engine, chunk, sets=sets, config=config))
        if engine is not None:
            engine.close()
        if pending:
            _probe_on_ray(pending, sets, config, finished)
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
            files=["facts.parquet", "summary.json", "exemplars.json", "rejects.jsonl"],
            inputs=inputs,
            model=model_identity(config.model),
            seed=config.seed,
            counts=summary["counts"],
            n_facts=n_facts,
            n_rows=stream.n_rows,  # read = accepted (n_valid) + rejected; n_facts of them probed (--limit)
            n_valid=stream.n_facts,
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
        greedy_only=config.greedy_only,
        warnings=stream.warnings,
    )


def probe_shard(
    engine: Engine, facts: list[Fact], *, sets: ExemplarSets, config: ProbeConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """One shard's facts.parquet rows (and generations, when kept): the same wherever it runs."""
    gens: list[dict[str, Any]] | None = [] if config.keep_generations else None
    return probe_facts(engine, facts, sets, config, generations=gens), gens


def _probe_on_ray(
    pending: list[tuple[int, list[Fact]]],
    sets: ExemplarSets,
    config: ProbeConfig,
    finished: Callable[[int, Any], None],
) -> None:
    """The shards left, on Ray: a greedy-only probe on the vLLM engine goes through Ray's own vLLM
    batch stage (every prompt is known up front); any other through kia's engines, a shard a call."""
    import functools

    from kia.cluster import generate_greedy, map_units

    assert config.ray is not None
    if not (config.greedy_only and config.engine == "vllm"):
        work = functools.partial(probe_shard, sets=sets, config=config)
        map_units(pending, work, config.engine_config(), config.ray, finished)
        return
    from kia.engines import PromptTokenizer, Sampling
    from kia.probe.prompts import PromptBuilder
    from kia.probe.slick import _shots, greedy_rows

    tokenizer = PromptTokenizer(config.model)
    build = PromptBuilder(tokenizer)
    facts = dict(pending)
    answers = {i: [[""] * config.n_sets for _ in chunk] for i, chunk in pending}
    left = {i: len(chunk) * config.n_sets for i, chunk in pending}
    # key = (shard, fact, set), packed in one integer
    width, sets_n = config.shard_size, config.n_sets

    def requests() -> Any:
        for i, chunk in pending:
            for j, fact in enumerate(chunk):
                for s in range(sets_n):
                    prompt = build(_shots(sets.for_fact(fact, s)), fact.question)
                    yield (i * width + j) * sets_n + s, tokenizer.token_ids(prompt), False

    def answered(key: int, text: str) -> None:
        i, rest = divmod(key, width * sets_n)
        j, s = divmod(rest, sets_n)
        answers[i][j][s] = text
        left[i] -= 1
        if not left[i]:
            gens: list[dict[str, Any]] | None = [] if config.keep_generations else None
            finished(i, (greedy_rows(facts[i], answers.pop(i), config, generations=gens), gens))

    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)
    generate_greedy(list(requests()), sampling, config.engine_config(), config.ray, answered)
