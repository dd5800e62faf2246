"""The audit report: one self-contained, inert HTML page rendered from `audit.json` alone.

`render_report` is a pure function of the audit folder: no stage calls it, nothing else is read, and
it can be re-run anywhere (`kia report AUDIT_DIR`). Every string that came from data reaches the page
through jinja2's autoescape, never `|safe`; the charts are inline SVG whose coordinates are computed
here from numbers only. The page loads nothing (no scripts, fonts, images or links out) and carries a
Content-Security-Policy that forbids scripts and network loads, as a second line of defence.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from kia.artifacts import read_json, write_text
from kia.errors import ArtifactError

CATEGORIES = ("Unknown", "MaybeKnown", "HighlyKnown")
METRIC_ORDER = (
    "reliability",
    "reliability_full",
    "generalisation",
    "positive_shift",
    "negative_shift",
    "refusal_rate",
    "distinct_answers",
    "answer_entropy",
    "exploded_answers",
    "target_answer_share",
)
SERIES_LABELS = {
    "reliability": "reliability (injected facts)",
    "heldout_known_reliability": "held-out known reliability",
}
REASON_LABELS = {
    "non_refusal": "non-refusal (answers where it used to refuse)",
    "explosion": "explosion (gives an exploded answer)",
    "target_based": "target-based (gives a training target)",
    "same_relation": "same relation as an injected fact",
    "explained": "explained by at least one reason",
}
SANITY_LABELS = (  # (key, label, the value that is good)
    ("loads", "adapter loads", True),
    ("base_model_matches", "adapter matches the base model", True),
    ("noop", "adapter is a no-op", False),
    ("lora_b_all_zero", "all LoRA B matrices are zero", False),
)
CHART_W, CHART_H, PAD_L, PAD_R, PAD_T, PAD_B = 1040, 300, 48, 16, 16, 40


def render_report(audit_dir: str | Path, output: str | Path | None = None) -> Path:
    """Render `audit_dir/audit.json` into `report.html` (or `output`), atomically; return its path."""
    audit_dir = Path(audit_dir)
    path = audit_dir / "audit.json"
    try:
        audit = read_json(path)
    except OSError as exc:  # a folder named audit.json, no permission, ...
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not isinstance(audit, dict) or "verdict" not in audit:
        raise ArtifactError(f"{path}: not an audit result (expected a JSON object with a 'verdict')")
    return write_text(Path(output) if output else audit_dir / "report.html", render_html(audit))


def render_html(audit: dict[str, Any]) -> str:
    """The report page for one parsed audit.json (the same input always gives the same bytes)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, signed=fmt_signed, pval=fmt_p, clip=clip)
    return env.get_template("report.html.j2").render(**view(audit))


# --- formatting: each returns plain text (autoescaped by the template) ------------------------


