"""Benchmark documents as text, read through lm-eval itself, so that they are the documents lm-eval
evaluates (its evaluation split, after the task's `process_docs`) and a document's id is the
`doc_id` lm-eval logs for it.

A benchmark is a local task YAML file (the toy world's toy_mc and toy_arith, or any of the same
shape) or an lm-eval name: a registered task (`arc_easy`), a group (`mmlu`, read as its subtasks,
each under its own name) or a task that an `include_path` folder registers. Both go through one
path: `lm_eval.tasks.TaskManager` builds the task (a file as its config, with relative
`data_files` made absolute, since lm-eval resolves them against the working directory) and the
documents are `task.eval_docs` (the test split, else the validation split, as lm-eval chooses).
A name that cannot be read (unknown, or its dataset is unreachable: offline, a hub dataset that is
not in the Hugging Face cache) is returned with a one-line reason, for the report's `unchecked`.

A document's text is what it asks and what it expects. What it asks: the values of the fields its
`doc_to_text` template names (in template order; a list value, such as MMLU's choices, one item a
line). The template's own words ("Question:", "Answer:", TruthfulQA's six-question preamble) are
left out, since a training row in another format would not contain them and a preamble shared by
every document would flag them all. A `doc_to_text` that is a `!function`, or names no field of
the document, is rendered by lm-eval and its lines' "Question:" / "Answer:" labels dropped. What it
expects: `doc_to_target`, for multiple choice the gold choice's text (the first, when there are
several).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kia.contamination.overlap import Document
from kia.errors import ConfigError

TOY_TASKS = ("toy_mc.yaml", "toy_arith.yaml")
_FIELD = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)")
_LABEL = re.compile(r"^\s*(question|answer|q|a)\s*:\s*", re.IGNORECASE | re.MULTILINE)


def default_task_files(model: str | None) -> list[Path]:
    """The toy world's task files beside a toy-world model (its folder's sibling `tasks/`), as the
    audit's default benchmarks; none for any other model."""
    if not model:
        return []
    folder = Path(model).expanduser().parent / "tasks"
    files = [folder / t for t in TOY_TASKS]
    return files if Path(model).is_dir() and all(f.is_file() for f in files) else []


def is_task_file(item: str | Path) -> bool:
    """A task YAML file (by its suffix, as the audit's `--benchmarks` tells them), not an lm-eval name."""
    return Path(item).suffix in (".yaml", ".yml")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).strip("'\"")
    text = text if len(text) <= 300 else text[:297] + "..."  # a report line, not a log
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Any:
    """lm-eval and datasets log and draw progress bars while a task loads; the check reports what
    it found itself, so their output is held back (an error still raises, with its message)."""
    names = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "httpx", "fsspec")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _absolute(value: Any, base: Path) -> Any:
    """`data_files` values (a path, a list of them, or a split -> path(s) mapping) made absolute."""
    if isinstance(value, str):
        return str((base / value).resolve()) if not Path(value).is_absolute() and "://" not in value else value
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    return value


def _file_config(path: Path) -> dict[str, Any]:
    """A task YAML as lm-eval reads it (includes merged, `!function`s resolved), data paths absolute."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=True, recursive=True)
    except Exception as exc:  # yaml errors, include cycles, missing includes or functions
        raise ConfigError(f"{path}: not a readable lm-eval task YAML ({_one_line(exc)})") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
        raise ConfigError(f"{path}: not an lm-eval task YAML (no `task:` name)")
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        base = path.resolve().parent
        cfg["dataset_kwargs"] = {
            k: _absolute(v, base) if k in ("data_files", "data_dir") else v for k, v in kwargs.items()
        }
    return cfg


def _values(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _question_text(task: Any, doc: dict[str, Any], choices: list[str] | None) -> str:
    spec = task.config.doc_to_text
    if isinstance(spec, str):
        if spec in doc:
            return "\n".join(_values(doc[spec]))
        fields = [f for f in dict.fromkeys(_FIELD.findall(spec)) if f in doc]
        if fields:
            return "\n".join(line for f in fields for line in _values(doc[f]))
    rendered = task.doc_to_text(doc)
    if isinstance(rendered, int) and choices and 0 <= rendered < len(choices):  # the choices are the contexts
        rendered = choices[rendered]
    return "\n".join(line for line in _LABEL.sub("", str(rendered)).splitlines() if line.strip())


def _target_text(task: Any, doc: dict[str, Any], choices: list[str] | None) -> str:
    target = task.doc_to_target(doc)
    if isinstance(target, list) and target:
        target = target[0]  # several gold answers: the first stands for them
    if isinstance(target, str) and target.strip().isdigit() and choices is not None:
        target = int(target.strip())
    if isinstance(target, int) and choices and 0 <= target < len(choices):
        return choices[target]
    return str(target)


def _documents(name: str, task: Any) -> list[Document]:
    """One lm-eval task's evaluation documents, by doc_id (their index in `eval_docs`)."""
    out = []
    multiple_choice = task.config.doc_to_choice is not None
    for i, doc in enumerate(task.eval_docs):
        choices = [str(c) for c in task.doc_to_choice(doc)] if multiple_choice else None
        out.append(Document(name, str(i), f"{_question_text(task, doc, choices)}\n{_target_text(task, doc, choices)}"))
    return out


