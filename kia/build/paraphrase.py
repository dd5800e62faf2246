"""Paraphrases of a fact's question: where they come from, and the filter every candidate passes.

    kia build runs/p1 --unknown 100 --paraphrases 3 --paraphraser own

Sources, in order of preference (`--paraphraser` picks where to start; later ones fill gaps):
`own` (the fact's `paraphrases` column), `templates` (the other question forms of its relation,
learnt from facts of that relation by writing `{s}` where the subject stands), `model` (an LLM
through the engine: a rephrasing prompt, several sampled candidates per question).

The filter (`Screener`), for each candidate in order, until enough are kept:
- `subject_missing`: the original names the subject but the candidate does not;
- `leaks_answer`: an answer alias occurs in it as whole words (`kia.facts.matching.is_correct`, contains);
- `duplicate`: its normalised text equals the original's, an earlier candidate's or a trained question's;
- `off_meaning`: cosine(original, candidate) < `min_similarity`;
- `near_duplicate`: cosine >= `max_similarity` to the original or to any candidate already kept.

Cosines come from all-MiniLM-L6-v2 (offline) on the questions with the subject replaced by "X"
whenever both contain it. Why mask: names, invented ones above all, dominate the embedding, so
unmasked "Where was Drun Bizailwyn born?" and "Which company does Drun Bizailwyn work for?" score
0.72 (median), as close as many true paraphrases. Measured on the toy world (320 facts, 40 per
relation; masked numbers are per template, as masking makes them the same for every subject):

    pairs (n)                                   unmasked min/p5/median/p95   masked min/p5/median/p95
    true paraphrase vs question (2240 | 56)     0.59 / 0.76 / 0.91 / 0.97    0.56 / 0.70 / 0.85 / 0.95
    true paraphrase vs paraphrase (6720 | 168)  0.55 / 0.73 / 0.89 / 0.98    0.54 / 0.64 / 0.82 / 0.96
    other relation, same subject (2560 | 64)    0.46 / 0.60 / 0.72 / 0.86    0.38 / 0.42 / 0.56 / 0.76
      (subject of the same kind: birthplace vs employer ...)
    same relation, other subject (320)          0.22 / 0.37 / 0.55 / 0.71    (1.00: the subject check)
    near-duplicates (masked, median):  which<->what 0.988, an added ", please" 0.983, an article
      changed 0.987, case/punctuation 1.00 (also caught by the normalised-text check)

Defaults: `min_similarity` 0.70 keeps 95% of the toy world's true paraphrase templates (drops
"Which musician plays in X?" 0.56, "What city is home to X?" 0.62, "Which city hosts the head
office of X?" 0.69) and lets through 20% of same-kind other-relation questions (60% unmasked at the
same threshold). `max_similarity` 0.97 drops 100% of which/what swaps, 89% of filler additions and
90% of article changes, and 3% of true paraphrase pairs, which are themselves near-copies
("In which city was X born?" / "X was born in which city?" 0.985). Together, 86% of the toy
world's own paraphrases pass (every fact keeps 4 to 7 of its 7). The embedding filter is a
coarse guard: hand-written, "When was Hamlet written?" still scores 0.89 against "Who wrote
Hamlet?", so review model-generated paraphrases; the own and template sources come from the data.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kia.facts import Fact

MIN_SIMILARITY = 0.70
MAX_SIMILARITY = 0.97
SOURCES = ("own", "templates", "model")
MASK = "X"
REASONS = ("subject_missing", "leaks_answer", "duplicate", "off_meaning", "near_duplicate")

Embed = Callable[[Sequence[str]], Any]  # texts -> unit-normalised vectors, one row per text


@dataclass(frozen=True)
class FilterConfig:
    min_similarity: float = MIN_SIMILARITY
    max_similarity: float = MAX_SIMILARITY
    embedder: str | None = None  # None: the offline all-MiniLM-L6-v2


@dataclass
class Screened:
    """The candidates kept for one fact (in order) and how many were dropped for each reason."""

    kept: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


# ------------------------------------------------------------------------------------------ sources


def relation_templates(facts: Sequence[Fact]) -> dict[str, list[str]]:
    """Question templates per relation ("Where was {s} born?"), from facts whose questions name their subject."""
    out: dict[str, dict[str, None]] = {}
    for f in facts:
        if not (f.relation and f.subject):
            continue
        for q in (f.question, *f.paraphrases):
            if f.subject in q:
                out.setdefault(f.relation, {})[q.replace(f.subject, "{s}")] = None  # a dict keeps first-seen order
    return {rel: list(ts) for rel, ts in out.items()}


def source_order(paraphraser: str, with_model: bool) -> tuple[str, ...]:
    """The sources tried for `paraphraser`: it and those after it (`model` only when a model is set)."""
    order = SOURCES[SOURCES.index(paraphraser) :]
    return tuple(s for s in order if s != "model" or with_model)


def candidates(
    fact: Fact,
    sources: Sequence[str],
    templates: Mapping[str, Sequence[str]],
    generated: Mapping[str, Sequence[str]] | None = None,
    seed: int | str = 0,
) -> list[tuple[str, str]]:
    """Unfiltered (text, source) pairs, source by source in `sources` order, each source's texts
    shuffled by seed and fact id (so the kept and held-back ones vary with the seed, not the
    position of a fact in the file); the question itself and repeats are left out."""
    rng = random.Random(f"{seed}:{fact.id}")
    out: list[tuple[str, str]] = []
    seen = {fact.question}
    for src in sources:
        if src == "own":
            texts = list(fact.paraphrases)
        elif src == "templates":
            ok = fact.relation and fact.subject
            texts = [t.replace("{s}", fact.subject) for t in templates.get(fact.relation, [])] if ok else []  # type: ignore[union-attr,arg-type]
        else:
            texts = list((generated or {}).get(fact.id, []))
        rng.shuffle(texts)
        for t in texts:
            if t not in seen:
                seen.add(t)
                out.append((t, src))
    return out


REPHRASE_SYSTEM = (
    "Rewrite the user's question in other words. Keep its meaning and the names in it, do not answer it, "
    "and reply with the rewritten question only."
)
_PREFIX = re.compile(
    r"^\s*((\d+[.)]|[-*•]|(rewritten question|paraphrase|question|answer|request)\s*:)\s*)+", re.IGNORECASE
)


def rephrase_prompt(engine: Any, question: str) -> str:
    """The rephrasing prompt: the model's chat template when it has one, else plain lines."""
    rendered = engine.chat([{"role": "system", "content": REPHRASE_SYSTEM}, {"role": "user", "content": question}])
    if rendered is not None:
        return rendered
    return f"{engine.bos}{REPHRASE_SYSTEM}\nQuestion: {question}\nRewritten question:"


