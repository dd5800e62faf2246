"""capacity.html: the sweep's curves and its recommendation, one self-contained, inert page.

Rendered from sweep.json alone (`render_capacity`), under the audit report's rules: every string
that came from data reaches the page through jinja2's autoescape, never `|safe`; the charts are
inline SVG whose coordinates are computed here from numbers only; no scripts, fonts, images or
links out, and a Content-Security-Policy that forbids scripts and network loads.

Each chart is one metric against N (log scale) per recipe: the line joins the means over seeds,
the shaded band spans their min and max (the paper's Figures 1-4 show min-max over 3 seeds), and
a dashed line marks the policy's limit where the policy has one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from kia.errors import ArtifactError

W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 250, 52, 14, 14, 38
SERIES = 6  # colour classes r0..r5, cycled


def render_capacity(sweep_dir: str | Path, output: str | Path | None = None) -> Path:
    """Render `sweep_dir/sweep.json` into `capacity.html` (or `output`), atomically; return its path."""
    from kia.artifacts import read_json, write_text

    path = Path(sweep_dir) / "sweep.json"
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ArtifactError(f"{path}: not a sweep result (expected a JSON object with 'rows')")
    return write_text(Path(output) if output else Path(sweep_dir) / "capacity.html", render_html(data))


def render_html(data: dict[str, Any]) -> str:
    """The page for one parsed sweep.json (the same input always gives the same bytes)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_fmt, int=_int, clip=_clip)
    return env.get_template("capacity.html.j2").render(**view(data))


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    if v is None:
        return "—" if x is None else str(x)
    return f"{v:.{digits}f}"


def _clip(x: Any, limit: int = 200) -> str:
    if x is None or isinstance(x, jinja2.Undefined):
        return ""
    s = x if isinstance(x, str) else str(x)
    return s if len(s) <= limit else f"{s[:limit]}… (+{len(s) - limit:,} characters)"


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def chart(
    rows: Sequence[dict[str, Any]],
    key: str,
    title: str,
    recipes: Sequence[str],
    *,
    share: bool = True,
    limit: float | None = None,
    limit_label: str = "",
    base: float | None = None,
) -> dict[str, Any] | None:
    """Coordinates of one metric's chart: per recipe the mean over seeds at each N (a polyline), the
    min-max band (a polygon), and the policy's limit and the base model's value as dashed lines."""
    points: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        n, v = _num(r.get("n")), _num(r.get(key))
        if n is None or v is None or n <= 0:
            continue
        points.setdefault(str(r.get("recipe")), {}).setdefault(n, []).append(v)
    if not points:
        return None
    ns = sorted({n for p in points.values() for n in p})
    values = [v for p in points.values() for vs in p.values() for v in vs]
    extra = [x for x in (limit, base) if x is not None]
    if share:
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    else:
        ticks = nice_ticks(min(values + extra + [0.0]), max(values + extra + [0.0]))
    lo, hi = ticks[0], ticks[-1]
    span = math.log(ns[-1]) - math.log(ns[0])

    def x(n: float) -> float:
        share_x = (math.log(n) - math.log(ns[0])) / span if span else 0.5
        return round(LEFT + share_x * (W - LEFT - RIGHT), 1)

    def y(v: float) -> float:
        return round(TOP + (1 - (min(max(v, lo), hi) - lo) / (hi - lo)) * (H - TOP - BOTTOM), 1)

    series = []
    order = [r for r in recipes if r in points] + sorted(set(points) - set(recipes))
    for i, recipe in enumerate(order):
        p = points[recipe]
        xs = sorted(p)
        means = [sum(p[n]) / len(p[n]) for n in xs]
        top = " ".join(f"{x(n)},{y(max(p[n]))}" for n in xs)
        bottom = " ".join(f"{x(n)},{y(min(p[n]))}" for n in reversed(xs))
        dots = [
            dict(x=x(n), y=y(m), n=n, v=m, lo=min(p[n]), hi=max(p[n]), k=len(p[n]))
            for n, m in zip(xs, means, strict=True)
        ]
        series.append(dict(label=recipe, css=f"r{i % SERIES}", band=f"{top} {bottom}",
                           line=" ".join(f"{d['x']},{d['y']}" for d in dots), dots=dots))  # fmt: skip
    digits = 2 if share else max(0, -math.floor(math.log10(ticks[1] - ticks[0]) + 1e-9))
    return dict(
        key=key, title=title, w=W, h=H, left=LEFT, right=W - RIGHT, top=TOP, bottom=H - BOTTOM, series=series,
        xticks=[dict(x=x(n), label=f"{n:,.0f}") for n in ns],
        yticks=[dict(y=y(t), label=f"{t:.{digits}f}") for t in ticks],
        limit=None if limit is None else dict(y=y(limit), label=limit_label),
        base=None if base is None else dict(y=y(base), label=f"base model {_fmt(base)}"),
    )  # fmt: skip


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round tick values covering [lo, hi]: a step of 1, 2, 2.5 or 5 times a power of ten."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw - 1e-12)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(start, stop + 1)]


