"""kia audit ADAPTER_DIR: what the adapter learnt and what it broke, judged by a policy (exit 0/1/2)."""

from __future__ import annotations

from typing import Any

import click

from kia.commands.options import json_option, ray_config, ray_options, vllm_options


@click.command()
@click.argument("adapter_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--against", default=None, type=click.Path(exists=True, file_okay=False),
              help="The production adapter this update would replace: audit the update against it (three arms: "
                   "base, production, candidate; retention of production's facts; the update rules of the policy).")  # fmt: skip
@click.option("--model", "-m", default=None, help="Base model. Default: the one the adapter was trained on.")
@click.option("--build", default=None, type=click.Path(exists=True, file_okay=False),
              help="Build folder (evaluation splits). Default: the adapter's.")  # fmt: skip
@click.option("--probe", default=None, type=click.Path(exists=True, file_okay=False),
              help="Probe folder (exemplar sets, base answers). Default: the build's.")  # fmt: skip
@click.option("--policy", default=None, type=click.Path(dir_okay=False),
              help="Policy TOML with the PASS/FAIL thresholds. Default: probes/policy.toml.")  # fmt: skip
@click.option("--benchmarks", "benchmarks", multiple=True,
              help="lm-eval task names or local task YAML files/folders, comma-separated "
                   "(e.g. mmlu,truthfulqa_mc1,truthfulqa_mc2); 'none' to skip. "
                   "Default: the toy world's tasks for a toy model, else mmlu + truthfulqa_mc1/mc2.")  # fmt: skip
@click.option("-o", "--output", default="runs/audit", show_default=True, help="Output folder.")
@click.option("--engine", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True, help="Generation engine.")
@click.option("--quant", type=click.Choice(["none", "nf4"]), default="none", show_default=True,
              help="nf4: audit on the 4-bit base the adapter was trained on (QLoRA); none: the full-precision base.")  # fmt: skip
@click.option("--batch-size", default=64, show_default=True, help="Sequences per forward pass (generation).")
@vllm_options
@ray_options
@click.option("--shard-size", default=256, show_default=True,
              help="Facts per chunk of generation work (one Ray unit; the answers do not depend on it).")  # fmt: skip
@click.option("--bench-batch-size", default=32, show_default=True, help="lm-eval batch size.")
@click.option(
    "--bench-limit", type=int, default=None, help="At most N documents per benchmark task (quick checks only)."
)
@click.option("--no-refusal-embeddings", "refusal_embeddings", is_flag=True, flag_value=False, default=True,
              help="Detect refusals by patterns only (skip the sentence-embedding model).")  # fmt: skip
@click.option("--parity-prompts", default=64, show_default=True,
              help="--engine vllm: sampled prompts asked again through transformers + peft to check that vLLM's LoRA "
                   "answers agree (a warning below the policy's min_engine_parity); 0 to skip.")  # fmt: skip
@click.option("--no-reuse-probe", "reuse_probe", is_flag=True, flag_value=False, default=True,
              help="Always regenerate the base arm instead of reusing the probe run's answers.")  # fmt: skip
@click.option("--no-report", "report", is_flag=True, flag_value=False, default=True, help="Skip report.html.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap intervals.")
@click.option("--allow-pickle", is_flag=True, help="Load an adapter stored as pickle (.bin); only if you trust it.")
@click.option(
    "--judge",
    default=None,
    metavar="JUDGE",
    help="Judge the arms' free-form answers to the build's open prompts pairwise: 'facts' (no model), "
    "an OpenAI-compatible URL (e.g. http://127.0.0.1:8000/v1), 'base', or a model name or folder.",
)
@click.option("--judge-model", default="default", show_default=True, help="The model name sent to a --judge URL.")
@click.option(
    "--judge-key-env",
    default="KIA_JUDGE_API_KEY",
    show_default=True,
    help="Environment variable holding the --judge URL's API key.",
)
@click.option("--judge-prompts", default=100, show_default=True, help="Open prompts judged.")
@click.option("--judge-timeout", default=60.0, show_default=True, help="Seconds per request to a --judge URL.")
@click.option("--judge-style", is_flag=True,
              help="Also judge which arm's answers are closer in style (form, length, tone) to the training "
                   "answers; needs an LLM judge (not 'facts').")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace a finished audit in the output folder.")
