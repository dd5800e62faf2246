"""The audit's metric entries: reliability and generalisation shares, and the `metrics` entries of audit.json.

Each entry compares the base arm (adapter off) with the adapted arm on the very same items:
`base`, `adapted`, `delta` = adapted − base, a 95 % interval (`ci_low`, `ci_high`; of the delta
when both arms exist, else of the adapted value: `ci_of` says which), a paired `p_value` where two
arms are compared, its `q_value` (Benjamini-Hochberg over every p-value of the audit), `n` items, `higher_is_better` and a one-line `description`.
Shift, collapse and refusals live in `kia.audit.shift`, `kia.audit.collapse` and `kia.audit.refusals`;
`kia.audit.assemble` puts the sections of audit.json together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kia.audit.stats import mcnemar_paired, paired_bootstrap, wilson
from kia.facts import Fact, is_correct


def entry(
    *,
    base: float | None,
    adapted: float | None,
    n: int,
    higher_is_better: bool,
    description: str,
    ci: tuple[float, float] | None = None,
    p_value: float | None = None,
    ci_of: str = "delta",
) -> dict[str, Any]:
    """One `metrics` entry of audit.json (every key always present; unknowns are None)."""
    delta = adapted - base if base is not None and adapted is not None else None
    return {
        "base": base,
        "adapted": adapted,
        "delta": delta,
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "ci_of": ci_of if ci else None,
        "p_value": p_value,
        "q_value": None,  # filled by assemble once every p-value of the audit is known
        "n": n,
        "higher_is_better": higher_is_better,
        "description": description,
    }


def mean_p_greedy(
    base: Sequence[float], adapted: Sequence[float], *, description: str, n_boot: int, seed: int
) -> dict[str, Any]:
    """Mean P_greedy in each arm, paired.

    value = (1/N) Σ_f P_greedy(f), P_greedy(f) = correct greedy answers / exemplar sets (the probe's
    few-shot prompts, 10 sets by default). The paper's "reliability" (Figure 2) averages exactly
    this over the trained facts. Interval and p-value: paired bootstrap of the mean per-fact
    difference, since P_greedy is a share, not a right/wrong outcome.
    """
    if not adapted:
        return _no_items(True, description)
    boot = paired_bootstrap(base, adapted, n_boot=n_boot, seed=seed)
    return _paired(base, adapted, True, description, (boot.low, boot.high), boot.p_value)


def share_paired(
    base: Sequence[bool], adapted: Sequence[bool], *, description: str, higher_is_better: bool, n_boot: int, seed: int
) -> dict[str, Any]:
    """A share of items with a yes/no property in each arm (e.g. fully correct, refused), paired.

    value = (1/N) Σ 1[property]; interval: paired bootstrap of the difference of the two shares;
    p-value: exact McNemar on the items whose property differs between the arms (the right test
    for paired yes/no outcomes: concordant items say nothing about the change).
    """
    if not adapted:
        return _no_items(higher_is_better, description)
    boot = paired_bootstrap(
        [float(x) for x in base], [float(x) for x in adapted], n_boot=n_boot, seed=seed, with_p=False
    )
    _, _, p = mcnemar_paired(base, adapted)
    return _paired(base, adapted, higher_is_better, description, (boot.low, boot.high), p)


def _no_items(higher_is_better: bool, description: str) -> dict[str, Any]:
    return entry(
        base=None, adapted=None, n=0, higher_is_better=higher_is_better, description=description + " (no items)"
    )


def _paired(
    base: Sequence[float],
    adapted: Sequence[float],
    higher_is_better: bool,
    description: str,
    ci: tuple[float, float],
    p_value: float | None,
) -> dict[str, Any]:
    """The entry of a per-item mean measured in both arms on the same items."""
    return entry(
        base=sum(base) / len(base),
        adapted=sum(adapted) / len(adapted),
        n=len(adapted),
        higher_is_better=higher_is_better,
        description=description,
        ci=ci,
        p_value=p_value,
    )


def share_single(k: int, n: int, *, description: str, higher_is_better: bool) -> dict[str, Any]:
    """A share that exists in the adapted arm only (e.g. the negative shift), with its Wilson interval."""
    return entry(
        base=None,
        adapted=k / n if n else 0.0,
        n=n,
        higher_is_better=higher_is_better,
        description=description,
        ci=wilson(k, n),
        ci_of="adapted",
    )


def full_share(p_greedy: Sequence[float]) -> list[bool]:
    """Per fact: answered right with every exemplar set (P_greedy = 1, the HighlyKnown bar)."""
    return [p >= 1.0 for p in p_greedy]


# ------------------------------------------------------------------------------------ the arms


@dataclass
class Arms:
    """One evaluation split: its rows, the facts as prompted, and each arm's greedy answers per
    exemplar set (`base[i][s]` = fact i, set s). `adapted` is the adapter audited (the candidate
    of an update); `production`, in an update's audit, the adapter it would replace."""

    name: str
    rows: list[dict[str, Any]]
    facts: list[Fact]
    base: list[list[str]] = field(default_factory=list)
    adapted: list[list[str]] = field(default_factory=list)
    production: list[list[str]] = field(default_factory=list)

    def answers(self, arm: str) -> list[list[str]]:
        return {"base": self.base, "adapted": self.adapted, "production": self.production}[arm]

    def p_greedy(self, arm: str, match: str) -> list[float]:
        """Per fact: P_greedy = correct greedy answers / exemplar sets."""
        answers = self.answers(arm)
        return [
            sum(is_correct(a, f.answers, match) for a in ans) / len(ans) if ans else 0.0  # type: ignore[arg-type]
            for f, ans in zip(self.facts, answers, strict=True)
        ]

    def first(self, arm: str) -> list[str]:
        """Per fact: the greedy answer with the first exemplar set (the paper's refusal check uses it)."""
        return [a[0] if a else "" for a in self.answers(arm)]
