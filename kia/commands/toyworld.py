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
    from kia.toyworld.pretrain import PretrainConfig, build_toyworld
    from kia.toyworld.world import WorldConfig

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
