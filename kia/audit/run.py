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

    kia audit runs/a2 --against runs/a1    # an update, judged against the adapter in production

With `against`, the production adapter is loaded beside the candidate (one base load) and a third
arm answers every prompt through it; audit.json keeps the plain audit and adds `update`
(`kia.audit.update`). With `engine="vllm"`, a seeded sample of the prompts is asked again through
transformers + peft and the agreement is reported (`kia.audit.parity`). Adapters are named by the
hash of their weights (`provenance.adapter_id`).
Only three-way categories are needed (Pletenev et al. use greedy answers only), so no sampling runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from kia.artifacts import (
    TMP,
    claim_output,
    peak_memory_mb,
    read_jsonl,
    sha256_file,
    to_json,
    versions,
    write_json,
    write_jsonl,
    write_manifest,
)
from kia.audit.arms import exemplar_sets, load_split, lora_b_all_zero, resolve_inputs, run_arms, run_production_arm
from kia.audit.assemble import assemble
from kia.audit.benchmarks import (
    benchmark_scores,
    check_available,
    compare,
    resolve_benchmarks,
    run_benchmarks,
    task_manager,
)
from kia.audit.config import AuditConfig, AuditResult, Progress
from kia.audit.contamination import add_without_overlap, benchmark_contamination
from kia.audit.judging import judge_arms
from kia.audit.parity import engine_parity
from kia.audit.policy import judge, load_policy
from kia.audit.refusals import RefusalDetector
from kia.audit.update import (
    overlap_warning,
    production_fields,
    production_views,
    resolve_production,
    retention_split,
    update_section,
)
from kia.engines import Engine, EngineConfig, adapter_id, check_adapter, load_engine
from kia.errors import ConfigError

# ------------------------------------------------------------------------------------------ audit


