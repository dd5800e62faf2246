"""`kia audit`: what did the adapter learn, and what did it break? PASS or FAIL against a policy.

    kia audit runs/inject                  # model, build and probe from the adapter's manifests
    kia audit runs/inject --policy strict.toml --benchmarks mmlu,truthfulqa_mc1 -o runs/audit

The base model is loaded once with the adapter, and every measurement runs twice on identical
prompts and settings: adapter off (peft `disable_adapter`) and on. The build's splits are probed
with the probe run's few-shot exemplar sets, greedy, every set:
- eval_injected -> reliability; eval_paraphrase -> generalisation;
- eval_heldout -> knowledge shift (3 x 3 transition matrix and its reasons), answer collapse and
  refusals; the base arm reuses the probe run's answers for these facts when the probe used the
  same model and settings (checked on a few facts);
- lm-evaluation-harness tasks -> benchmark drift, paired per document;
- the adapter's sanity: it loads, fits the base model, and is not a no-op.
Then `kia.audit.policy.judge` gives the verdict. Output folder: audit.json, per_fact.jsonl,
report.html (when the report module is installed) and manifest.json, written last.
Only three-way categories are needed (Pletenev et al. use greedy answers only), so no sampling runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kia.artifacts import (
    FolderLock,
    peak_memory_mb,
    prepare_output,
    read_jsonl,
    read_manifest,
    sha256_file,
    to_json,
    versions,
    write_json,
    write_jsonl,
    write_manifest,
)
from kia.audit import metrics as met
from kia.audit.benchmarks import check_available, resolve_benchmarks, run_benchmarks, task_manager
from kia.audit.policy import judge, load_policy
from kia.engines import Engine, EngineConfig, Sampling, load_engine
from kia.errors import ArtifactError, ConfigError
from kia.facts import Fact
from kia.matching import extract_answer
from kia.prompts import ExemplarSets, PromptBuilder

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditConfig:
    """None means "take it from the stage manifests" (model, build, probe) or the default."""

    adapter: str
    model: str | None = None
    build: str | None = None
    probe: str | None = None
    policy: str | None = None  # TOML file; default probes/policy.toml
    benchmarks: tuple[str, ...] | None = None  # names, YAML files or folders; None: default; ("none",): skip
    output: str = "runs/audit"
    engine: str = "hf"
    quant: str = "none"  # "nf4": audit on the 4-bit base the adapter was trained on (QLoRA)
    batch_size: int = 64
    bench_batch_size: int = 32
    bench_limit: int | None = None  # documents per benchmark task (quick checks only)
    refusal_embeddings: bool = True  # also detect refusals by embedding similarity
    reuse_probe: bool = True
    n_boot: int = 2000
    seed: int = 0
    allow_pickle: bool = False
    report: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ("hf", "vllm"):
            raise ConfigError(f"unknown --engine '{self.engine}'; choose hf or vllm")
        if self.quant not in ("none", "nf4"):
            raise ConfigError(f"unknown --quant '{self.quant}'; choose none or nf4")
        for name in ("batch_size", "bench_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bench_limit is not None and self.bench_limit < 1:
            raise ConfigError(f"--bench-limit must be at least 1, got {self.bench_limit}")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot must be at least 100 for a usable interval, got {self.n_boot}")


@dataclass(frozen=True)
class AuditResult:
    output: Path
    verdict: str
    reasons: list[str]
    metrics: dict[str, dict[str, Any]]
    report: Path | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "PASS" else 1


@dataclass
class _Inputs:
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
    """A folder a manifest names: as written (relative to the working directory then), else relative
    to the folder holding the manifest or one of its parents (the run moved, or runs from elsewhere)."""
    path = Path(recorded)
    if path.exists() or path.is_absolute():
        return path
    for base in referrer.resolve().parents:
        if (base / path).exists():
            return base / path
    return path


def _resolve_inputs(config: AuditConfig) -> _Inputs:
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
    return _Inputs(adapter, str(model), build, probe, probe_manifest, quant, cfg.get("quant"), list(curve))


def _load_split(build: Path, name: str) -> met.Arms:
    path = build / f"eval_{name}.jsonl"
    if not path.exists():
        if name == "paraphrase":
            return met.Arms(name, [], [])
        raise ArtifactError(f"{build}: no eval_{name}.jsonl; rebuild it with `kia build`")
    rows = read_jsonl(path)
    facts = []
    for r in rows:
        f = Fact.from_dict(r)
        # A paraphrase is prompted as its source fact, so the exemplar sets swap out that fact too.
        facts.append(dataclasses.replace(f, id=str(r["source_id"])) if r.get("source_id") else f)
    return met.Arms(name, rows, facts)


def _exemplar_sets(inputs: _Inputs) -> ExemplarSets:
    for folder in (inputs.build, inputs.probe):
        if (folder / "exemplars.json").exists():
            import json

            return ExemplarSets.from_json(json.loads((folder / "exemplars.json").read_text(encoding="utf-8")))
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


def _reuse_check(inputs: _Inputs, config: AuditConfig) -> tuple[bool, str]:
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


def _greedy(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    pc: dict[str, Any],
    *,
    adapter: bool,
    prior: Sequence[Sequence[str]] | None = None,
) -> list[list[str]]:
    """Greedy answers of every fact with every exemplar set (the probe's prompts), continuing from
    `prior` answers where given (the probe's lazy schedule may have stopped a fact early)."""
    n_sets = int(pc.get("n_sets", 10))
    answers = [list(p)[:n_sets] for p in prior] if prior is not None else [[] for _ in facts]
    build = PromptBuilder(engine)
    todo = [(i, s) for i, f in enumerate(facts) for s in range(len(answers[i]), n_sets)]
    prompts = [build([(e.question, e.answer) for e in sets.for_fact(facts[i], s)], facts[i].question) for i, s in todo]
    sampling = Sampling(
        n=1, temperature=0.0, max_new_tokens=int(pc.get("max_new_tokens", 32)), seed=int(pc.get("seed", 0))
    )
    outs = engine.generate(prompts, sampling, adapter=adapter) if prompts else []
    for (i, _), out in zip(todo, outs, strict=True):
        answers[i].append(extract_answer(out[0]))
    return answers


def _probe_answers(inputs: _Inputs, facts: Sequence[Fact]) -> list[list[str]] | None:
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


def _lora_b_all_zero(adapter: Path) -> bool:
    """True when every LoRA B matrix in the adapter's weights is exactly zero (peft initialises B to
    zero, so such an adapter is the base model unchanged: it never trained)."""
    from safetensors import safe_open

    path = adapter / "adapter_model.safetensors"
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as fh:
        keys = [k for k in fh.keys() if "lora_B" in k]
        return bool(keys) and all(not fh.get_tensor(k).any() for k in keys)


# ------------------------------------------------------------------------------------------ audit


def audit(config: AuditConfig, progress: Progress | None = None, *, engine: Engine | None = None) -> AuditResult:
    """Audit the adapter described by `config`; write the output folder and return the verdict.

    `progress` gets one line per step. `engine` replaces the model load (tests pass a fake that
    answers per arm; benchmarks then need `benchmarks=("none",)`).
    """
    start = time.time()
    say = progress or (lambda _msg: None)
    policy = load_policy(config.policy)  # a bad policy fails before any work
    inputs = _resolve_inputs(config)
    sets = _exemplar_sets(inputs)
    pc = dict(inputs.probe_manifest.get("config") or {})
    splits = {name: _load_split(inputs.build, name) for name in ("injected", "paraphrase", "heldout")}
    train = read_jsonl(inputs.build / "train.jsonl") if (inputs.build / "train.jsonl").exists() else []
    plan = resolve_benchmarks(config.benchmarks, inputs.model)
    warnings: list[str] = []
    try:
        if plan.specs and (config.engine != "hf" or (engine is not None and not hasattr(engine, "model"))):
            raise ConfigError("benchmarks run through lm-eval's HF backend: use --engine hf, or --benchmarks none")
        manager = None
        if plan.specs:  # unknown tasks and unreachable data fail here, before any model work
            say(f"checking benchmarks: {', '.join(s.name for s in plan.specs)}")
            manager = task_manager(plan)
            check_available(plan, manager)
        out = prepare_output(config.output, overwrite=config.overwrite)
        with FolderLock(out):
            own = engine is None
            if engine is None:
                say(f"loading {inputs.model} with the adapter {inputs.adapter} (quant {inputs.quant})")
                engine = load_engine(
                    EngineConfig(
                        inputs.model,
                        engine=config.engine,
                        adapter=str(inputs.adapter),
                        quant=inputs.quant,
                        batch_size=config.batch_size,
                        allow_pickle=config.allow_pickle,
                    )
                )
            else:
                from kia.adapters import check_adapter

                check_adapter(inputs.adapter, allow_pickle=config.allow_pickle)
            timings = {"setup": time.time() - start}
            reused, reuse_note = _run_arms(engine, splits, sets, pc, inputs, config, say)
            timings["generation"] = time.time() - start - sum(timings.values())
            bench: dict[str, Any] = {}
            if plan.specs:
                model, tokenizer = engine.model, engine.tokenizer  # type: ignore[attr-defined]
                bench = run_benchmarks(
                    model,
                    tokenizer,
                    plan,
                    manager,
                    batch_size=config.bench_batch_size,
                    limit=config.bench_limit,
                    n_boot=config.n_boot,
                    seed=config.seed,
                    progress=say,
                )
            timings["benchmarks"] = time.time() - start - sum(timings.values())
            if own:
                engine.close()
            say("computing metrics")
            report, per_fact = met.assemble(
                splits,
                train_answers=[str(r["answer"]) for r in train if r.get("answer")],
                benchmarks=bench,
                match=str(pc.get("match", "contains")),
                policy=policy,
                detector=met.RefusalDetector(policy.refusal_similarity if config.refusal_embeddings else None),
                lora_b_all_zero=_lora_b_all_zero(inputs.adapter),
                n_boot=config.n_boot,
                seed=config.seed,
            )
            report["curve"] = inputs.curve
            timings["metrics"] = time.time() - start - sum(timings.values())
            verdict, reasons, checks = judge(policy, report)
            seconds = round(time.time() - start, 2)
            report = {"verdict": verdict, "reasons": reasons, **report, "checks": [c.to_dict() for c in checks]}
            report["provenance"] = {
                "adapter": str(inputs.adapter),
                "model": inputs.model,
                "build": str(inputs.build),
                "probe": str(inputs.probe),
                "policy": policy.thresholds(),
                "base_reused_from_probe": reused,
                "base_reuse_note": reuse_note,
                "quant": inputs.quant,
                "adapter_trained_quant": inputs.trained_quant,
                "engine": config.engine,
                "probe_config": {k: pc.get(k) for k in ("n_sets", "shots", "match", "max_new_tokens", "seed")},
                "benchmarks": [dataclasses.asdict(s) for s in plan.specs],
                "bench_limit": config.bench_limit,
                "n_boot": config.n_boot,
                "seed": config.seed,
                "versions": versions(),
                "seconds": seconds,
                "timings": {k: round(v, 2) for k, v in timings.items()},
            }
            write_jsonl(out / "per_fact.jsonl", per_fact)
            write_json(out / "audit.json", report)
            report_path = _render(out, warnings) if config.report else None
            write_manifest(
                out,
                stage="audit",
                config=config,
                verdict=verdict,
                reasons=reasons,
                inputs={
                    "adapter": {
                        "path": str(inputs.adapter),
                        "sha256": _sha(inputs.adapter / "adapter_model.safetensors"),
                    },
                    "build": {"path": str(inputs.build), "sha256": _sha(inputs.build / "eval_heldout.jsonl")},
                    "probe": {"path": str(inputs.probe), "sha256": _sha(inputs.probe / "facts.parquet")},
                },
                model=inputs.model,
                policy=policy.thresholds(),
                base_reused_from_probe=reused,
                outputs=["audit.json", "per_fact.jsonl"] + (["report.html"] if report_path else []),
                warnings=warnings,
                wall_seconds=round(time.time() - start, 2),
                peak_memory_mb=peak_memory_mb(),
            )
    finally:
        plan.cleanup()
    return AuditResult(out, verdict, reasons, report["metrics"], report_path, seconds, warnings)


def _sha(path: Path) -> str | None:
    return sha256_file(path) if path.exists() else None


def _render(out: Path, warnings: list[str]) -> Path | None:
    try:
        from kia.report import render_report
    except ImportError:
        return None
    try:
        return render_report(out)
    except Exception as exc:  # the verdict stands without its page; say why the page is missing
        warnings.append(f"report.html not written: {type(exc).__name__}: {exc}")
        return None


def _run_arms(
    engine: Engine,
    splits: dict[str, met.Arms],
    sets: ExemplarSets,
    pc: dict[str, Any],
    inputs: _Inputs,
    config: AuditConfig,
    say: Progress,
) -> tuple[bool, str]:
    """Fill every split's base and adapted answers; return (base arm reused from the probe, why)."""
    reusable, note = _reuse_check(inputs, config)
    prior: dict[str, list[list[str]] | None] = {}
    if reusable:
        for name in ("injected", "heldout"):
            prior[name] = _probe_answers(inputs, splits[name].facts)
        if prior["heldout"] is None or prior["injected"] is None:
            reusable, note = False, "some evaluated facts are not in the probe run"
        else:
            # Spot check: the first exemplar set's answers must come out the same here.
            facts = splits["heldout"].facts[:8]
            fresh = _greedy(engine, facts, sets, {**pc, "n_sets": 1}, adapter=False)
            differ = sum(p[:1] != f for p, f in zip(prior["heldout"], fresh, strict=False) if p)
            if differ:
                reusable, note = False, f"spot check: {differ} of {len(facts)} base answers differ from the probe run's"
    for name, split in splits.items():
        if not split.facts:
            continue
        reuse = prior.get(name) if reusable else None
        say(f"{name} ({len(split.facts)} facts): base arm" + (" (continuing the probe run's answers)" if reuse else ""))
        split.base = _greedy(engine, split.facts, sets, pc, adapter=False, prior=reuse)
        say(f"{name} ({len(split.facts)} facts): adapted arm")
        split.adapted = _greedy(engine, split.facts, sets, pc, adapter=True)
    return reusable, note


def summary_json(result: AuditResult) -> str:
    """The CLI's --json output."""
    keys = ("output", "verdict", "reasons", "report", "seconds", "warnings", "metrics")
    return to_json({k: getattr(result, k) for k in keys})