def num(x: Any) -> float | None:
    """A finite float, or None for anything else (missing, null, NaN, a string, a bool)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def fmt_num(x: Any, digits: int = 3, integral: bool = False) -> str:
    v = num(x)
    if v is None:
        return "—" if x is None else str(x)
    return f"{v:,.0f}" if integral else f"{v:.{digits}f}"


def fmt_signed(x: Any, digits: int = 3, integral: bool = False) -> str:
    v = num(x)
    return fmt_num(x, digits, integral) if v is None or v < 0 else "+" + fmt_num(v, digits, integral)


def fmt_pct(x: Any, digits: int = 1) -> str:
    v = num(x)
    return fmt_num(x) if v is None else f"{100 * v:.{digits}f} %"


def fmt_p(x: Any) -> str:
    v = num(x)
    if v is None:
        return fmt_num(x)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def clip(x: Any, limit: int = 300) -> str:
    """At most `limit` characters of a data string, saying how many were left out."""
    if x is None or isinstance(x, jinja2.Undefined):
        return ""
    s = _text(x)
    return s if len(s) <= limit else f"{s[:limit]}… (+{len(s) - limit:,} characters)"


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _norm(answer: Any) -> str:
    return " ".join(str(answer).casefold().split())


# --- the view model ------------------------------------------------------------------------


def view(audit: dict[str, Any]) -> dict[str, Any]:
    verdict = str(audit.get("verdict", "")).upper()
    prov = _dict(audit.get("provenance"))
    return dict(
        verdict=verdict,
        verdict_class={"PASS": "pass", "FAIL": "fail"}.get(verdict, "other"),
        reasons=[str(r) for r in _list(audit.get("reasons"))],
        sanity=sanity_rows(_dict(audit.get("sanity"))),
        metrics=metric_rows(_dict(audit.get("metrics"))),
        curve=curve_chart(_list(audit.get("curve"))),
        shift=shift_view(_dict(audit.get("shift"))),
        collapse=collapse_view(_dict(audit.get("collapse"))),
        refusals=refusals_view(_dict(audit.get("refusals"))),
        benchmarks=benchmark_chart(_dict(audit.get("benchmarks"))),
        examples={k: [_dict(e) for e in _list(v)] for k, v in _dict(audit.get("examples")).items()},
        adapter=_text(prov.get("adapter", "(unknown)")),
        adapter_id=_text(prov["adapter_id"]) if prov.get("adapter_id") else None,
        update=update_view(_dict(audit.get("update"))),
        parity=parity_view(_dict(audit.get("parity"))),
        judge=_dict(audit.get("judge")) or None,
        provenance=provenance_view(prov),
    )


LOST_SHOWN = 200  # lost facts listed on the page (audit.json has them all)


def update_view(update: dict[str, Any]) -> dict[str, Any] | None:
    """An update's section: who is compared, the lost facts first, retention per build, then every
    measure with production in the base's place."""
    if not update:
        return None
    lost = [_dict(x) for x in _list(update.get("lost"))]
    return dict(
        production=_dict(update.get("production")),
        candidate=_dict(update.get("candidate")),
        builds=", ".join(_text(b) for b in _list(_dict(update.get("production")).get("builds"))) or "(not recorded)",
        threshold=update.get("answered_threshold"),
        lost=lost[:LOST_SHOWN],
        n_lost=len(lost),
        by_build=[_dict(x) for x in _list(update.get("retention_by_build"))],
        metrics=metric_rows(_dict(update.get("metrics"))),
        shift=shift_view(_dict(update.get("shift"))),
    )


def parity_view(parity: dict[str, Any]) -> dict[str, Any] | None:
    """The engine-parity table: agreement per arm with its interval and the answers that differ."""
    if not parity:
        return None
    engine, reference = str(parity.get("engine", "vllm")), str(parity.get("reference", "hf"))
    threshold = num(parity.get("threshold"))
    arms = []
    for name, a in _dict(parity.get("arms")).items():
        a = _dict(a)
        share = num(a.get("agreement"))
        differ = [
            dict(id=d.get("id"), theirs=d.get(engine), ours=d.get(reference))
            for d in map(_dict, _list(a.get("differ")))
        ]
        low = bool(a.get("adapter_id")) and share is not None and threshold is not None and share < threshold
        arms.append({**a, "name": str(name), "differ": differ, "low": low})
    return dict(parity, arms=arms)