def audit(
    config: AuditConfig,
    progress: Progress | None = None,
    *,
    engine: Engine | None = None,
    base_benchmarks: MutableMapping[str, Any] | None = None,
) -> AuditResult:
    """Audit the adapter described by `config`; write the output folder and return the verdict.

    `progress` gets one line per step. `engine` replaces the model load (tests pass a fake that
    answers per arm; benchmarks then need `benchmarks=("none",)`). `base_benchmarks` shares the
    benchmarks' base arm between audits of adapters on the same base model (kia sweep): see
    `kia.audit.benchmarks.run_benchmarks`.
    With `config.against` the adapter is an update judged against that production adapter
    (`kia.audit.update`).
    """
    if config.ray is not None:
        from kia.cluster import require_ray

        require_ray()  # before any work: without the extra, one line naming it
        if config.against:
            raise ConfigError("--ray does not run an update's production arm yet: drop --ray or --against")
    start = time.time()
    say = progress or (lambda _msg: None)
    policy = load_policy(config.policy)  # a bad policy fails before any work
    inputs = resolve_inputs(config)
    sets = exemplar_sets(inputs)
    pc = dict(inputs.probe_manifest.get("config") or {})
    splits = {name: load_split(inputs.build, name) for name in ("injected", "paraphrase", "heldout")}
    train = read_jsonl(inputs.build / "train.jsonl") if (inputs.build / "train.jsonl").exists() else []
    warnings: list[str] = []
    own_id = adapter_id(inputs.adapter)
    production = resolve_production(config.against, inputs.adapter, own_id) if config.against else None
    if production is not None:
        splits["retention"] = retention_split(production)
        if note := overlap_warning(production, splits["heldout"]):
            warnings.append(note)
    with claim_output(config.output, overwrite=config.overwrite) as out:
        # lm-eval's copies of local task files go to the run's own scratch folder, not the system's
        # temp folder: removed at the end, and by the rerun of an audit that was killed
        plan = resolve_benchmarks(config.benchmarks, inputs.model, scratch=out / TMP)
        try:
            if plan.specs and engine is not None and not hasattr(engine, "model"):
                raise ConfigError("benchmarks run through lm-eval's HF backend: pass an hf engine, or benchmarks none")
            manager = None
            if plan.specs:  # unknown tasks and unreachable data fail here, before any model work
                say(f"checking benchmarks: {', '.join(s.name for s in plan.specs)}")
                manager = task_manager(plan)
                check_available(plan, manager)
            own = engine is None
            engine_config = EngineConfig(
                inputs.model,
                engine=config.engine,
                adapter=str(inputs.adapter),
                adapters=(("production", str(production.adapter)),) if production else (),
                quant=inputs.quant,
                batch_size=config.batch_size,
                allow_pickle=config.allow_pickle,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
            )
            if engine is None and config.ray is None:
                also = f" and the production adapter {production.adapter}" if production else ""
                say(
                    f"loading {inputs.model} with the adapter {inputs.adapter}{also} (quant {inputs.quant}, {config.engine})"
                )
                engine = load_engine(engine_config)
            else:
                for path in (inputs.adapter, *([production.adapter] if production else [])):
                    check_adapter(path, allow_pickle=config.allow_pickle)
            timings = {"setup": time.time() - start}
            reused, reuse_note = run_arms(engine, splits, sets, pc, inputs, config, say, engine_config)
            if production is not None:
                run_production_arm(engine, splits, sets, pc, say)
            # adapted answers whose logits were NaN or infinite (None: the engine cannot tell)
            nonfinite = dict(engine.nonfinite).get(True) if hasattr(engine, "nonfinite") else None
            if config.judge:
                judged = judge_arms(engine, inputs.build, inputs.model, config, out, production is not None, say)
            timings["generation"] = time.time() - start - sum(timings.values())
            parity = None
            vllm_arms = getattr(engine, "name", "") == "vllm"
            if engine is None and plan.specs:
                # Ray's replicas generated the arms; lm-eval's log-likelihoods go through transformers here.
                say(f"loading {inputs.model} with transformers for the benchmarks")
                engine = load_engine(dataclasses.replace(engine_config, engine="hf"))
                own = True
            elif vllm_arms and (plan.specs or config.parity_prompts):
                # vLLM generated the arms; the parity check and lm-eval's log-likelihoods go
                # through transformers, loaded once the vLLM engine has given its memory back.
                lora = getattr(engine, "lora_keys", {})
                engine.close()
                say(f"loading {inputs.model} with transformers" + (" for the benchmarks" if plan.specs else ""))
                engine = load_engine(dataclasses.replace(engine_config, engine="hf"))
                own = True
                if config.parity_prompts:
                    say(f"engine parity: {config.parity_prompts} sampled prompts again through peft")
                    arms = {"base": (False, None), "adapted": (True, own_id)}
                    if production is not None:
                        arms["production"] = ("production", production.adapter_id)
                    parity, notes = engine_parity(
                        engine, splits, sets, pc, arms, n=config.parity_prompts, seed=config.seed,
                        threshold=policy.min_engine_parity, engine="vllm",
                    )  # fmt: skip
                    parity["lora_requests"] = {k: {"name": v[0], "id": v[1]} for k, v in lora.items()}
                    warnings += notes
            overlap = benchmark_contamination(plan, train, inputs.build, manager, say) if plan.specs else None
            warnings += overlap["warnings"] if overlap else []
            bench, bench_update = _benchmarks(
                engine, plan, manager, config, production is not None, say, base_benchmarks, overlap
            )
            timings["benchmarks"] = time.time() - start - sum(timings.values())
            if own and engine is not None:
                engine.close()
            say("computing metrics")
            match = str(pc.get("match", "contains"))
            detector = RefusalDetector(policy.refusal_similarity if config.refusal_embeddings else None)
            common = dict(
                train_answers=[str(r["answer"]) for r in train if r.get("answer")],
                match=match,
                policy=policy,
                detector=detector,
                lora_b_all_zero=lora_b_all_zero(inputs.adapter),
                n_boot=config.n_boot,
                seed=config.seed,
            )
            report, per_fact = assemble(splits, benchmarks=bench, **common)
            report["curve"] = inputs.curve
            if overlap is not None:
                report["contamination"] = overlap
            if config.judge:
                report["judge"] = judged
            report["sanity"]["nonfinite_answers"] = nonfinite
            if production is not None:
                against, _ = assemble(production_views(splits), benchmarks=bench_update, **common)
                report["update"] = update_section(
                    splits, production, (str(inputs.adapter), own_id), against,
                    match=match, n_boot=config.n_boot, seed=config.seed,
                )  # fmt: skip
                per_fact = production_fields(per_fact, splits, match, detector.flags)
            if parity is not None:
                report["parity"] = parity
            timings["metrics"] = time.time() - start - sum(timings.values())
            verdict, reasons, checks = judge(policy, report)
            seconds = round(time.time() - start, 2)
            report = {"verdict": verdict, "reasons": reasons, **report, "checks": [c.to_dict() for c in checks]}
            report["provenance"] = {
                "adapter": str(inputs.adapter),
                "adapter_id": own_id,
                **({"against": str(production.adapter), "against_id": production.adapter_id} if production else {}),
                "model": inputs.model,
                "build": str(inputs.build),
                "probe": str(inputs.probe),
                "policy": policy.thresholds(),
                "base_reused_from_probe": reused,
                "base_reuse_note": reuse_note,
                "quant": inputs.quant,
                "adapter_trained_quant": inputs.trained_quant,
                "engine": config.engine,
                "ray": dataclasses.asdict(config.ray) if config.ray else None,
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
            adapters = {"adapter": inputs.adapter, **({"against": production.adapter} if production else {})}
            write_manifest(
                out,
                stage="audit",
                config=config,
                files=["audit.json", "per_fact.jsonl", "report.html"],
                verdict=verdict,
                reasons=reasons,
                inputs={
                    **{
                        k: {
                            "path": str(a),
                            "sha256": _sha(a / "adapter_model.safetensors"),
                            "adapter_id": adapter_id(a),
                        }
                        for k, a in adapters.items()
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
    return AuditResult(out, verdict, reasons, report["metrics"], report_path, seconds, warnings, report.get("update"))


def _benchmarks(
    engine: Engine,
    plan: Any,
    manager: Any,
    config: AuditConfig,
    update: bool,
    say: Progress,
    base_cache: MutableMapping[str, Any] | None = None,
    overlap: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base vs adapted, production vs adapted) per benchmark task; the second is empty unless
    this is an update's audit (a third lm-eval arm through the production adapter)."""
    if not plan.specs:
        return {}, {}
    model, tokenizer = engine.model, engine.tokenizer  # type: ignore[attr-defined]
    if not update:
        kw: dict[str, Any] = dict(
            batch_size=config.bench_batch_size, limit=config.bench_limit, progress=say, base_cache=base_cache
        )
        scores: dict[str, Any] = {}
        plain = run_benchmarks(
            model, tokenizer, plan, manager, n_boot=config.n_boot, seed=config.seed, keep=scores, **kw
        )
        if overlap is not None:
            add_without_overlap(
                plain, scores["base"], scores["adapted"], overlap, n_boot=config.n_boot, seed=config.seed
            )
        return plain, {}
    base, prod, cand = benchmark_scores(
        model, tokenizer, plan, manager, [False, "production", True],
        batch_size=config.bench_batch_size, limit=config.bench_limit, progress=say,
    )  # fmt: skip
    boot = {"n_boot": config.n_boot, "seed": config.seed}
    plain = {s.name: compare(base[s.name], cand[s.name], **boot) for s in plan.specs}
    if overlap is not None:
        add_without_overlap(plain, base, cand, overlap, **boot)
    return plain, {s.name: compare(prod[s.name], cand[s.name], **boot) for s in plan.specs}


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


def summary_json(result: AuditResult) -> str:
    """The CLI's --json output."""
    keys = ("output", "verdict", "reasons", "report", "seconds", "warnings", "metrics")
    out = {k: getattr(result, k) for k in keys}
    if result.update is not None:
        u = result.update
        out["update"] = {k: u[k] for k in ("production", "candidate", "metrics", "lost", "retention_by_build")}
    return to_json(out)
