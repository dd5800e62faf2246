"""kia probe FACTS: label each fact Unknown / MaybeKnown / HighlyKnown for a model."""

from __future__ import annotations

import click

from kia.commands.options import json_option, progress_bar, ray_config, ray_options, vllm_options
from kia.probe import MATCH_MODES


@click.command()
@click.argument("facts", type=str)
@click.option("--model", "-m", default=None, help="Model folder or hub id. Default: the embedded toy model.")
@click.option(
    "--adapter", default=None, type=click.Path(exists=True, file_okay=False), help="Probe through this peft adapter."
)
@click.option("--engine", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True, help="Generation engine.")
@click.option(
    "--quant",
    type=click.Choice(["none", "nf4"]),
    default="none",
    show_default=True,
    help="Load the model in 4-bit NF4.",
)
@click.option("-o", "--output", default="runs/probe", show_default=True, help="Output folder.")
@click.option(
    "--exemplars", default=None, help="Fact file to draw few-shot exemplars from. Default: the facts themselves."
)
@click.option("--sets", "n_sets", default=10, show_default=True, help="Few-shot exemplar sets per fact (N_ex).")
@click.option("--shots", default=4, show_default=True, help="Exemplars per set (k).")
@click.option("--samples", "n_samples", default=16, show_default=True, help="Sampled answers per set (N_sample).")
@click.option("--temperature", default=0.5, show_default=True, help="Sampling temperature.")
@click.option("--top-k", default=40, show_default=True, help="Sampling top-k.")
@click.option(
    "--max-new-tokens", default=32, show_default=True, help="Answer length limit (answers stop at the first newline)."
)
@click.option(
    "--match",
    type=click.Choice(MATCH_MODES),
    default="contains",
    show_default=True,
    help="contains: an alias occurs as whole words; exact: SQuAD exact match; paper: raw lower-case substring.",
)
@click.option(
    "--exhaustive",
    is_flag=True,
    help="Run every greedy pass and every sample (full P estimates) instead of the lazy schedule.",
)
@click.option(
    "--greedy-only",
    is_flag=True,
    help="Decide the three-way label from the greedy answers alone, as Pletenev et al.'s code does: "
    "10 generations per fact, no samples (WeaklyKnown left undecided).",
)
@click.option("--limit", type=int, default=None, help="Probe only the first N facts.")
@click.option("--seed", default=0, show_default=True, help="Seed for exemplar sets and sampling.")
@click.option("--batch-size", default=64, show_default=True, help="Sequences per forward pass.")
@vllm_options
@ray_options
@click.option(
    "--shard-size", default=256, show_default=True, help="Facts per shard: a killed run loses at most one shard."
)
@click.option("--keep-generations", is_flag=True, help="Also write every answer to generations.parquet.")
@click.option("--skip-invalid", is_flag=True, help="Write bad fact rows to rejects.jsonl instead of stopping.")
@click.option("--overwrite", is_flag=True, help="Replace a finished or different run in the output folder.")
@json_option
def probe(facts: str, model: str | None, as_json: bool, **kw: object) -> None:
    """Which facts does the model already know? SliCK categories per fact.

    FACTS is a JSONL, CSV or parquet file, a `datasets` folder, or a hub dataset name. Rows need
    `question` and `answers` (or the paper's `answer` with `aliases`).

    \b
    Examples:
      kia probe datasets/toyworld/facts.jsonl -o runs/p1
      kia probe facts.jsonl --model meta-llama/Llama-3.1-8B-Instruct --quant nf4 --engine vllm
      kia probe facts.jsonl --greedy-only -o runs/p2          # the paper's cheaper probe
      kia probe facts.jsonl -o runs/p3 --ray --replicas 2     # Ray Data, two engine replicas here
      kia probe facts.jsonl --engine vllm --ray auto --replicas 8 --model BIG_MODEL   # a Ray cluster

    A killed run resumes when the same command is run again (with or without --ray: a shard
    comes out the same wherever it runs).
    """
    from kia.engines import default_model
    from kia.probe import ProbeConfig
    from kia.probe import probe as run_probe

    ray = ray_config(kw)
    config = ProbeConfig(facts=facts, model=model or default_model(), ray=ray, **kw)  # type: ignore[arg-type]
    bar, update = progress_bar("probing")
    with bar:
        result = run_probe(config, progress=update)
    if as_json:
        from kia.artifacts import to_json

        click.echo(
            to_json(
                {
                    "output": result.output,
                    "counts": result.counts,
                    "slick_counts": result.slick_counts,
                    "n_facts": result.n_facts,
                    "n_generations": result.n_generations,
                    "refusal_rate": result.refusal_rate,
                    "seconds": result.seconds,
                }
            )
        )
        return
    _print_summary(result)


def _print_summary(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    r = result  # a ProbeResult
    table = Table(title=f"{r.n_facts} facts probed in {r.seconds:.0f} s ({r.n_generations} generations)")  # type: ignore[attr-defined]
    table.add_column("category")
    table.add_column("facts", justify="right")
    table.add_column("share", justify="right")
    for name, count in r.counts.items():  # type: ignore[attr-defined]
        table.add_row(name, str(count), f"{count / max(1, r.n_facts):.1%}")  # type: ignore[attr-defined]
    console = Console()
    console.print(table)
    sc = r.slick_counts  # type: ignore[attr-defined]
    if r.greedy_only:  # type: ignore[attr-defined]
        console.print("SliCK (four-way): not decided (--greedy-only draws no samples)")
    else:
        console.print("SliCK (four-way): " + ", ".join(f"{k} {v}" for k, v in sc.items()))
    console.print(f"refusals (first greedy answer): {r.refusal_rate:.1%}")  # type: ignore[attr-defined]
    for w in r.warnings[:5]:  # type: ignore[attr-defined]
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"wrote {r.output}/facts.parquet, summary.json, manifest.json")  # type: ignore[attr-defined]
