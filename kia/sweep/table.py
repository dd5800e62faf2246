"""One row per point (from its build, inject and audit folders), and the recommendation.

Every figure is read from the point's own files (audit.json, the inject and build manifests), so
the table says what `kia audit` said about that adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kia.sweep.config import Point, Recipe

# (column, audit metric, side): the figures of the paper's Figures 1-4 and Tables 3-4
METRIC_COLUMNS = (
    ("reliability_base", "reliability", "base"),
    ("reliability", "reliability", "adapted"),
    ("generalisation_base", "generalisation", "base"),
    ("generalisation", "generalisation", "adapted"),
    ("heldout_accuracy_base", "heldout_accuracy", "base"),
    ("heldout_accuracy", "heldout_accuracy", "adapted"),
    ("positive_shift", "positive_shift", "adapted"),
    ("negative_shift", "negative_shift", "adapted"),
    ("refusal_rate_base", "refusal_rate", "base"),
    ("refusal_rate", "refusal_rate", "adapted"),
    ("distinct_answers_base", "distinct_answers", "base"),
    ("distinct_answers", "distinct_answers", "adapted"),
    ("exploded_answers", "exploded_answers", "adapted"),
    ("target_answer_share", "target_answer_share", "adapted"),
)


def point_row(point: Point, folder: Path, seconds: float) -> dict[str, Any]:
    """The table row of a finished point: what it trained, what the audit measured, its verdict."""
    from kia.artifacts import read_json, read_manifest

    build = read_manifest(folder / "build", "build")
    inject = read_manifest(folder / "adapter", "inject")
    audit_manifest = read_manifest(folder / "audit", "audit")
    audit = read_json(folder / "audit" / "audit.json")
    metrics = audit.get("metrics", {})
    schedule = inject.get("schedule") or {}
    row: dict[str, Any] = {
        "point": point.name,
        "n": point.n,
        "recipe": point.recipe.label,
        "highly_known": point.recipe.highly_known,
        "paraphrases": point.recipe.paraphrases,
        "maybe_known": point.recipe.maybe_known,
        "seed": point.seed,
        "train_rows": build["counts"]["train"],
        "paraphrases_trained": build.get("train_kinds", {}).get("paraphrase", 0),
        "heldout_facts": build["counts"]["eval_heldout"],
        "epochs": inject.get("epochs_run"),
        "steps": inject.get("steps_run"),
        "schedule": schedule.get("rule"),
        "curve_reliability": inject.get("reliability"),
    }
    for column, name, side in METRIC_COLUMNS:
        row[column] = (metrics.get(name) or {}).get(side)
    for task, b in sorted((audit.get("benchmarks") or {}).items()):
        for key in ("base", "adapted", "delta", "ci_low", "ci_high", "p_value"):
            row[f"bench_{task}_{key}"] = b.get(key)
    row["verdict"] = audit.get("verdict")
    row["reasons"] = [str(r) for r in audit.get("reasons") or []]
    row["failed_rules"] = [c["rule"] for c in audit.get("checks") or [] if not c.get("passed")]
    row["exploded_examples"] = [str(e.get("answer")) for e in (audit.get("collapse") or {}).get("exploded", [])[:5]]
    row["seconds_build"] = build.get("wall_seconds")
    row["seconds_inject"] = inject.get("wall_seconds")
    row["seconds_audit"] = audit_manifest.get("wall_seconds")
    row["seconds"] = round(seconds, 2)
    return row


def benchmark_tasks(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The benchmark tasks the rows carry (bench_<task>_delta columns)."""
    tasks = {
        k[len("bench_") : -len("_delta")] for r in rows for k in r if k.startswith("bench_") and k.endswith("_delta")
    }
    return sorted(tasks)


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import polars as pl

    from kia.artifacts import atomic_path

    columns = list(dict.fromkeys(k for r in rows for k in r))
    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], infer_schema_length=None)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def recommend(
    rows: Sequence[dict[str, Any]],
    recipes: Sequence[Recipe],
    unknown: Sequence[int],
    unfit: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The largest N per recipe at which every rule of the policy holds, and the best recipe.

    A recipe's capacity is the largest N of the grid such that every seed PASSes at that N and at
    every smaller N of the grid (a capacity is a bound: a pass above a failure does not count, as
    it would not be safe to rely on). The recommended recipe has the largest capacity; a tie goes
    to the recipe with fewer training rows per fact (cheaper to train), then to the order given.
    A point not run (`unfit`: the probe had too few facts for it) ends the recipe's curve there
    and is named, since nothing is known above it."""
    skipped = {(u["n"], u["recipe"]) for u in unfit}
    per_recipe = []
    for order, recipe in enumerate(recipes):
        capacity, failing, not_run = None, None, None
        for n in sorted(unknown):
            if (n, recipe.label) in skipped:
                not_run = n
                break
            group = [r for r in rows if r["recipe"] == recipe.label and r["n"] == n]
            if not group:
                break
            bad = [r for r in group if r["verdict"] != "PASS"]
            if bad:
                failing = {"n": n, "seeds": [r["seed"] for r in bad], "reasons": bad[0]["reasons"]}
                break
            capacity = n
        per_recipe.append({"recipe": recipe.label, "max_n": capacity, "first_failure": failing, "order": order,
                           "rows_per_fact": recipe.rows_per_fact, "not_run": not_run})  # fmt: skip
    fitting = [p for p in per_recipe if p["max_n"] is not None]
    if not fitting:
        smallest = min(unknown)
        reasons = sorted({reason for p in per_recipe for reason in (p["first_failure"] or {}).get("reasons", [])})
        text = (
            f"No recipe keeps every rule of the policy, even at N = {smallest}: every recipe fails there with at "
            "least one seed. Train fewer facts per adapter, change the recipe or the training settings, or "
            "review the policy."
        )
        return {"recipe": None, "max_n": None, "text": text, "per_recipe": per_recipe, "reasons": reasons[:10]}
    best = max(fitting, key=lambda p: (p["max_n"], -p["rows_per_fact"], -p["order"]))
    seeds = sorted({r["seed"] for r in rows if r["recipe"] == best["recipe"]})
    passed = [n for n in sorted(unknown) if n <= best["max_n"]]
    text = (
        f"With recipe {best['recipe']}, at most {best['max_n']} facts per adapter keep every rule of the policy "
        f"(all {len(seeds)} seed(s) pass at N = {', '.join(map(str, passed))}"
    )
    failure = best["first_failure"]
    if failure:
        text += f"; N = {failure['n']} fails)."
    elif best["not_run"] is not None:
        text += f"; N = {best['not_run']} was not run: the probe has too few facts for it)."
    else:
        text += "; the largest N of the grid)."
    return {"recipe": best["recipe"], "max_n": best["max_n"], "text": text, "per_recipe": per_recipe, "reasons": []}
