"""Contamination: normalised n-gram overlap between a build's training split and the benchmark
documents and held-out splits it must not contain (`kia build` writes contamination.json, `kia
audit` reports benchmark deltas with and without the overlapping documents).

- `overlap`: normalisation and n-grams (lm-eval's `decontamination`), `find_overlaps`;
- `tasks`: a benchmark's documents (a local task YAML or an lm-eval task or group name) read
  through lm-eval, by lm-eval's doc_id;
- `check`: `check_contamination`, the report both stages write.
"""

from kia.contamination.check import HELDOUT_SPLITS, check_contamination, overlapping_docs
from kia.contamination.overlap import DEFAULT_N, Document, find_overlaps, grams, normalise
from kia.contamination.tasks import benchmark_documents, default_task_files, task_documents

__all__ = [
    "DEFAULT_N",
    "HELDOUT_SPLITS",
    "Document",
    "benchmark_documents",
    "check_contamination",
    "default_task_files",
    "find_overlaps",
    "grams",
    "normalise",
    "overlapping_docs",
    "task_documents",
]
