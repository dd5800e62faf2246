"""The probe's input and output: the facts streamed in shards, the shard schema, joining the shards,
the summary, and the readers later stages use (facts.parquet, exemplars.json).

Nothing here holds every fact at once: a probe of 50,000 facts peaks where one of 10,000 does
(bench/bench_scale.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from kia.artifacts import read_json, sha256_file
from kia.errors import ArtifactError
from kia.facts import Fact
from kia.probe.prompts import ExemplarSets

CATEGORIES = ("Unknown", "MaybeKnown", "HighlyKnown")
SLICK_CATEGORIES = ("Unknown", "WeaklyKnown", "MaybeKnown", "HighlyKnown")


def shard_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed column types, so every shard agrees (a shard where no fact was sampled would
    otherwise get a null-typed p_sample) and shards concatenate without inference."""
    import polars as pl

    text, texts = pl.Utf8, pl.List(pl.Utf8)
    facts = {
        "id": text, "question": text, "answers": texts, "subject": text, "relation": text, "object": text,
        "domain": text, "paraphrases": texts, "extra": text, "category": text, "slick_category": text,
        "p_greedy": pl.Float64, "p_sample": pl.Float64, "n_greedy": pl.Int64, "n_sample": pl.Int64,
        "n_generations": pl.Int64, "answer": text, "greedy_answers": texts, "refused": pl.Boolean,
        "refusal_share": pl.Float64,
    }  # fmt: skip
    generations = {"id": text, "set": pl.Int64, "kind": text, "text": text, "correct": pl.Boolean}
    return facts, generations


def write_shard(path: Path, rows: list[dict[str, Any]], schema: dict[str, Any]) -> None:
    import polars as pl

    from kia.artifacts import atomic_path

    with atomic_path(path) as tmp:
        pl.DataFrame(rows, schema=schema).write_parquet(tmp)


class FactKey(NamedTuple):
    """What drawing exemplar sets needs of a fact; the facts themselves are fetched afterwards."""

    id: str
    relation: str | None


def resolve_exemplars(sets: ExemplarSets, stream: Iterable[Fact]) -> ExemplarSets:
    """Swap the sets' keys for the full facts, in one pass over the source."""
    wanted = {k.id for group in sets.sets.values() for s in group for k in s}
    wanted |= {k.id for spares in sets.spares.values() for k in spares}
    full = {f.id: f for f in stream if f.id in wanted}
    return ExemplarSets(
        {rel: [[full[k.id] for k in s] for s in v] for rel, v in sets.sets.items()},
        {rel: [full[k.id] for k in v] for rel, v in sets.spares.items()},
    )


def chunks(facts: Iterable[Fact], size: int, limit: int) -> Iterator[list[Fact]]:
    chunk: list[Fact] = []
    for n, fact in enumerate(facts):
        if n == limit:
            break
        chunk.append(fact)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def join_shards(path: Path, shards: list[Path]) -> None:
    """Shards into one file with one shard in memory at a time, whatever the number of shards."""
    import pyarrow.parquet as pq

    from kia.artifacts import atomic_path

    with atomic_path(path) as tmp:
        writer = None
        try:
            for shard in shards:
                table = pq.read_table(shard)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


def model_identity(model: str) -> dict[str, Any]:
    p = Path(model)
    if p.is_dir() and (p / "config.json").exists():
        weights = sorted(p.glob("*.safetensors"))
        return {
            "id": model,
            "config_sha256": sha256_file(p / "config.json"),
            "weights_sha256": sha256_file(weights[0]) if len(weights) == 1 else None,
        }
    return {"id": model}