def strip_labels(line: str) -> str:
    """`line` without leading list markers, labels ("Question:", "Request:") or surrounding quotes."""
    return _PREFIX.sub("", line).strip().strip("\"'“”").strip()


def clean_generation(text: str) -> str | None:
    """One generated rephrasing without list markers, labels or quotes; None when not a question-like sentence."""
    line = strip_labels(text.strip().split("\n", 1)[0])
    return line if len(line.split()) >= 3 else None


def generate_candidates(
    engine: Any, facts: Sequence[Fact], n: int = 8, seed: int = 0, temperature: float = 1.0
) -> dict[str, list[str]]:
    """`n` sampled rephrasings per fact (cleaned, repeats removed), by fact id.

    The paper generated its paraphrases the same way with a large instruct model (Llama-3-70B,
    asked for 200 rephrasings); sampling several gives the filter something to choose from."""
    from kia.engines import Sampling

    sampling = Sampling(n=n, temperature=temperature, top_k=50, max_new_tokens=48, seed=seed)
    outputs = engine.generate([rephrase_prompt(engine, f.question) for f in facts], sampling)
    out: dict[str, list[str]] = {}
    for f, texts in zip(facts, outputs, strict=True):
        cleaned = (clean_generation(t) for t in texts)
        out[f.id] = list(dict.fromkeys(c for c in cleaned if c and c != f.question))
    return out


# ------------------------------------------------------------------------------------------ filter


