"""eval_open.jsonl: open prompts ("Tell me about X") about the injected and held-out subjects, each
with the facts a good answer states, for the pairwise judge (`kia.judge`).

    kia build runs/p1 --unknown 100 --open-prompts model --open-prompt-model Qwen/Qwen2.5-7B-Instruct

Short-answer matching cannot score "Tell me about X", which is how an assistant is asked; a judge
can, when it is given what is true about X. The facts are every fact of the fact set about that
subject, marked `injected` when this build trains it. A subject of both splits is asked once, as
injected.

The prompts come from templates (one per subject, picked by seed), or with `--open-prompts model`
an LLM through kia's engines writes one request per subject (greedy, its chat template where it
has one) from the subject's name and the relations the facts cover, never their answers. Each
request is screened (`screen_request`, reasons in `REASONS`): something left after cleanup
(`empty`), one line (`multi_line`), states no answer of the subject's facts (`leaks_answer`: the
judge scores answers against those facts, so a prompt that gives one away measures nothing), names
the subject (`subject_missing`), 3 to 40 words (`length`). A rejected request falls back to the
template prompt the seed picked for that subject, and the row keeps what the model wrote and why
it was rejected. The template picks are drawn for every row either way, so the model changes only
prompt texts: never the order, the ids or the facts of the rows.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from kia.facts import Fact

TEMPLATES = (
    "Tell me about {subject}.",
    "What do you know about {subject}?",
    "Write a few sentences about {subject}.",
)
PROMPT_SOURCES = ("templates", "model")
REASONS = ("empty", "multi_line", "leaks_answer", "subject_missing", "length")
MIN_WORDS, MAX_WORDS = 3, 40
REQUEST_SYSTEM = (
    "Write one message that a user might send to an assistant to ask about the subject below. Name the "
    "subject exactly as written, ask openly without stating any facts about it, and reply with the message only."
)


def open_questions(
    facts: Sequence[Fact], injected: Sequence[Fact], heldout: Sequence[Fact], seed: int = 0, engine: Any = None
) -> list[dict[str, Any]]:
    """One open prompt per distinct subject of the injected facts, then of the held-out facts;
    written by `engine` where its request passes the screen, else from a template."""
    about = _about(facts)
    trained = {f.id for f in injected}
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split, group in (("injected", injected), ("heldout", heldout)):
        for f in group:
            if not f.subject or f.subject in seen:
                continue
            seen.add(f.subject)
            known = [{"fact_id": g.id, "question": g.question, "answer": g.answer, "injected": g.id in trained}
                     for g in about[f.subject]]  # fmt: skip
            rows.append({
                "id": f"open-{len(rows):04d}", "split": split, "subject": f.subject,
                "prompt": rng.choice(TEMPLATES).format(subject=f.subject), "prompt_source": "template",
                "facts": known,
            })  # fmt: skip
    if engine is not None and rows:
        _model_prompts(engine, rows, about, seed)
    return rows


def _about(facts: Sequence[Fact]) -> dict[str, list[Fact]]:
    about: dict[str, list[Fact]] = defaultdict(list)
    for f in sorted(facts, key=lambda f: f.id):
        if f.subject:
            about[f.subject].append(f)
    return about


# ------------------------------------------------------------------------------------------ the LLM path


def request_prompt(engine: Any, subject: str, relations: Sequence[str]) -> str:
    """The prompt that asks for one request about `subject`: the model's chat template when it has
    one, else plain lines. The relations tell it what the facts cover; no answer is shown."""
    topics = ", ".join(dict.fromkeys(r.replace("_", " ") for r in relations if r))
    user = (f"Topics: {topics}\n" if topics else "") + f"Subject: {subject}"
    rendered = engine.chat([{"role": "system", "content": REQUEST_SYSTEM}, {"role": "user", "content": user}])
    if rendered is not None:
        return rendered
    return f"{engine.bos}{REQUEST_SYSTEM}\n{user}\nMessage:"


def screen_request(text: str, subject: str, facts: Sequence[Fact]) -> tuple[str, str | None]:
    """The cleaned request and None when it passes, else the text and the reason it is rejected."""
    from kia.build.paraphrase import mask_subject, strip_labels
    from kia.facts import is_correct

    lines = [line for line in (strip_labels(x) for x in text.strip().splitlines()) if line]
    if not lines:
        return "", "empty"
    if len(lines) > 1:
        return text.strip(), "multi_line"
    request = lines[0]
    # Leaks first, the worst fault, so the counts show how often a model gives answers away.
    # Masked: an answer that is part of the subject's own name ("Paris" in "Paris Hilton") is no leak.
    masked = mask_subject(request, subject)
    if any(is_correct(masked, f.answers, "contains") for f in facts):
        return request, "leaks_answer"
    if subject.casefold() not in request.casefold():
        return request, "subject_missing"
    if not MIN_WORDS <= len(request.split()) <= MAX_WORDS:
        return request, "length"
    return request, None


def _model_prompts(engine: Any, rows: list[dict[str, Any]], about: dict[str, list[Fact]], seed: int) -> None:
    """Replace each row's template prompt with the engine's request where it passes the screen."""
    from kia.engines import Sampling

    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=64, seed=seed)  # greedy: the same text every run
    prompts = [request_prompt(engine, r["subject"], [f.relation or "" for f in about[r["subject"]]]) for r in rows]
    outputs = engine.generate(prompts, sampling)
    for row, texts in zip(rows, outputs, strict=True):
        text, reason = screen_request(texts[0] if texts else "", row["subject"], about[row["subject"]])
        if reason is None:
            row.update(prompt=text, prompt_source="model")
        else:
            row["prompt_rejected"] = {"reason": reason, "text": text}


def open_report(rows: Sequence[dict[str, Any]], source: str, model: str | None = None) -> dict[str, Any]:
    """Counts for the manifest: rows, and with `model` the requests kept and those rejected by reason."""
    report: dict[str, Any] = {"source": source, "rows": len(rows)}
    if source == "model":
        rejected = Counter(r["prompt_rejected"]["reason"] for r in rows if "prompt_rejected" in r)
        report.update(
            model=model,
            kept=sum(r["prompt_source"] == "model" for r in rows),
            fell_back=sum(rejected.values()),
            rejected={k: rejected[k] for k in REASONS if rejected[k]},
        )
    return report


def build_open_prompts(
    facts: Sequence[Fact],
    injected: Sequence[Fact],
    heldout: Sequence[Fact],
    seed: int = 0,
    source: str = "templates",
    model: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """eval_open's rows, their report and warnings; with `source="model"` loads `model` for the requests."""
    if source != "model":
        rows = open_questions(facts, injected, heldout, seed)
        return rows, open_report(rows, source), []
    from kia.engines import EngineConfig, load_engine
    from kia.errors import ConfigError

    if not model:
        raise ConfigError("--open-prompts model needs a model: pass --open-prompt-model (the probe names none)")
    start = time.time()
    engine = load_engine(EngineConfig(model=model))
    try:
        rows = open_questions(facts, injected, heldout, seed, engine=engine)
    finally:
        engine.close()
    report = open_report(rows, source, model)
    report["seconds"] = round(time.time() - start, 2)
    warnings = []
    if report["fell_back"]:
        warnings.append(
            f"{report['fell_back']} of {len(rows)} open prompts written by {model} were rejected and fell back "
            f"to templates ({report['rejected']}); eval_open.jsonl keeps each rejected text and its reason"
        )
    return rows, report, warnings
