"""kia sweep PROBE_DIR: the paper's grid of build -> inject -> audit points, the capacity curves and a recommendation."""

from __future__ import annotations

from typing import Any

import click

from kia.commands.options import json_option


@click.command()
@click.argument("probe_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--unknown", required=True, help="N values: Unknown facts per adapter, comma-separated (e.g. 10,30,100).")
@click.option("--recipe", "recipes", multiple=True,
              help='Mixture per injected fact, repeatable: "K=1,P=0" = K HighlyKnown facts and P paraphrases '
                   '(M=… MaybeKnown). Default: "K=0,P=0".')  # fmt: skip
@click.option(
    "--seeds", default="0", show_default=True, help="Seeds, comma-separated (each point is trained once per seed)."
)
@click.option("-o", "--output", default="runs/sweep", show_default=True, help="Output folder.")
@click.option(
    "--heldout", default=300, show_default=True, help="Held-out facts shared by every point (equal per category)."
)
@click.option("--heldout-seed", default=0, show_default=True, help="Seed of the held-out set's draw.")
@click.option("--stratify", type=click.Choice(["relation"]), default=None, help="Build: draw facts per relation.")
@click.option(
    "--preset", type=click.Choice(["qlora", "paper"]), default="qlora", show_default=True, help="Inject preset."
)
@click.option(
    "--quant",
    type=click.Choice(["nf4", "none"]),
    default="nf4",
    show_default=True,
    help="Training base: 4-bit or full.",
)
@click.option("--lr", type=float, default=None, help="Learning rate (default: the preset's).")
@click.option("--epochs", type=int, default=None, help="Epochs, exactly (default: the preset's, grown to --min-steps).")
@click.option("--min-steps", type=int, default=None, help="Least optimizer steps per point (default: kia inject's).")
@click.option("--stop-at-reliability", type=float, default=None,
              help="Stop a point's training once its reliability curve reaches this; with --epochs as the cap, "
                   "large N trains until its facts are in.")  # fmt: skip
@click.option("--batch-size", type=int, default=None, help="Rows per step (default: the preset's).")
@click.option("--rank", type=int, default=None, help="LoRA rank (default: the preset's).")
@click.option("--policy", default=None, type=click.Path(dir_okay=False),
              help="Policy TOML for every point's verdict and the recommendation. Default: probes/policy.toml.")  # fmt: skip
@click.option("--benchmarks", "benchmarks", multiple=True,
              help="lm-eval tasks for every audit (as kia audit), comma-separated; 'none' to skip.")  # fmt: skip
@click.option("--bench-limit", type=int, default=None, help="At most N documents per benchmark task.")
@click.option("--audit-quant", type=click.Choice(["none", "nf4"]), default="none", show_default=True,
              help="The audit's base model: full precision or the 4-bit training base.")  # fmt: skip
@click.option(
    "--no-report", "report", is_flag=True, flag_value=False, default=True, help="Skip each point's report.html."
)
@click.option("--overwrite", is_flag=True, help="Start over: remove the earlier sweep in the output folder.")
@click.option("--skip-unfit", is_flag=True,
              help="Run the points the probe has enough facts for and list the others as not run "
                   "(default: such a grid is an error before any work).")  # fmt: skip
@json_option
def sweep(
    probe_dir: str, unknown: str, recipes: tuple[str, ...], seeds: str, benchmarks: tuple[str, ...], as_json: bool,
    **kw: Any,
) -> None:  # fmt: skip
    """How many facts fit in one adapter before it harms the model? Runs the grid and recommends.

    Each point of the grid (N Unknown facts x recipe x seed) is a build, an inject and an audit of
    its own, in points/<name>/ under OUTPUT; all share one held-out set (drawn before the grid),
    one process, one loaded base model for the audits, and the base model's answers and benchmark
    scores. A killed sweep is resumed by running the same command again: finished points are
    skipped. Writes sweep.parquet, sweep.json, capacity.html (the curves) and manifest.json.

    \b
    Examples:
      kia sweep runs/p1 --unknown 10,30,100,300 --recipe "K=0,P=0" --recipe "K=1,P=0" \\
          --recipe "K=0,P=10" --seeds 0,1 -o runs/sweep
      kia sweep runs/p1 --unknown 10,50 --seeds 0 --benchmarks none -o runs/quick
    """
    from kia.sweep import Recipe, SweepConfig, parse_ints
    from kia.sweep import sweep as run_sweep

    items = tuple(x.strip() for b in benchmarks for x in b.split(",") if x.strip()) if benchmarks else None
    config = SweepConfig(
        probe=probe_dir,
        unknown=parse_ints(unknown, "--unknown", least=1),
        recipes=tuple(Recipe.parse(r) for r in recipes) or (Recipe(),),
        seeds=parse_ints(seeds, "--seeds"),
        benchmarks=items,
        **kw,
    )

    def say(msg: str) -> None:
        click.echo(msg, err=as_json)

    result = run_sweep(config, progress=say)
    if as_json:
        from kia.artifacts import to_json

        click.echo(to_json({"output": result.output, "page": result.page, "recommendation": result.recommendation,
                            "findings": result.findings, "rows": result.rows, "skipped": result.skipped,
                            "seconds": result.seconds}))  # fmt: skip
        return
    click.secho(result.recommendation["text"], bold=True)
    for f in result.findings:
        state = {True: "held", False: "not held", None: "not measurable"}[f["held"]]
        click.echo(f"  {f['finding']}: {state} ({f['evidence']})")
    click.echo(f"wrote {result.output / 'sweep.parquet'} and {result.page or result.output / 'sweep.json'}")
