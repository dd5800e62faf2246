"""Check a probe of the toy model against the world's ground truth (exposure per fact).

The prober is right when facts never shown come out Unknown, facts shown most come out
HighlyKnown, and the mean P_greedy rises with exposure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def groundtruth_report(probe_dir: str | Path) -> dict[str, Any]:
    """Per exposure band: facts, share per category, mean P_greedy, refusal rate."""
    import polars as pl

    table = pl.read_parquet(Path(probe_dir) / "facts.parquet")
    extra = [json.loads(e) for e in table["extra"]]
    table = table.with_columns(
        pl.Series("exposure", [e.get("exposure") for e in extra]),
        pl.Series("obscure", [bool(e.get("obscure")) for e in extra]),
    )
    bands = {}
    for exposure in sorted(table["exposure"].unique().to_list()):
        part = table.filter(pl.col("exposure") == exposure)
        bands[str(exposure)] = {
            "facts": part.height,
            "unknown": float((part["category"] == "Unknown").mean()),
            "highly_known": float((part["category"] == "HighlyKnown").mean()),
            "mean_p_greedy": float(part["p_greedy"].mean()),
            "refusal_rate": float(part["refused"].mean()),
        }
    slick = {
        c: float((table["slick_category"] == c).mean()) for c in ("Unknown", "WeaklyKnown", "MaybeKnown", "HighlyKnown")
    }
    top = str(max(int(k) for k in bands))
    means = [bands[k]["mean_p_greedy"] for k in sorted(bands, key=int)]
    return {
        "facts": table.height,
        "bands": bands,
        "slick_shares": slick,
        "refusal_rate": float(table["refused"].mean()),
        "obscure_refusal_rate": float(table.filter(pl.col("obscure"))["refused"].mean())
        if table["obscure"].any()
        else None,
        "checks": {
            "never_shown_unknown>=0.90": bands["0"]["unknown"] >= 0.90 if "0" in bands else None,
            "most_shown_highly_known>=0.80": bands[top]["highly_known"] >= 0.80,
            "p_greedy_rises_with_exposure": all(a <= b for a, b in zip(means, means[1:], strict=False)),
            "every_slick_category>=0.05": all(v >= 0.05 for v in slick.values()),
        },
    }