@json_option
def audit(adapter_dir: str, benchmarks: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """Audit an adapter: reliability, knowledge shift, collapse, refusals, benchmarks -> PASS/FAIL.

    Loads the base model once with the adapter and measures everything twice on the same prompts,
    adapter off and on. With --against PRODUCTION, an update: both adapters on one base load, three
    arms (base, production, candidate), and the verdict judges the candidate against production
    (retention of production's facts, the lost ones listed first). Exit code: 0 PASS, 1 FAIL, 2 error.

    \b
    Examples:
      kia audit runs/inject
      kia audit runs/inject --policy strict.toml -o runs/audit-strict
      kia audit runs/inject --model meta-llama/Llama-3.1-8B-Instruct --benchmarks mmlu,truthfulqa_mc2
      kia audit runs/a2 --against runs/a1 -o runs/audit-a2   # is the update a2 fit to replace a1?
      kia audit runs/inject --ray --replicas 2      # both arms on two engine replicas (Ray Data)
      kia audit runs/inject --engine vllm --ray auto --replicas 8   # Ray's vLLM stage, LoRA per row

    Writes audit.json, per_fact.jsonl, report.html and manifest.json.
    """
    from kia.audit import AuditConfig, summary_json
    from kia.audit import audit as run_audit

    items = tuple(x.strip() for b in benchmarks for x in b.split(",") if x.strip()) if benchmarks else None
    config = AuditConfig(adapter=adapter_dir, benchmarks=items, ray=ray_config(kw), **kw)

    def say(msg: str) -> None:
        if not as_json:
            click.echo(msg, err=True)

    result = run_audit(config, progress=say)
    if as_json:
        click.echo(summary_json(result))
    else:
        _print_summary(result)
    click.get_current_context().exit(result.exit_code)


def _print_summary(result: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"audit of {result.output} ({result.seconds:.0f} s)")
    for col in ("metric", "base", "adapted", "change", "95% CI", "p"):
        table.add_column(col, justify="left" if col == "metric" else "right")

    def f(x: Any, fmt: str = ".3f") -> str:
        return "-" if x is None else format(x, fmt)

    def rows(table: Any, metrics: dict[str, Any]) -> None:
        for name, m in metrics.items():
            ci = "-" if m["ci_low"] is None else f"[{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"
            table.add_row(name, f(m["base"]), f(m["adapted"]), f(m["delta"], "+.3f"), ci, f(m["p_value"], ".3g"))

    rows(table, result.metrics)
    console.print(table)
    if result.update is not None:
        u = result.update
        prod, cand = u["production"], u["candidate"]
        title = (
            f"update: candidate {cand['adapter']} ({cand['adapter_id'][:12]}) vs production "
            f"{prod['adapter']} ({prod['adapter_id'][:12]})"
        )
        upd = Table(title=title)
        for col in ("metric", "production", "candidate", "change", "95% CI", "p"):
            upd.add_column(col, justify="left" if col == "metric" else "right")
        rows(upd, u["metrics"])
        console.print(upd)
        for b in u["retention_by_build"]:
            console.print(
                f"  {b['build']}: {b['facts']} facts, production answers {b['production']}, "
                f"candidate {b['candidate']}, lost {b['lost']}",
                highlight=False,
            )
        for lost in u["lost"][:10]:
            text = f"{lost['id']}: {lost['question']} -> '{lost['candidate_answer']}' (production: '{lost['production_answer']}')"
            console.print(f"  [red]lost[/] {escape(text)}", highlight=False)
        if len(u["lost"]) > 10:
            console.print(f"  ... and {len(u['lost']) - 10} more lost facts (audit.json, report.html)")
    colour = "green" if result.verdict == "PASS" else "red"
    console.print(f"[bold {colour}]{result.verdict}[/]")
    for reason in result.reasons:
        console.print(f"  [red]-[/] {reason}", highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    where = result.report or (result.output / "audit.json")
    console.print(f"wrote {where}")
