"""The SliCK probe itself: which facts does the model already know? (Gekhman et al. 2024)

For each fact, `n_sets` few-shot prompts (exemplar sets of `shots` facts of its relation) get one
greedy answer each, and facts never answered right greedily get `n_samples` sampled answers per
prompt at temperature 0.5, top-k 40. From the shares of correct answers:

    P_greedy = correct greedy answers / greedy answers
    P_sample = correct sampled answers / sampled answers
    HighlyKnown: P_greedy = 1;  MaybeKnown: 0 < P_greedy < 1;
    WeaklyKnown: P_greedy = 0 and P_sample > 0;  Unknown: both 0.

The three-way label (Pletenev et al. 2025) folds WeaklyKnown into Unknown.

The lazy schedule gives the same labels with far fewer generations: a fact's greedy passes stop
once it has one right and one wrong answer (it is MaybeKnown whatever comes next), only facts with
P_greedy = 0 are sampled, and their sampling stops at the first correct sample. Its P estimates
are therefore partial; `exhaustive=True` computes them in full.

`greedy_only=True` is the cheaper probe of Pletenev et al.'s released code: the `n_sets` greedy
answers decide the three-way label (HighlyKnown, MaybeKnown, Unknown) and no sample is drawn, so
every greedy pass runs (P_greedy in full) and WeaklyKnown is left undecided (`slick_category` null).

The stage around it (streaming, shards, resume) is `kia.probe.run`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kia.engines import Engine, Sampling
from kia.facts import Fact, extract_answer, is_correct, is_refusal
from kia.probe.config import ProbeConfig
from kia.probe.prompts import ExemplarSets, PromptBuilder


@dataclass
class _FactState:
    fact: Fact
    greedy: list[str] = field(default_factory=list)
    greedy_ok: list[bool] = field(default_factory=list)
    n_sample: int = 0
    n_sample_ok: int = 0

    def decided_greedy(self, lazy: bool) -> bool:
        return lazy and any(self.greedy_ok) and not all(self.greedy_ok)


def slick_label(p_greedy: float, n_greedy_full: bool, p_sample: float | None) -> str:
    """The four SliCK categories (Gekhman et al. Fig. 2a). HighlyKnown needs every greedy answer
    right, so it needs the full set of greedy passes."""
    if p_greedy == 1 and n_greedy_full:
        return "HighlyKnown"
    if p_greedy > 0:
        return "MaybeKnown"
    if p_sample:
        return "WeaklyKnown"
    return "Unknown"


def three_way(slick: str) -> str:
    """Pletenev et al. use greedy answers only, so SliCK's WeaklyKnown is their Unknown."""
    return "Unknown" if slick == "WeaklyKnown" else slick


