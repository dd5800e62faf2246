"""kia demo: the whole flow on the embedded toy world, on the CPU."""

from __future__ import annotations

import click


@click.command()
@click.option("-o", "--output", default="runs/demo", show_default=True, help="Folder for every stage's output.")
@click.option(
    "--facts-per-relation", default=60, show_default=True, help="Toy facts probed per relation (8 relations)."
)
@click.option("--unknown", default=40, show_default=True, help="Unknown facts to inject.")
@click.option("--epochs", default=10, show_default=True, help="Training epochs.")
@click.option("--lr", default=3e-3, show_default=True, help="Learning rate (try 1e-2 for a more aggressive adapter).")
@click.option("--seed", default=0, show_default=True, help="Seed for every stage.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in the output folder.")
def demo(
    output: str, facts_per_relation: int, unknown: int, epochs: int, lr: float, seed: int, overwrite: bool
) -> None:
    """Probe, build, inject and audit on the embedded toy world (under 10 minutes on 2 CPU cores).

    Every stage is the real one on a stratified sample of the toy world: the probe labels 480
    facts, the build picks 40 Unknown ones (plus one HighlyKnown fact and one paraphrase each),
    inject trains a 4-bit QLoRA adapter with the paper preset, and the audit compares base and
    adapter on the same prompts and judges the result with the default policy. Each stage's
    folder lands under OUTPUT (probe/, build/, adapter/, audit/ with report.html).

    The demo exits 0 whatever the verdict: it shows the gate, it is not one (`kia audit` exits 1
    on FAIL).

    \b
    Examples:
      kia demo                         # then open runs/demo/audit/report.html
      kia demo --lr 1e-2 --unknown 100 -o runs/aggressive --overwrite
    """
    from kia.demo import DemoConfig
    from kia.demo import demo as run_demo

    config = DemoConfig(
        output=output,
        facts_per_relation=facts_per_relation,
        unknown=unknown,
        epochs=epochs,
        lr=lr,
        seed=seed,
        overwrite=overwrite,
    )
    result = run_demo(config, log=click.echo)
    colour = "green" if result.verdict == "PASS" else "red"
    click.secho(f"verdict: {result.verdict}", fg=colour, bold=True)
    for reason in result.reasons:
        click.echo(f"  - {reason}")
    if result.report:
        click.echo(f"report: {result.report}")
