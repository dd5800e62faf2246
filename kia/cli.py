"""The `kia` command line: parse, build a config, call one library function, print a summary.

Nothing heavy is imported here, so `kia --help` answers at once. Every `KiaError` becomes one
line on stderr and exit code 2; set KIA_DEBUG=1 for the full traceback.
"""

from __future__ import annotations

import os
from typing import Any

import click

from kia.errors import KiaError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class KiaGroup(click.Group):
    """Turns library errors into one clean line (exit 2) unless KIA_DEBUG is set."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KiaError as exc:
            if os.environ.get("KIA_DEBUG"):
                raise
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: rerun the same command to resume", fg="yellow", err=True)
            ctx.exit(130)


@click.group(cls=KiaGroup, context_settings=CONTEXT)
@click.version_option(package_name="kia")
def cli() -> None:
    """Inject new facts into an LLM with a QLoRA adapter, and audit what the adapter broke.

    \b
    The flow (each stage reads the previous stage's folder):
      kia probe FACTS      which facts does the model already know? (SliCK categories)
      kia build PROBE_DIR  a training mixture: unknown facts + paraphrases / known facts
      kia inject BUILD_DIR train the (Q)LoRA adapter, with a reliability curve
      kia audit ADAPTER    reliability, forgetting, collapse, refusals, benchmarks -> report + PASS/FAIL
      kia demo             all four on the embedded toy world, on the CPU

    Set KIA_DEBUG=1 to see full tracebacks.
    """
    import logging

    # bitsandbytes warns on every 4-bit CPU load that an optional hub kernel is missing; kia runs
    # fine on its built-in CPU path, and the warning reads like a failure.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def main() -> None:
    from kia.commands import register

    register(cli)
    cli(prog_name="kia")


if __name__ == "__main__":
    main()
