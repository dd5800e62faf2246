"""`kia report`: the audit's self-contained HTML page, rendered from the audit folder's files alone.

- `render`: `render_report` (folder in, report.html out) and `render_html` (audit.json in, HTML out);
- `report.html.j2`: the page's one template.
"""

from kia.report.render import render_html, render_report

__all__ = ["render_html", "render_report"]
