"""`kia build`: a training mixture from a probe run, the evaluation splits, and a bias report.

- `config`: `BuildConfig`, `BuildResult`;
- `run`: `build()`, picking the facts by recipe and writing the splits;
- `paraphrase`: paraphrase candidates (the facts' own, relation templates, an LLM) and their
  screening with the sentence-embedding model;
- `open_questions`: eval_open.jsonl's open prompts (templates, or an LLM's screened requests);
- `bias`: the training data's answer and relation concentration.
"""

from kia.build.bias import MAX_RELATION_SHARE, MAX_TOP_SHARE, bias_report
from kia.build.config import FORMATS, SPLITS, BuildConfig, BuildResult
from kia.build.open_questions import PROMPT_SOURCES
from kia.build.paraphrase import MAX_SIMILARITY, MIN_SIMILARITY, SOURCES
from kia.build.run import build, draw_heldout

__all__ = [
    "FORMATS",
    "MAX_RELATION_SHARE",
    "MAX_SIMILARITY",
    "MAX_TOP_SHARE",
    "MIN_SIMILARITY",
    "PROMPT_SOURCES",
    "SOURCES",
    "SPLITS",
    "BuildConfig",
    "BuildResult",
    "bias_report",
    "build",
    "draw_heldout",
]