def summarize(table: Any) -> dict[str, Any]:
    """Counts per category (three-way and SliCK), refusal rate and generation totals, of a polars
    DataFrame or LazyFrame (a scanned facts.parquet is summed without being loaded)."""
    import polars as pl

    col = pl.col
    row = (
        table.lazy()
        .select(
            pl.len().alias("n"),
            *[(col("category") == c).sum().alias(c) for c in CATEGORIES],
            *[(col("slick_category") == c).sum().alias(f"slick:{c}") for c in SLICK_CATEGORIES],
            col("refused").sum().alias("refused"),
            col("n_generations").sum().alias("n_generations"),
            col("p_greedy").mean().alias("mean_p_greedy"),
        )
        .collect()
        .row(0, named=True)
    )
    counts = {c: int(row[c] or 0) for c in CATEGORIES}
    n = max(1, row["n"])
    return {
        "n_facts": row["n"],
        "counts": counts,
        "slick_counts": {c: int(row[f"slick:{c}"] or 0) for c in SLICK_CATEGORIES},
        "shares": {c: counts[c] / n for c in CATEGORIES},
        "refusal_rate": float(row["refused"] or 0) / n,
        "n_generations": int(row["n_generations"] or 0),
        "mean_p_greedy": float(row["mean_p_greedy"] or 0.0),
    }


def read_probe(folder: str | Path) -> Any:
    """The facts.parquet of a finished probe folder, as a polars DataFrame, checked row by row: a
    later stage must not build on a file that is unreadable, edited, or holds a fact twice."""
    import polars as pl

    from kia.artifacts import read_manifest

    read_manifest(folder, "probe")
    path = Path(folder) / "facts.parquet"
    try:
        table = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ArtifactError(f"{path}: not a readable parquet file ({first}); rerun `kia probe`") from exc
    check_probe_rows(table, path)
    return table


def check_probe_rows(table: Any, path: Path) -> None:
    """ArtifactError naming the row and field of the first row that no probe writes: a missing id,
    question or answer, an id seen before, a category that is not one of CATEGORIES."""
    import polars as pl

    def first(mask: Any) -> int | None:
        hits = mask.fill_null(True).arg_true()
        return int(hits[0]) if len(hits) else None

    def fail(row: int, field: str, why: str) -> ArtifactError:
        return ArtifactError(f"{path}: row {row + 1}: {why} (field '{field}'); rerun `kia probe`")

    cols = set(table.columns)
    for name in ("id", "question", "answers"):
        if name in cols and (row := first(table[name].is_null())) is not None:
            raise fail(row, name, "missing")
    if "id" in cols and (row := first(table["id"].is_duplicated())) is not None:
        again = first(table["id"].slice(row + 1) == table["id"][row])
        at = f"row {row + 2 + again}" if again is not None else "a later row"
        raise fail(row, "id", f"id '{table['id'][row]}' appears again at {at}")
    if "question" in cols and table.schema["question"] == pl.Utf8:
        if (row := first(table["question"].str.strip_chars() == "")) is not None:
            raise fail(row, "question", "is empty")
    if "answers" in cols and isinstance(table.schema["answers"], pl.List):
        if (row := first(table["answers"].list.len() == 0)) is not None:
            raise fail(row, "answers", "no accepted answer")
    if "category" in cols and (row := first(~table["category"].is_in(list(CATEGORIES)))) is not None:
        raise fail(row, "category", f"'{table['category'][row]}' is not one of {', '.join(CATEGORIES)}")


def load_exemplar_sets(folder: str | Path) -> ExemplarSets:
    """The exemplar sets a probe run used, so later stages build the very same prompts."""
    path = Path(folder) / "exemplars.json"
    data = read_json(path)
    try:
        return ExemplarSets.from_json(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # a hand-edited or truncated file: name it rather than fail deep in prompt building
        raise ArtifactError(
            f"{path}: not a kia exemplar file ({type(exc).__name__}: {exc}); rerun `kia probe`"
        ) from exc


def facts_from_probe(table: Any) -> list[Fact]:
    """Rebuild Fact objects from probe rows (the probe keeps every field of the input)."""
    out = []
    for r in table.iter_rows(named=True):
        out.append(
            Fact(
                id=r["id"],
                question=r["question"],
                answers=tuple(r["answers"]),
                subject=r.get("subject"),  # the optional fields of a fact may be absent
                relation=r.get("relation"),
                object=r.get("object"),
                paraphrases=tuple(r.get("paraphrases") or ()),
                domain=r.get("domain"),
                extra=json.loads(r["extra"]) if r.get("extra") else {},
            )
        )
    return out
