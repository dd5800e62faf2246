"""External benchmark drift through lm-evaluation-harness: the same tasks, adapter off and on.

kia writes no benchmark harness of its own. The one loaded model (base + adapter) is wrapped once in
lm-eval's `HFLM` and `lm_eval.simple_evaluate` runs twice, once inside peft's `disable_adapter()`
(the base arm), with `log_samples=True` so the two arms' answers can be paired document by document.

Tasks are lm-eval names (`mmlu` runs 5-shot, `truthfulqa_mc1` / `truthfulqa_mc2` 0-shot, as in
Pletenev et al. Table 7) or local task YAML files / folders of them (the toy world's toy_mc and
toy_arith). lm-eval resolves a YAML's relative `data_files` against the working directory, not the YAML,
so each local YAML runs through a temporary wrapper (`include:` the original, data paths made
absolute) in the audit folder's scratch folder (`.kia-tmp/`)."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.audit.stats import difference_interval, mcnemar_paired, paired_bootstrap, standard_error
from kia.errors import ConfigError, KiaError

# Standard names: the shots the paper used and the Hugging Face dataset each needs.
STANDARD: dict[str, tuple[int, str]] = {
    "mmlu": (5, "cais/mmlu"),
    "truthfulqa_mc1": (0, "truthfulqa/truthful_qa"),
    "truthfulqa_mc2": (0, "truthfulqa/truthful_qa"),
}
TOY_TASKS = ("toy_mc.yaml", "toy_arith.yaml")


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str  # the task (or group) name lm-eval knows
    num_fewshot: int | None = None  # None: the task's own setting
    source: str = "lm-eval"  # the local YAML it came from, or "lm-eval" for a registered name


@dataclass
class BenchmarkPlan:
    specs: list[BenchmarkSpec] = field(default_factory=list)
    include_dir: Path | None = None  # wrappers of the local YAMLs (temporary)
    wrapped: set[Path] = field(default_factory=set)
    scratch: Path | None = None  # where include_dir goes (the run's own folder); None: the system temp

    @property
    def local_only(self) -> bool:
        return all(s.source != "lm-eval" for s in self.specs)

    def cleanup(self) -> None:
        if self.include_dir is not None:
            shutil.rmtree(self.include_dir, ignore_errors=True)
            self.include_dir = None
        if self.scratch is not None:
            with contextlib.suppress(OSError):
                self.scratch.rmdir()  # when nothing else is in it


def default_benchmarks(model: str) -> list[str]:
    """The toy world's two tasks when the model is a toy-world model (its folder sits beside a
    `tasks/` folder holding toy_mc.yaml and toy_arith.yaml), else the paper's standard set."""
    folder = Path(model).expanduser().parent / "tasks"
    if Path(model).is_dir() and all((folder / t).is_file() for t in TOY_TASKS):
        return [str(folder / t) for t in TOY_TASKS]
    return list(STANDARD)


def _absolute(value: Any, base: Path) -> Any:
    """`data_files` values (a path, a list of them, or a split -> path(s) mapping) made absolute."""
    if isinstance(value, str):
        p = Path(value).expanduser()
        if not p.is_absolute() and "://" not in value and (base / p).exists():
            return str((base / p).resolve())
        return value
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        return load_yaml(path, resolve_func=False, recursive=True)
    except Exception as exc:  # yaml errors, include cycles, missing includes
        raise ConfigError(f"{path}: not a readable lm-eval task YAML ({exc})") from exc


def _wrap(path: Path, plan: BenchmarkPlan) -> dict[str, Any]:
    """Write a wrapper of one task YAML into the plan's folder (once per file); return its config."""
    import yaml

    cfg = _read_yaml(path)
    key = path.resolve()
    if key in plan.wrapped:
        return cfg
    if plan.include_dir is None:
        if plan.scratch is not None:
            plan.scratch.mkdir(parents=True, exist_ok=True)
        plan.include_dir = Path(tempfile.mkdtemp(prefix="lm-eval-tasks-", dir=plan.scratch))
    wrapper: dict[str, Any] = {"include": str(key)}
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        fixed = dict(kwargs)
        for name in ("data_files", "data_dir"):
            if name in fixed:
                fixed[name] = _absolute(fixed[name], key.parent)
        wrapper["dataset_kwargs"] = fixed
    target = plan.include_dir / f"{len(plan.wrapped):04d}_{path.stem}.yaml"
    target.write_text(yaml.safe_dump(wrapper, sort_keys=False), encoding="utf-8")
    plan.wrapped.add(key)
    return cfg


