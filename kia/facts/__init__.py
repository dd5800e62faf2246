"""Facts: the input rows, their loaders and validation, and when an answer matches a fact.

- `load`: `Fact`, `FactSet`, `load_facts`, `FactStream` (streamed passes over a large file) and the
  row validation that names file, line and field;
- `formats`: the readers (JSONL, CSV, parquet, Hugging Face datasets, the paper's released format);
- `matching`: answer extraction, normalisation, the three match modes, refusal patterns.
"""

from kia.facts.load import Fact, FactSet, FactStream, load_facts, validate_fact_dict
from kia.facts.matching import (
    MODES,
    extract_answer,
    is_correct,
    is_refusal,
    load_refusal_patterns,
    normalize,
)

__all__ = [
    "MODES",
    "Fact",
    "FactSet",
    "FactStream",
    "extract_answer",
    "is_correct",
    "is_refusal",
    "load_facts",
    "load_refusal_patterns",
    "normalize",
    "validate_fact_dict",
]
