"""kia: inject new facts into an LLM with a QLoRA adapter, and audit what the adapter broke.

The Python API mirrors the CLI: each stage is one function taking one frozen config.

    from kia import probe, ProbeConfig
    result = probe(ProbeConfig(facts="datasets/toyworld/facts.jsonl", model=default_model()))

Names are imported lazily so that `import kia` (and `kia --help`) stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "probe": "kia.probe",
    "ProbeConfig": "kia.probe",
    "ProbeResult": "kia.probe",
    "build": "kia.build",
    "BuildConfig": "kia.build",
    "BuildResult": "kia.build",
    "inject": "kia.inject",
    "InjectConfig": "kia.inject",
    "InjectResult": "kia.inject",
    "audit": "kia.audit",
    "AuditConfig": "kia.audit",
    "AuditResult": "kia.audit",
    "render_report": "kia.report",
    "sweep": "kia.sweep",
    "SweepConfig": "kia.sweep",
    "SweepResult": "kia.sweep",
    "load_facts": "kia.facts",
    "Fact": "kia.facts",
    "load_engine": "kia.engines",
    "EngineConfig": "kia.engines",
    "Sampling": "kia.engines",
    "default_model": "kia.engines",
    "KiaError": "kia.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kia' has no attribute '{name}'")