def resolve_benchmarks(items: Sequence[str] | None, model: str, scratch: Path | None = None) -> BenchmarkPlan:
    """Turn `--benchmarks` items into a plan: names as they are, YAML files and folders wrapped
    (into a folder under `scratch`, by default under the system's temp folder).

    None means the default (`default_benchmarks`); "none" or an empty list means no benchmarks.
    """
    if items is None:
        items = default_benchmarks(model)
    items = [i.strip() for i in items if i.strip()]
    if not items or items == ["none"]:
        return BenchmarkPlan()
    plan = BenchmarkPlan(scratch=scratch)
    try:
        for item in items:
            p = Path(item).expanduser()
            if p.suffix in (".yaml", ".yml") or p.is_dir():
                if not p.exists():
                    raise ConfigError(f"benchmark task file {item} does not exist")
                files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
                if not files:
                    raise ConfigError(f"benchmark folder {item} holds no task YAML files")
                for f in files:
                    cfg = _wrap(f, plan)
                    name = cfg.get("task") if isinstance(cfg.get("task"), str) else cfg.get("group")
                    if not isinstance(name, str):
                        continue  # a template or a group listing without its own name
                    if isinstance(cfg.get("group"), str):
                        for sibling in sorted(f.parent.glob("*.yaml")):  # a group's subtasks live beside it
                            _wrap(sibling, plan)
                    plan.specs.append(BenchmarkSpec(name, None, str(f)))
            else:
                plan.specs.append(BenchmarkSpec(item, STANDARD[item][0] if item in STANDARD else None))
    except BaseException:
        plan.cleanup()
        raise
    unique: dict[str, BenchmarkSpec] = {}
    for spec in plan.specs:
        unique.setdefault(spec.name, spec)
    plan.specs = list(unique.values())
    return plan


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence lm-eval while it runs: its loggers, its progress bars and the `git` call it makes for
    provenance write straight to the stderr file descriptor, so that descriptor is pointed at a
    temporary file for the duration. If lm-eval fails, the last of what it wrote is shown."""
    names = ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate", "httpx", "huggingface_hub")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            tail = sink.read().decode("utf-8", "replace")[-3000:]
            if tail.strip():
                sys.stderr.write(tail)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def task_manager(plan: BenchmarkPlan) -> Any:
    from lm_eval.tasks import TaskManager

    with _quiet():
        return TaskManager(
            include_path=str(plan.include_dir) if plan.include_dir else None, include_defaults=not plan.local_only
        )


def check_available(plan: BenchmarkPlan, manager: Any) -> None:
    """Fail before any model work when a task is unknown or its data cannot be loaded."""
    from lm_eval.tasks import get_task_dict

    known = set(manager.all_tasks)
    for spec in plan.specs:
        if spec.name not in known:
            near = difflib.get_close_matches(spec.name, sorted(known), n=3)
            hint = f"; did you mean: {', '.join(near)}?" if near else ""
            raise ConfigError(f"unknown benchmark '{spec.name}' (not an lm-eval task, group or local YAML){hint}")
        try:
            with _quiet():
                get_task_dict([spec.name], manager)
        except Exception as exc:  # datasets raises ConnectionError, FileNotFoundError, DatasetNotFoundError...
            raise KiaError(_unavailable(spec, manager, exc)) from exc


def _unavailable(spec: BenchmarkSpec, manager: Any, exc: Exception) -> str:
    dataset = STANDARD[spec.name][1] if spec.name in STANDARD else None
    if dataset is None:
        entry = getattr(manager, "_index", {}).get(spec.name)
        dataset = (getattr(entry, "cfg", None) or {}).get("dataset_path")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if spec.source != "lm-eval" or dataset in (None, "json", "csv", "parquet", "arrow", "text"):
        return f"benchmark '{spec.name}' ({spec.source}): cannot load its data ({first})"
    return (
        f"benchmark '{spec.name}' needs the Hugging Face dataset {dataset}; download it with "
        f"`huggingface-cli download --repo-type dataset {dataset}` on a machine with network (and copy the "
        f"Hugging Face cache here), or pass local task YAMLs with --benchmarks, or --benchmarks none ({first})"
    )


def _leaves(name: str, groups: Mapping[str, list[str]]) -> list[str]:
    children = groups.get(name) or []
    if not children:
        return [name]
    return [leaf for c in children for leaf in _leaves(c, groups)]


def _sample_value(sample: Mapping[str, Any]) -> float:
    if "acc" in sample:
        return float(sample["acc"])
    metrics = sample.get("metrics") or []
    return float(sample[metrics[0]]) if metrics else float("nan")


def evaluate_arm(
    lm: Any, plan: BenchmarkPlan, manager: Any, *, limit: int | None
) -> dict[str, dict[tuple[str, int], float]]:
    """Run every task of `plan` once on `lm`; per task, {(leaf task, doc_id): score}."""
    from lm_eval import simple_evaluate

    out: dict[str, dict[tuple[str, int], float]] = {}
    by_shots: dict[int | None, list[BenchmarkSpec]] = {}
    for spec in plan.specs:
        by_shots.setdefault(spec.num_fewshot, []).append(spec)
    for shots, specs in by_shots.items():
        with _quiet():
            result = simple_evaluate(
                model=lm,
                tasks=[s.name for s in specs],
                num_fewshot=shots,
                task_manager=manager,
                log_samples=True,
                limit=limit,
                bootstrap_iters=0,
            )
        if result is None:
            raise KiaError("lm-eval returned no results")
        groups = result.get("group_subtasks", {})
        samples = result.get("samples", {})
        for spec in specs:
            scores: dict[tuple[str, int], float] = {}
            for leaf in _leaves(spec.name, groups):
                for s in samples.get(leaf, []):
                    scores[(leaf, int(s["doc_id"]))] = _sample_value(s)
            out[spec.name] = scores
    return out


def compare(
    base: Mapping[tuple[str, int], float], adapted: Mapping[tuple[str, int], float], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """One task's `benchmarks` entry from the two arms' per-document scores, paired by document.

    accuracy = mean score; delta = adapted − base with the combined interval
    (± 1.96 · sqrt(se_base² + se_adapted²), se = sample sd / sqrt(n), lm-eval's stderr);
    p-value: exact McNemar on the documents answered right in one arm only when the scores are
    right/wrong, else (e.g. TruthfulQA MC2's probability mass) the paired bootstrap;
    forgetting_rate = 1 − adapted / base (the share of the base accuracy lost).
    """
    keys = sorted(set(base) & set(adapted))
    if not keys:
        raise KiaError("a benchmark returned no documents to compare (check --bench-limit and the task)")
    b = [base[k] for k in keys]
    a = [adapted[k] for k in keys]
    b_acc, a_acc = sum(b) / len(b), sum(a) / len(a)
    delta, low, high = difference_interval(b_acc, standard_error(b), a_acc, standard_error(a))
    if all(v in (0.0, 1.0) for v in (*b, *a)):
        _, _, p = mcnemar_paired([v == 1.0 for v in b], [v == 1.0 for v in a])
    else:
        p = paired_bootstrap(b, a, n_boot=n_boot, seed=seed).p_value or 1.0
    return {
        "base": b_acc,
        "adapted": a_acc,
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n": len(keys),
        "forgetting_rate": 1 - a_acc / b_acc if b_acc > 0 else 0.0,
    }


def base_key(plan: BenchmarkPlan, *, limit: int | None, batch_size: int) -> str:
    """What the base arm's scores depend on besides the base model: the tasks (names, shots,
    sources, and a local YAML's bytes), the document limit and the batch size (lm-eval pads each
    batch, so a near-tie could round differently in another one)."""
    tasks = []
    for s in plan.specs:
        path = Path(s.source)
        text = path.read_text(encoding="utf-8") if s.source != "lm-eval" and path.is_file() else None
        tasks.append([s.name, s.num_fewshot, s.source, text])
    return json.dumps({"tasks": tasks, "limit": limit, "batch_size": batch_size}, sort_keys=True)


def benchmark_scores(
    model: Any,
    tokenizer: Any,
    plan: BenchmarkPlan,
    manager: Any,
    arms: Sequence[bool | str],
    *,
    batch_size: int = 32,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, dict[tuple[str, int], float]]]:
    """Every task's per-document scores for each arm, in order, on the one loaded peft model:
    False = the base (inside `disable_adapter()`), True = the main adapter, a name = that named
    adapter (an update's production adapter)."""
    from lm_eval.models.huggingface import HFLM

    from kia.engines.hf import use_adapter

    with _quiet():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = []
    for arm in arms:
        label = "base" if arm is False else "adapted" if arm is True else arm
        if progress:
            progress(f"benchmarks, {label} arm" + (f": {', '.join(s.name for s in plan.specs)}" if not arm else ""))
        context = model.disable_adapter() if arm is False else use_adapter(model, arm) if isinstance(arm, str) else None
        with context or contextlib.nullcontext():
            out.append(evaluate_arm(lm, plan, manager, limit=limit))
    return out


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    plan: BenchmarkPlan,
    manager: Any,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    base_cache: MutableMapping[str, Any] | None = None,
    keep: MutableMapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Both arms on the one loaded peft model: base inside `disable_adapter()`, then adapted.
    `keep` receives both arms' per-document scores (`base`, `adapted`).

    `base_cache` (kia sweep) keeps the base arm's per-document scores under `base_key(...)`: an audit
    of another adapter on the same base model, with the same tasks, limit and batch size, takes them
    from there (the base arm does not depend on the adapter, so they are the ones it would compute)."""
    if not plan.specs:
        return {}
    key = base_key(plan, limit=limit, batch_size=batch_size)
    scores = functools.partial(benchmark_scores, model, tokenizer, plan, manager, batch_size=batch_size, limit=limit)
    if base_cache is not None and key in base_cache:
        base = base_cache[key]
        if progress:
            progress(f"benchmarks, base arm: {', '.join(s.name for s in plan.specs)} (shared, computed earlier)")
        (adapted,) = scores([True], progress=progress)
    else:
        base, adapted = scores([False, True], progress=progress)
        if base_cache is not None:
            base_cache[key] = base
    if keep is not None:
        keep.update(base=base, adapted=adapted)
    return {s.name: compare(base[s.name], adapted[s.name], n_boot=n_boot, seed=seed) for s in plan.specs}
