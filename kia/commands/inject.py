"""kia inject BUILD_DIR: train the (Q)LoRA adapter, printing the reliability curve per epoch."""

from __future__ import annotations

from typing import Any

import click

from kia.cli import json_option


@click.command()
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", default=None, help="Base model. Default: the one the build's probe used.")
@click.option("-o", "--output", default="runs/inject", show_default=True, help="Output folder (the adapter).")
@click.option(
    "--preset",
    type=click.Choice(["paper", "qlora"]),
    default="qlora",
    show_default=True,
    help="paper: r=1, alpha 2, rsLoRA, MLP only, lr 1e-3, loss on everything; qlora: r=16, all linear, lr 2e-4, loss on the answer.",
)
@click.option(
    "--quant",
    type=click.Choice(["nf4", "none"]),
    default="nf4",
    show_default=True,
    help="nf4: 4-bit QLoRA base (bitsandbytes; works on the CPU too); none: plain LoRA.",
)
@click.option("--rank", type=int, default=None, help="LoRA rank (overrides the preset).")
@click.option("--alpha", type=float, default=None, help="LoRA alpha.")
@click.option("--dropout", type=float, default=None, help="LoRA dropout.")
@click.option("--targets", default=None, help="Comma-separated module names, or all-linear.")
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--epochs", type=int, default=None, help="Epochs.")
@click.option("--batch-size", type=int, default=None, help="Rows per step.")
@click.option(
    "--loss", type=click.Choice(["full", "answer"]), default=None, help="Loss on the whole sequence or the answer only."
)
@click.option("--seed", default=0, show_default=True, help="Seed.")
@click.option(
    "--stop-at-reliability", type=float, default=None, help="Stop once reliability on the injected facts reaches this."
)
@click.option(
    "--eval-sets", default=3, show_default=True, help="Exemplar sets for the per-epoch reliability (the paper: 10)."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a finished adapter in the output folder.")
@json_option
def inject(build_dir: str, targets: str | None, as_json: bool, **kw: Any) -> None:
    """Train the adapter that carries the new facts (QLoRA by default), with a reliability curve.

    \b
    Examples:
      kia inject runs/b1 -o runs/a1
      kia inject runs/b1 --preset paper --quant none -o runs/a-lora
      accelerate launch --num_processes 2 -m kia inject runs/b1 -o runs/a1   # several GPUs (DDP)
    """
    from rich.console import Console

    from kia.train import InjectConfig
    from kia.train import inject as run_inject

    console = Console(stderr=True)

    def progress(row: dict, epochs: int) -> None:
        rel = row["reliability"]
        known = row["heldout_known_reliability"]
        console.print(
            f"epoch {row['epoch']:>3}/{epochs}  loss {row['loss'] if row['loss'] is None else round(row['loss'], 4)}"
            f"  reliability {rel:.3f}"
            + (f"  held-out known {known:.3f}" if known is not None else "")
            + f"  ({row['seconds']:.0f} s)"
        )

    tgt = tuple(t.strip() for t in targets.split(",")) if targets else None
    result = run_inject(InjectConfig(build=build_dir, targets=tgt, **kw), progress=progress)
    if as_json:
        from kia.artifacts import to_json

        click.echo(to_json({"output": result.output, "curve": result.curve, "reliability": result.reliability,
                            "base_reliability": result.base_reliability, "tokens_per_second": result.tokens_per_second,
                            "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb}))  # fmt: skip
        return
    base = "n/a" if result.base_reliability is None else f"{result.base_reliability:.3f}"
    final = "n/a" if result.reliability is None else f"{result.reliability:.3f}"
    click.echo(f"reliability on the injected facts: {base} (base) -> {final} (adapter)")
    click.echo(
        f"{result.tokens_per_second:.0f} tokens/s, {result.seconds:.0f} s, peak memory {result.peak_memory_mb:.0f} MiB"
    )
    click.echo(f"adapter written to {result.output}")