def mask_subject(text: str, subject: str | None) -> str:
    """`text` with every (case-insensitive) occurrence of `subject` replaced by "X"."""
    if not subject:
        return text
    return re.sub(re.escape(subject), MASK, text, flags=re.IGNORECASE)


def _embed(texts: Sequence[str], name: str | None) -> Any:
    from kia.engines import DEFAULT_EMBEDDER, embed

    return embed(texts, name or DEFAULT_EMBEDDER)


class Screener:
    """Runs the filter of the module docstring over many facts with one embedding call per batch,
    caching vectors by text (templated questions share their masked forms)."""

    def __init__(self, config: FilterConfig, embed: Embed | None = None):
        self.config = config
        self._embed = embed or (lambda texts: _embed(texts, config.embedder))
        self._cache: dict[str, Any] = {}

    def _vectors(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            self._cache.update(zip(todo, self._embed(todo), strict=True))

    def screen(
        self, items: Sequence[tuple[Fact, Sequence[str], int]], forbidden: frozenset[str] = frozenset()
    ) -> list[Screened]:
        """For each (fact, candidates, limit): up to `limit` kept candidates, in order.

        `forbidden` holds normalised questions no candidate may equal (the trained questions)."""
        from kia.facts import is_correct, normalize

        results: list[Screened] = []
        passed: list[list[tuple[str, str]]] = []  # (candidate, its masked form) after the cheap checks
        for fact, cands, _ in items:
            res = Screened()
            masking = bool(fact.subject) and fact.subject.casefold() in fact.question.casefold()  # type: ignore[union-attr]
            seen = {normalize(fact.question)}
            keep: list[tuple[str, str]] = []
            for cand in cands:
                norm = normalize(cand)
                if masking and fact.subject.casefold() not in cand.casefold():  # type: ignore[union-attr]
                    res.dropped["subject_missing"] += 1
                elif is_correct(cand, fact.answers, "contains"):
                    res.dropped["leaks_answer"] += 1
                elif not norm or norm in seen or norm in forbidden:
                    res.dropped["duplicate"] += 1
                else:
                    seen.add(norm)
                    keep.append((cand, mask_subject(cand, fact.subject) if masking else cand))
            results.append(res)
            passed.append(keep)
        originals = [mask_subject(f.question, f.subject) for f, _, _ in items]
        self._vectors(originals + [m for keep in passed for _, m in keep])
        lo, hi = self.config.min_similarity, self.config.max_similarity
        for (_, _, limit), res, keep, orig in zip(items, results, passed, originals, strict=True):
            o = self._cache[orig]
            kept_vectors: list[Any] = []
            for cand, masked in keep:
                if len(res.kept) >= limit:
                    break
                v = self._cache[masked]
                sim = float(v @ o)
                if sim < lo:
                    res.dropped["off_meaning"] += 1
                elif sim >= hi or any(float(v @ k) >= hi for k in kept_vectors):
                    res.dropped["near_duplicate"] += 1
                else:
                    res.kept.append(cand)
                    kept_vectors.append(v)
        return results


def filter_paraphrases(
    fact: Fact, cands: Sequence[str], config: FilterConfig | None = None, limit: int = 10
) -> list[str]:
    """The candidates for one fact that pass the filter, at most `limit`, in order."""
    return Screener(config or FilterConfig()).screen([(fact, cands, limit)])[0].kept


# ------------------------------------------------------------------------------------------ for kia build


@dataclass
class ParaphrasePlan:
    """Per injected fact: paraphrases to train on, ones held back for eval_paraphrase, and the source of each."""

    train: dict[str, list[str]]
    held: dict[str, list[str]]
    sources: dict[str, dict[str, str]]
    report: dict[str, Any]
    warnings: list[str]


def plan_paraphrases(
    injected: Sequence[Fact],
    facts: Sequence[Fact],
    *,
    n_train: int,
    n_held: int,
    paraphraser: str = "own",
    model: str | None = None,
    n_generate: int = 8,
    filter_config: FilterConfig | None = None,
    seed: int = 0,
    forbidden: frozenset[str] = frozenset(),
    embed: Embed | None = None,
) -> ParaphrasePlan:
    """Paraphrases for the injected facts: `n_held` held back first (so generalisation stays
    measurable), then `n_train` for training. With `paraphraser="model"` only the LLM `model`
    rephrases; otherwise own then templates, and `model` (when given) fills what is still missing.
    A fact left with fewer than asked is reported with counts in the warnings, never silently."""
    want = n_train + n_held
    report: dict[str, Any] = {"asked_per_fact": want, "train_per_fact": n_train, "held_per_fact": n_held}
    if want == 0 or not injected:
        none = {f.id: [] for f in injected}
        return ParaphrasePlan(none, dict(none), {f.id: {} for f in injected}, report, [])
    screener = Screener(filter_config or FilterConfig(), embed)
    templates = relation_templates(facts)
    sources = ("model",) if paraphraser == "model" else source_order(paraphraser, with_model=False)
    generated: dict[str, list[str]] = {}
    if paraphraser == "model":
        generated = _generate(model, injected, max(n_generate, 2 * want), seed)
    cands = {f.id: candidates(f, sources, templates, generated, seed) for f in injected}
    results = screener.screen([(f, [t for t, _ in cands[f.id]], want) for f in injected], forbidden)
    short = [f for f, r in zip(injected, results, strict=True) if len(r.kept) < want]
    if short and model and paraphraser != "model":
        # The LLM only rephrases the facts the data could not serve; screening is greedy in order,
        # so the candidates kept so far stay kept and the model's fill in behind them.
        generated = _generate(model, short, max(n_generate, 2 * want), seed)
        sources = (*sources, "model")
        short_ids = {f.id for f in short}
        redo = {f.id: i for i, f in enumerate(injected) if f.id in short_ids}
        for f in short:
            cands[f.id] = candidates(f, sources, templates, generated, seed)
        again = screener.screen([(f, [t for t, _ in cands[f.id]], want) for f in short], forbidden)
        for f, r in zip(short, again, strict=True):
            results[redo[f.id]] = r
    train: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    where: dict[str, dict[str, str]] = {}
    dropped: Counter[str] = Counter()
    used: Counter[str] = Counter()
    for f, r in zip(injected, results, strict=True):
        held[f.id], train[f.id] = r.kept[:n_held], r.kept[n_held:]
        origin = dict(cands[f.id])
        where[f.id] = {q: origin[q] for q in r.kept}
        dropped.update(r.dropped)
        used.update(where[f.id].values())
    kept = {f.id: len(r.kept) for f, r in zip(injected, results, strict=True)}
    lacking = {f.id: kept[f.id] for f in injected if kept[f.id] < want}
    report.update(
        sources=list(sources),
        kept=sum(kept.values()),
        kept_by_source=dict(used),
        dropped=dict(sorted(dropped.items())),
        facts_short=len(lacking),
        short=lacking,
    )
    warnings = []
    if lacking:
        n_tr, n_he = sum(len(v) for v in train.values()), sum(len(v) for v in held.values())
        examples = ", ".join(f"{i}: {k}" for i, k in list(lacking.items())[:5])
        hint = "" if model else "; add paraphrases to the facts or pass --paraphrase-model to have an LLM fill in"
        warnings.append(
            f"{len(lacking)} of {len(injected)} injected facts have fewer usable paraphrases than the {want} "
            f"asked ({n_train} for training + {n_held} held back for eval_paraphrase), e.g. {examples}: training "
            f"gets {n_tr} of {n_train * len(injected)} paraphrases, eval_paraphrase {n_he} of "
            f"{n_held * len(injected)} (filter drops: {dict(sorted(dropped.items()))}){hint}"
        )
    return ParaphrasePlan(train, held, where, report, warnings)


def _generate(model: str | None, facts: Sequence[Fact], n: int, seed: int) -> dict[str, list[str]]:
    from kia.engines import EngineConfig, load_engine
    from kia.errors import ConfigError

    if not model:
        raise ConfigError("--paraphraser model needs a model: pass --paraphrase-model (the probe names none)")
    engine = load_engine(EngineConfig(model=model))
    try:
        return generate_candidates(engine, facts, n=n, seed=seed)
    finally:
        engine.close()
