"""The sweep's settings, its grid (N values, recipes, seeds) and its result.

A recipe is the paper's mixture per injected fact: `K` HighlyKnown facts, `P` paraphrases and
optionally `M` MaybeKnown facts, written "K=1,P=0" (keys in any order and case, a key left out is
0). A grid is every (N, recipe, seed); each point is one build + inject + audit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.errors import ConfigError

RECIPE_KEYS = {"K": "highly_known", "P": "paraphrases", "M": "maybe_known"}


@dataclass(frozen=True)
class Recipe:
    """Per injected fact: `highly_known` K HighlyKnown facts, `paraphrases` P paraphrases and
    `maybe_known` M MaybeKnown facts in the training mixture (Pletenev et al. 2025, §4.1)."""

    highly_known: int = 0
    paraphrases: int = 0
    maybe_known: int = 0

    @property
    def label(self) -> str:
        text = f"K={self.highly_known},P={self.paraphrases}"
        return text + (f",M={self.maybe_known}" if self.maybe_known else "")

    @property
    def slug(self) -> str:
        """The recipe in a folder name: k1-p0 (-m2)."""
        text = f"k{self.highly_known}-p{self.paraphrases}"
        return text + (f"-m{self.maybe_known}" if self.maybe_known else "")

    @property
    def rows_per_fact(self) -> int:
        return 1 + self.highly_known + self.paraphrases + self.maybe_known

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """'K=1,P=0' -> Recipe(1, 0); a malformed recipe is a one-line error naming it."""
        values: dict[str, int] = {}
        parts = [p.strip() for p in str(text).split(",")]
        if not text or not str(text).strip() or any(not p for p in parts):
            raise ConfigError(f"--recipe '{text}': expected keys like 'K=1,P=0' (K, P, M = whole numbers >= 0)")
        for part in parts:
            m = re.fullmatch(r"([A-Za-z]+)\s*=\s*(\S*)", part)
            if not m:
                raise ConfigError(f"--recipe '{text}': '{part}' is not KEY=VALUE (K, P or M, e.g. 'K=1,P=0')")
            key, value = m.group(1).upper(), m.group(2)
            if key not in RECIPE_KEYS:
                raise ConfigError(
                    f"--recipe '{text}': unknown key '{m.group(1)}'; use K (HighlyKnown), P (paraphrases), M (MaybeKnown)"
                )
            if key in values:
                raise ConfigError(f"--recipe '{text}': {key} is given twice")
            if not re.fullmatch(r"\d+", value):
                raise ConfigError(f"--recipe '{text}': {key}={value} is not a whole number >= 0")
            values[key] = int(value)
        return cls(**{RECIPE_KEYS[k]: v for k, v in values.items()})


def parse_ints(text: str, flag: str, *, least: int = 0) -> tuple[int, ...]:
    """'10,30,100' -> (10, 30, 100): each a whole number >= `least`, none repeated."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"{flag} '{text}': expected comma-separated whole numbers, e.g. 10,30,100")
    out = []
    for p in parts:
        if not re.fullmatch(r"-?\d+", p):
            raise ConfigError(f"{flag} '{text}': '{p}' is not a whole number")
        value = int(p)
        if value < least:
            raise ConfigError(f"{flag} '{text}': {value} is below {least}")
        if value in out:
            raise ConfigError(f"{flag} '{text}': {value} is given twice")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class Point:
    """One point of the grid: N Unknown facts, a recipe, a seed."""

    n: int
    recipe: Recipe
    seed: int

    @property
    def name(self) -> str:
        return f"n{self.n}-{self.recipe.slug}-s{self.seed}"


@dataclass(frozen=True)
class SweepConfig:
    """None means the stage's own default (the inject preset's, the audit's, the probe's model)."""

    probe: str
    unknown: tuple[int, ...]
    recipes: tuple[Recipe, ...] = (Recipe(),)
    seeds: tuple[int, ...] = (0,)
    output: str = "runs/sweep"
    heldout: int = 300  # facts in the one held-out set, equal per category (all if fewer)
    heldout_seed: int = 0  # the draw of that set (not a grid seed: it is the same for every point)
    stratify: str | None = None  # build --stratify
    # training (kia inject); None: the preset's default
    preset: str = "qlora"
    quant: str = "nf4"
    lr: float | None = None
    epochs: int | None = None
    min_steps: int | None = None
    # stop a point's training once the curve's reliability reaches this (with --epochs as the cap:
    # train until the facts are in, however many epochs that takes up to the cap)
    stop_at_reliability: float | None = None
    batch_size: int | None = None
    rank: int | None = None
    # the audit (kia audit)
    policy: str | None = None
    benchmarks: tuple[str, ...] | None = None  # None: the audit's default; ("none",): skip
    bench_limit: int | None = None
    audit_quant: str = "none"
    audit_batch_size: int = 64
    n_boot: int = 2000
    report: bool = True  # each point's report.html
    overwrite: bool = False
    # Run the points the probe can fill and list the others as not run (default: a grid that does
    # not fit is an error before any work, so nobody reads a partial grid as the whole one).
    skip_unfit: bool = False

    def __post_init__(self) -> None:
        if not self.unknown:
            raise ConfigError("--unknown: give at least one N, e.g. --unknown 10,30,100")
        for n in self.unknown:
            if n < 1:
                raise ConfigError(f"--unknown {n}: N must be at least 1")
        if len(set(self.unknown)) != len(self.unknown):
            raise ConfigError(f"--unknown {','.join(map(str, self.unknown))}: an N is given twice")
        if not self.recipes:
            raise ConfigError('--recipe: give at least one, e.g. --recipe "K=0,P=0"')
        if len({r.label for r in self.recipes}) != len(self.recipes):
            raise ConfigError(f"--recipe: a recipe is given twice ({', '.join(r.label for r in self.recipes)})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("--seeds: give distinct seeds, e.g. --seeds 0,1")
        if self.heldout < 1:
            raise ConfigError(f"--heldout must be at least 1, got {self.heldout}")
        from kia.inject import InjectConfig

        # Every point trains with these flags: inject's own checks, before any point is built.
        InjectConfig(build=self.probe, preset=self.preset, quant=self.quant, lr=self.lr, epochs=self.epochs,
                     min_steps=self.min_steps, stop_at_reliability=self.stop_at_reliability,
                     batch_size=self.batch_size, rank=self.rank)  # fmt: skip

    def points(self) -> list[Point]:
        """The grid, small N first (a sweep cut short still has every recipe's left end)."""
        return [Point(n, r, s) for n in sorted(self.unknown) for r in self.recipes for s in self.seeds]

    def identity(self) -> dict[str, Any]:
        """What every point shares: a sweep folder made with other values cannot be resumed."""
        keys = ("probe", "heldout", "heldout_seed", "stratify", "preset", "quant", "lr", "epochs", "min_steps",
                "stop_at_reliability", "batch_size", "rank", "policy", "benchmarks", "bench_limit", "audit_quant",
                "audit_batch_size", "n_boot")  # fmt: skip
        out = {k: getattr(self, k) for k in keys}
        out["probe"] = str(Path(self.probe).resolve())
        out["benchmarks"] = list(self.benchmarks) if self.benchmarks is not None else None
        return out


@dataclass(frozen=True)
class SweepResult:
    output: Path
    rows: list[dict[str, Any]]
    recommendation: dict[str, Any]
    findings: list[dict[str, Any]]
    page: Path | None
    seconds: float
    skipped: int = 0  # points finished by an earlier run
    warnings: list[str] = field(default_factory=list)
