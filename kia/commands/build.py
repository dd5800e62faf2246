"""kia build PROBE_DIR: a training mixture (Unknown facts + paraphrases / known facts) and the eval splits."""

from __future__ import annotations

from typing import Any

import click

from kia.build import FORMATS, PROMPT_SOURCES, SOURCES
from kia.build import MAX_RELATION_SHARE as _REL_SHARE
from kia.build import MAX_SIMILARITY as _MAX_SIM
from kia.build import MAX_TOP_SHARE as _TOP_SHARE
from kia.build import MIN_SIMILARITY as _MIN_SIM
from kia.commands.options import json_option


@click.command()
@click.argument("probe_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", default="runs/build", show_default=True, help="Output folder.")
@click.option("--unknown", type=int, required=True, help="Unknown facts to inject (the paper's N: 1 ... 3000).")
@click.option("--highly-known", default=0, show_default=True, help="HighlyKnown facts per injected fact (K: 0, 1, 10).")
@click.option(
    "--paraphrases", default=0, show_default=True, help="Trained paraphrases per injected fact (P: 0, 1, 10)."
)
@click.option("--maybe-known", default=0, show_default=True, help="MaybeKnown facts per injected fact.")
@click.option(
    "--stratify",
    type=click.Choice(["relation"]),
    default=None,
    help="Draw each category in proportion to its relations.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for every random pick and the training order.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="paper",
    show_default=True,
    help="paper: system prompt + 'Question: …' / 'Answer: …' turns; plain: the bare question and answer.",
)
@click.option(
    "--paraphraser",
    type=click.Choice(SOURCES),
    default="own",
    show_default=True,
    help="First paraphrase source: the facts' own column, then relation templates, then an LLM.",
)
@click.option(
    "--paraphrase-model",
    default=None,
    help="LLM that rephrases: with --paraphraser model (default: the probe's model), or to fill gaps.",
)
@click.option("--paraphrase-candidates", default=8, show_default=True, help="Sampled rephrasings per question (LLM).")
@click.option(
    "--eval-paraphrases", default=1, show_default=True, help="Paraphrases per injected fact held back for eval."
)
@click.option(
    "--open-prompts",
    type=click.Choice(PROMPT_SOURCES),
    default="templates",
    show_default=True,
    help="eval_open.jsonl's prompts: templates ('Tell me about X.'), or an LLM writes one per subject (screened: "
    "names the subject, states no answer; a rejected one falls back to its template).",
)
@click.option(
    "--open-prompt-model",
    default=None,
    help="LLM that writes the open prompts (default: --paraphrase-model, else the probe's model).",
)
@click.option("--heldout", default=300, show_default=True, help="Untrained facts, equal per category (all if fewer).")
@click.option(
    "--heldout-ids",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help='JSON list of fact ids (or {"ids": [...]}, as kia sweep\'s heldout.json) that are the held-out split, '
    "kept out of training; instead of drawing --heldout of them.",
)
@click.option(
    "--min-similarity", default=_MIN_SIM, show_default=True, help="Paraphrase filter: least cosine to the question."
)
@click.option("--max-similarity", default=_MAX_SIM, show_default=True, help="Paraphrase filter: near-duplicate cosine.")
@click.option(
    "--embedder", default=None, help="Sentence-transformers model for the filter. Default: offline all-MiniLM-L6-v2."
)
@click.option(
    "--max-top-share", default=_TOP_SHARE, show_default=True, help="Warn when one answer is more than this share."
)
@click.option(
    "--max-relation-share",
    default=_REL_SHARE,
    show_default=True,
    help="Warn when one relation is more than this share.",
)
@click.option(
    "--after",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="An earlier build this one follows (an update): its facts, and those of the builds before it, are "
    "neither injected again nor held out. Repeatable.",
)
@click.option(
    "--replay",
    multiple=True,
    metavar="BUILD[:N]",
    help="Also train again N (default: all) of the facts BUILD and the builds before it injected, with the "
    "rows they were trained on (question and paraphrases); implies --after BUILD. Repeatable.",
)
@click.option(
    "--benchmarks",
    default=None,
    metavar="TASKS",
    help="Comma-separated local lm-eval task YAMLs and lm-eval task or group names (mmlu, arc_easy) to check "
    "the training data against (contamination.json); a name whose data cannot be read (offline) is listed as "
    "not checked. Default: the toy tasks beside a toy-world model; 'none' for none.",
)
@click.option("--contamination-n", default=10, show_default=True, help="Word n-gram length of the contamination check.")
@click.option("--overwrite", is_flag=True, help="Replace a finished build in the output folder.")
@json_option
def build(probe_dir: str, format_: str, as_json: bool, after: tuple[str, ...], replay: tuple[str, ...],
          benchmarks: str | None, **kw: Any) -> None:  # fmt: skip
    """Build a training mixture from a probe run, with the evaluation splits the audit needs.

    \b
    Examples:
      kia build runs/p1 --unknown 100 --highly-known 1 --paraphrases 3 -o runs/b1
      kia build runs/p1 --unknown 500 --paraphrases 10 --stratify relation --seed 1337
      kia build runs/p1 --unknown 40 --highly-known 1 --paraphrases 1 --replay runs/b1:20 -o runs/b2

    Writes train.jsonl, eval_injected.jsonl, eval_paraphrase.jsonl, eval_heldout.jsonl, bias.json,
    contamination.json (training rows that overlap benchmark documents or held-out rows), exemplars.json
    and manifest.json, and eval_replay.jsonl (the replayed facts) with --replay.
    Warnings (answers or relations the training data leans on, facts with fewer paraphrases than
    asked) are printed and kept in bias.json.
    """
    from kia.build import BuildConfig
    from kia.build import build as run_build

    bench = tuple(b.strip() for b in benchmarks.split(",") if b.strip()) if benchmarks is not None else None
    result = run_build(BuildConfig(probe=probe_dir, format=format_, after=after, replay=replay, benchmarks=bench, **kw))
    if as_json:
        from kia.artifacts import to_json

        b = result.bias
        summary = {k: b[k] for k in ("rows", "distinct_answers", "top_answers", "top_share", "answer_entropy",
                                     "relations", "top_relation")}  # fmt: skip
        click.echo(to_json({"output": result.output, "counts": result.counts, "kinds": result.kinds,
                            "recipe": result.recipe, "bias": summary, "paraphrases": b.get("paraphrases"),
                            "open_prompts": result.open_prompts, "warnings": result.warnings,
                            "seconds": result.seconds}))  # fmt: skip
        return
    _print_summary(result)