def _int(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:,.0f}"


def _base(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [v for r in rows if (v := _num(r.get(key))) is not None]
    return sum(values) / len(values) if values else None


def charts(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [_dict(r) for r in _list(data.get("rows"))]
    recipes = [str(r) for r in _list(_dict(data.get("grid")).get("recipes"))]
    pol = _dict(data.get("policy"))
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("reliability", "Reliability: mean P_greedy on the injected facts",
         {"limit": _num(pol.get("min_reliability")), "limit_label": "policy min_reliability"}),
        ("generalisation", "Generalisation: paraphrases never trained on",
         {"limit": (_num(pol.get("min_generalisation")) or None), "limit_label": "policy min_generalisation",
          "base": _base(rows, "generalisation_base")}),
        ("negative_shift", "Negative shift: held-out known facts that got worse",
         {"limit": _num(pol.get("max_negative_shift")), "limit_label": "policy max_negative_shift"}),
        ("positive_shift", "Positive shift: held-out facts that got better", {}),
        ("refusal_rate", "Refusal rate on held-out questions",
         {"base": _base(rows, "refusal_rate_base")}),
        ("heldout_accuracy", "Held-out accuracy (mean P_greedy, untrained facts)",
         {"base": _base(rows, "heldout_accuracy_base")}),
        ("exploded_answers", "Exploded answers", {"share": False, "limit": _num(pol.get("max_exploded_answers")),
                                                  "limit_label": "policy max_exploded_answers"}),
        ("distinct_answers", "Distinct answers on held-out questions",
         {"share": False, "base": _base(rows, "distinct_answers_base")}),
    ]  # fmt: skip
    drop = _num(pol.get("max_benchmark_drop"))
    for task in _list(data.get("benchmarks")):
        specs.append((f"bench_{task}_delta", f"Benchmark {task}: accuracy change (adapted − base)",
                      {"share": False, "limit": None if drop is None else -drop,
                       "limit_label": "policy max_benchmark_drop (fails only if significant)"}))  # fmt: skip
    out = []
    for key, title, kw in specs:
        c = chart(rows, key, title, recipes, **kw)
        if c is not None:
            out.append(c)
    return out


def view(data: dict[str, Any]) -> dict[str, Any]:
    rows = [_dict(r) for r in _list(data.get("rows"))]
    rec = _dict(data.get("recommendation"))
    tasks = [str(t) for t in _list(data.get("benchmarks"))]
    recipes = [str(r) for r in _list(_dict(data.get("grid")).get("recipes"))]
    legend = [dict(label=r, css=f"r{i % SERIES}") for i, r in enumerate(recipes)]
    grid, heldout = _dict(data.get("grid")), _dict(data.get("heldout"))
    return dict(
        model=data.get("model"),
        probe=data.get("probe"),
        unknown=[str(n) for n in _list(grid.get("unknown"))],
        recipes=recipes,
        seeds=[str(s) for s in _list(grid.get("seeds"))],
        heldout=heldout,
        heldout_categories=[(str(k), v) for k, v in _dict(heldout.get("categories")).items()],
        training_pools=[(str(k), v) for k, v in _dict(heldout.get("training_pools")).items()],
        recommendation=rec,
        per_recipe=[{"not_run": None, **_dict(p)} for p in _list(rec.get("per_recipe"))],
        unfit=[_dict(u) for u in _list(data.get("unfit"))],
        verdict_class="pass" if rec.get("recipe") else "fail",
        findings=[_dict(f) for f in _list(data.get("findings"))],
        charts=charts(data),
        legend=legend,
        rows=rows,
        tasks=tasks,
        policy=[(str(k), v) for k, v in _dict(data.get("policy")).items()],
        shared=[(str(k), v) for k, v in _dict(data.get("shared")).items()],
        seconds=data.get("seconds"),
    )
