"""kia report AUDIT_DIR: re-render the HTML report from an audit folder's audit.json."""

from __future__ import annotations

import click


@click.command()
@click.argument("audit_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", default=None, help="Where to write the page. Default: AUDIT_DIR/report.html.")
def report(audit_dir: str, output: str | None) -> None:
    """Render AUDIT_DIR/audit.json as one self-contained HTML page (no network, no scripts).

    \b
    Example:
      kia report runs/audit -o audit.html
    """
    from kia.report import render_report

    click.echo(f"wrote {render_report(audit_dir, output)}")