def _print_summary(r: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    rc = r.recipe
    console.print(
        f"recipe: {rc['unknown']} Unknown, per fact {rc['highly_known']} HighlyKnown, {rc['paraphrases']} "
        f"paraphrases, {rc['maybe_known']} MaybeKnown; {rc['eval_paraphrases']} paraphrase(s) held back; "
        f"format {rc['format']}, paraphraser {rc['paraphraser']}"
    )
    table = Table(title=f"build written to {r.output} in {r.seconds:.0f} s")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("detail")
    for split, n in r.counts.items():
        detail = ", ".join(f"{k} {v}" for k, v in r.kinds.items() if v) if split == "train" else ""
        table.add_row(split, str(n), detail)
    console.print(table)
    op = r.open_prompts
    if op.get("source") == "model":
        why = ", ".join(f"{k} {v}" for k, v in op["rejected"].items())
        console.print(
            f"open prompts: {op['kept']} of {op['rows']} written by {escape(str(op['model']))}, {op['fell_back']} "
            f"fell back to templates{f' ({why})' if why else ''} in {op['seconds']:.0f} s"
        )
    b = r.bias
    top = ", ".join(f"{escape(t['answer'])} {t['share']:.1%}" for t in b["top_answers"][:3])
    rel = b["top_relation"]
    console.print(
        f"answers: {b['distinct_answers']} distinct, normalised entropy {b['answer_entropy']:.2f}, top: {top}; "
        f"largest relation: {escape(str(rel['relation']))} {rel['share']:.0%}"
    )
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
