"""The build stage's settings and result: what `kia build` reads from its flags and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.build.bias import MAX_RELATION_SHARE, MAX_TOP_SHARE
from kia.build.open_questions import PROMPT_SOURCES
from kia.build.paraphrase import MAX_SIMILARITY, MIN_SIMILARITY, SOURCES
from kia.errors import ConfigError

FORMATS = ("paper", "plain")
CATEGORIES = ("Unknown", "MaybeKnown", "HighlyKnown")
SPLITS = ("train", "eval_injected", "eval_paraphrase", "eval_heldout")
KINDS = ("unknown", "paraphrase", "highly_known", "maybe_known", "replay")
PROBE_COLUMNS = ("id", "question", "answers", "category", "slick_category", "p_greedy")


@dataclass(frozen=True)
class BuildConfig:
    probe: str
    unknown: int
    output: str = "runs/build"
    highly_known: int = 0
    paraphrases: int = 0
    maybe_known: int = 0
    stratify: str | None = None  # None | "relation"
    seed: int = 0
    format: str = "paper"  # paper: system + "Question: …" / "Answer: …"; plain: the bare question and answer
    paraphraser: str = "own"
    paraphrase_model: str | None = None  # for `model`; default: the probe's model
    paraphrase_candidates: int = 8  # sampled rephrasings per question with `model` (at least 2x the ones asked)
    eval_paraphrases: int = 1
    # eval_open.jsonl's prompts: "templates", or "model" (an LLM writes them, screened; see
    # kia.build.open_questions). open_prompt_model: default --paraphrase-model, else the probe's model.
    open_prompts: str = "templates"
    open_prompt_model: str | None = None
    heldout: int = 300
    # A JSON file of fact ids ({"ids": [...]} or a list) that ARE the held-out split, kept out of
    # every training pick: one evaluation set shared by many builds (kia sweep). None: draw `heldout`.
    heldout_ids: str | None = None
    min_similarity: float = MIN_SIMILARITY
    max_similarity: float = MAX_SIMILARITY
    embedder: str | None = None  # sentence-transformers name or folder; None: the offline all-MiniLM-L6-v2
    max_top_share: float = MAX_TOP_SHARE
    max_relation_share: float = MAX_RELATION_SHARE
    # an update's build (kia.build.lineage): earlier builds to follow, and "BUILD[:N]" to replay
    after: tuple[str, ...] = ()
    replay: tuple[str, ...] = ()
    # contamination.json (kia.contamination): local lm-eval task YAMLs and lm-eval task or group names
    # to compare the training split with; None: the toy tasks beside a toy-world model; ("none",):
    # none. n: the n-gram length.
    benchmarks: tuple[str, ...] | None = None
    contamination_n: int = 10
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.unknown < 1:
            raise ConfigError(f"--unknown must be at least 1, got {self.unknown}")
        for name in ("highly_known", "paraphrases", "maybe_known", "eval_paraphrases", "heldout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.paraphrase_candidates < 1:
            raise ConfigError(f"--paraphrase-candidates must be at least 1, got {self.paraphrase_candidates}")
        if self.stratify not in (None, "relation"):
            raise ConfigError(f"--stratify takes 'relation', got '{self.stratify}'")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown --format '{self.format}'; choose one of: {', '.join(FORMATS)}")
        if self.paraphraser not in SOURCES:
            raise ConfigError(f"unknown --paraphraser '{self.paraphraser}'; choose one of: {', '.join(SOURCES)}")
        if self.open_prompts not in PROMPT_SOURCES:
            raise ConfigError(
                f"unknown --open-prompts '{self.open_prompts}'; choose one of: {', '.join(PROMPT_SOURCES)}"
            )
        if not 0 <= self.min_similarity < self.max_similarity <= 1:
            raise ConfigError(
                f"need 0 <= --min-similarity < --max-similarity <= 1, got {self.min_similarity} and {self.max_similarity}"
            )
        if self.contamination_n < 1:
            raise ConfigError(f"--contamination-n must be at least 1, got {self.contamination_n}")
        from kia.build.lineage import parse_replay

        for item in self.replay:
            parse_replay(item)  # a bad N fails here, before the probe is read
        for name in ("max_top_share", "max_relation_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class BuildResult:
    output: Path
    counts: dict[str, int]  # rows per split
    kinds: dict[str, int]  # training rows per kind
    recipe: dict[str, Any]
    bias: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    open_prompts: dict[str, Any] = field(default_factory=dict)  # eval_open's source and counts