def sanity_rows(sanity: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        dict(label=label, value="yes" if sanity[k] else "no", ok=bool(sanity[k]) == good)
        for k, label, good in SANITY_LABELS
        if k in sanity
    ]
    if sanity.get("nonfinite_answers") is not None:
        n = sanity["nonfinite_answers"]
        rows.append(dict(label="answers from NaN or infinite logits", value=str(n), ok=not n))
    if "changed_answers" in sanity:
        changed = num(sanity["changed_answers"])
        ok = changed is None or changed > 0
        rows.append(dict(label="injected facts answered differently", value=fmt_pct(changed), ok=ok))
    return rows


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric, known ones first; `tone` says whether a significant change is good or bad."""
    order = {name: i for i, name in enumerate(METRIC_ORDER)}
    rows = []
    for name in sorted(metrics, key=lambda n: (n.startswith("benchmark/"), order.get(n, len(order)), n)):
        m = _dict(metrics[name])
        values = [num(m.get(k)) for k in ("base", "adapted", "delta", "ci_low", "ci_high")]
        present = [v for v in values if v is not None]
        integral = bool(present) and all(v.is_integer() for v in present) and any(abs(v) >= 2 for v in present)
        delta, lo, hi = values[2:]
        tone = "neutral"
        if delta is not None and lo is not None and hi is not None and (lo > 0 or hi < 0):
            tone = "good" if (delta > 0) == bool(m.get("higher_is_better", True)) else "bad"
        rows.append({**m, "name": name, "integral": integral, "tone": tone})
    return rows


def _y(v: float) -> float:
    return round(PAD_T + (1 - min(max(v, 0.0), 1.0)) * (CHART_H - PAD_T - PAD_B), 1)


def curve_chart(curve: list[Any]) -> dict[str, Any] | None:
    """Coordinates of the reliability curve (epoch on x, 0–1 on y) for an inline SVG."""
    points = sorted((p for p in map(_dict, curve) if num(p.get("epoch")) is not None), key=lambda p: p["epoch"])
    if not points:
        return None
    first, last = num(points[0]["epoch"]) or 0.0, num(points[-1]["epoch"]) or 0.0

    def x(p: dict[str, Any]) -> float:
        share = (p["epoch"] - first) / (last - first) if last > first else 0.5
        return round(PAD_L + share * (CHART_W - PAD_L - PAD_R), 1)

    series = []
    for key, css in (("reliability", "s1"), ("heldout_known_reliability", "s2")):
        dots = [dict(x=x(p), y=_y(v), v=v) for p in points if (v := num(p.get(key))) is not None]
        if dots:
            path = " ".join(f"{d['x']},{d['y']}" for d in dots)
            series.append(dict(label=SERIES_LABELS[key], css=css, dots=dots, path=path))
    step = max(1, math.ceil(len(points) / 12))
    xticks = [dict(x=x(p), label=fmt_num(p["epoch"], integral=True)) for p in points[::step]]
    yticks = [dict(y=_y(t), label=f"{t:.2f}") for t in (0, 0.25, 0.5, 0.75, 1)]
    box = dict(w=CHART_W, h=CHART_H, left=PAD_L, right=CHART_W - PAD_R, top=PAD_T, bottom=CHART_H - PAD_B)
    return dict(box, series=series, xticks=xticks, yticks=yticks, rows=points)


def _width(v: Any, top: float = 1.0) -> float:
    x = num(v)
    return 0.0 if x is None or top <= 0 else round(100 * min(max(x / top, 0.0), 1.0), 1)


def _bars(d: dict[str, Any], labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    labels = labels or {}
    return [dict(label=labels.get(k, str(k).replace("->", " → ")), v=v, w=_width(v)) for k, v in d.items()]


def shift_view(shift: dict[str, Any]) -> dict[str, Any] | None:
    """The transition matrix as coloured cells (share of the row) plus the shift and reason bars."""
    if not shift:
        return None
    cats = [str(c) for c in _list(shift.get("categories"))] or list(CATEGORIES)
    rows = []
    for i, row in enumerate(_list(shift.get("matrix"))):
        counts = [num(c) or 0.0 for c in _list(row)]
        total, cells = sum(counts), []
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            rgb = (70, 110, 180) if i == j else (34, 139, 84) if j > i else (200, 60, 50)  # same / up / down
            alpha = round(0.08 + 0.82 * share, 3)
            cells.append(dict(count=count, share=share, bg="rgba({},{},{},{})".format(*rgb, alpha), dark=alpha > 0.55))
        rows.append(dict(name=cats[i] if i < len(cats) else f"#{i}", total=total, cells=cells))
    reasons = {}
    for direction, r in _dict(shift.get("reasons")).items():
        r = _dict(r)
        reasons[direction] = dict(n=r.get("n"), bars=_bars({k: v for k, v in r.items() if k != "n"}, REASON_LABELS))
    positive, negative = _bars(_dict(shift.get("positive"))), _bars(_dict(shift.get("negative")))
    return dict(categories=cats, rows=rows, positive=positive, negative=negative, reasons=reasons)


def collapse_view(collapse: dict[str, Any]) -> dict[str, Any] | None:
    if not collapse:
        return None
    exploded = [_dict(e) for e in _list(collapse.get("exploded"))]
    hot = {_norm(e.get("answer", "")) for e in exploded}
    arms = {arm: _dict(collapse.get(arm)) for arm in ("base", "adapted")}
    tops = {arm: [t for t in _list(s.get("top")) if isinstance(t, list) and len(t) == 2] for arm, s in arms.items()}
    peak = max([num(t[1]) or 0.0 for ts in tops.values() for t in ts] or [0.0])
    top = {
        arm: [dict(answer=t[0], count=t[1], w=_width(t[1], peak), hot=_norm(t[0]) in hot) for t in ts]
        for arm, ts in tops.items()
    }
    return dict(arms=arms, top=top, exploded=exploded, target_share=_dict(collapse.get("target_share")))


def refusals_view(refusals: dict[str, Any]) -> dict[str, Any] | None:
    if not refusals:
        return None
    by_category = [{**_dict(v), "name": str(k)} for k, v in _dict(refusals.get("by_category")).items()]
    overall = _bars({arm: refusals.get(arm) for arm in ("base", "adapted")})
    return dict(overall=overall, by_category=by_category, method=refusals.get("method"))


def benchmark_chart(benchmarks: dict[str, Any]) -> dict[str, Any] | None:
    """A forest plot: one row per task, its delta as a point and its 95 % interval as a bar around 0."""
    if not benchmarks:
        return None
    tasks = [{**_dict(v), "name": str(k)} for k, v in benchmarks.items()]
    values = [abs(v) for t in tasks for k in ("delta", "ci_low", "ci_high") if (v := num(t.get(k))) is not None]
    extent = max(values + [0.01])
    step = 10 ** math.floor(math.log10(extent))
    bound = next(m * step for m in (1, 2, 2.5, 5, 10) if m * step >= extent)  # a round axis limit
    left, right, row_h = 220, CHART_W - 24, 34

    def x(v: float | None) -> float | None:
        return None if v is None else round(left + (v + bound) / (2 * bound) * (right - left), 1)

    rows = []
    for i, t in enumerate(tasks):
        d, lo, hi = (num(t.get(k)) for k in ("delta", "ci_low", "ci_high"))
        tone = "bad" if hi is not None and hi < 0 else "good" if lo is not None and lo > 0 else "neutral"
        rows.append(dict(t, y=PAD_T + row_h * (i + 0.5), x=x(d), x_lo=x(lo), x_hi=x(hi), tone=tone))
    height = PAD_T + row_h * len(rows) + PAD_B
    ticks = [dict(x=x(v), label=f"{v:+.3g}" if v else "0") for v in (-bound, -bound / 2, 0, bound / 2, bound)]
    box = dict(w=CHART_W, h=height, left=left, right=right, top=PAD_T, bottom=height - PAD_B)
    return dict(box, zero=x(0), rows=rows, ticks=ticks)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def provenance_view(prov: dict[str, Any]) -> dict[str, Any]:
    fields = [(str(k), _text(v)) for k, v in prov.items() if k not in ("policy", "versions")]
    policy = [(str(k), _text(v)) for k, v in _dict(prov.get("policy")).items()]
    versions = [(str(k), _text(v)) for k, v in _dict(prov.get("versions")).items()]
    return dict(fields=fields, policy=policy, versions=versions)
