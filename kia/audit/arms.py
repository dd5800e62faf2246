"""The audit's inputs and its two arms: which model, build and probe folders an adapter points
to, the evaluation splits, and the greedy answers of every fact with every exemplar set, adapter
off and on (the base arm continued from the probe run's answers when that run is reusable)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kia.artifacts import read_jsonl, read_manifest, sha256_file
from kia.audit.metrics import Arms
from kia.engines import Engine, EngineConfig, Sampling
from kia.errors import ArtifactError
from kia.facts import Fact, extract_answer
from kia.probe import ExemplarSets, PromptBuilder

if TYPE_CHECKING:
    from kia.audit.config import AuditConfig

Progress = Callable[[str], None]


@dataclass
class Inputs:
    adapter: Path
    model: str
    build: Path
    probe: Path
    probe_manifest: dict[str, Any]
    quant: str
    trained_quant: str | None
    curve: list[dict[str, Any]]


# ------------------------------------------------------------------------------------------ inputs


def _locate(recorded: str, referrer: Path) -> Path:
    from kia.artifacts import locate

    return locate(recorded, referrer)


def resolve_inputs(config: AuditConfig) -> Inputs:
    adapter = Path(config.adapter)
    manifest = read_manifest(adapter, "inject")
    cfg = manifest.get("config") or {}
    recorded = cfg.get("build") or manifest.get("build")
    if not (config.build or recorded):
        raise ArtifactError(f"{adapter}/manifest.json names no build folder; pass --build")
    build = Path(config.build) if config.build else _locate(str(recorded), adapter / "manifest.json")
    build_manifest = read_manifest(build, "build")
    model = config.model or manifest.get("model") or cfg.get("model") or build_manifest.get("model")
    if not model:
        raise ArtifactError(f"{adapter}/manifest.json names no base model; pass --model")
    recorded = ((build_manifest.get("inputs") or {}).get("probe") or {}).get("path")
    if not (config.probe or recorded):
        raise ArtifactError(f"{build}/manifest.json names no probe folder; pass --probe")
    probe = Path(config.probe) if config.probe else _locate(str(recorded), build / "manifest.json")
    probe_manifest = read_manifest(probe, "probe")
    # The unquantised base by default: the probe measured it, and it is what a merged or bf16
    # deployment runs; --quant nf4 audits on the 4-bit base of QLoRA training instead.
    quant = config.quant
    curve = (
        read_jsonl(adapter / "train_log.jsonl")
        if (adapter / "train_log.jsonl").exists()
        else manifest.get("curve") or []
    )
    return Inputs(adapter, str(model), build, probe, probe_manifest, quant, cfg.get("quant"), list(curve))


def load_split(build: Path, name: str) -> Arms:
    path = build / f"eval_{name}.jsonl"
    if not path.exists():
        if name == "paraphrase":
            return Arms(name, [], [])
        raise ArtifactError(f"{build}: no eval_{name}.jsonl; rebuild it with `kia build`")
    rows = read_jsonl(path)
    facts = []
    for r in rows:
        f = Fact.from_dict(r)
        # A paraphrase is prompted as its source fact, so the exemplar sets swap out that fact too.
        facts.append(dataclasses.replace(f, id=str(r["source_id"])) if r.get("source_id") else f)
    return Arms(name, rows, facts)


def exemplar_sets(inputs: Inputs) -> ExemplarSets:
    from kia.probe import load_exemplar_sets

    for folder in (inputs.build, inputs.probe):
        if (folder / "exemplars.json").exists():
            return load_exemplar_sets(folder)
    raise ArtifactError(f"neither {inputs.build} nor {inputs.probe} holds exemplars.json (the probe's prompts)")


def _same_model(recorded: dict[str, Any], model: str) -> bool:
    rid = str(recorded.get("id") or "")
    if not rid:
        return False
    if rid != model and not (
        Path(rid).exists() and Path(model).exists() and Path(rid).resolve() == Path(model).resolve()
    ):
        return False
    cfg = Path(model) / "config.json"
    if recorded.get("config_sha256") and cfg.exists() and sha256_file(cfg) != recorded["config_sha256"]:
        return False
    weights = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    if recorded.get("weights_sha256") and len(weights) == 1 and sha256_file(weights[0]) != recorded["weights_sha256"]:
        return False
    return True


def _reuse_check(inputs: Inputs, config: AuditConfig) -> tuple[bool, str]:
    """Whether the probe run's greedy answers are this audit's base arm (same model and settings)."""
    pm = inputs.probe_manifest
    pc = pm.get("config") or {}
    if not config.reuse_probe:
        return False, "reuse turned off"
    if not _same_model(pm.get("model") or {}, inputs.model):
        return False, f"the probe ran another model ({(pm.get('model') or {}).get('id')})"
    if (pc.get("quant") or "none") != inputs.quant:
        return False, f"the probe loaded the model with quant={pc.get('quant')}, the audit with quant={inputs.quant}"
    if (pc.get("engine") or "hf") != config.engine:
        return False, f"the probe used the {pc.get('engine')} engine"
    if pc.get("adapter"):
        return False, "the probe ran through an adapter"
    if not (inputs.probe / "facts.parquet").exists():
        return False, "the probe folder has no facts.parquet"
    return True, "same model, quantisation, engine and probe settings"


# ------------------------------------------------------------------------------------- generation


def greedy_answers(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    pc: dict[str, Any],
    *,
    adapter: bool | str,
    prior: Sequence[Sequence[str]] | None = None,
) -> list[list[str]]:
    """Greedy answers of every fact with every exemplar set (the probe's prompts), continuing from
    `prior` answers where given (the probe's lazy schedule may have stopped a fact early)."""
    n_sets = int(pc.get("n_sets", 10))
    answers = [list(p)[:n_sets] for p in prior] if prior is not None else [[] for _ in facts]
    todo = [(i, s) for i, f in enumerate(facts) for s in range(len(answers[i]), n_sets)]
    outs = set_answers(engine, [(facts[i], s) for i, s in todo], sets, pc, adapter=adapter)
    for (i, _), out in zip(todo, outs, strict=True):
        answers[i].append(out)
    return answers


def set_answers(
    engine: Engine, pairs: Sequence[tuple[Fact, int]], sets: ExemplarSets, pc: dict[str, Any], *, adapter: bool | str
) -> list[str]:
    """The greedy answer of each (fact, exemplar set) pair, prompted as the probe prompts it."""
    if not pairs:
        return []
    build = PromptBuilder(engine)
    prompts = [build([(e.question, e.answer) for e in sets.for_fact(f, s)], f.question) for f, s in pairs]
    sampling = Sampling(
        n=1, temperature=0.0, max_new_tokens=int(pc.get("max_new_tokens", 32)), seed=int(pc.get("seed", 0))
    )
    return [extract_answer(out[0]) for out in engine.generate(prompts, sampling, adapter=adapter)]


def _probe_answers(inputs: Inputs, facts: Sequence[Fact]) -> list[list[str]] | None:
    """The probe run's greedy answers for `facts`, or None if any fact is missing or reworded."""
    import polars as pl

    table = pl.read_parquet(inputs.probe / "facts.parquet", columns=["id", "question", "greedy_answers"])
    rows = {r["id"]: r for r in table.iter_rows(named=True)}
    out = []
    for f in facts:
        r = rows.get(f.id)
        if r is None or r["question"] != f.question:
            return None
        out.append(list(r["greedy_answers"] or []))
    return out


def lora_b_all_zero(adapter: Path) -> bool:
    """True when every LoRA B matrix in the adapter's weights is exactly zero (peft initialises B to
    zero, so such an adapter is the base model unchanged: it never trained)."""
    from safetensors import safe_open

    path = adapter / "adapter_model.safetensors"
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as fh:
        keys = [k for k in fh.keys() if "lora_B" in k]
        return bool(keys) and all(not fh.get_tensor(k).any() for k in keys)


@dataclass
class _Task:
    """One chunk of one split's arm: the unit of generation work, here or on a Ray replica."""

    split: str
    adapter: bool
    facts: list[Fact]
    prior: list[list[str]] | None = None


def _tasks(splits: dict[str, Arms], prior: dict[str, list[list[str]] | None], size: int) -> list[_Task]:
    """Every split's base and adapted arm in chunks of `size` facts, in order. A single-process
    run answers the same chunks as a Ray run, so the two batch alike and answer alike."""
    out = []
    for name, split in splits.items():
        for adapter in (False, True):
            for lo in range(0, len(split.facts), size):
                before = None if adapter else prior.get(name)
                out.append(
                    _Task(name, adapter, split.facts[lo : lo + size], before[lo : lo + size] if before else None)
                )
    return out


def run_arms(
    engine: Engine | None,
    splits: dict[str, Arms],
    sets: ExemplarSets,
    pc: dict[str, Any],
    inputs: Inputs,
    config: AuditConfig,
    say: Progress,
    engine_config: EngineConfig | None = None,
) -> tuple[bool, str]:
    """Fill every split's base and adapted answers; return (base arm reused from the probe, why).

    With `config.ray` the chunks go to Ray replicas loaded from `engine_config` (`engine` unused)."""
    reusable, note = _reuse_check(inputs, config)
    prior: dict[str, list[list[str]] | None] = {}
    if reusable:
        for name in ("injected", "heldout"):
            prior[name] = _probe_answers(inputs, splits[name].facts)
        if prior["heldout"] is None or prior["injected"] is None:
            reusable, note = False, "some evaluated facts are not in the probe run"
    if reusable and "retention" in splits:  # an update's: reused where the probe has its facts, never vetoing
        prior["retention"] = _probe_answers(inputs, splits["retention"].facts)
    # Spot check: the first exemplar set's answers must come out as the probe run's did.
    spot = _Task("spot", False, splits["heldout"].facts[:8]) if reusable else None
    tasks = _tasks(splits, prior if reusable else {}, config.shard_size)
    if config.ray is None:
        assert engine is not None
        if spot:
            fresh = greedy_answers(engine, spot.facts, sets, {**pc, "n_sets": 1}, adapter=False)
            if differ := _differ(prior["heldout"], fresh):
                reusable, note = (
                    False,
                    f"spot check: {differ} of {len(spot.facts)} base answers differ from the probe run's",
                )
                tasks = _tasks(splits, {}, config.shard_size)
        answers = _local(engine, tasks, splits, sets, pc, say)
    else:
        from kia.audit.remote import answer_on_ray

        assert engine_config is not None
        # One pass over Ray with the spot check in it, counting on it to hold (it does whenever
        # the probe ran this model); the base arm is redone only where it does not.
        say(f"{len(tasks)} chunks of base and adapted answers on Ray ({config.ray.replicas} replicas)")
        answers = answer_on_ray(tasks + [spot] * bool(spot), sets, pc, engine_config, config.ray)
        if spot and (differ := _differ(prior["heldout"], answers.pop())):
            reusable, note = (
                False,
                f"spot check: {differ} of {len(spot.facts)} base answers differ from the probe run's",
            )
            redo = [i for i, t in enumerate(tasks) if t.prior is not None]
            for i in redo:
                tasks[i].prior = None
            fixed = answer_on_ray([tasks[i] for i in redo], sets, pc, engine_config, config.ray)
            for i, got in zip(redo, fixed, strict=True):
                answers[i] = got
    for split in splits.values():
        split.base, split.adapted = [], []
    for task, got in zip(tasks, answers, strict=True):
        arm = splits[task.split].adapted if task.adapter else splits[task.split].base
        arm.extend(got)
    return reusable, note


def run_production_arm(
    engine: Engine, splits: dict[str, Arms], sets: ExemplarSets, pc: dict[str, Any], say: Progress
) -> None:
    """An update's third arm: every split's answers through the production adapter (loaded in the
    engine under the name "production"), on the same prompts as the other two arms."""
    for name, split in splits.items():
        if split.facts:
            say(f"{name} ({len(split.facts)} facts): production arm")
            split.production = greedy_answers(engine, split.facts, sets, pc, adapter="production")


def _differ(prior: list[list[str]] | None, fresh: list[list[str]]) -> int:
    """How many facts' first-set answers differ between the probe run's and this engine's."""
    return sum(p[:1] != f[:1] for p, f in zip(prior or [], fresh, strict=False) if p)


def _local(
    engine: Engine, tasks: list[_Task], splits: dict[str, Arms], sets: ExemplarSets, pc: dict[str, Any], say: Progress
) -> list[list[list[str]]]:
    out, said = [], set()
    for t in tasks:
        if (t.split, t.adapter) not in said:
            said.add((t.split, t.adapter))
            n = len(splits[t.split].facts)
            reuse = " (continuing the probe run's answers)" if t.prior is not None else ""
            say(f"{t.split} ({n} facts): {'adapted' if t.adapter else 'base'} arm" + ("" if t.adapter else reuse))
        out.append(greedy_answers(engine, t.facts, sets, pc, adapter=t.adapter, prior=t.prior))
    return out