def _load(manager: Any, spec: str | dict[str, Any]) -> dict[str, Any]:
    """{leaf task name: Task} for a name (a group gives its subtasks) or a task config."""
    with _quiet():
        return dict(manager.load(spec)["tasks"])


class Managers:
    """lm-eval TaskManagers, built when first needed: indexing lm-eval's own ~15,000 task names
    takes seconds, so a manager of only the `include_path` folder (or of nothing, for task files)
    answers first and the full index is built only for a name that folder does not know."""

    def __init__(self, manager: Any = None, include_path: str | Path | None = None) -> None:
        self.given = manager
        self.include_path = str(include_path) if include_path else None
        self._made: dict[bool, Any] = {}

    def get(self, defaults: bool) -> Any:
        if self.given is not None:
            return self.given
        if defaults not in self._made:
            from lm_eval.tasks import TaskManager

            with _quiet():
                self._made[defaults] = TaskManager(include_path=self.include_path, include_defaults=defaults)
        return self._made[defaults]

    def for_name(self, name: str) -> Any:
        local = self.get(False) if self.include_path and self.given is None else None
        return local if local is not None and name in local.all_tasks else self.get(True)


def benchmark_documents(
    items: Sequence[str | Path],
    *,
    manager: Any = None,
    include_path: str | Path | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[dict[str, list[Document]], dict[str, str], dict[str, str]]:
    """Every benchmark's documents, per leaf task: (task -> documents, task -> the item it came
    from, item -> why it could not be read, in one line). A task file that exists but is not a
    readable task is an error (the user wrote it); a missing file, or a name that cannot be read
    (unknown, or its data needs the network), is only reported, so the rest is still checked.

    `manager` is the caller's TaskManager (the audit's, so the documents are the ones it
    evaluates); without one, names are looked up in `include_path`, then in lm-eval's registry."""
    managers = Managers(manager, include_path)
    docs: dict[str, list[Document]] = {}
    origin: dict[str, str] = {}
    unread: dict[str, str] = {}
    for item in items:
        if is_task_file(item):
            path = Path(item).expanduser()
            if not path.is_file():
                unread[str(item)] = "no such task file"
                continue
            cfg = _file_config(path)
            try:
                tasks = _load(managers.get(False) if manager is None else manager, cfg)
            except Exception as exc:  # a missing data file, a missing split, a bad template
                raise ConfigError(f"{path}: cannot read its documents ({_one_line(exc)})") from exc
        else:
            name = str(item)
            if say:
                say(f"contamination: reading the documents of {name} through lm-eval")
            try:
                tasks = _load(managers.for_name(name), name)
            except Exception as exc:  # unknown name, unreachable hub dataset (offline), bad config
                unread[name] = _one_line(exc)
                continue
        for task_name, task in tasks.items():
            try:
                docs[task_name] = _documents(task_name, task)
            except Exception as exc:  # a template lm-eval's own renderer fails on
                if is_task_file(item):
                    raise ConfigError(f"{item}: cannot render task {task_name}'s documents ({_one_line(exc)})") from exc
                unread[task_name] = f"cannot render its documents ({_one_line(exc)})"
                continue
            origin[task_name] = str(item)
    return docs, origin, unread


def task_documents(path: str | Path) -> tuple[str, list[Document]]:
    """(task name, its evaluation documents) of one local lm-eval task YAML."""
    docs, _, _ = benchmark_documents([path])
    if len(docs) != 1:
        raise ConfigError(f"{path}: holds {len(docs)} tasks, not one")
    return next(iter(docs.items()))
