"""kia toyworld: rebuild the embedded toy world (facts, skills, tiny Llama) from a seed."""

from __future__ import annotations

import click


@click.group()
def toyworld() -> None:
    """The embedded toy world: invented facts with known exposure, and a tiny Llama trained on them."""


@toyworld.command("build")
@click.option("-o", "--output", default="datasets/toyworld", show_default=True, help="Where to write the world.")
@click.option("--seed", default=0, show_default=True, help="Seed for the world and the model.")
@click.option("--epochs", default=30, show_default=True, help="Pretraining epochs over the corpus.")
@click.option("--facts-per-relation", default=300, show_default=True, help="Facts per relation (8 relations).")
@click.option("--no-model", is_flag=True, help="Write the data files only; skip pretraining.")
@click.option("--save-epochs", default="", help="Comma-separated epochs at which to keep extra snapshots.")
def build_cmd(output: str, seed: int, epochs: int, facts_per_relation: int, no_model: bool, save_epochs: str) -> None:
    """Generate the world and pretrain its model on the CPU (about 30 minutes on 2 cores).

    \b
    Example:
      kia toyworld build -o datasets/toyworld --seed 0
    """
    from kia.toyworld import PretrainConfig, WorldConfig, build_toyworld

    snapshots = tuple(int(e) for e in save_epochs.split(",") if e.strip())
    result = build_toyworld(
        output,
        WorldConfig(seed=seed, facts_per_relation=facts_per_relation),
        PretrainConfig(seed=seed, epochs=epochs, save_epochs=snapshots),
        train_model=not no_model,
        log=click.echo,
    )
    click.echo(
        f"wrote {result['facts']} facts to {output}/facts.jsonl"
        + ("" if no_model else f" and the model to {output}/model")
    )


@toyworld.command("check")
@click.argument("probe_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_cmd(probe_dir: str, as_json: bool) -> None:
    """Compare a probe of the toy model with the world's ground truth (exposure per fact).

    \b
    Example:
      kia probe datasets/toyworld/facts.jsonl -o runs/p1 && kia toyworld check runs/p1
    """
    from kia.artifacts import to_json
    from kia.toyworld import groundtruth_report

    report = groundtruth_report(probe_dir)
    if as_json:
        click.echo(to_json(report))
        return
    click.echo(f"{report['facts']} facts; refusal rate {report['refusal_rate']:.1%}")
    click.echo("exposure  facts  Unknown  HighlyKnown  mean P_greedy  refusals")
    for exposure, b in report["bands"].items():
        click.echo(
            f"{exposure:>8}  {b['facts']:>5}  {b['unknown']:>7.1%}  {b['highly_known']:>11.1%}"
            f"  {b['mean_p_greedy']:>13.3f}  {b['refusal_rate']:>8.1%}"
        )
    click.echo("SliCK shares: " + ", ".join(f"{k} {v:.1%}" for k, v in report["slick_shares"].items()))
    for name, ok in report["checks"].items():
        click.secho(f"{'ok  ' if ok else 'FAIL'} {name}", fg="green" if ok else "red")
