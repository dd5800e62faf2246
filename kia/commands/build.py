"""kia build PROBE_DIR: a training mixture (unknown facts + paraphrases / known facts) and eval splits."""

from __future__ import annotations

import click

from kia.cli import json_option


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
    "--stratify", type=click.Choice(["relation"]), default=None, help="Draw each category proportionally per relation."
)
@click.option("--seed", default=0, show_default=True, help="Seed for every random pick.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["paper", "bare"]),
    default="paper",
    show_default=True,
    help="paper: system + 'Question: ...' / 'Answer: ...' chat turns; bare: the question and answer alone.",
)
@click.option(
    "--paraphraser",
    type=click.Choice(["own", "templates", "model"]),
    default="own",
    show_default=True,
    help="Where paraphrases come from first: the facts' own column, relation templates, or an LLM.",
)
@click.option("--paraphrase-model", default=None, help="Model for --paraphraser model.")
@click.option(
    "--eval-paraphrases", default=1, show_default=True, help="Paraphrases per injected fact kept back for evaluation."
)
@click.option(
    "--heldout", default=300, show_default=True, help="Untrained facts (all categories) for shift and collapse."
)
@click.option(
    "--min-similarity", default=0.70, show_default=True, help="Paraphrase filter: least cosine to the question."
)
@click.option("--max-similarity", default=0.995, show_default=True, help="Paraphrase filter: near-duplicate cut-off.")
@click.option(
    "--max-top-share", default=0.05, show_default=True, help="Warn when one answer is more than this share of rows."
)
@click.option(
    "--max-relation-share", default=0.5, show_default=True, help="Warn when one relation is more than this share."
)
@click.option("--overwrite", is_flag=True, help="Replace a finished build in the output folder.")
@json_option
def build(probe_dir: str, format_: str, as_json: bool, **kw: object) -> None:
    """Build a training mixture from a probe run, with the evaluation splits the audit needs.

    \b
    Examples:
      kia build runs/p1 --unknown 100 --highly-known 1 --paraphrases 3 -o runs/b1
      kia build runs/p1 --unknown 500 --paraphrases 10 --stratify relation

    Writes train.jsonl, eval_injected.jsonl, eval_paraphrase.jsonl, eval_heldout.jsonl, bias.json
    and manifest.json.
    """
    from kia.build import BuildConfig
    from kia.build import build as run_build

    result = run_build(BuildConfig(probe=probe_dir, format=format_, **kw))  # type: ignore[arg-type]
    if as_json:
        from kia.artifacts import to_json

        click.echo(to_json({"output": result.output, "counts": result.counts, "warnings": result.warnings,
                            "bias": result.bias}))  # fmt: skip
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"mixture written to {result.output}")
    table.add_column("split / part")
    table.add_column("rows", justify="right")
    for name, n in result.counts.items():
        table.add_row(name, str(n))
    console.print(table)
    b = result.bias
    top = ", ".join(f"{t['answer']} ({t['share']:.1%})" for t in b["top_answers"][:3])
    console.print(f"answers: {b['distinct_answers']} distinct, entropy {b['answer_entropy']:.2f}; top: {top}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
