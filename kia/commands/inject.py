"""kia inject BUILD_DIR: train the (Q)LoRA adapter, printing the reliability curve per epoch."""

from __future__ import annotations

from typing import Any

import click

from kia.commands.options import json_option
from kia.inject import DEFAULT_CAP, DEFAULT_MIN_STEPS, DEFAULT_TARGET, PRECISIONS, PRESETS


@click.command()
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", default=None, help="Base model. Default: the one the build's probe used.")
@click.option("-o", "--output", default="runs/inject", show_default=True, help="Output folder (the adapter).")
@click.option(
    "--from-adapter",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Continue this adapter (an update of the one in production) instead of starting from zero: same base "
    "model, rank, alpha and target modules (pass its --preset / --rank); its manifest lineage is carried on.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
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
@click.option("--epochs", type=int, default=None, help="Epochs (exactly these unless --min-steps is given too).")
@click.option(
    "--min-steps",
    type=int,
    default=None,
    help=f"Train at least this many optimizer steps: the epochs grow to ceil(min steps / steps per epoch) when "
    f"the preset's are fewer. Default: {DEFAULT_MIN_STEPS} without --epochs, 0 with it. Without --epochs training "
    f"then goes on until --stop-at-reliability (default {DEFAULT_TARGET}), at most {DEFAULT_CAP}x those epochs. "
    "The rule is in the manifest.",
)
@click.option("--batch-size", type=int, default=None, help="Rows per step.")
@click.option(
    "--loss", type=click.Choice(["full", "answer"]), default=None, help="Loss on the whole sequence or the answer only."
)
@click.option("--seed", default=0, show_default=True, help="Seed (LoRA init, data order, dropout).")
@click.option(
    "--stop-at-reliability",
    type=float,
    default=None,
    help=f"Stop once the curve's reliability on the injected facts reaches this (default without --epochs: "
    f"{DEFAULT_TARGET}, after the step budget; with --epochs: none).",
)
@click.option(
    "--eval-sets",
    default=1,
    show_default=True,
    help="Exemplar sets for the per-epoch reliability (the audit uses all 10, as the paper).",
)
@click.option(
    "--eval-facts",
    type=int,
    default=None,
    help="Injected facts (a seeded sample) re-asked each epoch; 0 for all of them. Default: a sixth of the "
    "training rows, between 64 and 200, so that the curve costs about a tenth of the training.",
)
@click.option(
    "--heldout-known",
    default=20,
    show_default=True,
    help="Held-out HighlyKnown facts re-asked each epoch (forgetting as it happens); 0 to skip.",
)
@click.option(
    "--padding-free/--padded",
    default=None,
    help="Flatten each batch into one sequence (position ids restart per row; no padding token computed), "
    "or pad rows to the batch's longest, grouped by length. Default: padding-free on a GPU, padded on the CPU "
    "(faster there).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Dtype of the training's matrix products. auto: bf16 on a GPU, and for 4-bit weights on a CPU that has "
    "bf16 in hardware (AVX512-BF16 or AMX: about twice fp32's speed there); fp32 elsewhere. The LoRA weights, "
    "the optimizer and the loss stay fp32.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a finished (or interrupted) run in the output folder.")
@json_option
def inject(build_dir: str, targets: str | None, as_json: bool, **kw: Any) -> None:
    """Train the adapter that carries the new facts (QLoRA by default), with a reliability curve.

    Reliability (the share of few-shot greedy answers that are right, as in Pletenev et al. 2025)
    is measured on the injected facts after every epoch and printed as it comes.

    \b
    Examples:
      kia inject runs/b1 -o runs/a1
      kia inject runs/b1 --preset paper --quant none -o runs/a-lora
      kia inject runs/b1 -o runs/a1 --resume        # after an interruption
      kia inject runs/b2 --from-adapter runs/a1 -o runs/a2   # next month's facts, on top of a1
      accelerate launch --multi_gpu --num_processes 2 -m kia inject runs/b1 -o runs/a1   # DDP
    """
    import os

    from rich.console import Console

    from kia.inject import InjectConfig
    from kia.inject import inject as run_inject

    console = Console(stderr=True)

    def fmt(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def progress(row: dict, epochs: int) -> None:
        known = row["heldout_known_reliability"]
        console.print(
            f"epoch {row['epoch']:>3}/{epochs}  loss {fmt(row['loss'], 4)}  reliability {fmt(row['reliability'])}"
            + (f"  held-out known {known:.3f}" if known is not None else "")
            + f"  ({row['seconds']:.0f} s)"
        )

    tgt = tuple(t.strip() for t in targets.split(",") if t.strip()) if targets else None
    result = run_inject(InjectConfig(build=build_dir, targets=tgt, **kw), progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch, one process reports
        return
    if as_json:
        from kia.artifacts import to_json

        click.echo(to_json({"output": result.output, "curve": result.curve, "reliability": result.reliability,
                            "base_reliability": result.base_reliability, "tokens_per_second": result.tokens_per_second,
                            "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb,
                            "hyperparameters": result.hyperparameters, "precision": result.precision,
                            "schedule": result.schedule, "adapter_id": result.adapter_id,
                            "parent": result.parent}))  # fmt: skip
        return
    from rich.table import Table

    table = Table(title="reliability on the injected facts, per epoch")
    for name in ("epoch", "loss", "reliability", "held-out known", "seconds"):
        table.add_column(name, justify="right")
    table.add_row("base", "-", fmt(result.base_reliability), "-", "-", style="dim")
    for row in result.curve:
        table.add_row(
            str(row["epoch"]), fmt(row["loss"], 4), fmt(row["reliability"]),
            fmt(row["heldout_known_reliability"]), f"{row['seconds']:.0f}",
        )  # fmt: skip
    out = Console()
    out.print(table)
    out.print(
        f"reliability {fmt(result.base_reliability)} (base) -> {fmt(result.reliability)} (adapter); "
        f"{result.tokens_per_second:.0f} tokens/s ({result.precision}), {result.seconds:.0f} s, peak memory {result.peak_memory_mb:.0f} MiB"
    )
    if result.schedule:
        out.print(f"schedule: {result.schedule['rule']}, {result.schedule['steps_run']} optimizer steps")
    parent = f", continued from {result.parent}" if result.parent else ""
    out.print(f"adapter written to {result.output} (weights {(result.adapter_id or '?')[:12]}{parent})")
