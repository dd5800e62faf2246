"""Benchmark documents as text: the evaluation split of a local lm-eval task YAML, read the way
lm-eval reads it, so a document's id is the `doc_id` lm-eval logs for it.

Only local task files are read (the toy world's toy_mc and toy_arith, or any YAML of the same
shape): a registered lm-eval name (mmlu, truthfulqa_mc1) would need its dataset, which kia cannot
assume is reachable; such tasks are listed as not checked rather than passed as clean. A task's
`process_docs` (a `!function`) is not applied: the documents are the raw split's rows.

A document's text is what it asks and what it expects: the values of the fields its `doc_to_text`
template names (in template order; the template's own words, "Question:" / "Answer:", are
left out, since a training row in another format would not contain them) and its target's text
(for multiple choice, the gold choice).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kia.contamination.overlap import Document
from kia.errors import ConfigError

TOY_TASKS = ("toy_mc.yaml", "toy_arith.yaml")
_FIELD = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)")


def default_task_files(model: str | None) -> list[Path]:
    """The toy world's task files beside a toy-world model (its folder's sibling `tasks/`), as the
    audit's default benchmarks; none for any other model."""
    if not model:
        return []
    folder = Path(model).expanduser().parent / "tasks"
    files = [folder / t for t in TOY_TASKS]
    return files if Path(model).is_dir() and all(f.is_file() for f in files) else []


def _yaml(path: Path) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=False, recursive=True)
    except Exception as exc:  # yaml errors, include cycles, missing includes
        raise ConfigError(f"{path}: not a readable lm-eval task YAML ({exc})") from exc
    if not isinstance(cfg, dict) or "task" not in cfg:
        raise ConfigError(f"{path}: not an lm-eval task YAML (no `task:` key)")
    return cfg


def _data_files(value: Any, base: Path) -> Any:
    if isinstance(value, str):
        return str((base / value).resolve()) if not Path(value).is_absolute() and "://" not in value else value
    if isinstance(value, list):
        return [_data_files(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _data_files(v, base) for k, v in value.items()}
    return value


def _value(spec: Any, doc: dict[str, Any]) -> Any:
    """lm-eval's doc_to_* resolution for the plain cases: a field name, a Jinja template, a constant."""
    from lm_eval.utils import apply_template

    if isinstance(spec, str):
        return doc[spec] if spec in doc else apply_template(spec, doc)
    return spec


def _target_text(cfg: dict[str, Any], doc: dict[str, Any]) -> str:
    target = _value(cfg.get("doc_to_target", ""), doc)
    if "doc_to_choice" in cfg:
        choices = _value(cfg["doc_to_choice"], doc)
        if isinstance(choices, str):  # a template rendering a list
            import ast

            choices = ast.literal_eval(choices)
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target.strip())
        if isinstance(target, int) and 0 <= target < len(choices):
            return str(choices[target])
    return str(target)


def _question_text(cfg: dict[str, Any], doc: dict[str, Any]) -> str:
    spec = cfg.get("doc_to_text", "")
    if isinstance(spec, str) and spec in doc:
        return str(doc[spec])
    fields = [f for f in dict.fromkeys(_FIELD.findall(str(spec))) if f in doc]
    return "\n".join(str(doc[f]) for f in fields) if fields else str(_value(spec, doc))


def task_documents(path: str | Path) -> tuple[str, list[Document]]:
    """(task name, its evaluation documents) of one local lm-eval task YAML."""
    path = Path(path)
    cfg = _yaml(path)
    split = cfg.get("test_split") or cfg.get("validation_split")
    if not split:
        raise ConfigError(f"{path}: the task names no test_split or validation_split")
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = _data_files(kwargs["data_files"], path.resolve().parent)
    import datasets

    try:
        data = datasets.load_dataset(cfg.get("dataset_path"), cfg.get("dataset_name"), **kwargs)[split]
    except Exception as exc:  # a missing file, an unreachable hub dataset, a missing split
        raise ConfigError(f"{path}: cannot read its {split} split ({exc})") from exc
    name = str(cfg["task"])
    docs = [
        Document(name, str(i), f"{_question_text(cfg, doc)}\n{_target_text(cfg, doc)}") for i, doc in enumerate(data)
    ]
    return name, docs