def probe_facts(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    config: ProbeConfig,
    *,
    adapter: bool = False,
    generations: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Probe `facts` with `engine` and return one row per fact (the facts.parquet schema)."""
    lazy = not config.exhaustive and not config.greedy_only
    build = PromptBuilder(engine)
    states = [_FactState(f) for f in facts]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=config.seed)
    for s in range(config.n_sets):
        todo = [st for st in states if not st.decided_greedy(lazy)]
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in todo]
        for st, outs in zip(todo, engine.generate(prompts, greedy, adapter=adapter), strict=True):
            answer = extract_answer(outs[0])
            ok = is_correct(answer, st.fact.answers, config.match)
            st.greedy.append(answer)
            st.greedy_ok.append(ok)
            if generations is not None:
                generations.append({"id": st.fact.id, "set": s, "kind": "greedy", "text": answer, "correct": ok})
    for s in range(0 if config.greedy_only else config.n_sets):
        todo = [st for st in states if (not any(st.greedy_ok) or not lazy) and not (lazy and st.n_sample_ok)]
        if not todo:
            break
        sampling = Sampling(
            n=config.n_samples,
            temperature=config.temperature,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            seed=config.seed * 1000 + s + 1,
        )
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in todo]
        for st, outs in zip(todo, engine.generate(prompts, sampling, adapter=adapter), strict=True):
            for text in outs:
                answer = extract_answer(text)
                ok = is_correct(answer, st.fact.answers, config.match)
                st.n_sample += 1
                st.n_sample_ok += ok
                if generations is not None:
                    generations.append({"id": st.fact.id, "set": s, "kind": "sample", "text": answer, "correct": ok})
                if ok and lazy:
                    break  # the first correct sample decides WeaklyKnown
    return [_row(st, config) for st in states]


def greedy_rows(
    facts: Sequence[Fact],
    answers: Sequence[Sequence[str]],
    config: ProbeConfig,
    *,
    generations: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The facts.parquet rows of a `greedy_only` probe from every fact's greedy answers (answer
    `s` from exemplar set `s`), however they were generated (a batch engine elsewhere, e.g. Ray's
    vLLM stage)."""
    if not config.greedy_only:
        raise ValueError("rows from greedy answers alone are a greedy-only probe's")
    states = []
    for fact, texts in zip(facts, answers, strict=True):
        st = _FactState(fact)
        for s, text in enumerate(texts):
            answer = extract_answer(text)
            ok = is_correct(answer, fact.answers, config.match)
            st.greedy.append(answer)
            st.greedy_ok.append(ok)
            if generations is not None:
                generations.append({"id": fact.id, "set": s, "kind": "greedy", "text": answer, "correct": ok})
        states.append(st)
    return [_row(st, config) for st in states]


def _shots(exemplars: Sequence[Fact]) -> list[tuple[str, str]]:
    return [(f.question, f.answer) for f in exemplars]


def _row(st: _FactState, config: ProbeConfig) -> dict[str, Any]:
    n_greedy = len(st.greedy)
    p_greedy = sum(st.greedy_ok) / n_greedy
    p_sample = st.n_sample_ok / st.n_sample if st.n_sample else None
    slick: str | None = slick_label(p_greedy, n_greedy == config.n_sets, p_sample)
    if config.greedy_only and p_greedy == 0:
        slick = None  # Weakly or Unknown: only samples tell, and none were drawn
    refusals = [is_refusal(a) for a in st.greedy]
    f = st.fact
    return {
        "id": f.id,
        "question": f.question,
        "answers": list(f.answers),
        "subject": f.subject,
        "relation": f.relation,
        "object": f.object,
        "domain": f.domain,
        "paraphrases": list(f.paraphrases),
        "extra": json.dumps(dict(f.extra), ensure_ascii=False, sort_keys=True),
        "category": three_way(slick or "Unknown"),
        "slick_category": slick,
        "p_greedy": p_greedy,
        "p_sample": p_sample,
        "n_greedy": n_greedy,
        "n_sample": st.n_sample,
        "n_generations": n_greedy + st.n_sample,
        "answer": st.greedy[0],
        "greedy_answers": st.greedy,
        "refused": refusals[0],
        "refusal_share": sum(refusals) / n_greedy,
    }


def greedy_reliability(
    engine: Engine,
    facts: Sequence[Fact],
    sets: ExemplarSets,
    *,
    n_sets: int = 10,
    match: str = "contains",
    max_new_tokens: int = 32,
    adapter: bool = False,
    seed: int = 0,
) -> list[float]:
    """Per fact, the share of the `n_sets` few-shot greedy answers that are correct (P_greedy):
    the paper's "reliability" when the facts are the injected ones. Runs every greedy pass."""
    config = ProbeConfig(
        facts="-",
        model=engine.model_id,
        n_sets=n_sets,
        match=match,
        max_new_tokens=max_new_tokens,
        exhaustive=True,
        n_samples=1,
        seed=seed,
    )
    states = [_FactState(f) for f in facts]
    build = PromptBuilder(engine)
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, seed=seed)
    for s in range(n_sets):
        prompts = [build(_shots(sets.for_fact(st.fact, s)), st.fact.question) for st in states]
        for st, outs in zip(states, engine.generate(prompts, greedy, adapter=adapter), strict=True):
            st.greedy_ok.append(is_correct(extract_answer(outs[0]), st.fact.answers, match))
    return [sum(st.greedy_ok) / len(st.greedy_ok) for st in states]
